//! The LoRA training step for the llama and Gemma 3 architectures, forward and backward written
//! by hand.
//!
//! Why by hand: candle's autograd trains this model at 98 tokens/s in 9.8 GB, half PEFT's speed
//! (shared/FINDINGS.md), because it keeps gradients for frozen weights and has no backward for
//! its fused ops. Here the base is frozen: the backward pass computes gradients of activations
//! (to carry the signal down) and of the adapters only, never of a base weight; logits are taken
//! only at the positions the loss is taken on; and every product goes through one blocked GEMM.
//!
//! The base's quantized weights are dequantized to f32 once (QLoRA-style: the frozen base in
//! the served format, the adapters in f32).

use crate::bf16::{self, PackedB};
use crate::mm::{mm, mm_serial, View};
use crate::Result;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use shovel_engine::lora::{Adapter, Target};
use shovel_engine::model::{Arch, Model, ModelConfig};
use shovel_engine::ops::{exp_in_place, rope_angles, rope_apply, softmax_scaled};

/// How the frozen weights are held and multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// f32 weights, f32 products (the reference; slower).
    F32,
    /// bf16 weights and activations in the products, f32 accumulation and everything else f32
    /// (needs AVX512-BF16; twice the multiply-adds per cycle of f32 FMA on Zen 4).
    Bf16,
}

impl Precision {
    /// bf16 where the CPU has it, else f32.
    pub fn auto() -> Self {
        if crate::bf16::available() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }
}

/// One frozen linear layer, `out x in`.
enum Lin {
    F32 {
        w: Vec<f32>,
        out: usize,
        inp: usize,
    },
    /// The weight for the forward product and its transpose for the backward one.
    Bf16 {
        fwd: PackedB,
        bwd: PackedB,
    },
}

impl Lin {
    fn new(w: &[f32], out: usize, inp: usize, p: Precision) -> Lin {
        match p {
            Precision::F32 => Lin::F32 { w: w.to_vec(), out, inp },
            Precision::Bf16 => Lin::Bf16 { fwd: PackedB::from_nt(&w, out, inp), bwd: PackedB::from_nn(&w, out, inp) },
        }
    }
    /// `y (t x out) = x (t x in) W^T`.
    fn fwd(&self, x: &[f32], t: usize, y: &mut [f32]) {
        match self {
            Lin::F32 { w, out, inp } => mm(t, *out, *inp, y, *out, false, View::rm(x, *inp), View::rm(w, *inp).t()),
            Lin::Bf16 { fwd, .. } => bf16::matmul(x, t, fwd, y, false),
        }
    }
    /// `dx (t x in) += dy (t x out) W`.
    fn bwd(&self, dy: &[f32], t: usize, dx: &mut [f32]) {
        match self {
            Lin::F32 { w, out, inp } => mm(t, *inp, *out, dx, *inp, true, View::rm(dy, *out), View::rm(w, *inp)),
            Lin::Bf16 { bwd, .. } => bf16::matmul(dy, t, bwd, dx, true),
        }
    }
    fn bytes(&self) -> usize {
        match self {
            Lin::F32 { w, .. } => w.len() * 4,
            Lin::Bf16 { fwd, bwd } => fwd.bytes() + bwd.bytes(),
        }
    }
}

enum Embed {
    F32(Vec<f32>),
    Bf16(Vec<half::bf16>),
    /// Tied to the output head: rows are read back from the head's packed bf16 weight (saves
    /// the 57 MB a separate bf16 copy of SmolLM2's embedding takes).
    FromHead,
}

struct BaseLayer {
    attn_norm: Vec<f32>,
    /// Per [`Target::ALL`] index.
    w: [Lin; 7],
    ffn_norm: Vec<f32>,
    /// Gemma 3's per-head query and key norms (before rope).
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    /// Gemma 3's norms on the attention's and the MLP's outputs, before their residual adds.
    post_attn_norm: Option<Vec<f32>>,
    post_ffn_norm: Option<Vec<f32>>,
    /// Qwen 2's q/k/v biases (frozen: they shift the forward pass and change no gradient).
    qkv_bias: Option<[Vec<f32>; 3]>,
}

/// A frozen base model in f32, ready to train adapters on.
pub struct Base {
    /// Hyperparameters.
    pub config: ModelConfig,
    /// MLP width.
    pub ffn: usize,
    /// Token embedding rows, in the base's precision (bf16 halves its 113 MB for SmolLM2).
    embed: Embed,
    layers: Vec<BaseLayer>,
    out_norm: Vec<f32>,
    /// The output head (`vocab x hidden`; the embedding when tied).
    head: Lin,
    /// How the weights are held.
    pub precision: Precision,
}

impl Base {
    /// Dequantizes a loaded model, in bf16 where the CPU multiplies bf16 fast.
    pub fn from_model(m: &Model) -> Result<Base> {
        Self::with_precision(m, Precision::auto())
    }

    /// Dequantizes a loaded model into the given precision.
    pub fn with_precision(m: &Model, p: Precision) -> Result<Base> {
        let c = m.config.clone();
        // Every architecture the engine loads has training code; a new one must add its own.
        match c.arch {
            Arch::Llama | Arch::Gemma3 => {}
        }
        let lin = |w: &shovel_engine::tensor::Weight| Lin::new(&w.to_f32_vec(), w.rows, w.cols, p);
        let layers = m
            .layers
            .iter()
            .map(|l| BaseLayer {
                attn_norm: l.attn_norm.clone(),
                w: [lin(&l.wq), lin(&l.wk), lin(&l.wv), lin(&l.wo), lin(&l.gate), lin(&l.up), lin(&l.down)],
                ffn_norm: l.ffn_norm.clone(),
                q_norm: l.q_norm.clone(),
                k_norm: l.k_norm.clone(),
                post_attn_norm: l.post_attn_norm.clone(),
                post_ffn_norm: l.post_ffn_norm.clone(),
                qkv_bias: l.qkv_bias.clone(),
            })
            .collect();
        let ffn = m.ffn();
        let e = m.embed.to_f32_vec();
        let head = if m.output.same_bytes(&m.embed) { Lin::new(&e, c.vocab, c.hidden, p) } else { lin(&m.output) };
        let tied = m.output.same_bytes(&m.embed);
        let embed = match p {
            Precision::F32 => Embed::F32(e),
            Precision::Bf16 if tied => Embed::FromHead,
            Precision::Bf16 => Embed::Bf16(e.iter().map(|v| half::bf16::from_f32(*v)).collect()),
        };
        Ok(Base { config: c, ffn, embed, layers, out_norm: m.out_norm.clone(), head, precision: p })
    }

    /// Bytes held by the weights.
    pub fn bytes(&self) -> usize {
        let l: usize = self.layers.iter().map(|l| l.w.iter().map(Lin::bytes).sum::<usize>() + (l.attn_norm.len() + l.ffn_norm.len()) * 4).sum();
        let e = match &self.embed {
            Embed::F32(v) => v.len() * 4,
            Embed::Bf16(v) => v.len() * 2,
            Embed::FromHead => 0,
        };
        l + e + self.head.bytes()
    }
}

/// Activations one layer keeps for its backward pass.
/// (The normed inputs and the gated MLP activation are recomputed in the backward pass from
/// these: elementwise work is cheaper than holding 10 KiB per token per layer.)
struct Saved {
    x: Vec<f32>,
    rstd1: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    /// Values and the heads' outputs only feed products (which round to bf16 in bf16 mode);
    /// q and k stay f32: the backward pass recomputes the attention probabilities from them.
    v: Stash,
    attn: Stash,
    x2: Vec<f32>,
    rstd2: Vec<f32>,
    /// The gate and up projections, the widest activations (2 x `ffn` per token: half of what
    /// a layer keeps), in the products' precision.
    g: Stash,
    u: Stash,
    /// `x_dropped . A^T` per target (`T x r`).
    lora_t: [Vec<f32>; 7],
    /// Gemma 3: q and k before their per-head norms, with the norms' `rstd` (one per row and head).
    q_raw: Option<Normed>,
    k_raw: Option<Normed>,
    /// Gemma 3: the attention's and the MLP's outputs before their post-norms.
    post_attn: Option<Normed>,
    post_ffn: Option<Normed>,
}

/// The input of an RMS norm and its `rstd` per normed row, kept for the norm's backward pass.
struct Normed {
    x: Vec<f32>,
    rstd: Vec<f32>,
}

impl Normed {
    /// Norms `y` in place (rows of `w.len()`), returning what the backward pass needs.
    fn norm(y: &mut [f32], w: &[f32], eps: f32) -> Normed {
        let x = y.to_vec();
        let mut rstd = vec![0f32; x.len() / w.len()];
        rms_norm_fwd(&x, w, eps, y, &mut rstd);
        Normed { x, rstd }
    }

    /// The gradient of the norm's input, given that of its output.
    fn bwd(&self, w: &[f32], dy: &[f32]) -> Vec<f32> {
        let mut dx = vec![0f32; dy.len()];
        rms_norm_bwd(&self.x, &self.rstd, w, dy, &mut dx);
        dx
    }
}

/// An activation kept for the backward pass: f32, or bf16 when the products run in bf16 (they
/// round their inputs to bf16 anyway). Holding the MLP's gate and up outputs in bf16 cut the
/// benchmark job's peak RSS from 1275 to 1196 MB (docs/BENCHMARKS.md); the values and heads'
/// outputs follow.
enum Stash {
    F32(Vec<f32>),
    Bf16(Vec<half::bf16>),
}

impl Stash {
    fn new(v: Vec<f32>, p: Precision) -> Stash {
        match p {
            Precision::F32 => Stash::F32(v),
            Precision::Bf16 => Stash::Bf16(v.iter().map(|x| half::bf16::from_f32(*x)).collect()),
        }
    }

    /// The values as f32 (a copy for bf16: one layer's worth lives at a time).
    fn f32(&self) -> std::borrow::Cow<'_, [f32]> {
        match self {
            Stash::F32(v) => std::borrow::Cow::Borrowed(v),
            Stash::Bf16(v) => std::borrow::Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
        }
    }
}

/// `exp(-x)` of every element (for the gate's sigmoid), vectorised.
fn neg_exp(x: &[f32]) -> Vec<f32> {
    let mut e: Vec<f32> = x.iter().map(|v| -v).collect();
    exp_in_place(&mut e);
    e
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// `tanh(sqrt(2/pi) (g + 0.044715 g^3))` of every element, the inner term of Gemma's GELU, as
/// `1 - 2 / (exp(2a) + 1)` through the vectorised exp (a scalar tanh per element would cost
/// about as much as the MLP's products). The engine rounds GELU to f16 as ggml does; training
/// takes the smooth function, whose derivative is the one the backward pass uses.
fn gelu_inner_tanh(g: &[f32]) -> Vec<f32> {
    let mut e: Vec<f32> = g.iter().map(|&x| 2.0 * SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).collect();
    exp_in_place(&mut e);
    e.iter_mut().for_each(|v| *v = 1.0 - 2.0 / (*v + 1.0));
    e
}

/// Gemma's gated activation `gelu(g) * u`.
fn gelu_mul(g: &[f32], u: &[f32]) -> Vec<f32> {
    let th = gelu_inner_tanh(g);
    g.iter().zip(u).zip(&th).map(|((gv, uv), t)| 0.5 * gv * (1.0 + t) * uv).collect()
}

/// Dropout mask for one adapted layer's input in one sequence, regenerated in the backward pass
/// from the same key instead of stored.
fn dropout_mask(p: f32, key: [u64; 4], n: usize) -> Vec<f32> {
    let seed = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, k| (h ^ k).wrapping_mul(0x1000_0000_01b3));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let keep = 1.0 / (1.0 - p);
    (0..n).map(|_| if rng.gen::<f32>() < p { 0.0 } else { keep }).collect()
}

#[inline(always)]
fn rms_norm_fwd(x: &[f32], w: &[f32], eps: f32, out: &mut [f32], rstd: &mut [f32]) {
    let h = w.len();
    for ((xr, or), rs) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)).zip(rstd.iter_mut()) {
        let ss: f32 = xr.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let r = 1.0 / (ss + eps).sqrt();
        *rs = r;
        for ((o, xv), wv) in or.iter_mut().zip(xr).zip(w) {
            *o = xv * r * wv;
        }
    }
}

/// Whether the CPU has AVX2 and FMA (checked once).
#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    static F: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *F.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// `x * rstd * w` again, from the saved `rstd` (bit-identical to the forward pass's value).
#[inline(always)]
fn renorm(x: &[f32], rstd: &[f32], w: &[f32]) -> Vec<f32> {
    let h = w.len();
    let mut out = vec![0f32; x.len()];
    for ((xr, or), &r) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)).zip(rstd) {
        for ((o, xv), wv) in or.iter_mut().zip(xr).zip(w) {
            *o = xv * r * wv;
        }
    }
    out
}

/// Adds to `dx` the gradient through `y = x * rstd * w` given `dy`.
#[inline(always)]
fn rms_norm_bwd(x: &[f32], rstd: &[f32], w: &[f32], dy: &[f32], dx: &mut [f32]) {
    let h = w.len();
    for (((xr, dyr), dxr), &r) in x.chunks_exact(h).zip(dy.chunks_exact(h)).zip(dx.chunks_exact_mut(h)).zip(rstd) {
        let dot: f32 = xr.iter().zip(dyr).zip(w).map(|((xv, d), wv)| xv * d * wv).sum();
        let c = r * r * r * dot / h as f32;
        for (((o, xv), d), wv) in dxr.iter_mut().zip(xr).zip(dyr).zip(w) {
            *o += r * d * wv - xv * c;
        }
    }
}

/// Gradients of the adapters, shaped like the adapter.
pub type Grads = Adapter;

/// Zeroed gradients for `a`.
pub fn zero_grads(a: &Adapter) -> Grads {
    let mut g = a.clone();
    for p in g.layers.iter_mut().flatten().flatten() {
        p.a.fill(0.0);
        p.b.fill(0.0);
    }
    g
}

/// What one sequence's pass produced.
pub struct SeqLoss {
    /// Sum over positions of `weight * cross-entropy`.
    pub loss_sum: f64,
    /// Sum of weights.
    pub weight_sum: f64,
}

/// Everything fixed for one pass: the base, the adapter, dropout, and the key that makes
/// dropout masks reproducible.
pub struct Pass<'a> {
    /// Frozen base.
    pub base: &'a Base,
    /// Adapter being trained.
    pub adapter: &'a Adapter,
    /// Dropout probability on adapter inputs (0 in evaluation).
    pub dropout: f32,
    /// `(seed, step, example)`, keys dropout masks.
    pub key: [u64; 3],
}

impl Pass<'_> {
    fn mask(&self, l: usize, t: Target, n: usize) -> Option<Vec<f32>> {
        (self.dropout > 0.0).then(|| dropout_mask(self.dropout, [self.key[0], self.key[1], self.key[2], (l * 8 + t.index()) as u64], n))
    }

    /// `y (T x out) = x W^T + s (x_d A^T) B^T`; returns `x_d A^T` for the backward pass.
    fn linear(&self, l: usize, target: Target, x: &[f32], t: usize, y: &mut [f32]) -> Vec<f32> {
        let (out, inp) = (y.len() / t.max(1), x.len() / t.max(1));
        let bl = &self.base.layers[l];
        bl.w[target.index()].fwd(x, t, y);
        if let Some(b) = bl.qkv_bias.as_ref().and_then(|b| b.get(target.index())) {
            shovel_engine::model::add_bias(y, b);
        }
        let Some(p) = self.adapter.pair(l, target) else {
            return Vec::new();
        };
        let r = self.adapter.config.r;
        let s = self.adapter.config.scale();
        let mut lt = vec![0f32; t * r];
        match self.mask(l, target, x.len()) {
            Some(mask) => {
                let xd: Vec<f32> = x.iter().zip(&mask).map(|(a, b)| a * b).collect();
                mm(t, r, inp, &mut lt, r, false, View::rm(&xd, inp), View::rm(&p.a, inp).t());
            }
            None => mm(t, r, inp, &mut lt, r, false, View::rm(x, inp), View::rm(&p.a, inp).t()),
        }
        let scaled: Vec<f32> = lt.iter().map(|v| v * s).collect();
        mm(t, out, r, y, out, true, View::rm(&scaled, r), View::rm(&p.b, r).t());
        lt
    }

    /// Backward of [`Pass::linear`]: adds `dy W` (+ the adapter's path) to `dx` and the
    /// adapter's gradients to `grads`.
    #[allow(clippy::too_many_arguments)]
    fn linear_bwd(&self, l: usize, target: Target, x: &[f32], lt: &[f32], dy: &[f32], t: usize, dx: &mut [f32], grads: &mut Grads) {
        let (out, inp) = (dy.len() / t.max(1), x.len() / t.max(1));
        self.base.layers[l].w[target.index()].bwd(dy, t, dx);
        let Some(p) = self.adapter.pair(l, target) else {
            return;
        };
        let g = grads.layers[l][target.index()].as_mut().expect("grads shaped like the adapter");
        let r = self.adapter.config.r;
        let s = self.adapter.config.scale();
        // dB += s dy^T lt   (out x r)
        let slt: Vec<f32> = lt.iter().map(|v| v * s).collect();
        mm(out, r, t, &mut g.b, r, true, View::rm(dy, out).t(), View::rm(&slt, r));
        // dlt = s dy B   (T x r)
        let mut dlt = vec![0f32; t * r];
        mm(t, r, out, &mut dlt, r, false, View::rm(dy, out), View::rm(&p.b, r));
        dlt.iter_mut().for_each(|v| *v *= s);
        match self.mask(l, target, x.len()) {
            Some(mask) => {
                let xd: Vec<f32> = x.iter().zip(&mask).map(|(a, b)| a * b).collect();
                mm(r, inp, t, &mut g.a, inp, true, View::rm(&dlt, r).t(), View::rm(&xd, inp));
                let mut dxd = vec![0f32; t * inp];
                mm(t, inp, r, &mut dxd, inp, false, View::rm(&dlt, r), View::rm(&p.a, inp));
                dx.iter_mut().zip(dxd.iter().zip(&mask)).for_each(|(d, (v, m))| *d += v * m);
            }
            None => {
                mm(r, inp, t, &mut g.a, inp, true, View::rm(&dlt, r).t(), View::rm(x, inp));
                mm(t, inp, r, dx, inp, true, View::rm(&dlt, r), View::rm(&p.a, inp));
            }
        }
    }

    fn rope_all(&self, x: &mut [f32], width: usize, sign: f32, angles: &[Vec<(f32, f32)>]) {
        let c = &self.base.config;
        let hd = c.head_dim;
        for (pos, row) in x.chunks_exact_mut(width).enumerate() {
            for head in row.chunks_exact_mut(hd) {
                rope_apply(head, &angles[pos], c.rope_style, sign);
            }
        }
    }

    /// Attention probabilities of head `h` for query rows `a..b` of branch `seg` (`(b - a) x
    /// keys`, keys = `seg.off + b` of the branch's gathered keys `kg`, key `j` at position `j`;
    /// zeros past each row's last visible key and, in a sliding-window layer, before its
    /// first). The backward pass calls this again rather than keeping them: recomputing costs
    /// one small product, keeping them costs `heads x T x keys` floats per layer (43 MB per
    /// 200-token sequence for SmolLM2).
    #[allow(clippy::too_many_arguments)]
    fn chunk_probs(&self, q: &[f32], h: usize, seg: &Segment, a: usize, b: usize, kg: &[f32], window: Option<usize>) -> Vec<f32> {
        let c = &self.base.config;
        let (hd, qd) = (c.head_dim, c.q_dim());
        let (rows, keys) = (b - a, seg.off + b);
        let mut s = vec![0f32; rows * keys];
        mm_serial(rows, keys, hd, &mut s, keys, false, View::strided(&q[(seg.start + a) * qd + h * hd..], qd), View::rm(kg, hd).t());
        for (i, row) in s.chunks_exact_mut(keys).enumerate() {
            let last = seg.off + a + i;
            let first = window.map_or(0, |w| (last + 1).saturating_sub(w));
            softmax_scaled(&mut row[first..=last], c.attn_scale);
            row[..first].fill(0.0);
            row[last + 1..].fill(0.0);
        }
        s
    }

    /// The sliding window of layer `l`, if it has one.
    fn window(&self, l: usize) -> Option<usize> {
        let c = &self.base.config;
        if c.is_swa(l) {
            c.sliding_window
        } else {
            None
        }
    }

    /// Causal attention: `attn = softmax(q k^T * scale) v` per head, branch by branch and in
    /// blocks of `geo.chunk` query rows, each block multiplying only the keys up to its last row
    /// (in a sliding-window layer, keys before a row's window are multiplied and then masked).
    /// Computing the whole `T x T` square and masking it (as this did before) spent most of
    /// the work on masked keys: half of it for one sequence, about two thirds for a schema
    /// prefix shared by four branches, and attention was 40% of the Ask-Data tuning step.
    fn attention(&self, q: &[f32], k: &[f32], v: &[f32], t: usize, geo: &Geo, window: Option<usize>) -> Vec<f32> {
        let c = &self.base.config;
        let (nh, hd, qd, kvd) = (c.n_heads, c.head_dim, c.q_dim(), c.kv_dim());
        let group = nh / c.n_kv_heads;
        let segs = geo.segments();
        let per_head: Vec<Vec<f32>> = (0..nh)
            .into_par_iter()
            .map(|h| {
                let kvh = h / group;
                let mut o = vec![0f32; t * hd];
                for seg in &segs {
                    let (kg, vg) = (seg.gather(k, kvd, kvh * hd, hd), seg.gather(v, kvd, kvh * hd, hd));
                    for (a, b) in seg.chunks(geo.chunk) {
                        let keys = seg.off + b;
                        let p = self.chunk_probs(q, h, seg, a, b, &kg, window);
                        mm_serial(b - a, hd, keys, &mut o[(seg.start + a) * hd..], hd, false, View::rm(&p, keys), View::rm(&vg, hd));
                    }
                }
                o
            })
            .collect();
        let mut attn = vec![0f32; t * qd];
        for (h, o) in per_head.into_iter().enumerate() {
            for i in 0..t {
                attn[i * qd + h * hd..i * qd + (h + 1) * hd].copy_from_slice(&o[i * hd..(i + 1) * hd]);
            }
        }
        attn
    }

    /// Backward of [`Pass::attention`]: gradients of (post-rope) q, k and v. (Keys outside a
    /// row's window have probability 0, so the gradient rule below gives them none.)
    fn attention_bwd(&self, sv: &Saved, v: &[f32], dattn: &[f32], t: usize, geo: &Geo, window: Option<usize>) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let c = &self.base.config;
        let (nh, hd, qd, kvd) = (c.n_heads, c.head_dim, c.q_dim(), c.kv_dim());
        let group = nh / c.n_kv_heads;
        let segs = geo.segments();
        let per_head: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..nh)
            .into_par_iter()
            .map(|h| {
                let kvh = h / group;
                let mut dq = vec![0f32; t * hd];
                let mut dk = vec![0f32; t * hd];
                let mut dv = vec![0f32; t * hd];
                for seg in &segs {
                    let (kg, vg) = (seg.gather(&sv.k, kvd, kvh * hd, hd), seg.gather(v, kvd, kvh * hd, hd));
                    let mut dkg = vec![0f32; kg.len()];
                    let mut dvg = vec![0f32; vg.len()];
                    for (a, b) in seg.chunks(geo.chunk) {
                        let (rows, keys) = (b - a, seg.off + b);
                        let p = self.chunk_probs(&sv.q, h, seg, a, b, &kg, window);
                        let dout = View::strided(&dattn[(seg.start + a) * qd + h * hd..], qd);
                        // dP = dO V^T
                        let mut dp = vec![0f32; rows * keys];
                        mm_serial(rows, keys, hd, &mut dp, keys, false, dout, View::rm(&vg, hd).t());
                        // dS = P * (dP - rowsum(dP * P)) * scale
                        for i in 0..rows {
                            let last = seg.off + a + i;
                            let (pr, dr) = (&p[i * keys..i * keys + last + 1], &mut dp[i * keys..(i + 1) * keys]);
                            let dot: f32 = pr.iter().zip(dr.iter()).map(|(x, y)| x * y).sum();
                            for (d, pv) in dr.iter_mut().zip(pr) {
                                *d = pv * (*d - dot) * c.attn_scale;
                            }
                            dr[last + 1..].fill(0.0);
                        }
                        mm_serial(rows, hd, keys, &mut dq[(seg.start + a) * hd..], hd, false, View::rm(&dp, keys), View::rm(&kg, hd));
                        mm_serial(keys, hd, rows, &mut dkg, hd, true, View::rm(&dp, keys).t(), View::strided(&sv.q[(seg.start + a) * qd + h * hd..], qd));
                        mm_serial(keys, hd, rows, &mut dvg, hd, true, View::rm(&p, keys).t(), dout);
                    }
                    seg.scatter_add(&dkg, &mut dk, hd);
                    seg.scatter_add(&dvg, &mut dv, hd);
                }
                (dq, dk, dv)
            })
            .collect();
        let mut dq = vec![0f32; t * qd];
        let mut dk = vec![0f32; t * kvd];
        let mut dv = vec![0f32; t * kvd];
        // Summed over the heads of each group in head order: the same result on any thread count.
        for (h, (hq, hk, hv)) in per_head.into_iter().enumerate() {
            let kvh = h / group;
            for i in 0..t {
                dq[i * qd + h * hd..i * qd + (h + 1) * hd].copy_from_slice(&hq[i * hd..(i + 1) * hd]);
                for (d, s) in dk[i * kvd + kvh * hd..i * kvd + (kvh + 1) * hd].iter_mut().zip(&hk[i * hd..(i + 1) * hd]) {
                    *d += s;
                }
                for (d, s) in dv[i * kvd + kvh * hd..i * kvd + (kvh + 1) * hd].iter_mut().zip(&hv[i * hd..(i + 1) * hd]) {
                    *d += s;
                }
            }
        }
        (dq, dk, dv)
    }

    /// One layer forward, with the elementwise passes compiled for AVX2/FMA where the CPU has
    /// them (the default build targets SSE2; the products dispatch on their own).
    fn layer_fwd(&self, l: usize, x: Vec<f32>, t: usize, geo: &Geo) -> (Vec<f32>, Saved) {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { self.layer_fwd_avx2(l, x, t, geo) };
        }
        self.layer_fwd_impl(l, x, t, geo)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn layer_fwd_avx2(&self, l: usize, x: Vec<f32>, t: usize, geo: &Geo) -> (Vec<f32>, Saved) {
        self.layer_fwd_impl(l, x, t, geo)
    }

    /// One layer backward (see [`Pass::layer_fwd`] for the dispatch).
    fn layer_bwd(&self, l: usize, sv: &Saved, dx: Vec<f32>, t: usize, grads: &mut Grads, geo: &Geo) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { self.layer_bwd_avx2(l, sv, dx, t, grads, geo) };
        }
        self.layer_bwd_impl(l, sv, dx, t, grads, geo)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn layer_bwd_avx2(&self, l: usize, sv: &Saved, dx: Vec<f32>, t: usize, grads: &mut Grads, geo: &Geo) -> Vec<f32> {
        self.layer_bwd_impl(l, sv, dx, t, grads, geo)
    }

    #[inline(always)]
    fn layer_fwd_impl(&self, l: usize, x: Vec<f32>, t: usize, geo: &Geo) -> (Vec<f32>, Saved) {
        let c = &self.base.config;
        let bl = &self.base.layers[l];
        let (h, qd, kvd, f) = (c.hidden, c.q_dim(), c.kv_dim(), self.base.ffn);
        let mut a = vec![0f32; t * h];
        let mut rstd1 = vec![0f32; t];
        rms_norm_fwd(&x, &bl.attn_norm, c.rms_eps, &mut a, &mut rstd1);
        let mut q = vec![0f32; t * qd];
        let mut k = vec![0f32; t * kvd];
        let mut v = vec![0f32; t * kvd];
        let lq = self.linear(l, Target::QProj, &a, t, &mut q);
        let lk = self.linear(l, Target::KProj, &a, t, &mut k);
        let lv = self.linear(l, Target::VProj, &a, t, &mut v);
        let q_raw = bl.q_norm.as_ref().map(|w| Normed::norm(&mut q, w, c.rms_eps));
        let k_raw = bl.k_norm.as_ref().map(|w| Normed::norm(&mut k, w, c.rms_eps));
        let angles = geo.angles(c, l);
        self.rope_all(&mut q, qd, 1.0, angles);
        self.rope_all(&mut k, kvd, 1.0, angles);
        let attn = self.attention(&q, &k, &v, t, geo, self.window(l));
        let mut y = vec![0f32; t * h];
        let lo = self.linear(l, Target::OProj, &attn, t, &mut y);
        let post_attn = bl.post_attn_norm.as_ref().map(|w| Normed::norm(&mut y, w, c.rms_eps));
        let x2: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
        let mut b = vec![0f32; t * h];
        let mut rstd2 = vec![0f32; t];
        rms_norm_fwd(&x2, &bl.ffn_norm, c.rms_eps, &mut b, &mut rstd2);
        let mut g = vec![0f32; t * f];
        let mut u = vec![0f32; t * f];
        let lg = self.linear(l, Target::GateProj, &b, t, &mut g);
        let lu = self.linear(l, Target::UpProj, &b, t, &mut u);
        let m: Vec<f32> = match c.arch {
            Arch::Llama => g.iter().zip(&u).zip(&neg_exp(&g)).map(|((gv, uv), e)| gv / (1.0 + e) * uv).collect(),
            Arch::Gemma3 => gelu_mul(&g, &u),
        };
        let ld = self.linear(l, Target::DownProj, &m, t, &mut y);
        let post_ffn = bl.post_ffn_norm.as_ref().map(|w| Normed::norm(&mut y, w, c.rms_eps));
        let out: Vec<f32> = x2.iter().zip(&y).map(|(a, b)| a + b).collect();
        let p = self.base.precision;
        let saved = Saved {
            x,
            rstd1,
            q,
            k,
            v: Stash::new(v, p),
            attn: Stash::new(attn, p),
            x2,
            rstd2,
            g: Stash::new(g, p),
            u: Stash::new(u, p),
            lora_t: [lq, lk, lv, lo, lg, lu, ld],
            q_raw,
            k_raw,
            post_attn,
            post_ffn,
        };
        (out, saved)
    }

    /// Backward through layer `l`: `dx` is the gradient of its output; returns that of its input.
    #[inline(always)]
    fn layer_bwd_impl(&self, l: usize, sv: &Saved, dx: Vec<f32>, t: usize, grads: &mut Grads, geo: &Geo) -> Vec<f32> {
        let c = &self.base.config;
        let bl = &self.base.layers[l];
        let (h, qd, kvd, f) = (c.hidden, c.q_dim(), c.kv_dim(), self.base.ffn);
        let lt = &sv.lora_t;
        let mut dm = vec![0f32; t * f];
        let (g, u) = (sv.g.f32(), sv.u.f32());
        let mut dg = vec![0f32; t * f];
        let mut du = vec![0f32; t * f];
        let dy_ffn = sv.post_ffn.as_ref().map(|n| n.bwd(bl.post_ffn_norm.as_ref().expect("saved with the norm"), &dx));
        let dy_ffn: &[f32] = dy_ffn.as_deref().unwrap_or(&dx);
        match c.arch {
            Arch::Llama => {
                // One sigmoid per element serves both the recomputed activation and its derivative.
                let sig: Vec<f32> = neg_exp(&g).iter().map(|e| 1.0 / (1.0 + e)).collect();
                let m: Vec<f32> = g.iter().zip(u.iter()).zip(&sig).map(|((gv, uv), sg)| gv * sg * uv).collect();
                self.linear_bwd(l, Target::DownProj, &m, &lt[6], dy_ffn, t, &mut dm, grads);
                drop(m);
                for i in 0..t * f {
                    let (gv, uv) = (g[i], u[i]);
                    let sg = sig[i];
                    du[i] = dm[i] * gv * sg;
                    dg[i] = dm[i] * uv * sg * (1.0 + gv * (1.0 - sg));
                }
            }
            Arch::Gemma3 => {
                // gelu(g) = g (1 + th) / 2 with th = tanh(a), a = sqrt(2/pi) (g + 0.044715 g^3):
                // gelu'(g) = (1 + th) / 2 + g (1 - th^2) a'(g) / 2.
                let th = gelu_inner_tanh(&g);
                let act: Vec<f32> = g.iter().zip(&th).map(|(gv, tv)| 0.5 * gv * (1.0 + tv)).collect();
                let m: Vec<f32> = act.iter().zip(u.iter()).map(|(a, uv)| a * uv).collect();
                self.linear_bwd(l, Target::DownProj, &m, &lt[6], dy_ffn, t, &mut dm, grads);
                drop(m);
                for i in 0..t * f {
                    let (gv, uv, tv) = (g[i], u[i], th[i]);
                    let da = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * gv * gv);
                    du[i] = dm[i] * act[i];
                    dg[i] = dm[i] * uv * (0.5 * (1.0 + tv) + 0.5 * gv * (1.0 - tv * tv) * da);
                }
            }
        }
        drop((g, u, dm));
        let mut db = vec![0f32; t * h];
        let b = renorm(&sv.x2, &sv.rstd2, &bl.ffn_norm);
        self.linear_bwd(l, Target::GateProj, &b, &lt[4], &dg, t, &mut db, grads);
        self.linear_bwd(l, Target::UpProj, &b, &lt[5], &du, t, &mut db, grads);
        drop(b);
        let mut dx2 = dx;
        rms_norm_bwd(&sv.x2, &sv.rstd2, &bl.ffn_norm, &db, &mut dx2);
        let mut dattn = vec![0f32; t * qd];
        let dy_attn = sv.post_attn.as_ref().map(|n| n.bwd(bl.post_attn_norm.as_ref().expect("saved with the norm"), &dx2));
        self.linear_bwd(l, Target::OProj, &sv.attn.f32(), &lt[3], dy_attn.as_deref().unwrap_or(&dx2), t, &mut dattn, grads);
        drop(dy_attn);
        let (mut dq, mut dk, dv) = self.attention_bwd(sv, &sv.v.f32(), &dattn, t, geo, self.window(l));
        let angles = geo.angles(c, l);
        self.rope_all(&mut dq, qd, -1.0, angles);
        self.rope_all(&mut dk, kvd, -1.0, angles);
        if let (Some(n), Some(w)) = (&sv.q_raw, &bl.q_norm) {
            dq = n.bwd(w, &dq);
        }
        if let (Some(n), Some(w)) = (&sv.k_raw, &bl.k_norm) {
            dk = n.bwd(w, &dk);
        }
        let mut da = vec![0f32; t * h];
        let a = renorm(&sv.x, &sv.rstd1, &bl.attn_norm);
        self.linear_bwd(l, Target::QProj, &a, &lt[0], &dq, t, &mut da, grads);
        self.linear_bwd(l, Target::KProj, &a, &lt[1], &dk, t, &mut da, grads);
        self.linear_bwd(l, Target::VProj, &a, &lt[2], &dv, t, &mut da, grads);
        drop(a);
        rms_norm_bwd(&sv.x, &sv.rstd1, &bl.attn_norm, &da, &mut dx2);
        dx2
    }

    /// Row geometry of one plain sequence of `t` tokens.
    fn geo(&self, t: usize) -> Geo {
        self.geo_rows((0..t).collect(), 0, vec![0; t])
    }

    fn geo_rows(&self, pos: Vec<usize>, prefix: usize, seg_start: Vec<usize>) -> Geo {
        let c = &self.base.config;
        let max = pos.iter().copied().max().map_or(0, |m| m + 1);
        let rows = |base: f32| {
            let table: Vec<Vec<(f32, f32)>> = (0..max).map(|p| rope_angles(p, c.head_dim, base)).collect();
            pos.iter().map(|&p| table[p].clone()).collect::<Vec<_>>()
        };
        let local = (0..c.n_layers).any(|l| c.is_swa(l)).then(|| rows(c.rope_base_local));
        Geo { angles: rows(c.rope_base), angles_local: local, prefix, seg_start, chunk: attn_chunk() }
    }

    fn embed(&self, tokens: &[u32]) -> Vec<f32> {
        let c = &self.base.config;
        let h = c.hidden;
        let mut x = vec![0f32; tokens.len() * h];
        for (row, &tok) in x.chunks_exact_mut(h).zip(tokens) {
            let range = tok as usize * h..(tok as usize + 1) * h;
            match &self.base.embed {
                Embed::F32(e) => row.copy_from_slice(&e[range]),
                Embed::Bf16(e) => row.iter_mut().zip(&e[range]).for_each(|(o, v)| *o = v.to_f32()),
                Embed::FromHead => match &self.base.head {
                    Lin::Bf16 { fwd, .. } => fwd.column(tok as usize, row),
                    Lin::F32 { w, .. } => row.copy_from_slice(&w[range]),
                },
            }
            if c.embed_scale != 1.0 {
                row.iter_mut().for_each(|v| *v *= c.embed_scale);
            }
        }
        x
    }

    /// Loss rows: positions `i` whose next token carries weight; returns (rows, targets, weights).
    fn loss_rows(tokens: &[u32], weights: &[f32]) -> Vec<(usize, u32, f32)> {
        (0..tokens.len().saturating_sub(1)).filter(|&i| weights[i + 1] > 0.0).map(|i| (i, tokens[i + 1], weights[i + 1])).collect()
    }

    /// Head: logits at the loss rows, cross-entropy, and (when `norm` is given) the gradient of
    /// `norm * loss` with respect to the final hidden rows, written into `dx`.
    fn head(&self, x: &[f32], rows: &[(usize, u32, f32)], norm: Option<f32>, dx: Option<&mut [f32]>) -> SeqLoss {
        let c = &self.base.config;
        let (h, vocab) = (c.hidden, c.vocab);
        let n = rows.len();
        let mut xr = vec![0f32; n * h];
        for (j, &(i, _, _)) in rows.iter().enumerate() {
            xr[j * h..(j + 1) * h].copy_from_slice(&x[i * h..(i + 1) * h]);
        }
        let mut hn = vec![0f32; n * h];
        let mut rstd = vec![0f32; n];
        rms_norm_fwd(&xr, &self.base.out_norm, c.rms_eps, &mut hn, &mut rstd);
        let mut logits = vec![0f32; n * vocab];
        self.base.head.fwd(&hn, n, &mut logits);
        let mut loss_sum = 0f64;
        let mut weight_sum = 0f64;
        for (row, &(_, tgt, w)) in logits.chunks_exact_mut(vocab).zip(rows) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let target_logit = row[tgt as usize];
            // exp in f32 (vectorised), summed in f64; the row keeps the exps for the gradient.
            row.iter_mut().for_each(|v| *v -= max);
            exp_in_place(row);
            let sum: f64 = row.iter().map(|&v| v as f64).sum();
            let lse = max as f64 + sum.ln();
            loss_sum += w as f64 * (lse - target_logit as f64);
            weight_sum += w as f64;
            if let Some(nm) = norm {
                // d(norm * w * CE)/dlogits = norm * w * (softmax - onehot)
                let k = nm * w;
                let scale = (k as f64 / sum) as f32;
                row.iter_mut().for_each(|v| *v *= scale);
                row[tgt as usize] -= k;
            }
        }
        if let (Some(_), Some(dx)) = (norm, dx) {
            let mut dhn = vec![0f32; n * h];
            self.base.head.bwd(&logits, n, &mut dhn);
            let mut dxr = vec![0f32; n * h];
            rms_norm_bwd(&xr, &rstd, &self.base.out_norm, &dhn, &mut dxr);
            for (j, &(i, _, _)) in rows.iter().enumerate() {
                for (d, s) in dx[i * h..(i + 1) * h].iter_mut().zip(&dxr[j * h..(j + 1) * h]) {
                    *d += s;
                }
            }
        }
        SeqLoss { loss_sum, weight_sum }
    }

    /// Forward only: the weighted loss of one sequence.
    pub fn loss(&self, tokens: &[u32], weights: &[f32]) -> SeqLoss {
        let t = tokens.len();
        let geo = self.geo(t);
        let mut x = self.embed(tokens);
        for l in 0..self.base.layers.len() {
            x = self.layer_fwd(l, x, t, &geo).0;
        }
        self.head(&x, &Self::loss_rows(tokens, weights), None, None)
    }

    /// Forward and backward of one sequence: adds the gradient of `norm * weighted loss` to
    /// `grads` and returns the loss.
    pub fn loss_and_grad(&self, tokens: &[u32], weights: &[f32], norm: f32, grads: &mut Grads) -> SeqLoss {
        let t = tokens.len();
        self.run_rows(tokens, &self.geo(t), &Self::loss_rows(tokens, weights), norm, grads)
    }

    /// Forward and backward of sequences that share their first `prefix` tokens, in one pass:
    /// the prefix's rows once, then each sequence's remaining rows, which attend to the prefix
    /// and to themselves (a tree, as a prefix cache serves it). Same loss and gradients as
    /// [`Pass::loss_and_grad`] on each sequence alone, with the prefix computed once instead of
    /// once per sequence: a dataset whose examples share a system prompt (a schema, say) trains
    /// on fewer rows. No loss may be taken at the prefix's last row (`weights[prefix] == 0`
    /// for every sequence), since each sequence continues it differently.
    pub fn loss_and_grad_shared(&self, seqs: &[(&[u32], &[f32])], prefix: usize, norm: f32, grads: &mut Grads) -> SeqLoss {
        assert!(
            prefix > 0 && seqs.iter().all(|(t, w)| t.len() > prefix && t[..prefix] == seqs[0].0[..prefix] && w[..=prefix].iter().all(|&v| v == 0.0)),
            "sequences do not share a loss-free prefix of {prefix}"
        );
        let mut tokens: Vec<u32> = seqs[0].0[..prefix].to_vec();
        let mut pos: Vec<usize> = (0..prefix).collect();
        let mut seg_start = vec![0; prefix];
        let mut rows = Vec::new();
        for (toks, w) in seqs {
            let start = tokens.len();
            for (j, &tok) in toks[prefix..].iter().enumerate() {
                tokens.push(tok);
                pos.push(prefix + j);
                seg_start.push(start);
                // Row `start + j` (position prefix + j) predicts the token at prefix + j + 1.
                if let Some(&wt) = w.get(prefix + j + 1).filter(|&&wt| wt > 0.0) {
                    rows.push((start + j, toks[prefix + j + 1], wt));
                }
            }
        }
        let geo = self.geo_rows(pos, prefix, seg_start);
        self.run_rows(&tokens, &geo, &rows, norm, grads)
    }

    fn run_rows(&self, tokens: &[u32], geo: &Geo, rows: &[(usize, u32, f32)], norm: f32, grads: &mut Grads) -> SeqLoss {
        let t = tokens.len();
        let h = self.base.config.hidden;
        let mut x = self.embed(tokens);
        let mut saved = Vec::with_capacity(self.base.layers.len());
        for l in 0..self.base.layers.len() {
            let (out, sv) = self.layer_fwd(l, x, t, geo);
            saved.push(sv);
            x = out;
        }
        let mut dx = vec![0f32; t * h];
        let loss = self.head(&x, rows, Some(norm), Some(&mut dx));
        drop(x);
        for l in (0..self.base.layers.len()).rev() {
            let sv = saved.pop().expect("one saved per layer");
            dx = self.layer_bwd(l, &sv, dx, t, grads, geo);
        }
        loss
    }
}

/// Where each row of a pass sits: its rope angles (by position), and which keys it may attend
/// to: every earlier row of the shared prefix (`..prefix`) and of its own branch
/// (`seg_start..=row`). A plain sequence is one branch starting at 0.
struct Geo {
    /// Rope angles per row, for global-attention layers.
    angles: Vec<Vec<(f32, f32)>>,
    /// For sliding-window layers, when the model has any (Gemma 3 rotates those with another base).
    angles_local: Option<Vec<Vec<(f32, f32)>>>,
    prefix: usize,
    seg_start: Vec<usize>,
    /// Query rows per attention block.
    chunk: usize,
}

/// Query rows per attention block. Smaller blocks skip more of the masked keys (a block of
/// `c` rows multiplies `c / 2` masked keys per row on average) but give the GEMM smaller
/// products; on the Ask-Data tuning step 32, 64 and 128 ran within 3% of each other.
const ATTN_CHUNK: usize = 64;

#[cfg(not(test))]
fn attn_chunk() -> usize {
    ATTN_CHUNK
}

#[cfg(test)]
thread_local! {
    /// Tests run the attention in smaller blocks than their short sequences to cover the
    /// blocked paths.
    pub(crate) static TEST_ATTN_CHUNK: std::cell::Cell<usize> = const { std::cell::Cell::new(ATTN_CHUNK) };
}

#[cfg(test)]
fn attn_chunk() -> usize {
    TEST_ATTN_CHUNK.with(|c| c.get())
}

impl Geo {
    /// The rope angles of layer `l`'s rows.
    fn angles(&self, c: &ModelConfig, l: usize) -> &[Vec<(f32, f32)>] {
        match &self.angles_local {
            Some(local) if c.is_swa(l) => local,
            _ => &self.angles,
        }
    }

    /// The pass's branches in row order: rows with the same `seg_start`.
    fn segments(&self) -> Vec<Segment> {
        let mut out: Vec<Segment> = Vec::new();
        for (row, &s) in self.seg_start.iter().enumerate() {
            match out.last_mut() {
                Some(seg) if seg.start == s => seg.end = row + 1,
                _ => out.push(Segment { start: s, end: row + 1, off: if s == 0 { 0 } else { self.prefix } }),
            }
        }
        out
    }
}

/// One branch of a pass: query rows `start..end`, which see the shared prefix's rows `..off`
/// (none for the prefix itself or a plain sequence) and their own earlier rows.
struct Segment {
    start: usize,
    end: usize,
    off: usize,
}

impl Segment {
    /// The rows this branch's queries see, as a row-major `(off + len) x hd` matrix: columns
    /// `col..col + hd` of the prefix's rows, then of the branch's own.
    fn gather(&self, x: &[f32], width: usize, col: usize, hd: usize) -> Vec<f32> {
        let mut g = Vec::with_capacity((self.off + self.end - self.start) * hd);
        for r in (0..self.off).chain(self.start..self.end) {
            g.extend_from_slice(&x[r * width + col..r * width + col + hd]);
        }
        g
    }

    /// Adds a gradient of [`Segment::gather`]'s matrix back to the rows it came from.
    fn scatter_add(&self, g: &[f32], dst: &mut [f32], hd: usize) {
        for (j, r) in (0..self.off).chain(self.start..self.end).enumerate() {
            dst[r * hd..(r + 1) * hd].iter_mut().zip(&g[j * hd..(j + 1) * hd]).for_each(|(d, s)| *d += s);
        }
    }

    /// Blocks of at most `chunk` query rows, as offsets `(a, b)` into the branch.
    fn chunks(&self, chunk: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let n = self.end - self.start;
        (0..n).step_by(chunk.max(1)).map(move |a| (a, (a + chunk.max(1)).min(n)))
    }
}
