//! Builds a runnable model (weights, tokenizer, chat template) from a GGUF file or from a
//! Hugging Face directory (safetensors + config.json + tokenizer.json [+ tokenizer_config.json]).

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::{Arch, Layer, Model, ModelConfig};
use crate::ops::RopeStyle;
use crate::quant::GgmlType;
use crate::template::ChatTemplate;
use crate::tensor::{Storage, Weight};
use crate::tokenizer::Tokenizer;
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything needed to run a model.
pub struct LoadedParts {
    /// Weights and hyperparameters.
    pub model: Model,
    /// Tokenizer.
    pub tokenizer: Tokenizer,
    /// Chat template.
    pub template: ChatTemplate,
}

/// Reads weights by name and checks their shapes.
pub(crate) trait WeightSource {
    fn weight(&self, name: &str, rows: usize, cols: usize) -> Result<Weight>;
    fn has(&self, name: &str) -> bool;
    /// Rows (output features) of a matrix, to read widths the metadata does not state.
    fn rows_of(&self, name: &str) -> Result<usize>;
    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        Ok(self.weight(name, 1, n)?.to_f32_vec())
    }
}

fn shape_err(path: &Path, name: &str, want: (usize, usize), got: &[usize]) -> Error {
    Error::Gguf { path: path.to_path_buf(), reason: format!("tensor `{name}` has shape {got:?}, expected {} x {}", want.0, want.1) }
}

impl WeightSource for GgufFile {
    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    fn rows_of(&self, name: &str) -> Result<usize> {
        let info = self.tensors.get(name).ok_or_else(|| Error::Gguf { path: self.path.clone(), reason: format!("missing tensor `{name}`") })?;
        Ok(info.dims.get(1).copied().unwrap_or(1))
    }
    fn weight(&self, name: &str, rows: usize, cols: usize) -> Result<Weight> {
        let info = self.tensors.get(name).ok_or_else(|| Error::Gguf { path: self.path.clone(), reason: format!("missing tensor `{name}`") })?;
        let (c, r) = match info.dims[..] {
            [c] => (c, 1),
            [c, r] => (c, r),
            _ => return Err(shape_err(&self.path, name, (rows, cols), &info.dims)),
        };
        if c != cols || r != rows {
            return Err(shape_err(&self.path, name, (rows, cols), &info.dims));
        }
        Ok(Weight::new(info.dtype, rows, cols, Storage::Mapped(self.mmap.clone()), info.offset))
    }
}

fn u(g: &GgufFile, key: &str) -> Result<usize> {
    Ok(g.get_u64(key)? as usize)
}

/// Loads a GGUF model.
pub fn load_gguf(path: &Path) -> Result<LoadedParts> {
    let g = GgufFile::open(path)?;
    let arch_name = g.get_str("general.architecture")?.to_string();
    let arch = match arch_name.as_str() {
        // Qwen 2 is llama with q/k/v biases (read where present) and rotate-half rope.
        "llama" | "qwen2" => Arch::Llama,
        "gemma3" => Arch::Gemma3,
        _ => return Err(Error::UnsupportedArch { arch: arch_name }),
    };
    let a = arch_name.as_str();
    let hidden = u(&g, &format!("{a}.embedding_length"))?;
    let n_heads = u(&g, &format!("{a}.attention.head_count"))?;
    let n_kv_heads = g.opt(&format!("{a}.attention.head_count_kv")).and_then(|v| v.as_u64()).map_or(n_heads, |v| v as usize);
    let head_dim = g.opt(&format!("{a}.attention.key_length")).and_then(|v| v.as_u64()).map_or(hidden / n_heads.max(1), |v| v as usize);
    refuse_unapplied_biases(a, g.tensors.keys().map(String::as_str).filter(|n| n.starts_with("blk.")), &["attn_q.bias", "attn_k.bias", "attn_v.bias"])
        .map_err(|reason| Error::Gguf { path: path.to_path_buf(), reason })?;
    let tokenizer = Tokenizer::from_gguf(&g)?;
    let embed_info = g.tensors.get("token_embd.weight").ok_or_else(|| Error::Gguf { path: path.to_path_buf(), reason: "missing tensor `token_embd.weight`".into() })?;
    let vocab = embed_info.dims.get(1).copied().unwrap_or(0);
    if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 || vocab == 0 {
        return Err(Error::Gguf { path: path.to_path_buf(), reason: format!("inconsistent heads ({n_heads} / {n_kv_heads}) or vocabulary ({vocab})") });
    }
    let gemma = arch == Arch::Gemma3;
    let config = ModelConfig {
        arch,
        n_layers: u(&g, &format!("{a}.block_count"))?,
        hidden,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab,
        context_length: u(&g, &format!("{a}.context_length"))?,
        rms_eps: g.get_f64(&format!("{a}.attention.layer_norm_rms_epsilon"))? as f32,
        rope_base: g.opt(&format!("{a}.rope.freq_base")).and_then(|v| v.as_f64()).unwrap_or(10_000.0) as f32,
        rope_base_local: 10_000.0,
        // llama.cpp's converter permutes llama's q/k rows for interleaved rope; Qwen 2 and
        // Gemma 3 keep Hugging Face's rotate-half order.
        rope_style: if gemma || a == "qwen2" { RopeStyle::Neox } else { RopeStyle::Interleaved },
        sliding_window: g.opt(&format!("{a}.attention.sliding_window")).and_then(|v| v.as_u64()).map(|v| v as usize),
        swa_pattern: if gemma { 6 } else { 0 },
        attn_scale: 1.0 / (head_dim as f32).sqrt(),
        embed_scale: if gemma { (hidden as f32).sqrt() } else { 1.0 },
    };
    let model = build_model(&g, config, |l, n| format!("blk.{l}.{n}.weight"), &GGUF_NAMES, "token_embd.weight", "output_norm.weight", "output.weight", false)?;
    // llama.cpp's converter writes a tokenizer's named templates as `.{name}` keys.
    let template_src = g.opt("tokenizer.chat_template").and_then(|v| v.as_str());
    let tool_use = g.opt("tokenizer.chat_template.tool_use").and_then(|v| v.as_str());
    let template = template_for(&tokenizer, template_src, tool_use)?;
    Ok(LoadedParts { model, tokenizer, template })
}

/// The model's chat template (or a fallback) and its `tool_use` template if it has a separate
/// one, with its BOS/EOS texts from the tokenizer.
fn template_for(tokenizer: &Tokenizer, source: Option<&str>, tool_use: Option<&str>) -> Result<ChatTemplate> {
    let bos = tokenizer.bos.map(|b| tokenizer.piece(b).to_string()).unwrap_or_default();
    let eos = tokenizer.eog.first().map(|&e| tokenizer.piece(e).to_string()).unwrap_or_default();
    let has_chatml = tokenizer.token_id("<|im_start|>").is_some();
    ChatTemplate::new(source, &bos, &eos, has_chatml)?.with_tool_use(tool_use)
}

/// A Hugging Face directory's chat templates, (default, tool_use): `chat_template` in
/// tokenizer_config.json, a string or a list of `{"name", "template"}` (Hermes 2 Pro and 3 name
/// a `default` and a `tool_use` one), else a `chat_template.jinja` file beside it.
fn hf_templates(dir: &Path, tk_cfg: Option<&serde_json::Value>) -> Result<(Option<String>, Option<String>)> {
    let named = |list: &[serde_json::Value], name: &str| list.iter().find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name)).and_then(|t| t.get("template")?.as_str()).map(str::to_string);
    match tk_cfg.and_then(|c| c.get("chat_template")) {
        Some(serde_json::Value::String(s)) => Ok((Some(s.clone()), None)),
        Some(serde_json::Value::Array(list)) => Ok((named(list, "default"), named(list, "tool_use"))),
        _ => {
            let file = dir.join("chat_template.jinja");
            let src = if file.exists() { Some(std::fs::read_to_string(&file).map_err(|e| Error::Io { path: file.clone(), source: e })?) } else { None };
            Ok((src, None))
        }
    }
}

/// Refuses a checkpoint with bias tensors among `names` other than the q/k/v projections' (the
/// `applied` name endings): the model code would ignore them and answer wrongly, so they are
/// named instead.
fn refuse_unapplied_biases<'a>(arch: &str, names: impl Iterator<Item = &'a str>, applied: &[&str]) -> std::result::Result<(), String> {
    let mut biases: Vec<&str> = names.filter(|n| n.ends_with(".bias") && !applied.iter().any(|b| n.ends_with(b))).collect();
    if biases.is_empty() {
        return Ok(());
    }
    biases.sort();
    let more = if biases.len() > 3 { format!(" and {} more", biases.len() - 3) } else { String::new() };
    Err(format!("has bias tensors ({}{more}), which this engine does not apply; a `{arch}` model with them cannot be served correctly", biases[..biases.len().min(3)].join(", ")))
}

/// The q/k/v projections' biases, next to their weights (`….bias` for `….weight`): all three
/// or none.
fn qkv_bias(src: &dyn WeightSource, weights: [String; 3], lens: [usize; 3]) -> Result<Option<[Vec<f32>; 3]>> {
    let names = weights.map(|w| format!("{}.bias", w.strip_suffix(".weight").unwrap_or(&w)));
    match names.iter().filter(|n| src.has(n)).count() {
        0 => Ok(None),
        3 => Ok(Some([src.vector(&names[0], lens[0])?, src.vector(&names[1], lens[1])?, src.vector(&names[2], lens[2])?])),
        _ => Err(Error::Weights(format!("some of the q/k/v biases ({}) without the others", names.iter().filter(|n| src.has(n)).cloned().collect::<Vec<_>>().join(", ")))),
    }
}

/// Per-layer tensor names: attn_norm, q, k, v, o, q_norm, k_norm, post_attn_norm, ffn_norm,
/// gate, up, down, post_ffn_norm.
struct LayerNames {
    n: [&'static str; 13],
}

const GGUF_NAMES: LayerNames =
    LayerNames { n: ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm", "attn_k_norm", "post_attention_norm", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down", "post_ffw_norm"] };

const HF_NAMES: LayerNames = LayerNames {
    n: [
        "input_layernorm",
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "self_attn.q_norm",
        "self_attn.k_norm",
        "post_attention_layernorm",
        "post_attention_layernorm",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
        "post_feedforward_layernorm",
    ],
};

#[allow(clippy::too_many_arguments)]
fn build_model(
    src: &dyn WeightSource,
    config: ModelConfig,
    name: impl Fn(usize, &str) -> String,
    names: &LayerNames,
    embed: &str,
    out_norm: &str,
    output: &str,
    // Hugging Face Gemma stores norm weights as w with y = x * (1 + w); GGUF stores 1 + w.
    norm_plus_one: bool,
) -> Result<Model> {
    let c = &config;
    let (h, qd, kvd) = (c.hidden, c.q_dim(), c.kv_dim());
    let norm = |n: &str, len: usize| -> Result<Vec<f32>> {
        let mut v = src.vector(n, len)?;
        if norm_plus_one {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        Ok(v)
    };
    // Matrices only the matrix products read go into the CPU kernels' layout.
    let mat = |n: &str, rows: usize, cols: usize| -> Result<Weight> { Ok(src.weight(n, rows, cols)?.packed_for_cpu()) };
    let gemma = c.arch == Arch::Gemma3;
    // Gemma 3 has both a pre-MLP and a post-attention norm; Hugging Face llama names the
    // pre-MLP norm `post_attention_layernorm`.
    let ffn_norm_name = if gemma && names.n[0] == "input_layernorm" { "pre_feedforward_layernorm" } else { names.n[8] };
    let mut layers = Vec::with_capacity(c.n_layers);
    for l in 0..c.n_layers {
        let nm = |i: usize| name(l, names.n[i]);
        // The MLP width is read from the gate's shape.
        let ffn = src.rows_of(&nm(9))?;
        layers.push(Layer {
            attn_norm: norm(&nm(0), h)?,
            wq: mat(&nm(1), qd, h)?,
            wk: mat(&nm(2), kvd, h)?,
            wv: mat(&nm(3), kvd, h)?,
            wo: mat(&nm(4), h, qd)?,
            q_norm: if gemma { Some(norm(&nm(5), c.head_dim)?) } else { None },
            k_norm: if gemma { Some(norm(&nm(6), c.head_dim)?) } else { None },
            post_attn_norm: if gemma { Some(norm(&nm(7), h)?) } else { None },
            ffn_norm: norm(&name(l, ffn_norm_name), h)?,
            gate: mat(&nm(9), ffn, h)?,
            up: mat(&nm(10), ffn, h)?,
            down: mat(&nm(11), h, ffn)?,
            post_ffn_norm: if gemma { Some(norm(&nm(12), h)?) } else { None },
            qkv_bias: qkv_bias(src, [nm(1), nm(2), nm(3)], [qd, kvd, kvd])?,
        });
    }
    // The embedding is packed too: a tied head is a matrix product over the same bytes, and a
    // lookup unpacks one row.
    let embed_w = mat(embed, c.vocab, h)?;
    let output_w = if src.has(output) { mat(output, c.vocab, h)? } else { embed_w.clone() };
    Ok(Model { embed: embed_w, layers, out_norm: norm(out_norm, h)?, output: output_w, config })
}

struct StTensor {
    file: usize,
    ty: GgmlType,
    shape: Vec<usize>,
    offset: usize,
}

/// Safetensors shards of one model directory, memory-mapped.
pub(crate) struct SafetensorsDir {
    dir: PathBuf,
    maps: Vec<Arc<Mmap>>,
    tensors: HashMap<String, StTensor>,
    /// Tensors in a dtype weights never use (BERT's int64 `position_ids` buffer): an error only
    /// if a weight of that name is asked for.
    other: HashMap<String, String>,
}

impl SafetensorsDir {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::ModelDir { path: dir.to_path_buf(), reason: "no .safetensors files".into() });
        }
        let mut maps = Vec::new();
        let mut tensors = HashMap::new();
        let mut other = HashMap::new();
        for (fi, f) in files.iter().enumerate() {
            let file = std::fs::File::open(f).map_err(|e| Error::Io { path: f.clone(), source: e })?;
            // SAFETY: read-only mapping of a file we do not modify.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::Io { path: f.clone(), source: e })?;
            let (header_len, meta) = safetensors::SafeTensors::read_metadata(&mmap).map_err(|e| Error::ModelDir { path: f.clone(), reason: e.to_string() })?;
            let base = 8 + header_len;
            for (name, info) in meta.tensors() {
                let ty = match info.dtype {
                    safetensors::Dtype::F32 => GgmlType::F32,
                    safetensors::Dtype::F16 => GgmlType::F16,
                    safetensors::Dtype::BF16 => GgmlType::BF16,
                    dtype => {
                        other.insert(name.clone(), format!("{dtype:?}"));
                        continue;
                    }
                };
                tensors.insert(name.clone(), StTensor { file: fi, ty, shape: info.shape.clone(), offset: base + info.data_offsets.0 });
            }
            maps.push(Arc::new(mmap));
        }
        Ok(SafetensorsDir { dir: dir.to_path_buf(), maps, tensors, other })
    }
}

impl WeightSource for SafetensorsDir {
    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    fn rows_of(&self, name: &str) -> Result<usize> {
        let t = self.tensors.get(name).ok_or_else(|| Error::ModelDir { path: self.dir.clone(), reason: format!("missing tensor `{name}`") })?;
        Ok(t.shape[0])
    }
    fn weight(&self, name: &str, rows: usize, cols: usize) -> Result<Weight> {
        if let Some(dtype) = self.other.get(name) {
            return Err(Error::ModelDir { path: self.dir.clone(), reason: format!("tensor `{name}` has unsupported dtype {dtype}") });
        }
        let t = self.tensors.get(name).ok_or_else(|| Error::ModelDir { path: self.dir.clone(), reason: format!("missing tensor `{name}`") })?;
        let ok = match t.shape[..] {
            [n] => rows == 1 && n == cols,
            [r, c] => r == rows && c == cols,
            _ => false,
        };
        if !ok {
            return Err(Error::ModelDir { path: self.dir.clone(), reason: format!("tensor `{name}` has shape {:?}, expected {rows} x {cols}", t.shape) });
        }
        Ok(Weight::new(t.ty, rows, cols, Storage::Mapped(self.maps[t.file].clone()), t.offset))
    }
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    serde_json::from_str(&s).map_err(|e| Error::ModelDir { path: path.to_path_buf(), reason: format!("invalid JSON: {e}") })
}

/// Loads a Hugging Face model directory.
pub fn load_hf_dir(dir: &Path) -> Result<LoadedParts> {
    let cfg_path = dir.join("config.json");
    let cfg = read_json(&cfg_path)?;
    let get = |k: &str| -> Result<usize> {
        cfg.get(k).and_then(|v| v.as_u64()).map(|v| v as usize).ok_or_else(|| Error::ModelDir { path: cfg_path.clone(), reason: format!("missing or non-integer `{k}`") })
    };
    let model_type = cfg.get("model_type").and_then(|v| v.as_str()).unwrap_or("").to_string();
    let arch = match model_type.as_str() {
        "llama" | "mistral" | "qwen2" => Arch::Llama,
        "gemma3_text" => Arch::Gemma3,
        _ => return Err(Error::UnsupportedArch { arch: model_type }),
    };
    let hidden = get("hidden_size")?;
    let n_heads = get("num_attention_heads")?;
    let n_kv_heads = get("num_key_value_heads").unwrap_or(n_heads);
    let head_dim = get("head_dim").unwrap_or(hidden / n_heads.max(1));
    let f = |k: &str, d: f64| cfg.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
    let gemma = arch == Arch::Gemma3;
    let config = ModelConfig {
        arch,
        n_layers: get("num_hidden_layers")?,
        hidden,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab: get("vocab_size")?,
        context_length: get("max_position_embeddings").unwrap_or(4096),
        rms_eps: f("rms_norm_eps", 1e-6) as f32,
        rope_base: f("rope_theta", 10_000.0) as f32,
        rope_base_local: f("rope_local_base_freq", 10_000.0) as f32,
        rope_style: RopeStyle::Neox,
        sliding_window: cfg.get("sliding_window").and_then(|v| v.as_u64()).map(|v| v as usize).filter(|_| gemma),
        swa_pattern: if gemma { get("sliding_window_pattern").unwrap_or(6) } else { 0 },
        attn_scale: 1.0 / (f("query_pre_attn_scalar", head_dim as f64) as f32).sqrt(),
        embed_scale: if gemma { (hidden as f32).sqrt() } else { 1.0 },
    };
    let st = SafetensorsDir::open(dir)?;
    let names = st.tensors.keys().chain(st.other.keys()).map(String::as_str);
    refuse_unapplied_biases(&model_type, names.filter(|n| n.starts_with("model.layers.")), &["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"])
        .map_err(|reason| Error::ModelDir { path: dir.to_path_buf(), reason })?;
    let model = build_model(&st, config, |l, n| format!("model.layers.{l}.{n}.weight"), &HF_NAMES, "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", gemma)?;
    let tk_cfg_path = dir.join("tokenizer_config.json");
    let tk_cfg = if tk_cfg_path.exists() { Some(read_json(&tk_cfg_path)?) } else { None };
    let tokenizer = Tokenizer::from_hf_file(&dir.join("tokenizer.json"), tk_cfg.as_ref())?;
    let (template_src, tool_use) = hf_templates(dir, tk_cfg.as_ref())?;
    let template = template_for(&tokenizer, template_src.as_deref(), tool_use.as_deref())?;
    Ok(LoadedParts { model, tokenizer, template })
}

/// Loads whatever `path` holds: a `.gguf` file or a model directory.
pub fn load(path: &Path) -> Result<LoadedParts> {
    if path.is_dir() {
        load_hf_dir(path)
    } else {
        load_gguf(path)
    }
}

/// The architecture name a model declares (`general.architecture` of a GGUF file, or
/// `model_type` of a directory's config.json), read without loading weights.
pub fn arch_name(path: &Path) -> Result<String> {
    if path.is_dir() {
        let cfg = read_json(&path.join("config.json"))?;
        Ok(cfg.get("model_type").and_then(|v| v.as_str()).unwrap_or("").to_string())
    } else {
        Ok(GgufFile::open(path)?.get_str("general.architecture")?.to_string())
    }
}
