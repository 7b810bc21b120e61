//! LoRA adapters: low-rank updates `W + (alpha / r) * B A` on a frozen base's linear layers.
//!
//! One type serves training (the `train` crate updates `a` and `b`) and inference (the model's
//! forward pass adds each sequence's own adapter to its rows of the batch). On disk an adapter is
//! in PEFT's layout (`adapter_config.json` + `adapter_model.safetensors`, PEFT's tensor names), so
//! it also loads in PEFT and vLLM. In memory its matrices are in the base's layout: for llama
//! weights as GGUF stores them (query/key rows permuted for interleaved rope by llama.cpp's
//! converter) the rows of `B` for `q_proj` and `k_proj` are permuted the same way on load and
//! back on save.

use crate::error::{Error, Result};
use crate::model::{Arch, ModelConfig};
use crate::ops::RopeStyle;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The linear layers an adapter can target, in PEFT's module names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Query projection.
    QProj,
    /// Key projection.
    KProj,
    /// Value projection.
    VProj,
    /// Attention output projection.
    OProj,
    /// MLP gate projection.
    GateProj,
    /// MLP up projection.
    UpProj,
    /// MLP down projection.
    DownProj,
}

impl Target {
    /// All seven, in the order a block applies them.
    pub const ALL: [Target; 7] = [Target::QProj, Target::KProj, Target::VProj, Target::OProj, Target::GateProj, Target::UpProj, Target::DownProj];

    /// PEFT's module name.
    pub fn name(self) -> &'static str {
        match self {
            Target::QProj => "q_proj",
            Target::KProj => "k_proj",
            Target::VProj => "v_proj",
            Target::OProj => "o_proj",
            Target::GateProj => "gate_proj",
            Target::UpProj => "up_proj",
            Target::DownProj => "down_proj",
        }
    }

    /// Parses a PEFT module name.
    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Index into [`Target::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    fn module_path(self) -> &'static str {
        match self {
            Target::QProj | Target::KProj | Target::VProj | Target::OProj => "self_attn",
            _ => "mlp",
        }
    }

    /// `(out, in)` widths of the layer this target adapts.
    pub fn shape(self, c: &ModelConfig, ffn: usize) -> (usize, usize) {
        match self {
            Target::QProj => (c.q_dim(), c.hidden),
            Target::KProj | Target::VProj => (c.kv_dim(), c.hidden),
            Target::OProj => (c.hidden, c.q_dim()),
            Target::GateProj | Target::UpProj => (ffn, c.hidden),
            Target::DownProj => (c.hidden, ffn),
        }
    }
}

/// An adapter's shape and scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank.
    pub r: usize,
    /// Scale numerator: updates are multiplied by `alpha / r`.
    pub alpha: f32,
    /// Dropout on the adapter's input during training.
    pub dropout: f32,
    /// Layers adapted.
    pub targets: Vec<Target>,
}

impl LoraConfig {
    /// `alpha / r`.
    pub fn scale(&self) -> f32 {
        self.alpha / self.r as f32
    }
}

/// One adapted layer: `a` is `r x in`, `b` is `out x r`, both row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    /// Down-projection, `r x in`.
    pub a: Vec<f32>,
    /// Up-projection, `out x r`.
    pub b: Vec<f32>,
    /// Output width.
    pub out: usize,
    /// Input width.
    pub inp: usize,
    /// The serving form (see [`Adapter::prepare`]); empty while training.
    pub served: Served,
}

/// One pair as served: in int8 with a scale per row of `A` and per row of `B`, the rank padded
/// with zeros to a multiple of 16 (`rp`), laid out so that a row's update is two sweeps with
/// the sums in registers.
///
/// Why: with 8 requests over 4 adapters (rank 16 on all seven projections of SmolLM2), the
/// update from the f32 `A` and `B` ran at 0.53x of the base's tokens/s (Intel Xeon, 2 vCPU;
/// BENCHMARKS, "Fine-tuning"). In this layout, with each weight loaded once for every row of
/// its adapter, it ran at 0.74x and 0.76x in two train bench runs and 0.77-0.88x in runs by
/// hand (a noisy host; the goal is 0.85x). `--example lora_apply` times these kernels: int8 beat
/// bf16 weights (whether widened to f32 or multiplied by `vdpbf16ps`: 1.07 ms against 1.43 ms
/// per step for 4 adapters), and this form is a quarter of the f32 matrices' bytes at ranks
/// that are multiples of 16 (half at rank 8; the f32 matrices stay beside it in [`LoraPair`]). The rounding is at most half a step of 1/127 of a row's
/// largest weight, on the update only, never on the base; a row of `B` is `r` weights, so its
/// scale follows each output closely.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Served {
    /// The rank.
    r: usize,
    /// The rank rounded up to a multiple of 16 (rank 8, PEFT's default, takes the AVX-512
    /// kernel too; the padding ranks are zero and add nothing).
    rp: usize,
    /// `A^T`, `inp x rp`: a row's `A x` is one pass over it with `rp` sums.
    at: Vec<i8>,
    /// Per row `k` of `A`: `at[., k] * a_scale[k]` is `A[k, .]` (zero past `r`).
    a_scale: Vec<f32>,
    /// `(alpha / r) B^T` in blocks of 16 outputs, `ceil(out / 16) x rp x 16`, the last block
    /// padded with zeros: each block of the output is read and written once.
    bt: Vec<i8>,
    /// Per output `o` (padded to whole blocks): `bt[., ., o] * b_scale[o]` is `(alpha / r) B[o, .]`.
    b_scale: Vec<f32>,
}

/// `v` as int8 steps of `max |v| / 127`, and that step.
fn quantize(v: impl Iterator<Item = f32> + Clone) -> (Vec<i8>, f32) {
    let amax = v.clone().fold(0f32, |m, x| m.max(x.abs()));
    let step = if amax > 0.0 { amax / 127.0 } else { 1.0 };
    (v.map(|x| (x / step).round().clamp(-127.0, 127.0) as i8).collect(), step)
}

impl Served {
    fn new(p: &LoraPair, r: usize, scale: f32) -> Served {
        let rp = r.div_ceil(16) * 16;
        let mut at = vec![0i8; p.inp * rp];
        let mut a_scale = vec![0f32; rp];
        for (k, arow) in p.a.chunks_exact(p.inp).enumerate() {
            let (q, step) = quantize(arow.iter().copied());
            a_scale[k] = step;
            for (i, v) in q.into_iter().enumerate() {
                at[i * rp + k] = v;
            }
        }
        let blocks = p.out.div_ceil(16);
        let mut bt = vec![0i8; blocks * rp * 16];
        let mut b_scale = vec![0f32; blocks * 16];
        for (o, brow) in p.b.chunks_exact(r).enumerate() {
            let (q, step) = quantize(brow.iter().map(|v| scale * v));
            b_scale[o] = step;
            for (k, v) in q.into_iter().enumerate() {
                bt[(o / 16) * rp * 16 + k * 16 + o % 16] = v;
            }
        }
        Served { r, rp, at, a_scale, bt, b_scale }
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        self.at.len() + self.bt.len() + 4 * (self.a_scale.len() + self.b_scale.len())
    }

    fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

/// Rows one serving task updates together, reading its adapter's weights once: 4 rows keep
/// 16 sums of `A x` per row in 16 AVX-512 registers.
pub const GROUP: usize = 4;
// The AVX-512 kernel is instantiated for 1 to 4 rows.
const _: () = assert!(GROUP == 4);

/// The serving kernels: `t = A x` and `out += (alpha / r) B t` for up to [`GROUP`] rows of
/// one adapter, over the int8 layout of [`Served`]. Each weight loaded serves every row.
mod kernels {
    use super::{Served, GROUP};

    /// `t[k] = a_scale[k] sum_i x[i] at[i rp + k]`, for the true ranks `k < t.len()`.
    #[inline(always)]
    pub(super) fn down_generic(s: &Served, x: &[f32], t: &mut [f32]) {
        t.fill(0.0);
        for (xi, row) in x.iter().zip(s.at.chunks_exact(s.rp)) {
            for (tk, a) in t.iter_mut().zip(row) {
                *tk += xi * *a as f32;
            }
        }
        t.iter_mut().zip(&s.a_scale).for_each(|(tk, sc)| *tk *= sc);
    }

    /// `out[o] += b_scale[o] sum_k t[k] bt[o / 16][k][o % 16]`, for the true ranks
    /// `k < t.len()` (the padding ranks add nothing, and the generic loops skip them).
    #[inline(always)]
    pub(super) fn up_generic(s: &Served, t: &[f32], out: &mut [f32]) {
        for ((blk, ob), sc) in s.bt.chunks_exact(s.rp * 16).zip(out.chunks_mut(16)).zip(s.b_scale.chunks_exact(16)) {
            let mut acc = [0f32; 16];
            for (tk, brow) in t.iter().zip(blk.chunks_exact(16)) {
                for (a, b) in acc.iter_mut().zip(brow) {
                    *a += tk * *b as f32;
                }
            }
            for ((o, a), sc) in ob.iter_mut().zip(acc).zip(sc) {
                *o += a * sc;
            }
        }
    }

    #[inline(always)]
    fn generic(s: &Served, xs: &[&[f32]], t: &mut [f32], outs: &mut [&mut [f32]]) {
        for ((x, out), t) in xs.iter().zip(outs.iter_mut()).zip(t.chunks_exact_mut(s.rp)) {
            let t = &mut t[..s.r];
            down_generic(s, x, t);
            up_generic(s, t, out);
        }
    }

    /// Both steps for `1 ..= GROUP` rows, all of one input width and one output width, that
    /// of the weights (`t` is scratch, `GROUP x rp`): with AVX-512 when the CPU has it.
    pub(super) fn apply_rows(s: &Served, xs: &[&[f32]], t: &mut [f32], outs: &mut [&mut [f32]]) {
        let r = s.rp;
        assert!(xs.len() == outs.len() && (1..=GROUP).contains(&xs.len()) && t.len() == GROUP * r && s.a_scale.len() == r && r % 16 == 0);
        let (inp, out) = (xs[0].len(), outs[0].len());
        let blocks = out.div_ceil(16);
        assert!(xs.iter().all(|x| x.len() == inp) && outs.iter().all(|o| o.len() == out));
        assert!(s.at.len() == inp * r && s.bt.len() == blocks * r * 16 && s.b_scale.len() == blocks * 16);
        #[cfg(target_arch = "x86_64")]
        if crate::ops::has_avx512f() {
            // SAFETY: AVX-512F was checked; the rows' widths against the weights' above.
            unsafe {
                match xs.len() {
                    1 => avx512::both::<1>(s, xs, t, outs),
                    2 => avx512::both::<2>(s, xs, t, outs),
                    3 => avx512::both::<3>(s, xs, t, outs),
                    4 => avx512::both::<4>(s, xs, t, outs),
                    _ => unreachable!("at most GROUP rows"),
                }
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if crate::ops::has_avx2() {
            // SAFETY: AVX2 and FMA were checked.
            unsafe { generic_avx2(s, xs, t, outs) };
            return;
        }
        generic(s, xs, t, outs);
    }

    /// The generic loops, compiled for AVX2 (the default target is SSE2 only).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn generic_avx2(s: &Served, xs: &[&[f32]], t: &mut [f32], outs: &mut [&mut [f32]]) {
        generic(s, xs, t, outs)
    }

    #[cfg(target_arch = "x86_64")]
    mod avx512 {
        use super::Served;
        use std::arch::x86_64::*;

        /// 16 int8 at `p` as f32.
        #[inline(always)]
        unsafe fn load16(p: *const i8) -> __m512 {
            unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))) }
        }

        /// Safety: AVX-512F; `M == xs.len() == outs.len()`, every `xs` of one length `inp`
        /// and every `outs` of one length `out`, `t` of `GROUP x rp`, and `s` (`rp` a multiple
        /// of 16) holds `A^T` as `inp x rp`, `ceil(out / 16)` blocks of `rp x 16` and their
        /// scales.
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn both<const M: usize>(s: &Served, xs: &[&[f32]], t: &mut [f32], outs: &mut [&mut [f32]]) {
            let r = s.rp;
            let n = xs[0].len();
            // t = A x, 16 sums at a time; four accumulators per row over the inputs hide the
            // FMA latency when there is one row.
            for kc in (0..r).step_by(16) {
                let base = s.at.as_ptr().add(kc);
                let mut acc = [[_mm512_setzero_ps(); 4]; M];
                let mut i = 0;
                while i + 4 <= n {
                    let w: [__m512; 4] = std::array::from_fn(|j| load16(base.add((i + j) * r)));
                    for (a, x) in acc.iter_mut().zip(xs) {
                        for j in 0..4 {
                            a[j] = _mm512_fmadd_ps(_mm512_set1_ps(*x.get_unchecked(i + j)), w[j], a[j]);
                        }
                    }
                    i += 4;
                }
                while i < n {
                    let w = load16(base.add(i * r));
                    for (a, x) in acc.iter_mut().zip(xs) {
                        a[0] = _mm512_fmadd_ps(_mm512_set1_ps(*x.get_unchecked(i)), w, a[0]);
                    }
                    i += 1;
                }
                let sc = _mm512_loadu_ps(s.a_scale.as_ptr().add(kc));
                for (m, a) in acc.iter().enumerate() {
                    let sum = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
                    _mm512_storeu_ps(t.as_mut_ptr().add(m * r + kc), _mm512_mul_ps(sum, sc));
                }
            }
            // out += B' t: four blocks of 16 outputs at a time, so that each row has four
            // independent sums in flight (with one block and two sums per row, the adds waiting
            // on the FMA chains took a third of the kernel's samples); single blocks, masked at
            // the tail, for the rest.
            let o = outs[0].len();
            let nb = o.div_ceil(16);
            let mut b = 0;
            while b + 4 <= nb {
                up::<M, 4>(s, t, outs, b, o);
                b += 4;
            }
            while b < nb {
                up::<M, 1>(s, t, outs, b, o);
                b += 1;
            }
        }

        /// `out += B' t` for the `NB` blocks of 16 outputs from block `b0`.
        /// Safety: as [`both`]'s, `t` holding each row's `A x` (its first `rp` entries from
        /// `m rp`), and `b0 + NB <= ceil(o / 16)`.
        #[inline(always)]
        unsafe fn up<const M: usize, const NB: usize>(s: &Served, t: &[f32], outs: &mut [&mut [f32]], b0: usize, o: usize) {
            let r = s.rp;
            unsafe {
                let blk = s.bt.as_ptr().add(b0 * r * 16);
                let mut acc = [[_mm512_setzero_ps(); NB]; M];
                for k in 0..r {
                    let w: [__m512; NB] = std::array::from_fn(|j| load16(blk.add(j * r * 16 + k * 16)));
                    for (m, a) in acc.iter_mut().enumerate() {
                        let tk = _mm512_set1_ps(*t.get_unchecked(m * r + k));
                        for j in 0..NB {
                            a[j] = _mm512_fmadd_ps(tk, w[j], a[j]);
                        }
                    }
                }
                for j in 0..NB {
                    let b = b0 + j;
                    let sc = _mm512_loadu_ps(s.b_scale.as_ptr().add(b * 16));
                    let live = (o - b * 16).min(16);
                    let mask: __mmask16 = if live == 16 { 0xffff } else { (1u16 << live) - 1 };
                    for (a, out) in acc.iter().zip(outs.iter_mut()) {
                        let p = out.as_mut_ptr().add(b * 16);
                        let cur = _mm512_maskz_loadu_ps(mask, p);
                        _mm512_mask_storeu_ps(p, mask, _mm512_fmadd_ps(a[j], sc, cur));
                    }
                }
            }
        }
    }
}

/// The rows of one batch that carry an adapter, grouped by adapter into tasks of up to
/// [`GROUP`] rows, so that each task reads its adapter's weights once for all its rows.
///
/// Why: with 8 requests over 4 adapters, applying them row by row read each adapter twice per
/// step, by different threads; the adapters' updates took 22% of such a step (Intel Xeon,
/// 2 vCPU, with the weights in bf16), against 37% for the whole Q4_1 base.
pub struct Plan<'a> {
    tasks: Vec<(&'a Adapter, Vec<usize>)>,
    /// Rows in the batch, with or without an adapter.
    n_rows: usize,
}

impl<'a> Plan<'a> {
    /// The plan for a batch whose row `i` carries `rows[i]`.
    pub fn new(rows: &[Option<&'a Adapter>]) -> Plan<'a> {
        let mut order: Vec<(usize, &'a Adapter)> = rows.iter().enumerate().filter_map(|(i, a)| a.map(|a| (i, a))).collect();
        order.sort_by_key(|(i, a)| (*a as *const Adapter as usize, *i));
        let mut tasks: Vec<(&'a Adapter, Vec<usize>)> = Vec::new();
        for (i, a) in order {
            match tasks.last_mut() {
                Some((b, rows)) if std::ptr::eq(*b, a) && rows.len() < GROUP => rows.push(i),
                _ => tasks.push((a, vec![i])),
            }
        }
        Plan { tasks, n_rows: rows.len() }
    }

    /// Whether no row carries an adapter.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Adds every row's own adapter update for each `(target, out)` of layer `l` to that
    /// `out`, all from the same input `x` (rows of `x` `n x inp`, of each `out` `n x width`):
    /// one parallel region for the targets that share an input (q, k and v; gate and up), the
    /// tasks spread over `pool`.
    pub fn apply(&self, pool: &crate::pool::Pool, l: usize, x: &[f32], outs: &mut [(Target, &mut [f32])]) {
        let n_rows = self.n_rows;
        if self.tasks.is_empty() {
            return;
        }
        assert!(x.len() % n_rows == 0 && outs.iter().all(|(_, o)| o.len() % n_rows == 0), "rows of x and out do not match the plan");
        let inp = x.len() / n_rows;
        // A row of the wrong width panics in its task (`Adapter::apply_rows`); the pool
        // re-raises that once every task is done.
        let targets: Vec<(Target, OutRows, usize)> = outs.iter_mut().map(|(t, o)| (*t, OutRows(o.as_mut_ptr()), o.len() / n_rows)).collect();
        let per_target = self.tasks.len();
        pool.run(targets.len() * per_target, &|ti| {
            let (adapter, rows) = &self.tasks[ti % per_target];
            let (target, base, ow) = targets[ti / per_target];
            let xs: [&[f32]; GROUP] = std::array::from_fn(|j| rows.get(j).map_or(&[][..], |&r| &x[r * inp..(r + 1) * inp]));
            // SAFETY: each row is in exactly one task of a target (the plan lists each batch
            // row once) and each target has its own output, so the tasks' output rows are
            // disjoint; every row `r < n_rows` lies within its output (`n_rows * ow` long),
            // which outlives `run`.
            let mut out_rows: [&mut [f32]; GROUP] = std::array::from_fn(|j| rows.get(j).map_or(&mut [][..], |&r| unsafe { std::slice::from_raw_parts_mut(base.0.add(r * ow), ow) }));
            adapter.apply_rows(l, target, &xs[..rows.len()], &mut out_rows[..rows.len()]);
        });
    }
}

#[derive(Clone, Copy)]
struct OutRows(*mut f32);
// SAFETY: used only to hand disjoint rows of one output to the pool's threads.
unsafe impl Send for OutRows {}
unsafe impl Sync for OutRows {}

/// A whole adapter over one base.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    /// Shape and scaling.
    pub config: LoraConfig,
    /// Per layer, per [`Target::ALL`] index: the pair, when that target is adapted.
    pub layers: Vec<[Option<LoraPair>; 7]>,
}

#[derive(Serialize, Deserialize)]
struct PeftConfig {
    #[serde(default)]
    base_model_name_or_path: Option<String>,
    peft_type: String,
    #[serde(default)]
    task_type: Option<String>,
    r: usize,
    lora_alpha: f32,
    #[serde(default)]
    lora_dropout: f32,
    target_modules: serde_json::Value,
    #[serde(default)]
    bias: Option<String>,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    inference_mode: bool,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
}

/// Whether q/k rows are stored permuted (llama GGUF) and so need converting to and from PEFT.
fn permuted(c: &ModelConfig) -> bool {
    c.arch == Arch::Llama && c.rope_style == RopeStyle::Interleaved
}

/// Reorders the rows of `b` (`heads * hd` rows of `r`) from Hugging Face order to llama.cpp's
/// permuted order (`to_gguf`) or back. llama.cpp's converter maps row `h*hd + i*hd/2 + j` to
/// `h*hd + 2j + i`.
fn permute_rows(b: &[f32], heads: usize, r: usize, to_gguf: bool) -> Vec<f32> {
    let rows = b.len() / r;
    let hd = rows / heads;
    let mut out = vec![0f32; b.len()];
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..hd / 2 {
                let hf = h * hd + i * hd / 2 + j;
                let gg = h * hd + 2 * j + i;
                let (src, dst) = if to_gguf { (hf, gg) } else { (gg, hf) };
                out[dst * r..(dst + 1) * r].copy_from_slice(&b[src * r..(src + 1) * r]);
            }
        }
    }
    out
}

fn dir_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::ModelDir { path: path.to_path_buf(), reason: reason.into() }
}

impl Adapter {
    /// A fresh adapter as PEFT initialises one: `A` Kaiming-uniform (a = sqrt 5, so bound
    /// `1/sqrt(in)`), `B` zero, so training starts from the base model exactly.
    pub fn init(c: &ModelConfig, ffn: usize, config: LoraConfig, seed: u64) -> Adapter {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let layers = (0..c.n_layers)
            .map(|_| {
                let mut pairs: [Option<LoraPair>; 7] = Default::default();
                for t in Target::ALL {
                    if !config.targets.contains(&t) {
                        continue;
                    }
                    let (out, inp) = t.shape(c, ffn);
                    let bound = 1.0 / (inp as f32).sqrt();
                    let a = (0..config.r * inp).map(|_| rng.gen_range(-bound..bound)).collect();
                    pairs[t.index()] = Some(LoraPair { a, b: vec![0.0; out * config.r], out, inp, served: Served::default() });
                }
                pairs
            })
            .collect();
        Adapter { config, layers }
    }

    /// The pair for `target` in layer `l`, if adapted.
    pub fn pair(&self, l: usize, target: Target) -> Option<&LoraPair> {
        self.layers.get(l).and_then(|p| p[target.index()].as_ref())
    }

    /// Readies the adapter for serving: each pair's [`Served`] form, in int8.
    pub fn prepare(&mut self) {
        let (r, s) = (self.config.r, self.config.scale());
        for p in self.layers.iter_mut().flatten().flatten() {
            p.served = Served::new(p, r, s);
        }
    }

    /// Adds this adapter's update for rows `x` (`n x inp`) to `out` (`n x out`).
    pub fn apply(&self, l: usize, target: Target, x: &[f32], out: &mut [f32]) {
        let Some(p) = self.pair(l, target) else {
            return;
        };
        for (xc, oc) in x.chunks(GROUP * p.inp).zip(out.chunks_mut(GROUP * p.out)) {
            let n = xc.len() / p.inp;
            let (mut xr, mut or) = (xc.chunks_exact(p.inp), oc.chunks_exact_mut(p.out));
            let xs: [&[f32]; GROUP] = std::array::from_fn(|_| xr.next().unwrap_or(&[]));
            let mut outs: [&mut [f32]; GROUP] = std::array::from_fn(|_| or.next().unwrap_or(&mut []));
            self.apply_rows(l, target, &xs[..n], &mut outs[..n]);
        }
    }

    /// Adds this adapter's update to up to [`GROUP`] rows: from the int8 serving form after
    /// [`Adapter::prepare`], in f32 from `a` and `b` before it.
    fn apply_rows(&self, l: usize, target: Target, xs: &[&[f32]], outs: &mut [&mut [f32]]) {
        let Some(p) = self.pair(l, target) else {
            return;
        };
        let (xw, ow) = (xs.first().map_or(p.inp, |x| x.len()), outs.first().map_or(p.out, |o| o.len()));
        assert!(xs.iter().all(|x| x.len() == p.inp) && outs.iter().all(|o| o.len() == p.out), "layer {l} {}: the adapter is {} x {}, the rows {xw} -> {ow}", target.name(), p.out, p.inp);
        let r = self.config.r;
        if !p.served.is_empty() {
            let rp = p.served.rp;
            let mut t = [0f32; 256];
            let mut tv;
            let t: &mut [f32] = if GROUP * rp <= t.len() {
                &mut t[..GROUP * rp]
            } else {
                tv = vec![0f32; GROUP * rp];
                &mut tv
            };
            kernels::apply_rows(&p.served, xs, t, outs);
            return;
        }
        let s = self.config.scale();
        let mut t = vec![0f32; r];
        for (xr, or) in xs.iter().zip(outs.iter_mut()) {
            for (k, tk) in t.iter_mut().enumerate() {
                *tk = crate::ops::dot(&p.a[k * p.inp..(k + 1) * p.inp], xr);
            }
            for (o, brow) in or.iter_mut().zip(p.b.chunks_exact(r)) {
                *o += s * brow.iter().zip(t.iter()).map(|(a, b)| a * b).sum::<f32>();
            }
        }
    }

    /// Writes the adapter in PEFT's layout into `dir` (created; files written to temporary names
    /// and renamed, so a reader never sees half a file).
    pub fn save_peft(&self, dir: &Path, c: &ModelConfig, base_name: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
        let r = self.config.r;
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (l, pairs) in self.layers.iter().enumerate() {
            for t in Target::ALL {
                let Some(p) = &pairs[t.index()] else { continue };
                let b = match t {
                    Target::QProj if permuted(c) => permute_rows(&p.b, c.n_heads, r, false),
                    Target::KProj if permuted(c) => permute_rows(&p.b, c.n_kv_heads, r, false),
                    _ => p.b.clone(),
                };
                let stem = format!("base_model.model.model.layers.{l}.{}.{}", t.module_path(), t.name());
                tensors.push((format!("{stem}.lora_A.weight"), vec![r, p.inp], to_bytes(&p.a)));
                tensors.push((format!("{stem}.lora_B.weight"), vec![p.out, r], to_bytes(&b)));
            }
        }
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> =
            tensors.iter().map(|(n, shape, bytes)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).expect("shape matches bytes"))).collect();
        let data = safetensors::serialize(views, &None).map_err(|e| dir_err(dir, e.to_string()))?;
        write_atomic(&dir.join("adapter_model.safetensors"), &data)?;
        let cfg = PeftConfig {
            base_model_name_or_path: Some(base_name.to_string()),
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            r,
            lora_alpha: self.config.alpha,
            lora_dropout: self.config.dropout,
            target_modules: serde_json::Value::from(self.config.targets.iter().map(|t| t.name()).collect::<Vec<_>>()),
            bias: Some("none".into()),
            fan_in_fan_out: false,
            inference_mode: true,
            use_rslora: false,
            use_dora: false,
        };
        let json = serde_json::to_vec_pretty(&cfg).expect("config serializes");
        write_atomic(&dir.join("adapter_config.json"), &json)
    }

    /// Reads a PEFT LoRA adapter for a base with hyperparameters `c` and MLP width `ffn`,
    /// checking every tensor's shape against the base.
    pub fn load_peft(dir: &Path, c: &ModelConfig, ffn: usize) -> Result<Adapter> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read(&cfg_path).map_err(|e| Error::Io { path: cfg_path.clone(), source: e })?;
        let pc: PeftConfig = serde_json::from_slice(&text).map_err(|e| dir_err(&cfg_path, e.to_string()))?;
        if pc.peft_type != "LORA" {
            return Err(dir_err(&cfg_path, format!("peft_type `{}` is not supported (only LORA)", pc.peft_type)));
        }
        if pc.use_dora || pc.use_rslora || pc.fan_in_fan_out {
            return Err(dir_err(&cfg_path, "DoRA, rsLoRA and fan_in_fan_out adapters are not supported"));
        }
        if pc.r == 0 || !pc.lora_alpha.is_finite() {
            return Err(dir_err(&cfg_path, format!("r must be at least 1 and lora_alpha finite (r {}, lora_alpha {})", pc.r, pc.lora_alpha)));
        }
        let st_path = dir.join("adapter_model.safetensors");
        let bytes = std::fs::read(&st_path).map_err(|e| Error::Io { path: st_path.clone(), source: e })?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| dir_err(&st_path, e.to_string()))?;
        let r = pc.r;
        let mut found: HashMap<(usize, Target), (Option<Vec<f32>>, Option<Vec<f32>>)> = HashMap::new();
        for (name, view) in st.tensors() {
            // base_model.model.model.layers.{l}.{self_attn|mlp}.{target}.lora_{A|B}[.default].weight
            let parts: Vec<&str> = name.split('.').collect();
            let Some(li) = parts.iter().position(|p| *p == "layers") else {
                return Err(dir_err(&st_path, format!("unexpected tensor `{name}`")));
            };
            let l: usize = parts.get(li + 1).and_then(|s| s.parse().ok()).ok_or_else(|| dir_err(&st_path, format!("bad layer in `{name}`")))?;
            let t = parts.get(li + 3).and_then(|s| Target::parse(s)).ok_or_else(|| dir_err(&st_path, format!("unsupported module in `{name}`")))?;
            let which = parts.get(li + 4).copied().unwrap_or("");
            if l >= c.n_layers {
                return Err(dir_err(&st_path, format!("`{name}`: layer {l} but the base has {}", c.n_layers)));
            }
            let (out, inp) = t.shape(c, ffn);
            let want = match which {
                "lora_A" => vec![r, inp],
                "lora_B" => vec![out, r],
                _ => return Err(dir_err(&st_path, format!("unexpected tensor `{name}`"))),
            };
            if view.shape() != want.as_slice() {
                return Err(dir_err(&st_path, format!("`{name}` has shape {:?}, the base needs {want:?}", view.shape())));
            }
            let vals = to_f32(view.dtype(), view.data()).ok_or_else(|| dir_err(&st_path, format!("`{name}`: dtype {:?} not supported", view.dtype())))?;
            // A NaN or infinity would serve as a zero row (the int8 form's scale skips NaN) or
            // poison every token; the adapter is refused instead.
            if vals.iter().any(|v| !v.is_finite()) {
                return Err(dir_err(&st_path, format!("`{name}` holds a value that is not finite")));
            }
            let e = found.entry((l, t)).or_default();
            if which == "lora_A" {
                e.0 = Some(vals);
            } else {
                e.1 = Some(vals);
            }
        }
        let mut targets: Vec<Target> = Vec::new();
        let mut layers: Vec<[Option<LoraPair>; 7]> = (0..c.n_layers).map(|_| Default::default()).collect();
        for ((l, t), (a, b)) in found {
            let (Some(a), Some(b)) = (a, b) else {
                return Err(dir_err(&st_path, format!("layer {l} {} has only one of lora_A and lora_B", t.name())));
            };
            let b = match t {
                Target::QProj if permuted(c) => permute_rows(&b, c.n_heads, r, true),
                Target::KProj if permuted(c) => permute_rows(&b, c.n_kv_heads, r, true),
                _ => b,
            };
            let (out, inp) = t.shape(c, ffn);
            layers[l][t.index()] = Some(LoraPair { a, b, out, inp, served: Served::default() });
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        if targets.is_empty() {
            return Err(dir_err(&st_path, "no LoRA tensors"));
        }
        targets.sort_by_key(|t| t.index());
        Ok(Adapter { config: LoraConfig { r, alpha: pc.lora_alpha, dropout: pc.lora_dropout, targets }, layers })
    }

    /// Bytes held by the matrices, the serving form included.
    pub fn bytes(&self) -> usize {
        self.layers.iter().flatten().flatten().map(|p| (p.a.len() + p.b.len()) * 4 + p.served.bytes()).sum()
    }
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn to_f32(dtype: safetensors::Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        safetensors::Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        safetensors::Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        safetensors::Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => return None,
    })
}

/// Writes `data` to `path` through a temporary file in the same directory, fsynced, then renamed.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let io = |e| Error::Io { path: path.to_path_buf(), source: e };
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(arch: Arch, style: RopeStyle) -> ModelConfig {
        ModelConfig {
            arch,
            n_layers: 2,
            hidden: 8,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 4,
            vocab: 10,
            context_length: 16,
            rms_eps: 1e-5,
            rope_base: 10000.0,
            rope_base_local: 10000.0,
            rope_style: style,
            sliding_window: None,
            swa_pattern: 0,
            attn_scale: 0.5,
            embed_scale: 1.0,
        }
    }

    #[test]
    fn permutation_round_trips_and_matches_llama_cpp() {
        // One head of width 4, r = 1: HF rows [0,1,2,3] become [0,2,1,3] in GGUF order.
        let b = vec![0.0, 1.0, 2.0, 3.0];
        let g = permute_rows(&b, 1, 1, true);
        assert_eq!(g, vec![0.0, 2.0, 1.0, 3.0]);
        assert_eq!(permute_rows(&g, 1, 1, false), b);
    }

    #[test]
    fn peft_save_load_round_trip() {
        for style in [RopeStyle::Interleaved, RopeStyle::Neox] {
            let c = cfg(Arch::Llama, style);
            let lc = LoraConfig { r: 2, alpha: 4.0, dropout: 0.0, targets: Target::ALL.to_vec() };
            let mut a = Adapter::init(&c, 12, lc, 7);
            for (i, p) in a.layers.iter_mut().flatten().flatten().enumerate() {
                p.b.iter_mut().enumerate().for_each(|(j, v)| *v = (i * 100 + j) as f32);
            }
            let dir = tempfile::tempdir().unwrap();
            a.save_peft(dir.path(), &c, "base").unwrap();
            let back = Adapter::load_peft(dir.path(), &c, 12).unwrap();
            assert_eq!(back, a);
            let text = std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap();
            assert!(text.contains("\"peft_type\": \"LORA\"") && text.contains("q_proj"), "{text}");
        }
    }

    #[test]
    fn wrong_shapes_are_refused_with_the_tensor_name() {
        let c = cfg(Arch::Llama, RopeStyle::Neox);
        let lc = LoraConfig { r: 2, alpha: 4.0, dropout: 0.0, targets: vec![Target::QProj] };
        let a = Adapter::init(&c, 12, lc, 1);
        let dir = tempfile::tempdir().unwrap();
        a.save_peft(dir.path(), &c, "base").unwrap();
        let mut other = c.clone();
        other.hidden = 16;
        let e = Adapter::load_peft(dir.path(), &other, 12).unwrap_err().to_string();
        assert!(e.contains("q_proj.lora_A") && e.contains("shape"), "{e}");
    }

    #[test]
    fn served_form_gives_the_update_of_its_int8_weights() {
        // Odd widths (a partial block of 16 outputs, inputs not a multiple of 4), ranks of one,
        // two and three blocks of 16 and ranks padded to 16, outputs in runs of four blocks
        // (exactly four; four then three, the last partial; two runs, the last block of the
        // second partial), and seven rows (tasks of four and three).
        for (r, inp, out) in [(16, 37, 45), (32, 37, 45), (48, 64, 16), (8, 37, 45), (3, 5, 7), (16, 37, 100), (32, 20, 64), (16, 37, 120)] {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(r as u64);
            let mut rand = |n: usize| (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect::<Vec<_>>();
            let (alpha, rows) = (2.0 * r as f32, 7);
            let p = LoraPair { a: rand(r * inp), b: rand(out * r), out, inp, served: Served::default() };
            let x = rand(rows * inp);
            let start = rand(rows * out);
            let mut ad = Adapter { config: LoraConfig { r, alpha, dropout: 0.0, targets: vec![Target::UpProj] }, layers: vec![Default::default()] };
            ad.layers[0][Target::UpProj.index()] = Some(p.clone());
            let mut f32_out = start.clone();
            ad.apply(0, Target::UpProj, &x, &mut f32_out);
            ad.prepare();
            let mut served = start.clone();
            ad.apply(0, Target::UpProj, &x, &mut served);
            let s = alpha / r as f32;
            let srv = &ad.layers[0][Target::UpProj.index()].as_ref().unwrap().served;
            // The weights as served, and each within half a step of the true one.
            let rp = srv.rp;
            assert_eq!(rp, r.div_ceil(16) * 16);
            let deq_a = |k: usize, i: usize| srv.at[i * rp + k] as f64 * srv.a_scale[k] as f64;
            let deq_b = |o: usize, k: usize| srv.bt[(o / 16) * rp * 16 + k * 16 + o % 16] as f64 * srv.b_scale[o] as f64;
            for k in 0..r {
                for i in 0..inp {
                    assert!((deq_a(k, i) - p.a[k * inp + i] as f64).abs() <= 0.5001 * srv.a_scale[k] as f64);
                }
                for o in 0..out {
                    assert!((deq_b(o, k) - (s * p.b[o * r + k]) as f64).abs() <= 0.5001 * srv.b_scale[o] as f64);
                }
            }
            // The padding ranks are zero.
            assert!((r..rp).all(|k| srv.a_scale[k] == 0.0 && (0..inp).all(|i| srv.at[i * rp + k] == 0)));
            // The generic loops, whatever this CPU has (`served` took AVX-512 where it has it).
            let mut generic = start.clone();
            let mut t = vec![0f32; r];
            for (xr, or) in x.chunks_exact(inp).zip(generic.chunks_exact_mut(out)) {
                kernels::down_generic(srv, xr, &mut t);
                kernels::up_generic(srv, &t, or);
            }
            if !crate::ops::has_avx512f() {
                eprintln!("this CPU has no AVX-512: only the generic loops were checked");
            }
            for row in 0..rows {
                let xr = &x[row * inp..(row + 1) * inp];
                let tk: Vec<f64> = (0..r).map(|k| (0..inp).map(|i| deq_a(k, i) * xr[i] as f64).sum()).collect();
                let x_abs: f64 = xr.iter().map(|v| v.abs() as f64).sum();
                for o in 0..out {
                    let want = start[row * out + o] as f64 + (0..r).map(|k| deq_b(o, k) * tk[k]).sum::<f64>();
                    let i = row * out + o;
                    for (name, got) in [("served", served[i]), ("generic", generic[i])] {
                        assert!((got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "r {r} {name} [{row},{o}]: {got} vs {want}");
                    }
                    // Against the f32 weights: within what the rounding of the weights allows.
                    let bound: f64 = (0..r).map(|k| (s * p.b[o * r + k]).abs() as f64 * 0.5 * srv.a_scale[k] as f64 * x_abs + 0.5 * srv.b_scale[o] as f64 * tk[k].abs()).sum();
                    assert!(((served[i] - f32_out[i]) as f64).abs() <= 1.01 * bound + 1e-4, "r {r} [{row},{o}]: {} vs {}", served[i], f32_out[i]);
                }
            }
        }
    }

    #[test]
    fn a_plan_gives_each_row_its_own_adapter() {
        // Ten rows over three adapters and none, interleaved, the last without one: tasks of up to GROUP rows of
        // one adapter, spread over a pool of two threads, give what each row's adapter alone
        // gives it.
        let c = cfg(Arch::Llama, RopeStyle::Neox);
        let lc = LoraConfig { r: 16, alpha: 32.0, dropout: 0.0, targets: vec![Target::UpProj, Target::QProj, Target::KProj] };
        let adapters: Vec<Adapter> = (0..3)
            .map(|i| {
                let mut a = Adapter::init(&c, 24, lc.clone(), i);
                a.layers.iter_mut().flatten().flatten().for_each(|p| p.b.iter_mut().enumerate().for_each(|(j, v)| *v = (j as f32 * 0.37 + i as f32).sin()));
                a.prepare();
                a
            })
            .collect();
        let which = [Some(0), None, Some(1), Some(0), Some(2), Some(0), Some(0), Some(0), Some(1), None];
        let rows: Vec<Option<&Adapter>> = which.iter().map(|w| w.map(|i| &adapters[i])).collect();
        let inp = c.hidden;
        let x: Vec<f32> = (0..which.len() * inp).map(|i| (i as f32 * 0.13).cos()).collect();
        let plan = Plan::new(&rows);
        assert_eq!(plan.tasks.len(), 4, "adapter 0's five rows make two tasks, 1 and 2 one each");
        // One region for four targets of three widths from one input; gate is not adapted.
        let widths = [(Target::UpProj, 24, 0.5f32), (Target::QProj, c.q_dim(), 0.75), (Target::KProj, c.kv_dim(), 1.0), (Target::GateProj, 24, 0.25)];
        let mut got: Vec<Vec<f32>> = widths.iter().map(|(_, w, v)| vec![*v; which.len() * w]).collect();
        let mut outs: Vec<(Target, &mut [f32])> = widths.iter().zip(got.iter_mut()).map(|((t, _, _), g)| (*t, &mut g[..])).collect();
        plan.apply(&crate::pool::Pool::new(2), 1, &x, &mut outs);
        for ((target, w, v), got) in widths.iter().zip(&got) {
            for (i, a) in rows.iter().enumerate() {
                let mut want = vec![*v; *w];
                if let Some(a) = a {
                    a.apply(1, *target, &x[i * inp..(i + 1) * inp], &mut want);
                }
                assert_eq!(&got[i * w..(i + 1) * w], &want[..], "{} row {i}", target.name());
                if *target == Target::GateProj {
                    assert!(want.iter().all(|u| u == v), "gate is not adapted");
                } else if a.is_some() {
                    assert!(want.iter().any(|u| u != v), "{} row {i}: no update", target.name());
                }
            }
        }
        // Rows of the wrong width for an adapted target: the task's panic reaches the caller.
        let mut short = vec![0f32; which.len() * 20];
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| plan.apply(&crate::pool::Pool::new(2), 1, &x, &mut [(Target::UpProj, &mut short)]))).unwrap_err();
        let msg = e.downcast::<String>().map(|m| *m).unwrap_or_default();
        assert!(msg.contains("up_proj: the adapter is 24 x 8, the rows 8 -> 20"), "{msg}");
        assert!(Plan::new(&[None, None]).is_empty());
    }

    #[test]
    fn an_adapter_with_a_value_that_is_not_finite_is_refused() {
        let c = cfg(Arch::Llama, RopeStyle::Neox);
        let lc = LoraConfig { r: 2, alpha: 4.0, dropout: 0.0, targets: vec![Target::QProj] };
        let mut a = Adapter::init(&c, 12, lc, 1);
        a.layers[1][Target::QProj.index()].as_mut().unwrap().b[3] = f32::NAN;
        let dir = tempfile::tempdir().unwrap();
        a.save_peft(dir.path(), &c, "base").unwrap();
        let e = Adapter::load_peft(dir.path(), &c, 12).unwrap_err().to_string();
        assert!(e.contains("layers.1.self_attn.q_proj.lora_B") && e.contains("not finite"), "{e}");
        // A rank of 0 (its tensors' shapes would pass) is refused by the config.
        let cfg = dir.path().join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg).unwrap().replace("\"r\": 2", "\"r\": 0");
        std::fs::write(&cfg, text).unwrap();
        let e = Adapter::load_peft(dir.path(), &c, 12).unwrap_err().to_string();
        assert!(e.contains("r must be at least 1"), "{e}");
    }

    #[test]
    fn apply_adds_scaled_low_rank_update() {
        let c = cfg(Arch::Llama, RopeStyle::Neox);
        let lc = LoraConfig { r: 1, alpha: 2.0, dropout: 0.0, targets: vec![Target::VProj] };
        let mut a = Adapter::init(&c, 12, lc, 1);
        let p = a.layers[0][Target::VProj.index()].as_mut().unwrap();
        p.a = vec![1.0; 8];
        p.b = vec![1.0, 2.0, 3.0, 4.0];
        let x = vec![0.5f32; 8];
        let mut out = vec![0f32; 4];
        a.apply(0, Target::VProj, &x, &mut out);
        // t = 2 * 4 = 8 (scale 2, A.x = 4); out = B * t.
        assert_eq!(out, vec![8.0, 16.0, 24.0, 32.0]);
        // The serving layout gives the same.
        a.prepare();
        let mut out2 = vec![0f32; 4];
        a.apply(0, Target::VProj, &x, &mut out2);
        assert_eq!(out2, out);
    }
}
