//! Sentence embeddings from a BERT encoder (all-MiniLM-L6-v2 and its kind): a Hugging Face
//! directory with `config.json` (`model_type: bert`), safetensors weights, `tokenizer.json` and
//! sentence-transformers' `modules.json` / `1_Pooling/config.json`, which say how token states
//! become one vector (mean or CLS pooling, then L2 normalisation when a Normalize module follows).
//!
//! Every input is encoded at its own length (no padding): the linear layers run over all tokens
//! of a batch at once, attention per sequence and head. Weights stay in the file's precision
//! (f32 for MiniLM: 22M parameters, 87 MB) so the vectors match the PyTorch reference to ~1e-6.

use crate::error::{Error, Result};
use crate::loader::{read_json, SafetensorsDir, WeightSource};
use crate::ops::{axpy, dot, matmul, softmax};
use crate::pool;
use crate::tensor::Weight;
use std::path::Path;
use std::sync::Mutex;

/// How token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the sequence's tokens (sentence-transformers' `pooling_mode_mean_tokens`).
    Mean,
    /// The first token's state (`pooling_mode_cls_token`).
    Cls,
}

/// A linear layer with bias.
struct Linear {
    w: Weight,
    b: Vec<f32>,
}

impl Linear {
    fn load(st: &SafetensorsDir, name: &str, rows: usize, cols: usize) -> Result<Self> {
        Ok(Linear { w: st.weight(&format!("{name}.weight"), rows, cols)?, b: st.vector(&format!("{name}.bias"), rows)? })
    }

    /// `x` (n x cols) -> n x rows.
    fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n * self.w.rows];
        matmul(&self.w, x, n, &mut out);
        for row in out.chunks_exact_mut(self.w.rows) {
            row.iter_mut().zip(&self.b).for_each(|(o, b)| *o += b);
        }
        out
    }
}

struct LayerNorm {
    w: Vec<f32>,
    b: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn load(st: &SafetensorsDir, name: &str, n: usize, eps: f32) -> Result<Self> {
        Ok(LayerNorm { w: st.vector(&format!("{name}.weight"), n)?, b: st.vector(&format!("{name}.bias"), n)?, eps })
    }

    /// Normalises each row of `x` in place.
    fn forward(&self, x: &mut [f32]) {
        let n = self.w.len();
        for row in x.chunks_exact_mut(n) {
            let mean = row.iter().sum::<f32>() / n as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for ((v, w), b) in row.iter_mut().zip(&self.w).zip(&self.b) {
                *v = (*v - mean) * inv * w + b;
            }
        }
    }
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln_attn: LayerNorm,
    up: Linear,
    down: Linear,
    ln_out: LayerNorm,
}

/// BERT's `gelu`: the exact, erf-based GELU.
#[inline]
fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// A loaded sentence encoder.
pub struct Encoder {
    tokenizer: tokenizers::Tokenizer,
    /// Token ids the tokenizer wraps every input in (`[CLS]`, `[SEP]`): before and after.
    wrap: (Vec<u32>, Vec<u32>),
    word: Weight,
    pos: Weight,
    token_type: Vec<f32>,
    ln_embed: LayerNorm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    /// Longest input, in tokens (the position table's size).
    pub max_tokens: usize,
    /// Token-state pooling.
    pub pooling: Pooling,
    /// Whether vectors are scaled to unit length.
    pub normalize: bool,
}

impl Encoder {
    /// Loads an encoder directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let cfg = read_json(&cfg_path)?;
        let model_type = cfg.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
        if model_type != "bert" {
            return Err(Error::UnsupportedArch { arch: format!("{model_type} (as an embedding model; supported: bert)") });
        }
        let get = |k: &str| -> Result<usize> {
            cfg.get(k).and_then(|v| v.as_u64()).map(|v| v as usize).ok_or_else(|| Error::ModelDir { path: cfg_path.clone(), reason: format!("missing or non-integer `{k}`") })
        };
        let act = cfg.get("hidden_act").and_then(|v| v.as_str()).unwrap_or("gelu");
        if act != "gelu" {
            return Err(Error::ModelDir { path: cfg_path.clone(), reason: format!("hidden_act `{act}` is not supported (supported: gelu)") });
        }
        let (hidden, heads, ffn, max_tokens, vocab) = (get("hidden_size")?, get("num_attention_heads")?, get("intermediate_size")?, get("max_position_embeddings")?, get("vocab_size")?);
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(Error::ModelDir { path: cfg_path, reason: format!("hidden_size {hidden} is not a multiple of num_attention_heads {heads}") });
        }
        let eps = cfg.get("layer_norm_eps").and_then(|v| v.as_f64()).unwrap_or(1e-12) as f32;
        let st = SafetensorsDir::open(dir)?;
        // Checkpoints saved from BertForX carry a `bert.` prefix.
        let p = if st.has("bert.embeddings.word_embeddings.weight") { "bert." } else { "" };
        let types = st.rows_of(&format!("{p}embeddings.token_type_embeddings.weight"))?;
        let token_type = st.weight(&format!("{p}embeddings.token_type_embeddings.weight"), types, hidden)?.to_f32_vec()[..hidden].to_vec();
        let mut layers = Vec::new();
        for l in 0..get("num_hidden_layers")? {
            let n = |s: &str| format!("{p}encoder.layer.{l}.{s}");
            layers.push(Layer {
                q: Linear::load(&st, &n("attention.self.query"), hidden, hidden)?,
                k: Linear::load(&st, &n("attention.self.key"), hidden, hidden)?,
                v: Linear::load(&st, &n("attention.self.value"), hidden, hidden)?,
                o: Linear::load(&st, &n("attention.output.dense"), hidden, hidden)?,
                ln_attn: LayerNorm::load(&st, &n("attention.output.LayerNorm"), hidden, eps)?,
                up: Linear::load(&st, &n("intermediate.dense"), ffn, hidden)?,
                down: Linear::load(&st, &n("output.dense"), hidden, ffn)?,
                ln_out: LayerNorm::load(&st, &n("output.LayerNorm"), hidden, eps)?,
            });
        }
        let (pooling, normalize) = sentence_transformers_head(dir)?;
        let tk_path = dir.join("tokenizer.json");
        let mut tokenizer = tokenizers::Tokenizer::from_file(&tk_path).map_err(|e| Error::Tokenizer(format!("{}: {e}", tk_path.display())))?;
        // tokenizer.json files often carry a fixed truncation and padding (MiniLM's: 128 tokens);
        // inputs are encoded at their own length and a too-long one is refused, not cut.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let empty = tokenizer.encode("", true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let ids = empty.get_ids();
        let wrap = (ids[..ids.len().min(1)].to_vec(), ids[ids.len().min(1)..].to_vec());
        Ok(Encoder {
            tokenizer,
            wrap,
            word: st.weight(&format!("{p}embeddings.word_embeddings.weight"), vocab, hidden)?,
            pos: st.weight(&format!("{p}embeddings.position_embeddings.weight"), max_tokens, hidden)?,
            token_type,
            ln_embed: LayerNorm::load(&st, &format!("{p}embeddings.LayerNorm"), hidden, eps)?,
            layers,
            hidden,
            heads,
            max_tokens,
            pooling,
            normalize,
        })
    }

    /// Width of the vectors.
    pub fn dim(&self) -> usize {
        self.hidden
    }

    /// Vocabulary size (token ids must be below it).
    pub fn vocab(&self) -> usize {
        self.word.rows
    }

    /// A text's token ids, wrapped in the model's special tokens.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(text, true).map_err(|e| Error::Tokenizer(e.to_string()))?.get_ids().to_vec())
    }

    /// Given token ids of a text (no special tokens), the ids the model reads.
    pub fn wrap(&self, ids: &[u32]) -> Vec<u32> {
        self.wrap.0.iter().chain(ids).chain(&self.wrap.1).copied().collect()
    }

    /// One vector per sequence. Each sequence must be non-empty, within `max_tokens`, with ids
    /// below `vocab()` (the caller checks; this panics otherwise).
    pub fn embed(&self, seqs: &[Vec<u32>]) -> Vec<Vec<f32>> {
        let h = self.hidden;
        let n: usize = seqs.iter().map(Vec::len).sum();
        let mut x = vec![0f32; n * h];
        let mut row = 0;
        let mut pos_row = vec![0f32; h];
        for s in seqs {
            assert!(!s.is_empty() && s.len() <= self.max_tokens, "sequence length checked by the caller");
            for (p, &id) in s.iter().enumerate() {
                let out = &mut x[row * h..(row + 1) * h];
                self.word.dequantize_row_into(id as usize, out);
                self.pos.dequantize_row_into(p, &mut pos_row);
                out.iter_mut().zip(&pos_row).zip(&self.token_type).for_each(|((o, a), b)| *o += a + b);
                row += 1;
            }
        }
        self.ln_embed.forward(&mut x);
        let lens: Vec<usize> = seqs.iter().map(Vec::len).collect();
        for layer in &self.layers {
            let ctx = self.attention(layer, &x, &lens);
            let mut a = layer.o.forward(&ctx, n);
            a.iter_mut().zip(&x).for_each(|(o, r)| *o += r);
            layer.ln_attn.forward(&mut a);
            let mut up = layer.up.forward(&a, n);
            up.iter_mut().for_each(|v| *v = gelu_erf(*v));
            let mut out = layer.down.forward(&up, n);
            out.iter_mut().zip(&a).for_each(|(o, r)| *o += r);
            layer.ln_out.forward(&mut out);
            x = out;
        }
        let mut vectors = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for &len in &lens {
            let states = &x[start * h..(start + len) * h];
            let mut v = match self.pooling {
                Pooling::Cls => states[..h].to_vec(),
                Pooling::Mean => {
                    let mut v = vec![0f32; h];
                    for t in states.chunks_exact(h) {
                        axpy(1.0 / len as f32, t, &mut v);
                    }
                    v
                }
            };
            if self.normalize {
                let norm = dot(&v, &v).sqrt().max(1e-12);
                v.iter_mut().for_each(|a| *a /= norm);
            }
            vectors.push(v);
            start += len;
        }
        vectors
    }

    /// Bidirectional self-attention of every sequence; returns the heads' outputs token-major
    /// (n x hidden), ready for the output projection.
    fn attention(&self, layer: &Layer, x: &[f32], lens: &[usize]) -> Vec<f32> {
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let n: usize = lens.iter().sum();
        let (q, k, v) = (layer.q.forward(x, n), layer.k.forward(x, n), layer.v.forward(x, n));
        let scale = 1.0 / (d as f32).sqrt();
        // One task per (sequence, head), each writing its own block (len x d) of a head-major buffer.
        let mut heads_out = vec![0f32; n * h];
        // (first token, length, head, output block)
        type Task<'a> = Mutex<(usize, usize, usize, &'a mut [f32])>;
        let mut tasks: Vec<Task> = Vec::new();
        {
            let mut rest: &mut [f32] = &mut heads_out;
            let mut start = 0;
            for &len in lens {
                for hd in 0..heads {
                    let (block, tail) = rest.split_at_mut(len * d);
                    rest = tail;
                    tasks.push(Mutex::new((start, len, hd, block)));
                }
                start += len;
            }
        }
        pool::global().run(tasks.len(), &|ti| {
            let mut g = tasks[ti].lock().unwrap_or_else(|e| e.into_inner());
            let (start, len, hd, ref mut block) = *g;
            let at = |t: usize| -> std::ops::Range<usize> { (start + t) * h + hd * d..(start + t) * h + (hd + 1) * d };
            let mut scores = vec![0f32; len];
            for i in 0..len {
                let qi = &q[at(i)];
                for (j, s) in scores.iter_mut().enumerate() {
                    *s = dot(qi, &k[at(j)]) * scale;
                }
                softmax(&mut scores);
                let out = &mut block[i * d..(i + 1) * d];
                for (j, &p) in scores.iter().enumerate() {
                    axpy(p, &v[at(j)], out);
                }
            }
        });
        // Head-major blocks back to token-major rows.
        let mut ctx = vec![0f32; n * h];
        let mut off = 0;
        let mut start = 0;
        for &len in lens {
            for hd in 0..heads {
                for t in 0..len {
                    ctx[(start + t) * h + hd * d..(start + t) * h + (hd + 1) * d].copy_from_slice(&heads_out[off + t * d..off + (t + 1) * d]);
                }
                off += len * d;
            }
            start += len;
        }
        ctx
    }
}

/// Reads sentence-transformers' module list: the pooling mode and whether a Normalize module
/// follows. A plain BERT directory without these files gets mean pooling, normalised (what
/// embedding APIs return).
fn sentence_transformers_head(dir: &Path) -> Result<(Pooling, bool)> {
    let modules_path = dir.join("modules.json");
    if !modules_path.exists() {
        return Ok((Pooling::Mean, true));
    }
    let modules = read_json(&modules_path)?;
    let list = modules.as_array().cloned().unwrap_or_default();
    let ty = |m: &serde_json::Value| m.get("type").and_then(|v| v.as_str()).unwrap_or("").to_string();
    let normalize = list.iter().any(|m| ty(m).ends_with(".Normalize"));
    let mut pooling = Pooling::Mean;
    if let Some(m) = list.iter().find(|m| ty(m).ends_with(".Pooling")) {
        let sub = m.get("path").and_then(|v| v.as_str()).unwrap_or("1_Pooling");
        let cfg_path = dir.join(sub).join("config.json");
        let cfg = read_json(&cfg_path)?;
        let on = |k: &str| cfg.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
        pooling = if on("pooling_mode_mean_tokens") {
            Pooling::Mean
        } else if on("pooling_mode_cls_token") {
            Pooling::Cls
        } else {
            return Err(Error::ModelDir { path: cfg_path, reason: "only mean and CLS pooling are supported".into() });
        };
    }
    for m in &list {
        let t = ty(m);
        if !(t.ends_with(".Transformer") || t.ends_with(".Pooling") || t.ends_with(".Normalize")) {
            return Err(Error::ModelDir { path: modules_path, reason: format!("sentence-transformers module `{t}` is not supported") });
        }
    }
    Ok((pooling, normalize))
}
