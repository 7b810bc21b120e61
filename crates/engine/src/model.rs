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
use std::sync::Arc;

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
    /// Bytes of one key/value block ([`KV_BLOCK`] positions of every layer, f16).
    pub fn kv_block_bytes(&self) -> usize {
        2 * self.n_layers * KV_BLOCK * self.kv_dim() * 2
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
    /// Biases of the query, key and value projections (Qwen 2), added after the product.
    pub qkv_bias: Option<[Vec<f32>; 3]>,
}

/// Adds `bias` to each row of `y`.
pub fn add_bias(y: &mut [f32], bias: &[f32]) {
    for row in y.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
    }
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

/// Positions per key/value block.
pub const KV_BLOCK: usize = 16;

/// One block of the paged cache: keys and values of [`KV_BLOCK`] positions for every layer, in
/// f16 (as llama.cpp keeps them). Layer `l`'s keys are rows `[2l * B, 2l * B + B)` of `kv_dim`
/// values, its values the next `B` rows.
#[derive(Debug, Clone)]
struct Block(Box<[f16]>);

impl Block {
    fn zeroed(len: usize) -> Self {
        Block(vec![f16::ZERO; len].into_boxed_slice())
    }
}

/// Keys and values of one sequence: a table of fixed-size blocks ([`KV_BLOCK`] positions, all
/// layers) shared by reference count. A cache made from another's prefix ([`KvCache::prefix`])
/// shares its blocks instead of copying them, and a shared block is copied only when written
/// (the partial last block of a prefix): a system prompt or Ask-Data's schema prompt is held
/// once however many sequences start with it. Growth is a block at a time, never a copy of the
/// whole cache.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    n_layers: usize,
    /// Values per position and layer (keys or values); set by the first write.
    kv_dim: usize,
    blocks: Vec<Arc<Block>>,
    len: usize,
}

/// One layer's keys and values of a cache, for attention: block `b` holds positions
/// `b * KV_BLOCK..`, rows of `stride` values.
pub struct KvView<'a> {
    /// Key rows per block.
    pub k: Vec<&'a [f16]>,
    /// Value rows per block.
    pub v: Vec<&'a [f16]>,
    /// Values per row.
    pub stride: usize,
}

impl KvView<'_> {
    /// Positions the view can address.
    pub fn capacity(&self) -> usize {
        self.k.len() * KV_BLOCK
    }
}

impl KvCache {
    /// An empty cache for `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        KvCache { n_layers, kv_dim: 0, blocks: Vec::new(), len: 0 }
    }
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// A cache holding this one's first `n` positions, sharing its blocks.
    pub fn prefix(&self, n: usize) -> KvCache {
        let n = n.min(self.len);
        KvCache { n_layers: self.n_layers, kv_dim: self.kv_dim, blocks: self.blocks[..n.div_ceil(KV_BLOCK)].to_vec(), len: n }
    }

    /// Refers to `other`'s first `blocks` blocks instead of this cache's own, which must hold
    /// the same positions (the same tokens under the same weights: keys and values depend on
    /// nothing else, whatever batch computed them). Frees this cache's copies when it held them
    /// alone.
    pub fn share_blocks_of(&mut self, other: &KvCache, blocks: usize) {
        let blocks = blocks.min(self.len / KV_BLOCK).min(other.len / KV_BLOCK);
        assert!(self.kv_dim == other.kv_dim && self.n_layers == other.n_layers, "caches of one model");
        self.blocks[..blocks].clone_from_slice(&other.blocks[..blocks]);
    }

    /// Blocks [`KvCache::reserve`] would allocate for `n` more positions: new ones past the end,
    /// and a copy of a shared partial block it would write into.
    pub fn blocks_to_grow(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let first = self.len / KV_BLOCK;
        let copy = first < self.blocks.len() && Arc::strong_count(&self.blocks[first]) > 1;
        (self.len + n).div_ceil(KV_BLOCK).saturating_sub(self.blocks.len()) + usize::from(copy)
    }

    /// Blocks only this cache refers to: what dropping it frees.
    pub fn private_blocks(&self) -> usize {
        self.blocks.iter().filter(|b| Arc::strong_count(b) == 1).count()
    }

    /// Bytes of the blocks this cache refers to (shared blocks count in full), for metrics.
    pub fn bytes(&self) -> usize {
        self.blocks.iter().map(|b| b.0.len() * 2).sum()
    }

    /// The blocks this cache refers to, as addresses (to count shared blocks once).
    pub fn block_ids(&self) -> impl Iterator<Item = usize> + '_ {
        self.blocks.iter().map(|b| Arc::as_ptr(b) as usize)
    }

    /// Makes room for `n` more positions of width `kv_dim`: the blocks they fall in exist and
    /// belong to this cache alone (a shared partial block is copied first).
    fn reserve(&mut self, n: usize, kv_dim: usize) {
        assert!(self.kv_dim == 0 || self.kv_dim == kv_dim, "one model per cache");
        self.kv_dim = kv_dim;
        if n == 0 {
            return;
        }
        let first = self.len / KV_BLOCK;
        if first < self.blocks.len() {
            Arc::make_mut(&mut self.blocks[first]);
        }
        while self.blocks.len() * KV_BLOCK < self.len + n {
            self.blocks.push(Arc::new(Block::zeroed(2 * self.n_layers * KV_BLOCK * kv_dim)));
        }
    }

    /// Writes layer `layer`'s keys and values for positions `pos0..` (rows of `kv_dim`),
    /// rounded to f16. The positions must have been reserved.
    fn write(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        let d = self.kv_dim;
        for (i, (kr, vr)) in k.chunks_exact(d).zip(v.chunks_exact(d)).enumerate() {
            let p = pos0 + i;
            let block = Arc::get_mut(&mut self.blocks[p / KV_BLOCK]).expect("reserved blocks are not shared");
            let row = p % KV_BLOCK;
            let at = |kv: usize| (2 * layer + kv) * KV_BLOCK * d + row * d;
            half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut block.0[at(0)..at(0) + d], kr);
            half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut block.0[at(1)..at(1) + d], vr);
        }
    }

    /// Layer `layer`'s blocks, for attention.
    fn view(&self, layer: usize) -> KvView<'_> {
        let span = KV_BLOCK * self.kv_dim;
        KvView {
            k: self.blocks.iter().map(|b| &b.0[2 * layer * span..(2 * layer + 1) * span]).collect(),
            v: self.blocks.iter().map(|b| &b.0[(2 * layer + 1) * span..(2 * layer + 2) * span]).collect(),
            stride: self.kv_dim,
        }
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
        for it in items.iter_mut() {
            it.kv.reserve(it.tokens.len(), kvd);
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
        // Each row's adapter; the updates run as tasks of rows that share one adapter.
        let row_adapter: Vec<Option<&Adapter>> = items.iter().flat_map(|it| std::iter::repeat_n(it.adapter, it.tokens.len())).collect();
        let plan = crate::lora::Plan::new(&row_adapter);
        let lora = |li: usize, x: &[f32], outs: &mut [(Target, &mut [f32])]| plan.apply(pool::global(), li, x, outs);
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
            if let Some([bq, bk, bv]) = &layer.qkv_bias {
                add_bias(&mut q, bq);
                add_bias(&mut k, bk);
                add_bias(&mut v, bv);
            }
            lora(li, &hbuf, &mut [(Target::QProj, &mut q), (Target::KProj, &mut k), (Target::VProj, &mut v)]);
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
            // Write this step's keys and values into each sequence's cache.
            let mut off = 0;
            for it in items.iter_mut() {
                let n = it.tokens.len();
                let at = it.kv.len;
                it.kv.write(li, at, &k[off * kvd..(off + n) * kvd], &v[off * kvd..(off + n) * kvd]);
                off += n;
            }
            let window = if swa { c.sliding_window } else { None };
            let caches: Vec<KvView<'_>> = items.iter().map(|it| it.kv.view(li)).collect();
            let group = c.n_heads / c.n_kv_heads;
            // A task takes the query heads of one key/value head together (they read the same
            // rows), except for a single token, where that would leave too few tasks to share
            // between the threads.
            let heads = if t == 1 { 1 } else { group };
            pool::global().chunks(&mut attn, heads * hd, |idx, out| {
                let (ti, head) = (idx * heads / c.n_heads, idx * heads % c.n_heads);
                let view = &caches[owner[ti]];
                let p = pos[ti];
                let lo = window.map_or(0, |w| (p + 1).saturating_sub(w));
                let kvh = head / group;
                let qv = &q[ti * qd + head * hd..ti * qd + (head + heads) * hd];
                let rows = lo..=p;
                crate::ops::attend(qv, heads, view, kvh * hd, rows, c.attn_scale, out);
            });
            drop(caches);
            matmul(&layer.wo, &attn, t, &mut hbuf);
            lora(li, &attn, &mut [(Target::OProj, &mut hbuf)]);
            if let Some(pn) = &layer.post_attn_norm {
                rms_norm(&mut hbuf, pn, c.rms_eps);
            }
            x.iter_mut().zip(&hbuf).for_each(|(a, b)| *a += b);
            hbuf.copy_from_slice(&x);
            rms_norm(&mut hbuf, &layer.ffn_norm, c.rms_eps);
            matmul_many(&[&layer.gate, &layer.up], &hbuf, t, &mut [&mut g, &mut u]);
            lora(li, &hbuf, &mut [(Target::GateProj, &mut g), (Target::UpProj, &mut u)]);
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
            lora(li, &g, &mut [(Target::DownProj, &mut hbuf)]);
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
