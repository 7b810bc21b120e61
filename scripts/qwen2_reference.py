"""Reference logits for the tiny Qwen 2 checkpoint of crates/engine/tests/tiny_model.rs, from
transformers' Qwen2ForCausalLM in f32: the anchor the engine's Qwen 2 code is tested against.

The checkpoint is the test's own (random weights from a fixed seed, written by
shovel_engine::testing::write_tiny_qwen2); nothing is downloaded. To regenerate:

    D=$(mktemp -d)
    SHOVEL_TINY_QWEN2_DIR=$D cargo test -p shovel-engine --test tiny_model -- --ignored write_tiny_qwen2
    source scripts/peft_venv.sh   # torch + transformers in .bench/peft-venv
    .bench/peft-venv/bin/python scripts/qwen2_reference.py $D > crates/engine/tests/data/tiny_qwen2_transformers.json

With `--gguf OUT` it also writes the checkpoint as a GGUF file the way llama.cpp's converter
lays out Qwen 2 (architecture `qwen2`, `blk.N.attn_q.bias`, q/k rows not permuted, tokenizer
pre `qwen2`), for the test that loads it against the same reference:

    .bench/peft-venv/bin/python scripts/qwen2_reference.py $D --gguf $D/model.gguf > /dev/null
    SHOVEL_TINY_QWEN2_GGUF=$D/model.gguf cargo test -p shovel-engine --test tiny_model -- --ignored qwen2_gguf
"""

import json
import sys

import torch
from transformers import AutoModelForCausalLM

# Byte-level ids of the test tokenizer (258 tokens), ChatML's two special tokens among them.
TOKENS = [256, 85, 82, 69, 82, 10, 11, 40, 233, 17, 3, 120, 64, 257, 10, 256]


def write_gguf(src, out):
    import gguf
    from safetensors.numpy import load_file

    cfg = json.load(open(f"{src}/config.json"))
    t = load_file(f"{src}/model.safetensors")
    vocab = json.load(open(f"{src}/tokenizer.json"))
    ids = dict(vocab["model"]["vocab"])
    specials = {a["content"]: a["id"] for a in vocab["added_tokens"]}
    ids.update(specials)
    tokens = [tok for tok, _ in sorted(ids.items(), key=lambda kv: kv[1])]
    w = gguf.GGUFWriter(out, "qwen2")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([3 if tok in specials else 1 for tok in tokens])
    w.add_token_merges([])  # byte-level tokens only: gguf-py writes no key for an empty list
    w.add_eos_token_id(specials["<|im_end|>"])
    w.add_add_bos_token(False)
    names = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
             "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
             "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
             "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
             "self_attn.v_proj.bias": "attn_v.bias", "mlp.gate_proj.weight": "ffn_gate.weight",
             "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight"}
    w.add_tensor("token_embd.weight", t["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", t["model.norm.weight"])
    w.add_tensor("output.weight", t["lm_head.weight"])
    for l in range(cfg["num_hidden_layers"]):
        for hf, gg in names.items():
            w.add_tensor(f"blk.{l}.{gg}", t[f"model.layers.{l}.{hf}"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    if "--gguf" in sys.argv:
        write_gguf(sys.argv[1], sys.argv[sys.argv.index("--gguf") + 1])
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
    assert type(model).__name__ == "Qwen2ForCausalLM", type(model).__name__
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([TOKENS])).logits[0]
    json.dump({"source": f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, f32",
               "tokens": TOKENS, "logits": [[round(x, 5) for x in row] for row in logits.tolist()]}, sys.stdout)


if __name__ == "__main__":
    main()
