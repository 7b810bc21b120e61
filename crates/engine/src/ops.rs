//! The numeric building blocks of a forward pass: matrix products over (quantized) weights,
//! norms, rotary embeddings, activations.
//!
//! This is the portable reference path. Matrix products dequantize one weight row at a time into
//! a cache-resident buffer and dot it against every activation row of the batch, so a weight row
//! is read from memory once per step however many tokens the batch holds. The dot product is
//! compiled twice: for the baseline x86-64 target and, chosen at run time, with AVX2+FMA.

use crate::model::{KvView, KV_BLOCK};
use crate::pool;
use crate::qdot::{act_kind, dot_row, ActKind, QuantActs};
use crate::quant::GgmlType;
use crate::tensor::{Layout, Weight};
use half::f16;
use std::sync::Mutex;
use std::sync::OnceLock;

/// Output rows handed to one pool task of a batch's matrix product: large enough to amortise
/// scheduling, small enough to balance two cores.
const ROWS_PER_TASK: usize = 32;

/// Rows per task for a matrix of `rows` rows against `n` activation rows, a multiple of the
/// packed group. A few tokens' product streams the weights from memory, and its rate depends
/// on how long each thread's run of rows is: 1536-row Q4_1 matrices on two threads went at
/// 20 GB/s in tasks of 32 rows, 37 in 128, 44 in 256, 51 in 768 (benches/packed_stream.rs,
/// partly from L3). So each thread gets about two long runs per matrix (one would leave a
/// descheduled thread's share waiting on this noisy host), and a larger batch keeps small
/// tasks, where the arithmetic per row dominates and balance matters more.
fn rows_per_task(rows: usize, n: usize, threads: usize) -> usize {
    let g = crate::packed::GROUP;
    if n > 16 {
        return ROWS_PER_TASK;
    }
    (rows.div_ceil(2 * threads).div_ceil(g) * g).max(64)
}
const _: () = assert!(ROWS_PER_TASK.is_multiple_of(crate::packed::GROUP), "tasks hold whole packed groups");

#[inline(always)]
fn dot_generic(a: &[f32], b: &[f32]) -> f32 {
    // 16 independent lanes let the compiler vectorise without reassociating a single sum.
    let mut acc = [0f32; 16];
    let n = a.len().min(b.len());
    let (a16, at) = a[..n].split_at(n / 16 * 16);
    let (b16, bt) = b[..n].split_at(n / 16 * 16);
    for (x, y) in a16.chunks_exact(16).zip(b16.chunks_exact(16)) {
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in at.iter().zip(bt) {
        s += x * y;
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_generic(a, b)
}

pub(crate) fn has_avx2() -> bool {
    static F: OnceLock<bool> = OnceLock::new();
    *F.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Dot product of two equal-length slices, using the best instruction set this CPU has.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU was checked for AVX2 and FMA above.
        return unsafe { dot_avx2(a, b) };
    }
    dot_generic(a, b)
}

/// `y += a * x`, elementwise.
#[inline(always)]
fn axpy_generic(a: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(o, v)| *o += a * v);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(a: f32, x: &[f32], y: &mut [f32]) {
    axpy_generic(a, x, y)
}

/// `y += a * x`: with AVX2/FMA where the CPU has them (the default build targets SSE2 only,
/// which left adapter updates at a quarter of the vector width).
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU was checked for AVX2 and FMA.
        return unsafe { axpy_avx2(a, x, y) };
    }
    axpy_generic(a, x, y)
}

pub(crate) fn has_vnni() -> bool {
    static F: OnceLock<bool> = OnceLock::new();
    *F.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            has_avx2() && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Quantized weight row times activation row `i`, with the best instruction set available.
#[inline]
fn qdot(ty: GgmlType, w: &[u8], a: &QuantActs, i: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_vnni() {
        // SAFETY: the CPU was checked for AVX2, FMA, F16C and AVX-512 VNNI/VL.
        return unsafe { crate::qdot::x86::dot_row_vnni(ty, w, a, i) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU was checked for AVX2, FMA and F16C.
        return unsafe { crate::qdot::x86::dot_row(ty, w, a, i) };
    }
    dot_row(ty, w, a, i)
}

/// Four activation rows against one weight row, where a kernel for the type exists.
#[inline]
fn qdot4(ty: GgmlType, w: &[u8], a: &QuantActs, i0: usize, out: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if has_vnni() {
            // SAFETY: features checked.
            return unsafe { crate::qdot::x86::dot_rows4_vnni(ty, w, a, i0, out) };
        }
        if has_avx2() {
            // SAFETY: features checked.
            return unsafe { crate::qdot::x86::dot_rows4(ty, w, a, i0, out) };
        }
    }
    let _ = (ty, w, a, i0, out);
    false
}

/// `out[t][r] = sum_c w[r][c] * x[t][c]` for `n` activation rows `x` (n x w.cols) into
/// `out` (n x w.rows).
pub fn matmul(w: &Weight, x: &[f32], n: usize, out: &mut [f32]) {
    matmul_many(&[w], x, n, &mut [out]);
}

/// Several products of the same input (q/k/v, gate/up) in one parallel region: on two cores a
/// fork-join costs about as much as a small matrix row block, and decode runs ~240 of them per
/// token otherwise (perf: 25% of decode time in the scheduler's yield/wake paths).
pub fn matmul_many(ws: &[&Weight], x: &[f32], n: usize, outs: &mut [&mut [f32]]) {
    assert_eq!(ws.len(), outs.len());
    let k = ws[0].cols;
    assert_eq!(x.len(), n * k, "activation shape");
    for (w, o) in ws.iter().zip(outs.iter()) {
        assert_eq!(w.cols, k, "all weights share the input");
        assert_eq!(o.len(), n * w.rows, "output shape");
    }
    // Activations are quantized once per distinct format.
    let mut acts: Vec<(ActKind, QuantActs)> = Vec::new();
    for w in ws {
        let kind = act_kind(w.ty);
        if kind != ActKind::F32 && !acts.iter().any(|(k2, _)| *k2 == kind) {
            acts.push((kind, quantize(kind, x, k)));
        }
    }
    let find = |kind: ActKind| acts.iter().find(|(k2, _)| *k2 == kind).map(|(_, a)| a);
    // Tasks: (weight, first row, rows). Each computes its rows for all `n` activations, rows x n
    // in a scratch buffer of its thread, then writes them into the output (n x rows) itself:
    // the transposition used to be a serial pass after the parallel region, through buffers
    // allocated per call (5% of a 512-token prefill, plus page faults).
    let threads = pool::global().threads();
    let tasks: Vec<(usize, usize, usize)> = ws
        .iter()
        .enumerate()
        .flat_map(|(wi, w)| {
            let per = rows_per_task(w.rows, n, threads);
            (0..w.rows).step_by(per).map(move |r0| (wi, r0, per.min(w.rows - r0)))
        })
        .collect();
    let dst: Vec<OutPtr> = outs.iter_mut().map(|o| OutPtr(o.as_mut_ptr())).collect();
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    pool::global().run(tasks.len(), &|ti| {
        let (wi, r0, rows) = tasks[ti];
        let w = ws[wi];
        let d = dst[wi];
        if w.layout() == Layout::Packed {
            // Tiles land straight in the output: 8 consecutive columns of one output row.
            let a = find(act_kind(w.ty)).expect("quantized above");
            crate::packed::matmul_rows(crate::packed::Kernel::best(), w.ty, w.bytes(), k / 32, r0, rows, a, n, |i, r, v| {
                // SAFETY: columns `r0..r0 + rows` of every output row belong to this task alone
                // (`r` is among them), and `outs` outlives the parallel region.
                unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), d.0.add(i * w.rows + r), v.len()) };
            });
            return;
        }
        if n == 1 {
            // SAFETY: rows `r0..r0 + rows` of this weight's output belong to this task alone,
            // and `outs` outlives the parallel region.
            let chunk = unsafe { std::slice::from_raw_parts_mut(d.0.add(r0), rows) };
            rows_block(w, r0, x, n, k, &find, chunk);
            return;
        }
        SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            buf.resize(rows * n, 0.0);
            rows_block(w, r0, x, n, k, &find, buf);
            // Row by row of the output, so the writes are contiguous runs of `rows`.
            for i in 0..n {
                for j in 0..rows {
                    // SAFETY: as above: columns `r0..r0 + rows` of every output row are this task's.
                    unsafe { *d.0.add(i * w.rows + r0 + j) = buf[j * n + i] };
                }
            }
        });
    });
}

/// A raw pointer to a matrix product's output, shared by the tasks that write its disjoint
/// parts.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements (see `matmul_many`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Rows `r0..r0 + chunk.len() / n` of `w` (not packed) against all `n` activation rows, into
/// `chunk` (rows x n).
fn rows_block<'a>(w: &Weight, r0: usize, x: &[f32], n: usize, k: usize, find: &dyn Fn(ActKind) -> Option<&'a QuantActs>, chunk: &mut [f32]) {
    let kind = act_kind(w.ty);
    if w.ty == GgmlType::F32 && f32_tiles(k) {
        f32_block(w, r0, x, n, k, chunk);
        return;
    }
    let mut buf = Vec::new();
    for (j, orow) in chunk.chunks_exact_mut(n).enumerate() {
        let r = r0 + j;
        if kind == ActKind::F32 {
            buf.resize(k, 0.0);
            w.dequantize_row_into(r, &mut buf);
            for (i, o) in orow.iter_mut().enumerate() {
                *o = dot(&buf, &x[i * k..(i + 1) * k]);
            }
        } else {
            let a = find(kind).expect("quantized above");
            let wr = w.row_bytes(r);
            let mut i = 0;
            while i + 4 <= n && qdot4(w.ty, wr, a, i, &mut orow[i..i + 4]) {
                i += 4;
            }
            for (ii, o) in orow.iter_mut().enumerate().skip(i) {
                *o = qdot(w.ty, wr, a, ii);
            }
        }
    }
}

/// Whether f32 weights of width `k` take the tiled AVX-512 path.
fn f32_tiles(k: usize) -> bool {
    k.is_multiple_of(16) && has_avx512f()
}

/// Rows `r0..` of an f32 weight against all `n` activation rows, into `out` (rows x n), in tiles
/// of 4 weight rows x 4 activation rows: 16 accumulators fed by 8 loads per 16 columns, where the
/// one-pair dot loop does 2 loads per multiply-add and a horizontal sum per pair. MiniLM (f32
/// weights), 32 texts of 24 tokens per call: 79 -> 125 texts/s (PyTorch: 225, docs/BENCHMARKS.md
/// "Embeddings"; the rest is the per-pair horizontal sums). Each pair sums in the same order in
/// a tile or alone, so a row's result never depends on what it is batched with.
fn f32_block(w: &Weight, r0: usize, x: &[f32], n: usize, k: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use f32x512::{dot1, dot4x4};
        let rows = out.len() / n;
        let wp = |j: usize| w.row_bytes(r0 + j).as_ptr() as *const f32;
        let xp = |i: usize| x[i * k..(i + 1) * k].as_ptr();
        let mut j = 0;
        while j < rows {
            let jn = (rows - j).min(4);
            let mut i = 0;
            while jn == 4 && i + 4 <= n {
                let mut t = [[0f32; 4]; 4];
                // SAFETY: AVX-512F checked by `f32_tiles`; every row holds `k` f32 (loads are unaligned).
                unsafe { dot4x4([wp(j), wp(j + 1), wp(j + 2), wp(j + 3)], [xp(i), xp(i + 1), xp(i + 2), xp(i + 3)], k, &mut t) };
                for (a, ta) in t.iter().enumerate() {
                    out[(j + a) * n + i..(j + a) * n + i + 4].copy_from_slice(ta);
                }
                i += 4;
            }
            for a in 0..jn {
                for ii in i..n {
                    // SAFETY: as above.
                    out[(j + a) * n + ii] = unsafe { dot1(wp(j + a), xp(ii), k) };
                }
            }
            j += jn;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (w, r0, x, n, k, out);
        unreachable!("f32_tiles is false off x86-64");
    }
}

#[cfg(target_arch = "x86_64")]
mod f32x512 {
    use std::arch::x86_64::*;

    /// 16 dot products of length `k` (a multiple of 16): `out[a][b] = w[a] . x[b]`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot4x4(w: [*const f32; 4], x: [*const f32; 4], k: usize, out: &mut [[f32; 4]; 4]) {
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        let mut c = 0;
        while c < k {
            let wv = [_mm512_loadu_ps(w[0].add(c)), _mm512_loadu_ps(w[1].add(c)), _mm512_loadu_ps(w[2].add(c)), _mm512_loadu_ps(w[3].add(c))];
            let xv = [_mm512_loadu_ps(x[0].add(c)), _mm512_loadu_ps(x[1].add(c)), _mm512_loadu_ps(x[2].add(c)), _mm512_loadu_ps(x[3].add(c))];
            for a in 0..4 {
                for b in 0..4 {
                    acc[a][b] = _mm512_fmadd_ps(wv[a], xv[b], acc[a][b]);
                }
            }
            c += 16;
        }
        for a in 0..4 {
            for b in 0..4 {
                out[a][b] = _mm512_reduce_add_ps(acc[a][b]);
            }
        }
    }

    /// One dot product, summed in the same order as each pair of [`dot4x4`].
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot1(w: *const f32, x: *const f32, k: usize) -> f32 {
        let mut acc = _mm512_setzero_ps();
        let mut c = 0;
        while c < k {
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(w.add(c)), _mm512_loadu_ps(x.add(c)), acc);
            c += 16;
        }
        _mm512_reduce_add_ps(acc)
    }
}

/// Quantizes activations, with the CPU's rounding instructions where it has them.
fn quantize(kind: ActKind, x: &[f32], k: usize) -> QuantActs {
    fn one(kind: ActKind, x: &[f32], k: usize) -> QuantActs {
        #[cfg(target_arch = "x86_64")]
        if matches!(kind, ActKind::Q8_0 | ActKind::Q8_1) && has_avx512f() {
            // SAFETY: features checked; rows are whole blocks (the callers' widths are).
            return unsafe { QuantActs::new_q8_avx512(kind, x, k) };
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn q(kind: ActKind, x: &[f32], k: usize) -> QuantActs {
                QuantActs::new(kind, x, k)
            }
            // SAFETY: features checked.
            return unsafe { q(kind, x, k) };
        }
        QuantActs::new(kind, x, k)
    }
    // A prompt's activations are quantized in parallel, one part per thread: done serially this
    // was 5% of a 512-token prefill with the other core idle. Rows are independent, so the
    // result is the same.
    let n = x.len() / k;
    let threads = pool::global().threads();
    if n < 16 || threads < 2 {
        return one(kind, x, k);
    }
    let per = n.div_ceil(threads);
    let parts: Vec<Mutex<Option<QuantActs>>> = (0..n.div_ceil(per)).map(|_| Mutex::new(None)).collect();
    pool::global().run(parts.len(), &|i| {
        let rows = &x[i * per * k..((i + 1) * per).min(n) * k];
        *parts[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(one(kind, rows, k));
    });
    QuantActs::concat(parts.into_iter().map(|p| p.into_inner().unwrap_or_else(|e| e.into_inner()).expect("every part quantized")).collect())
}

/// Attention of one query head over cached positions `rows` of one sequence (`kv`: one layer's
/// blocks, this head's part of each row at `off`): scores, a softmax over them, and the value
/// rows weighted by it, summed in f32. Cached keys/values and `q` hold f16-rounded values, as
/// in llama.cpp. Its CPU flash attention also rounds the running sum to f16 at every key; an
/// earlier version of this did too and agreed with more of its reference continuations
/// (Gemma 3: 6 of 10 prompts exactly for 16 tokens, now 4; SmolLM2 7 either way; every
/// difference a near-tie), but that rounding was half of attention's time in a batch.
#[inline(always)]
fn attend_generic(q: &[f32], kv: &KvView<'_>, off: usize, rows: std::ops::RangeInclusive<usize>, scale: f32, out: &mut [f32]) {
    let hd = q.len();
    fn row<'a>(blocks: &[&'a [f16]], stride: usize, at: usize, hd: usize, j: usize) -> &'a [f16] {
        let at = (j % KV_BLOCK) * stride + at;
        &blocks[j / KV_BLOCK][at..at + hd]
    }
    let j0 = *rows.start();
    let mut p: Vec<f32> = rows.clone().map(|j| q.iter().zip(row(&kv.k, kv.stride, off, hd, j)).map(|(a, b)| a * b.to_f32()).sum::<f32>() * scale).collect();
    softmax(&mut p);
    out.iter_mut().for_each(|o| *o = 0.0);
    for (jj, pj) in p.iter().enumerate() {
        for (o, v) in out.iter_mut().zip(row(&kv.v, kv.stride, off, hd, j0 + jj)) {
            *o = v.to_f32().mul_add(*pj, *o);
        }
    }
}

/// `W` x 8 output dimensions of one head: the value rows of positions `j0..` (column `at` of
/// rows of `stride` in blocks of [`KV_BLOCK`]) weighted by `p`, times `inv`, into `out`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn accumulate<const W: usize>(p: &[f32], v: &[&[f16]], j0: usize, at: usize, stride: usize, inv: std::arch::x86_64::__m256, out: *mut f32) {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); W];
    for (jj, &pj) in p.iter().enumerate() {
        let j = j0 + jj;
        let vr = v.get_unchecked(j / KV_BLOCK).as_ptr().add((j % KV_BLOCK) * stride + at) as *const __m128i;
        let w = _mm256_set1_ps(pj);
        for (i, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(vr.add(i))), w, *a);
        }
    }
    for (i, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.add(8 * i), _mm256_mul_ps(*a, inv));
    }
}

/// [`attend_generic`] for the query heads that share one key/value head (`q` and `out` hold
/// `q.len() / hd` heads of `hd`), each head computed as alone: the scores, their exps in one
/// vector pass ([`exp_in_place`]), then the value rows into accumulators held in registers,
/// 64 dimensions at a time. Attention had been 30% of a 512-token prefill and a quarter of
/// 8-sequence decode (perf), most of it in a running sum rounded to f16 at every key and
/// taken through memory, and in libm's scalar `expf` for every key.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_avx2(q: &[f32], hd: usize, kv: &KvView<'_>, off: usize, rows: std::ops::RangeInclusive<usize>, scale: f32, out: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert!(hd % 8 == 0 && q.len().is_multiple_of(hd));
    let (j0, n, stride) = (*rows.start(), rows.end() + 1 - rows.start(), kv.stride);
    thread_local! {
        static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCORES.with_borrow_mut(|e| {
        e.clear();
        e.resize(n, 0.0);
        for (qh, oh) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
            for (jj, ej) in e.iter_mut().enumerate() {
                let j = j0 + jj;
                let kr = kv.k.get_unchecked(j / KV_BLOCK).as_ptr().add((j % KV_BLOCK) * stride + off) as *const __m128i;
                let mut acc = _mm256_setzero_ps();
                for c in (0..hd).step_by(8) {
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(qh.as_ptr().add(c)), _mm256_cvtph_ps(_mm_loadu_si128(kr.add(c / 8))), acc);
                }
                let hs = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
                let hs = _mm_add_ps(hs, _mm_movehl_ps(hs, hs));
                *ej = _mm_cvtss_f32(_mm_add_ss(hs, _mm_movehdup_ps(hs))) * scale;
            }
            let m = e.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            e.iter_mut().for_each(|x| *x -= m);
            exp_in_place(e);
            let sum: f32 = e.iter().sum();
            let inv = _mm256_set1_ps(1.0 / sum);
            // 64 dimensions at a time in registers (all of a SmolLM2 head; 4 passes for
            // Gemma 3's 256), 8 at a time for a remainder.
            let mut c0 = 0;
            while c0 + 64 <= hd {
                accumulate::<8>(e, &kv.v, j0, off + c0, stride, inv, oh.as_mut_ptr().add(c0));
                c0 += 64;
            }
            while c0 < hd {
                accumulate::<1>(e, &kv.v, j0, off + c0, stride, inv, oh.as_mut_ptr().add(c0));
                c0 += 8;
            }
        }
    });
}

/// Attention of query heads that share one key/value head: `q` and `out` hold `heads` heads of
/// `q.len() / heads` each, and every head is computed as
/// [`attend_generic`] computes it alone; dispatches to AVX2 when available.
#[allow(clippy::too_many_arguments)]
pub fn attend(q: &[f32], heads: usize, kv: &KvView<'_>, off: usize, rows: std::ops::RangeInclusive<usize>, scale: f32, out: &mut [f32]) {
    let hd = q.len() / heads;
    let stride = kv.stride;
    assert!(
        heads > 0
            && hd * heads == q.len()
            && off + hd <= stride
            && *rows.end() < kv.capacity()
            && kv.k.len() == kv.v.len()
            && kv.k.iter().chain(&kv.v).all(|b| b.len() == KV_BLOCK * stride)
            && out.len() == q.len(),
        "attention rows outside the cache"
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && hd % 8 == 0 {
        // SAFETY: features checked; every row read lies within a block of the view (asserted
        // above: whole blocks, and the last row addressed is below the view's capacity).
        return unsafe { attend_avx2(q, hd, kv, off, rows, scale, out) };
    }
    for (qh, oh) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
        attend_generic(qh, kv, off, rows.clone(), scale, oh);
    }
}

/// RMS norm of each `w.len()`-wide row of `x` in place, times `w`.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(w.len()) {
        let ss: f32 = row.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        let s = 1.0 / (ss + eps).sqrt();
        for (v, g) in row.iter_mut().zip(w) {
            *v *= s * g;
        }
    }
}

/// How rotary embedding pairs dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)`: llama weights as GGUF stores them (permuted by the converter).
    Interleaved,
    /// Halves `(i, i + d/2)`: GPT-NeoX, Gemma, and llama weights in Hugging Face layout.
    Neox,
}

/// Rotary position embedding of one head vector at `pos`.
pub fn rope(x: &mut [f32], pos: usize, base: f32, style: RopeStyle) {
    rope_rotate(x, pos, base, style, 1.0)
}

/// Rotates one head vector by the angles of `pos`, or back by them when `sign` is -1 (the
/// rotation's transpose, which is what the backward pass of rope applies to gradients).
pub fn rope_rotate(x: &mut [f32], pos: usize, base: f32, style: RopeStyle, sign: f32) {
    rope_apply(x, &rope_angles(pos, x.len(), base), style, sign)
}

/// `(sin, cos)` of each pair's angle at `pos` for heads of width `d`: theta_i = pos *
/// base^(-2i/d), built by repeated multiplication in f32 as ggml does, so angles round the same
/// way as in llama.cpp. Callers that rotate many heads at one position compute this once.
pub fn rope_angles(pos: usize, d: usize, base: f32) -> Vec<(f32, f32)> {
    let theta_scale = base.powf(-2.0 / d as f32);
    let mut theta = pos as f32;
    (0..d / 2)
        .map(|_| {
            let sc = theta.sin_cos();
            theta *= theta_scale;
            sc
        })
        .collect()
}

/// Rotates `x` by precomputed angles (see [`rope_angles`]); `sign` -1 rotates back.
pub fn rope_apply(x: &mut [f32], angles: &[(f32, f32)], style: RopeStyle, sign: f32) {
    let half = x.len() / 2;
    for (i, &(s, c)) in angles.iter().enumerate() {
        let s = s * sign;
        let (a, b) = match style {
            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            RopeStyle::Neox => (i, i + half),
        };
        let (x0, x1) = (x[a], x[b]);
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

/// Softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

pub(crate) fn has_avx512f() -> bool {
    static F: OnceLock<bool> = OnceLock::new();
    *F.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// `exp` of every element, in place: 16 lanes at a time with AVX-512 where the CPU has it,
/// `f32::exp` otherwise. The trainer takes one per attention probability, per gate sigmoid and
/// per vocabulary logit at its loss rows; libm's scalar `expf` was 7% of the Ask-Data tuning
/// step. Within 2 ulp of `f32::exp` (a test); below -87.3 the result is 0, above 88.7 infinity.
pub fn exp_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512f() {
        // SAFETY: the CPU has AVX-512F.
        unsafe { vexp::exp_in_place(x) };
        return;
    }
    x.iter_mut().for_each(|v| *v = v.exp());
}

/// Softmax of `x * scale` in place, vectorised like [`exp_in_place`] (the sum is taken in a
/// fixed order for a given length, so results do not depend on anything but the input).
pub fn softmax_scaled(x: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512f() {
        // SAFETY: the CPU has AVX-512F.
        unsafe { vexp::softmax_scaled(x, scale) };
        return;
    }
    x.iter_mut().for_each(|v| *v *= scale);
    softmax(x);
}

/// `g = silu(g) * u` elementwise (the gated MLP of llama-family models), with the vector exp
/// where the CPU has AVX-512: libm's scalar `expf` here was 8% of a 512-token prefill (perf).
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len(), "gate and up widths");
    #[cfg(target_arch = "x86_64")]
    if has_avx512f() {
        // SAFETY: the CPU has AVX-512F; the lengths are equal.
        unsafe { vexp::silu_mul(g, u) };
        return;
    }
    g.iter_mut().zip(u).for_each(|(a, b)| *a = silu(*a) * b);
}

/// AVX-512 `exp`: `x = n ln2 + r` with `|r| <= ln2 / 2` (ln 2 split in two for an exact
/// product), `e^r` by Cephes' `expf` polynomial, `2^n` built in the exponent bits.
#[cfg(target_arch = "x86_64")]
mod vexp {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp16(x: __m512) -> __m512 {
        let lo = _mm512_set1_ps(-87.33655);
        let hi = _mm512_set1_ps(88.72283);
        let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, lo);
        let over = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, hi);
        let xc = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(xc, _mm512_set1_ps(std::f32::consts::LOG2_E)));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), xc);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
        // 2^n for n in [-126, 128]: n = 128 (x near the top) is built as 2 * 2^127.
        let ni = _mm512_cvtps_epi32(n);
        let top = _mm512_cmpeq_epi32_mask(ni, _mm512_set1_epi32(128));
        let ni = _mm512_mask_sub_epi32(ni, top, ni, _mm512_set1_epi32(1));
        let pow = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(ni, _mm512_set1_epi32(127))));
        let mut y = _mm512_mul_ps(p, pow);
        y = _mm512_mask_mul_ps(y, top, y, _mm512_set1_ps(2.0));
        y = _mm512_mask_mov_ps(y, under, _mm512_setzero_ps());
        _mm512_mask_mov_ps(y, over, _mm512_set1_ps(f32::INFINITY))
    }

    /// A mask of the first `n < 16` lanes.
    fn tail(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_in_place(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: `c` holds 16 floats.
            unsafe { _mm512_storeu_ps(c.as_mut_ptr(), exp16(_mm512_loadu_ps(c.as_ptr()))) };
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let m = tail(rest.len());
            // SAFETY: the mask covers exactly `rest`'s elements.
            unsafe { _mm512_mask_storeu_ps(rest.as_mut_ptr(), m, exp16(_mm512_maskz_loadu_ps(m, rest.as_ptr()))) };
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn silu_mul(g: &mut [f32], u: &[f32]) {
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn one(x: __m512, u: __m512) -> __m512 {
            let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
            _mm512_mul_ps(_mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e)), u)
        }
        let n = g.len();
        let (gp, up) = (g.as_mut_ptr(), u.as_ptr());
        let mut i = 0;
        // SAFETY: full vectors below `n - 15`, then one masked tail; `u` is as long as `g`.
        while i + 16 <= n {
            unsafe { _mm512_storeu_ps(gp.add(i), one(_mm512_loadu_ps(gp.add(i)), _mm512_loadu_ps(up.add(i)))) };
            i += 16;
        }
        if i < n {
            let m = tail(n - i);
            unsafe { _mm512_mask_storeu_ps(gp.add(i), m, one(_mm512_maskz_loadu_ps(m, gp.add(i)), _mm512_maskz_loadu_ps(m, up.add(i)))) };
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax_scaled(x: &mut [f32], scale: f32) {
        let n = x.len();
        let p = x.as_mut_ptr();
        let sc = _mm512_set1_ps(scale);
        let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        // SAFETY (all three loops): full vectors below `n - 15`, then one masked tail.
        while i + 16 <= n {
            let v = unsafe { _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), sc) };
            unsafe { _mm512_storeu_ps(p.add(i), v) };
            vmax = _mm512_max_ps(vmax, v);
            i += 16;
        }
        if i < n {
            let m = tail(n - i);
            let v = unsafe { _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p.add(i)), sc) };
            unsafe { _mm512_mask_storeu_ps(p.add(i), m, v) };
            vmax = _mm512_mask_max_ps(vmax, m, vmax, v);
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
        let mut vsum = _mm512_setzero_ps();
        i = 0;
        while i + 16 <= n {
            let e = exp16(_mm512_sub_ps(unsafe { _mm512_loadu_ps(p.add(i)) }, max));
            unsafe { _mm512_storeu_ps(p.add(i), e) };
            vsum = _mm512_add_ps(vsum, e);
            i += 16;
        }
        if i < n {
            let m = tail(n - i);
            let e = exp16(_mm512_sub_ps(unsafe { _mm512_maskz_loadu_ps(m, p.add(i)) }, max));
            unsafe { _mm512_mask_storeu_ps(p.add(i), m, e) };
            vsum = _mm512_mask_add_ps(vsum, m, vsum, e);
        }
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(vsum));
        i = 0;
        while i + 16 <= n {
            unsafe { _mm512_storeu_ps(p.add(i), _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), inv)) };
            i += 16;
        }
        if i < n {
            let m = tail(n - i);
            unsafe { _mm512_mask_storeu_ps(p.add(i), m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p.add(i)), inv)) };
        }
    }
}

/// SiLU.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU, tanh approximation (as Gemma uses), evaluated the way ggml does: on the f16-rounded
/// input, with an f16 result, and exact outside [-10, 10]. ggml reads it from a 64K-entry f16
/// table; rounding the same way keeps our outputs aligned with llama.cpp's references.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    let x = half::f16::from_f32(x).to_f32();
    let y = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh());
    half::f16::from_f32(y).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn vector_exp_is_within_two_ulp_of_libm() {
        let mut xs: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 4.4e-4).collect();
        xs.extend([-1e30, -100.0, -87.4, -87.3, -0.0, 0.0, 1e-30, 88.7, 88.72, 88.8, 1e30, f32::INFINITY, f32::NEG_INFINITY]);
        let mut got = xs.clone();
        exp_in_place(&mut got);
        for (x, g) in xs.iter().zip(&got) {
            let want = x.exp();
            if *x < -87.336_55 {
                assert_eq!(*g, 0.0, "exp({x})");
            } else if *x > 88.722_83 {
                assert_eq!(*g, f32::INFINITY, "exp({x})");
            } else if want < f32::MIN_POSITIVE {
                assert!((g - want).abs() < 1e-37, "exp({x}) = {g}, libm {want}");
            } else {
                assert!(ulps(*g, want) <= 2, "exp({x}) = {g}, libm {want}");
            }
        }
    }

    #[test]
    fn vector_silu_mul_matches_the_scalar_one() {
        let g0: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.037).chain([-100.0, 100.0, 0.0]).collect();
        let u: Vec<f32> = (0..g0.len()).map(|i| (i as f32 * 0.3).sin()).collect();
        let mut g = g0.clone();
        silu_mul(&mut g, &u);
        for ((x, y), (a, b)) in g.iter().zip(&u).zip(g0.iter().zip(&u)) {
            let want = silu(*a) * b;
            assert!((x - want).abs() <= 1e-6 * want.abs().max(1e-3), "silu({a}) * {y}: {x} vs {want}");
        }
    }

    #[test]
    fn vector_softmax_matches_the_scalar_one() {
        for n in [1usize, 5, 16, 17, 63, 300] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 37) % 23) as f32 * 0.7 - 8.0).collect();
            let mut got = x.clone();
            softmax_scaled(&mut got, 0.125);
            let mut want: Vec<f32> = x.iter().map(|v| v * 0.125).collect();
            softmax(&mut want);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-6 * w.max(1e-3), "n {n}: {g} vs {w}");
            }
            assert!((got.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn matmul_matches_naive_for_batches() {
        let (m, k) = (70, 48);
        let wd: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1).collect();
        let w = Weight::from_f32(m, k, &wd);
        for n in [1, 3] {
            let x: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.2).collect();
            let mut out = vec![0f32; n * m];
            matmul(&w, &x, n, &mut out);
            for i in 0..n {
                for r in 0..m {
                    let e: f32 = (0..k).map(|c| wd[r * k + c] * x[i * k + c]).sum();
                    assert!((out[i * m + r] - e).abs() < 1e-4, "n={n} i={i} r={r}");
                }
            }
        }
    }

    /// The tiled f32 path (where the CPU has AVX-512) against the scalar sum, over shapes with
    /// remainder rows and columns; and each activation row's result is the same bits whatever
    /// else shares the batch.
    #[test]
    fn f32_tiles_match_naive_and_ignore_batch_neighbours() {
        let (m, k) = (71, 64);
        let wd: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1).collect();
        let w = Weight::from_f32(m, k, &wd);
        let x: Vec<f32> = (0..11 * k).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.2).collect();
        let mut all = vec![0f32; 11 * m];
        matmul(&w, &x, 11, &mut all);
        for i in 0..11 {
            let mut one = vec![0f32; m];
            matmul(&w, &x[i * k..(i + 1) * k], 1, &mut one);
            assert_eq!(one, all[i * m..(i + 1) * m], "row {i} alone vs in a batch of 11");
            for r in 0..m {
                let e: f32 = (0..k).map(|c| wd[r * k + c] * x[i * k + c]).sum();
                assert!((all[i * m + r] - e).abs() < 1e-4, "i={i} r={r}");
            }
        }
    }

    #[test]
    fn dispatch_agrees_with_generic() {
        let a: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.01).sin()).collect();
        let b: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.02).cos()).collect();
        assert!((dot(&a, &b) - dot_generic(&a, &b)).abs() < 1e-3);
    }

    #[test]
    fn attention_kernels_agree() {
        let hd = 64;
        let stride = 2 * hd;
        let n: usize = 37;
        let r16 = |x: f32| f16::from_f32(x).to_f32();
        let q: Vec<f32> = (0..hd).map(|i| r16((i as f32 * 0.37).sin())).collect();
        // Rows of the cache in blocks (3 of them, the last one partly used).
        let blocks = n.div_ceil(KV_BLOCK);
        let kc: Vec<f16> = (0..blocks * KV_BLOCK * stride).map(|i| f16::from_f32((i as f32 * 0.11).cos())).collect();
        let vc: Vec<f16> = (0..blocks * KV_BLOCK * stride).map(|i| f16::from_f32((i as f32 * 0.07).sin())).collect();
        let view = KvView { k: kc.chunks(KV_BLOCK * stride).collect(), v: vc.chunks(KV_BLOCK * stride).collect(), stride };
        let mut a = vec![0f32; hd];
        let mut b = vec![0f32; hd];
        attend_generic(&q, &view, hd, 3..=n - 1, 0.125, &mut a);
        attend(&q, 1, &view, hd, 3..=n - 1, 0.125, &mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 2e-3, "{x} vs {y}");
        }
        // Three heads at once: each exactly as alone.
        let q3: Vec<f32> = (0..3 * hd).map(|i| r16((i as f32 * 0.23).cos())).collect();
        let mut three = vec![0f32; 3 * hd];
        attend(&q3, 3, &view, hd, 3..=n - 1, 0.125, &mut three);
        for h in 0..3 {
            let mut one = vec![0f32; hd];
            attend(&q3[h * hd..(h + 1) * hd], 1, &view, hd, 3..=n - 1, 0.125, &mut one);
            assert_eq!(one, three[h * hd..(h + 1) * hd], "head {h}");
        }
        // Against a plain two-pass softmax in f32.
        let scores: Vec<f32> = (3..n).map(|j| q.iter().zip(&kc[j * stride + hd..j * stride + 2 * hd]).map(|(x, y)| x * y.to_f32()).sum::<f32>() * 0.125).collect();
        let mut p = scores.clone();
        softmax(&mut p);
        for c in 0..hd {
            let e: f32 = (3..n).zip(&p).map(|(j, w)| w * vc[j * stride + hd + c].to_f32()).sum();
            assert!((a[c] - e).abs() < 5e-3, "dim {c}: {} vs {e}", a[c]);
        }
    }

    #[test]
    fn rope_styles_rotate_norm_preserving() {
        for style in [RopeStyle::Interleaved, RopeStyle::Neox] {
            let mut x: Vec<f32> = (0..8).map(|i| i as f32).collect();
            let n0: f32 = x.iter().map(|v| v * v).sum();
            rope(&mut x, 5, 10000.0, style);
            let n1: f32 = x.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-3);
        }
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        rope(&mut x, 0, 10000.0, RopeStyle::Neox);
        assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0]);
    }
}
