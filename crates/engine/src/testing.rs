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

/// A Llama 3-style template written for tests, shaped like Llama 3.1's: the tools in the
/// first user turn (indented JSON), a call as `{"name", "parameters"}`, results as `ipython`
/// turns.
pub const LLAMA3_TEMPLATE: &str = concat!(
    "{%- if not tools is defined %}{%- set tools = none %}{%- endif %}{%- set ns = namespace(listed=false) %}",
    "{%- for m in messages %}",
    "{%- if m.role == 'user' and tools is not none and not ns.listed %}",
    "{{- '<|start_header_id|>user<|end_header_id|>\\n\\nRespond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.\\n\\n' }}",
    "{%- for t in tools %}{{- (t | tojson(indent=4)) + '\\n\\n' }}{%- endfor %}{{- m.content + '<|eot_id|>' }}{%- set ns.listed = true %}",
    "{%- elif 'tool_calls' in m %}{%- set c = m.tool_calls[0].function %}",
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n{\"name\": \"' + c.name + '\", ' + '\"parameters\": ' + (c.arguments | tojson) + '}<|eot_id|>' }}",
    "{%- elif m.role == 'tool' %}{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' + m.content + '<|eot_id|>' }}",
    "{%- else %}{{- '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' + m.content + '<|eot_id|>' }}{%- endif %}",
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
);

/// A Mistral-style template written for tests, shaped like Mistral 7B Instruct v0.3's: the tools
/// before the last user turn, calls after `[TOOL_CALLS]` as a JSON list with 9-character ids
/// (anything else raises, as the real one does), results in `[TOOL_RESULTS]`.
pub const MISTRAL_TEMPLATE: &str = concat!(
    "{{- bos_token }}{%- set user_messages = messages | selectattr('role', 'equalto', 'user') | list %}",
    "{%- for m in messages %}{%- if m.role == 'user' %}",
    "{%- if tools is defined and tools is not none and m == user_messages[-1] %}{{- '[AVAILABLE_TOOLS] ' + (tools | tojson) + '[/AVAILABLE_TOOLS]' }}{%- endif %}",
    "{{- '[INST] ' + m.content + '[/INST]' }}",
    "{%- elif m.tool_calls is defined and m.tool_calls %}{{- '[TOOL_CALLS] [' }}{%- for c in m.tool_calls %}",
    "{%- if c.id is not defined or c.id | length != 9 %}{{- raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}{%- endif %}",
    "{%- set out = c.function | tojson %}{{- out[:-1] + ', \"id\": \"' + c.id + '\"}' }}{%- if not loop.last %}{{- ', ' }}{%- endif %}",
    "{%- endfor %}{{- ']' + eos_token }}",
    "{%- elif m.role == 'assistant' %}{{- ' ' + m.content + eos_token }}",
    "{%- elif m.role == 'tool' %}{%- if m.tool_call_id is not defined or m.tool_call_id | length != 9 %}{{- raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}{%- endif %}",
    "{{- '[TOOL_RESULTS] {\"content\": ' + (m.content | tojson) + ', \"call_id\": \"' + m.tool_call_id + '\"}[/TOOL_RESULTS]' }}",
    "{%- endif %}{%- endfor %}"
);

/// A template in Mistral's later tool format (v11 tokenizers: Mistral Small 3.2, Magistral),
/// written for tests: each call is `[TOOL_CALLS]` name `[ARGS]` arguments.
pub const MISTRAL_ARGS_TEMPLATE: &str = concat!(
    "{{- bos_token }}{%- if tools is defined and tools %}{{- '[AVAILABLE_TOOLS]' + (tools | tojson) + '[/AVAILABLE_TOOLS]' }}{%- endif %}",
    "{%- for m in messages %}{%- if m.role == 'user' %}{{- '[INST]' + m.content + '[/INST]' }}",
    "{%- elif m.tool_calls is defined and m.tool_calls %}{%- for c in m.tool_calls %}{{- '[TOOL_CALLS]' + c.function.name + '[ARGS]' + (c.function.arguments | tojson) }}{%- endfor %}{{- eos_token }}",
    "{%- elif m.role == 'assistant' %}{{- m.content + eos_token }}",
    "{%- elif m.role == 'tool' %}{{- '[TOOL_RESULTS]' + m.content + '[/TOOL_RESULTS]' }}",
    "{%- endif %}{%- endfor %}"
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

/// The tiny tokenizer's byte-level symbols, in id order (ChatML's two special tokens follow).
fn alphabet() -> Vec<char> {
    let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    alphabet
}

const SPECIALS: [&str; 2] = ["<|im_start|>", "<|im_end|>"];

/// The tiny Mistral-style tokenizer's control tokens (after the byte-level symbols).
const MISTRAL_SPECIALS: [&str; 10] = ["<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[ARGS]"];

/// A tokenizer flavour: its control tokens, and which are BOS and EOS.
struct Vocab {
    specials: &'static [&'static str],
    bos: Option<&'static str>,
    eos: &'static str,
}

const CHATML_VOCAB: Vocab = Vocab { specials: &SPECIALS, bos: None, eos: "<|im_end|>" };
const MISTRAL_VOCAB: Vocab = Vocab { specials: &MISTRAL_SPECIALS, bos: Some("<s>"), eos: "</s>" };

fn write_tokenizer(dir: &Path, template: serde_json::Value, v: &Vocab) -> usize {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::AddedToken;
    let alphabet = alphabet();
    let vocab: tokenizers::models::bpe::Vocab = alphabet.iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, vec![]).build().unwrap();
    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tk.with_decoder(Some(ByteLevel::default()));
    let specials: Vec<AddedToken> = v.specials.iter().map(|t| AddedToken::from(*t, true)).collect();
    tk.add_special_tokens(&specials);
    tk.save(dir.join("tokenizer.json"), false).unwrap();
    let cfg = serde_json::json!({"chat_template": template, "eos_token": v.eos, "bos_token": v.bos, "add_bos_token": false});
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
    alphabet.len() + v.specials.len()
}

/// Writes a tiny random llama model (2 layers, hidden size [`TINY_HIDDEN`], a byte-level
/// tokenizer with ChatML's two special tokens) as a Hugging Face directory: safetensors,
/// config.json, tokenizer.json and tokenizer_config.json with `template` as its `chat_template`
/// (a string, or a list of `{"name", "template"}`) and `context` positions. Panics if it cannot
/// write them.
pub fn write_tiny_llama(dir: &Path, seed: u64, template: impl Into<serde_json::Value>, context: usize) {
    write_tiny(dir, seed, template.into(), context, false, &CHATML_VOCAB)
}

/// [`write_tiny_llama`]'s model as a Qwen 2 checkpoint: `model_type` qwen2, with q/k/v biases.
pub fn write_tiny_qwen2(dir: &Path, seed: u64, template: impl Into<serde_json::Value>, context: usize) {
    write_tiny(dir, seed, template.into(), context, true, &CHATML_VOCAB)
}

/// [`write_tiny_llama`]'s model with a Mistral-style vocabulary: `<s>`, `</s>` (BOS and EOS),
/// `[INST]`, `[/INST]`, `[TOOL_CALLS]`, `[AVAILABLE_TOOLS]`, `[/AVAILABLE_TOOLS]`,
/// `[TOOL_RESULTS]`, `[/TOOL_RESULTS]` and `[ARGS]`, all control tokens as in Mistral's.
pub fn write_tiny_mistral(dir: &Path, seed: u64, template: impl Into<serde_json::Value>, context: usize) {
    write_tiny(dir, seed, template.into(), context, false, &MISTRAL_VOCAB)
}

fn write_tiny(dir: &Path, seed: u64, template: serde_json::Value, context: usize, qwen2: bool, v: &Vocab) {
    let vocab = write_tokenizer(dir, template, v);
    let cfg = serde_json::json!({
        "model_type": if qwen2 { "qwen2" } else { "llama" }, "tie_word_embeddings": false, "hidden_size": H, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "num_hidden_layers": LAYERS, "intermediate_size": FFN, "vocab_size": vocab,
        "max_position_embeddings": context, "rms_norm_eps": 1e-5, "rope_theta": 10000.0
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tiny_tensors(seed, vocab, qwen2).into_iter().map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let views: HashMap<String, safetensors::tensor::TensorView> =
        data.iter().map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(&views, &None, &dir.join("model.safetensors")).unwrap();
}

/// The tiny model's tensors: Hugging Face names, shapes (rows first) and values, drawn from
/// `seed` in this order.
fn tiny_tensors(seed: u64, vocab: usize, qwen2: bool) -> Vec<(String, Vec<usize>, Vec<f32>)> {
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
    shapes
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let vals: Vec<f32> =
                if shape.len() == 1 && !name.ends_with(".bias") { (0..n).map(|_| 1.0 + rng.gen_range(-0.1..0.1)).collect() } else { (0..n).map(|_| rng.gen_range(-0.5..0.5)).collect() };
            (name, shape, vals)
        })
        .collect()
}

/// [`write_tiny_qwen2`]'s model and tokenizer as one GGUF file laid out as llama.cpp's converter
/// writes Qwen 2: architecture `qwen2`, `blk.N.attn_q.bias`, q/k rows in Hugging Face's order,
/// a `gpt2` vocabulary with the `qwen2` pre-tokenizer, f32 tensors.
pub fn write_tiny_qwen2_gguf(path: &Path, seed: u64, template: &str, context: usize) {
    use crate::gguf::Value;
    let tokens: Vec<String> = alphabet().iter().map(|c| c.to_string()).chain(SPECIALS.map(String::from)).collect();
    let n = |v: usize| Value::U64(v as u64);
    let kvs = [
        ("general.architecture", Value::Str("qwen2".into())),
        ("qwen2.block_count", n(LAYERS)),
        ("qwen2.context_length", n(context)),
        ("qwen2.embedding_length", n(H)),
        ("qwen2.feed_forward_length", n(FFN)),
        ("qwen2.attention.head_count", n(HEADS)),
        ("qwen2.attention.head_count_kv", n(KV_HEADS)),
        ("qwen2.rope.freq_base", Value::F64(10000.0)),
        ("qwen2.attention.layer_norm_rms_epsilon", Value::F64(1e-5)),
        ("tokenizer.ggml.model", Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Value::Str("qwen2".into())),
        ("tokenizer.ggml.token_type", Value::Array(tokens.iter().map(|t| Value::I64(if SPECIALS.contains(&t.as_str()) { 3 } else { 1 })).collect())),
        ("tokenizer.ggml.tokens", Value::Array(tokens.iter().cloned().map(Value::Str).collect())),
        ("tokenizer.ggml.merges", Value::Array(vec![])),
        ("tokenizer.ggml.eos_token_id", n(tokens.len() - 1)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ("tokenizer.chat_template", Value::Str(template.into())),
    ];
    let gguf_name = |hf: &str| -> String {
        let fixed = [("model.embed_tokens.weight", "token_embd.weight"), ("model.norm.weight", "output_norm.weight"), ("lm_head.weight", "output.weight")];
        if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
            return g.to_string();
        }
        let rest = hf.strip_prefix("model.layers.").expect("a layer tensor");
        let (l, tail) = rest.split_once('.').expect("layer.name");
        let parts = [
            ("input_layernorm.weight", "attn_norm.weight"),
            ("post_attention_layernorm.weight", "ffn_norm.weight"),
            ("self_attn.q_proj.weight", "attn_q.weight"),
            ("self_attn.k_proj.weight", "attn_k.weight"),
            ("self_attn.v_proj.weight", "attn_v.weight"),
            ("self_attn.o_proj.weight", "attn_output.weight"),
            ("self_attn.q_proj.bias", "attn_q.bias"),
            ("self_attn.k_proj.bias", "attn_k.bias"),
            ("self_attn.v_proj.bias", "attn_v.bias"),
            ("mlp.gate_proj.weight", "ffn_gate.weight"),
            ("mlp.up_proj.weight", "ffn_up.weight"),
            ("mlp.down_proj.weight", "ffn_down.weight"),
        ];
        let g = parts.iter().find(|(h, _)| *h == tail).expect("a known tensor").1;
        format!("blk.{l}.{g}")
    };
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = tiny_tensors(seed, tokens.len(), true).into_iter().map(|(name, shape, v)| (gguf_name(&name), shape, v)).collect();
    write_gguf(path, &kvs, &tensors);
}

/// Writes a GGUF file (version 3, alignment 32): `kvs`, then f32 `tensors` given with their
/// shapes outermost first (rows, then columns), as GGUF's dimensions reversed.
pub fn write_gguf(path: &Path, kvs: &[(&str, crate::gguf::Value)], tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    use crate::gguf::Value;
    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    // GGUF value types: 7 bool, 8 string, 9 array, 10 u64, 11 i64, 12 f64.
    fn tag(v: &Value) -> u32 {
        match v {
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }
    fn put(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::Bool(b) => out.push(u8::from(*b)),
            Value::Str(s) => put_str(out, s),
            Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::Array(items) => {
                out.extend_from_slice(&items.first().map_or(8, tag).to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                items.iter().for_each(|i| put(out, i));
            }
        }
    }
    const ALIGN: usize = 32;
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        put_str(&mut out, k);
        out.extend_from_slice(&tag(v).to_le_bytes());
        put(&mut out, v);
    }
    let mut offset = 0usize;
    for (name, shape, vals) in tensors {
        put_str(&mut out, name);
        out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            out.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        out.extend_from_slice(&0u32.to_le_bytes()); // F32
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += (vals.len() * 4).div_ceil(ALIGN) * ALIGN;
    }
    out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
    for (_, _, vals) in tensors {
        out.extend(vals.iter().flat_map(|v| v.to_le_bytes()));
        out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
    }
    std::fs::write(path, out).unwrap();
}
