//! Transformer model code for the llama and gemma3 architectures, written to batch sequences at
//! different positions: one forward step takes any mix of prompt chunks and single decode tokens
//! from many sequences, each with its own KV cache and positions.
//!
//! Why our own model code rather than candle's: candle's quantized llama batches only sequences in
//! lockstep (one position for the whole batch, KV grown by concatenation), which rules out
//! continuous batching; see shared/FINDINGS.md.

use crate::lora::{Adapter, Target};
use crate::ops::{gelu_tanh, matmul, matmul_many, rms_norm, rope_angles, rope_apply, silu_mul, RopeStyle};
use crate::pool;
use crate::tensor::Weight;
use half::f16;

/// Architecture families the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama family (SmolLM2, Llama, Mistral-style without sliding window).
    Llama,
    /// Gemma 3 (sandwich norms, QK norm, GELU, interleaved sliding-window layers).
    Gemma3,
}

/// Hyperparameters, read from GGUF metadata or config.json.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Architecture family.
    pub arch: Arch,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Residual stream width.
    pub hidden: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the output head).
    pub vocab: usize,
    /// Trained context length.
    pub context_length: usize,
    /// RMS norm epsilon.
    pub rms_eps: f32,
    /// RoPE base for global-attention layers.
    pub rope_base: f32,
    /// RoPE base for sliding-window layers (Gemma 3).
    pub rope_base_local: f32,
    /// How RoPE pairs dimensions.
    pub rope_style: RopeStyle,
    /// Sliding window, for layers that use one.
    pub sliding_window: Option<usize>,
    /// Every `swa_pattern`-th layer is global; the rest use the sliding window (0: all global).
    pub swa_pattern: usize,
    /// Multiplier on q.k (1/sqrt(head_dim) unless the model says otherwise).
    pub attn_scale: f32,
    /// Multiplier on the token embedding (Gemma: sqrt(hidden)).
    pub embed_scale: f32,
}

impl ModelConfig {
    /// Query width.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    /// Key/value width.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
    /// Whether layer `l` uses the sliding window.
    pub fn is_swa(&self, l: usize) -> bool {
        self.sliding_window.is_some() && self.swa_pattern > 0 && (l + 1) % self.swa_pattern != 0
    }
}

/// One transformer block's weights.
#[derive(Debug)]
pub struct Layer {
    /// Pre-attention norm.
    pub attn_norm: Vec<f32>,
    /// Query projection.
    pub wq: Weight,
    /// Key projection.
    pub wk: Weight,
    /// Value projection.
    pub wv: Weight,
    /// Output projection.
    pub wo: Weight,
    /// Per-head query norm (Gemma 3).
    pub q_norm: Option<Vec<f32>>,
    /// Per-head key norm (Gemma 3).
    pub k_norm: Option<Vec<f32>>,
    /// Norm on the attention output before the residual add (Gemma 3).
    pub post_attn_norm: Option<Vec<f32>>,
    /// Pre-MLP norm.
    pub ffn_norm: Vec<f32>,
    /// Gate projection.
    pub gate: Weight,
    /// Up projection.
    pub up: Weight,
    /// Down projection.
    pub down: Weight,
    /// Norm on the MLP output before the residual add (Gemma 3).
    pub post_ffn_norm: Option<Vec<f32>>,
}

/// A loaded model's weights.
#[derive(Debug)]
pub struct Model {
    /// Hyperparameters.
    pub config: ModelConfig,
    /// Token embedding, `vocab x hidden`.
    pub embed: Weight,
    /// Blocks.
    pub layers: Vec<Layer>,
    /// Final norm.
    pub out_norm: Vec<f32>,
    /// Output head, `vocab x hidden` (the embedding when tied).
    pub output: Weight,
}

fn round_f16(x: &mut [f32]) {
    let mut h = vec![half::f16::ZERO; x.len()];
    half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut h[..], x);
    half::slice::HalfFloatSliceExt::convert_to_f32_slice(&h[..], x);
}

/// Keys and values of one sequence, per layer, contiguous by position, in f16 (as llama.cpp
/// keeps them): half the memory of f32 and half the bytes attention reads.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    k: Vec<Vec<f16>>,
    v: Vec<Vec<f16>>,
    len: usize,
}

fn append_f16(dst: &mut Vec<f16>, src: &[f32]) {
    let start = dst.len();
    dst.resize(start + src.len(), f16::ZERO);
    half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut dst[start..], src);
}

impl KvCache {
    /// An empty cache for `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        KvCache { k: vec![Vec::new(); n_layers], v: vec![Vec::new(); n_layers], len: 0 }
    }
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// A new cache holding this one's first `n` positions.
    pub fn prefix(&self, n: usize, kv_dim: usize) -> KvCache {
        let n = n.min(self.len);
        KvCache { k: self.k.iter().map(|l| l[..n * kv_dim].to_vec()).collect(), v: self.v.iter().map(|l| l[..n * kv_dim].to_vec()).collect(), len: n }
    }

    /// Bytes held, for metrics.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|l| l.capacity() * 2).sum()
    }
}

/// One sequence's share of a forward step.
pub struct BatchItem<'a> {
    /// Tokens to feed, at positions `kv.len()..kv.len() + tokens.len()`.
    pub tokens: &'a [u32],
    /// The sequence's cache; grows by `tokens.len()`.
    pub kv: &'a mut KvCache,
    /// Whether to compute logits for the last token.
    pub want_logits: bool,
    /// The LoRA adapter this sequence runs with, if any (each sequence may have its own).
    pub adapter: Option<&'a Adapter>,
}

impl Model {
    /// MLP width (rows of the gate projection).
    pub fn ffn(&self) -> usize {
        self.layers.first().map_or(0, |l| l.gate.rows)
    }

    /// Runs one step over a batch. Returns, per item, the logits of its last token when
    /// `want_logits` is set.
    pub fn forward(&self, items: &mut [BatchItem<'_>]) -> Vec<Option<Vec<f32>>> {
        let c = &self.config;
        let (h, qd, kvd, hd) = (c.hidden, c.q_dim(), c.kv_dim(), c.head_dim);
        let t: usize = items.iter().map(|i| i.tokens.len()).sum();
        // Position of every token in the flattened batch, and which item it belongs to.
        let mut pos = Vec::with_capacity(t);
        let mut owner = Vec::with_capacity(t);
        for (ii, it) in items.iter().enumerate() {
            for j in 0..it.tokens.len() {
                pos.push(it.kv.len + j);
                owner.push(ii);
            }
        }
        let mut x = vec![0f32; t * h];
        let mut ti = 0;
        for it in items.iter() {
            for &tok in it.tokens {
                let row = &mut x[ti * h..(ti + 1) * h];
                self.embed.dequantize_row_into(tok as usize, row);
                if c.embed_scale != 1.0 {
                    row.iter_mut().for_each(|v| *v *= c.embed_scale);
                }
                ti += 1;
            }
        }
        // Each row's adapter, for spreading the adapter updates over the pool a row at a time.
        let row_adapter: Vec<Option<&Adapter>> = items.iter().flat_map(|it| std::iter::repeat_n(it.adapter, it.tokens.len())).collect();
        let any_adapter = row_adapter.iter().any(Option::is_some);
        let lora = |li: usize, target: Target, x: &[f32], out: &mut [f32]| {
            if !any_adapter {
                return;
            }
            let (inp, outw) = (x.len() / t, out.len() / t);
            pool::global().chunks(out, outw, |row, o| {
                if let Some(a) = row_adapter[row] {
                    a.apply(li, target, &x[row * inp..(row + 1) * inp], o);
                }
            });
        };
        let mut hbuf = vec![0f32; t * h];
        let mut q = vec![0f32; t * qd];
        let mut k = vec![0f32; t * kvd];
        let mut v = vec![0f32; t * kvd];
        let mut attn = vec![0f32; t * qd];
        let ffn = self.ffn();
        let mut g = vec![0f32; t * ffn];
        let mut u = vec![0f32; t * ffn];
        for (li, layer) in self.layers.iter().enumerate() {
            hbuf.copy_from_slice(&x);
            rms_norm(&mut hbuf, &layer.attn_norm, c.rms_eps);
            matmul_many(&[&layer.wq, &layer.wk, &layer.wv], &hbuf, t, &mut [&mut q, &mut k, &mut v]);
            lora(li, Target::QProj, &hbuf, &mut q);
            lora(li, Target::KProj, &hbuf, &mut k);
            lora(li, Target::VProj, &hbuf, &mut v);
            if let Some(qn) = &layer.q_norm {
                rms_norm(&mut q, qn, c.rms_eps);
            }
            if let Some(kn) = &layer.k_norm {
                rms_norm(&mut k, kn, c.rms_eps);
            }
            let swa = c.is_swa(li);
            let base = if swa { c.rope_base_local } else { c.rope_base };
            // Rope is cheap: one pass on this thread beats a parallel region for decode-sized
            // batches. The KV cache holds f16 values and q is rounded to f16 for q.k, as in
            // llama.cpp: half the cache memory, and greedy outputs that agree with its references.
            for (i, (qr, kr)) in q.chunks_exact_mut(qd).zip(k.chunks_exact_mut(kvd)).enumerate() {
                // One set of angles per token serves all of its heads.
                let angles = rope_angles(pos[i], hd, base);
                for head in qr.chunks_exact_mut(hd).chain(kr.chunks_exact_mut(hd)) {
                    rope_apply(head, &angles, c.rope_style, 1.0);
                }
            }
            // (k and v are rounded when they are stored in the f16 cache.)
            round_f16(&mut q);
            // Append this step's keys and values to each sequence's cache.
            let mut off = 0;
            for it in items.iter_mut() {
                let n = it.tokens.len();
                append_f16(&mut it.kv.k[li], &k[off * kvd..(off + n) * kvd]);
                append_f16(&mut it.kv.v[li], &v[off * kvd..(off + n) * kvd]);
                off += n;
            }
            let window = if swa { c.sliding_window } else { None };
            let caches: Vec<(&[f16], &[f16])> = items.iter().map(|it| (it.kv.k[li].as_slice(), it.kv.v[li].as_slice())).collect();
            let group = c.n_heads / c.n_kv_heads;
            // A task takes the query heads of one key/value head together (they read the same
            // rows), except for a single token, where that would leave too few tasks to share
            // between the threads.
            let heads = if t == 1 { 1 } else { group };
            pool::global().chunks(&mut attn, heads * hd, |idx, out| {
                let (ti, head) = (idx * heads / c.n_heads, idx * heads % c.n_heads);
                let (kc, vc) = caches[owner[ti]];
                let p = pos[ti];
                let lo = window.map_or(0, |w| (p + 1).saturating_sub(w));
                let kvh = head / group;
                let qv = &q[ti * qd + head * hd..ti * qd + (head + heads) * hd];
                let rows = lo..=p;
                crate::ops::attend(qv, heads, kc, vc, kvd, kvh * hd, rows, c.attn_scale, out);
            });
            drop(caches);
            matmul(&layer.wo, &attn, t, &mut hbuf);
            lora(li, Target::OProj, &attn, &mut hbuf);
            if let Some(pn) = &layer.post_attn_norm {
                rms_norm(&mut hbuf, pn, c.rms_eps);
            }
            x.iter_mut().zip(&hbuf).for_each(|(a, b)| *a += b);
            hbuf.copy_from_slice(&x);
            rms_norm(&mut hbuf, &layer.ffn_norm, c.rms_eps);
            matmul_many(&[&layer.gate, &layer.up], &hbuf, t, &mut [&mut g, &mut u]);
            lora(li, Target::GateProj, &hbuf, &mut g);
            lora(li, Target::UpProj, &hbuf, &mut u);
            // Split between the threads when there is enough of it to pay for a parallel region.
            const ACT_CHUNK: usize = 16 * 1024;
            pool::global().chunks(&mut g, ACT_CHUNK, |i, gc| {
                let uc = &u[i * ACT_CHUNK..i * ACT_CHUNK + gc.len()];
                match c.arch {
                    Arch::Llama => silu_mul(gc, uc),
                    Arch::Gemma3 => gc.iter_mut().zip(uc).for_each(|(a, b)| *a = gelu_tanh(*a) * b),
                }
            });
            matmul(&layer.down, &g, t, &mut hbuf);
            lora(li, Target::DownProj, &g, &mut hbuf);
            if let Some(pn) = &layer.post_ffn_norm {
                rms_norm(&mut hbuf, pn, c.rms_eps);
            }
            x.iter_mut().zip(&hbuf).for_each(|(a, b)| *a += b);
        }
        for it in items.iter_mut() {
            it.kv.len += it.tokens.len();
        }
        // Logits only for the last token of the items that want them.
        let mut last_rows = Vec::new();
        let mut which = Vec::new();
        let mut end = 0;
        for (ii, it) in items.iter().enumerate() {
            end += it.tokens.len();
            if it.want_logits && !it.tokens.is_empty() {
                last_rows.extend_from_slice(&x[(end - 1) * h..end * h]);
                which.push(ii);
            }
        }
        let mut result = vec![None; items.len()];
        if which.is_empty() {
            return result;
        }
        let n = which.len();
        rms_norm(&mut last_rows, &self.out_norm, c.rms_eps);
        let mut logits = vec![0f32; n * c.vocab];
        matmul(&self.output, &last_rows, n, &mut logits);
        for (r, ii) in which.into_iter().enumerate() {
            result[ii] = Some(logits[r * c.vocab..(r + 1) * c.vocab].to_vec());
        }
        result
    }
}
