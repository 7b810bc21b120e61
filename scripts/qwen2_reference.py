"""Reference logits for the tiny Qwen 2 checkpoint of crates/engine/tests/tiny_model.rs, from
transformers' Qwen2ForCausalLM in f32: the anchor the engine's Qwen 2 code is tested against.

The checkpoint is the test's own (random weights from a fixed seed, written by
shovel_engine::testing::write_tiny_qwen2); nothing is downloaded. To regenerate:

    D=$(mktemp -d)
    SHOVEL_TINY_QWEN2_DIR=$D cargo test -p shovel-engine --test tiny_model -- --ignored write_tiny_qwen2
    source scripts/peft_venv.sh   # torch + transformers in .bench/peft-venv
    .bench/peft-venv/bin/python scripts/qwen2_reference.py $D > crates/engine/tests/data/tiny_qwen2_transformers.json

The GGUF test (`a_qwen2_gguf_gives_transformers_logits`) writes the same weights as a GGUF file
itself and is held to the same logits.
"""

import json
import sys

import torch
from transformers import AutoModelForCausalLM

# Byte-level ids of the test tokenizer (258 tokens), ChatML's two special tokens among them.
TOKENS = [256, 85, 82, 69, 82, 10, 11, 40, 233, 17, 3, 120, 64, 257, 10, 256]


def main():
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
    assert type(model).__name__ == "Qwen2ForCausalLM", type(model).__name__
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([TOKENS])).logits[0]
    json.dump({"source": f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, f32",
               "tokens": TOKENS, "logits": [[round(x, 5) for x in row] for row in logits.tolist()]}, sys.stdout)


if __name__ == "__main__":
    main()
