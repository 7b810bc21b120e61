//! Test support: a tiny random model written as a Hugging Face directory, so loading, batching,
//! templates and the API run in tests without downloaded weights.

use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;

/// A ChatML template.
pub const CHATML_TEMPLATE: &str =
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A Hermes-style template written for tests, shaped like Qwen 2.5's: the tools in the
/// system turn, calls in `<tool_call>` tags, results in `<tool_response>` tags.
pub const HERMES_TEMPLATE: &str = concat!(
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{% if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{% endif %}",
    "{{- '# Tools\\n<tools>' }}{% for t in tools %}{{- '\\n' + (t | tojson) }}{% endfor %}{{- '\\n</tools>\\n' }}",
    "{{- 'Call a function with <tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}",
    "{%- elif messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{% endif %}",
    "{%- for m in messages %}{% if m.role == 'user' or (m.role == 'system' and not loop.first) %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}",
    "{%- elif m.role == 'assistant' %}{{- '<|im_start|>assistant\\n' + m.content }}{% for c in m.tool_calls %}",
    "{{- '\\n<tool_call>\\n{\"name\": \"' + c.function.name + '\", \"arguments\": ' + (c.function.arguments | tojson) + '}\\n</tool_call>' }}{% endfor %}{{- '<|im_end|>\\n' }}",
    "{%- elif m.role == 'tool' %}{{- '<|im_start|>user\\n<tool_response>\\n' + m.content + '\\n</tool_response><|im_end|>\\n' }}{% endif %}{% endfor %}",
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{% endif %}"
);

/// Hidden size of the tiny model.
pub const TINY_HIDDEN: usize = 32;
const H: usize = TINY_HIDDEN;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 64;
/// Layers of the tiny model.
pub const TINY_LAYERS: usize = 2;
const LAYERS: usize = TINY_LAYERS;

fn write_tokenizer(dir: &Path, template: serde_json::Value) -> usize {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::AddedToken;
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    let vocab: tokenizers::models::bpe::Vocab = alphabet.iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, vec![]).build().unwrap();
    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tk.with_decoder(Some(ByteLevel::default()));
    tk.add_special_tokens(&[AddedToken::from("<|im_start|>", true), AddedToken::from("<|im_end|>", true)]);
    tk.save(dir.join("tokenizer.json"), false).unwrap();
    let cfg = serde_json::json!({"chat_template": template, "eos_token": "<|im_end|>", "bos_token": null, "add_bos_token": false});
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
    alphabet.len() + 2
}

/// Writes a tiny random llama model (2 layers, hidden size [`TINY_HIDDEN`], a byte-level
/// tokenizer with ChatML's two special tokens) as a Hugging Face directory: safetensors,
/// config.json, tokenizer.json and tokenizer_config.json with `template` as its `chat_template`
/// (a string, or a list of `{"name", "template"}`) and `context` positions. Panics if it cannot
/// write them.
pub fn write_tiny_llama(dir: &Path, seed: u64, template: impl Into<serde_json::Value>, context: usize) {
    write_tiny(dir, seed, template.into(), context, false)
}

/// [`write_tiny_llama`]'s model as a Qwen 2 checkpoint: `model_type` qwen2, with q/k/v biases.
pub fn write_tiny_qwen2(dir: &Path, seed: u64, template: impl Into<serde_json::Value>, context: usize) {
    write_tiny(dir, seed, template.into(), context, true)
}

fn write_tiny(dir: &Path, seed: u64, template: serde_json::Value, context: usize, qwen2: bool) {
    let vocab = write_tokenizer(dir, template);
    let cfg = serde_json::json!({
        "model_type": if qwen2 { "qwen2" } else { "llama" }, "tie_word_embeddings": false, "hidden_size": H, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "num_hidden_layers": LAYERS, "intermediate_size": FFN, "vocab_size": vocab,
        "max_position_embeddings": context, "rms_norm_eps": 1e-5, "rope_theta": 10000.0
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let kvd = H / HEADS * KV_HEADS;
    let mut shapes: Vec<(String, Vec<usize>)> = vec![("model.embed_tokens.weight".into(), vec![vocab, H]), ("model.norm.weight".into(), vec![H]), ("lm_head.weight".into(), vec![vocab, H])];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        shapes.extend([
            (format!("{p}.input_layernorm.weight"), vec![H]),
            (format!("{p}.post_attention_layernorm.weight"), vec![H]),
            (format!("{p}.self_attn.q_proj.weight"), vec![H, H]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kvd, H]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kvd, H]),
            (format!("{p}.self_attn.o_proj.weight"), vec![H, H]),
            (format!("{p}.mlp.gate_proj.weight"), vec![FFN, H]),
            (format!("{p}.mlp.up_proj.weight"), vec![FFN, H]),
            (format!("{p}.mlp.down_proj.weight"), vec![H, FFN]),
        ]);
        if qwen2 {
            shapes.extend([(format!("{p}.self_attn.q_proj.bias"), vec![H]), (format!("{p}.self_attn.k_proj.bias"), vec![kvd]), (format!("{p}.self_attn.v_proj.bias"), vec![kvd])]);
        }
    }
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let vals: Vec<f32> =
                if shape.len() == 1 && !name.ends_with(".bias") { (0..n).map(|_| 1.0 + rng.gen_range(-0.1..0.1)).collect() } else { (0..n).map(|_| rng.gen_range(-0.5..0.5)).collect() };
            (name, shape, vals.iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect();
    let views: HashMap<String, safetensors::tensor::TensorView> =
        data.iter().map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(&views, &None, &dir.join("model.safetensors")).unwrap();
}
