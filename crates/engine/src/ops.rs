//! The numeric building blocks of a forward pass: matrix products over (quantized) weights,
//! norms, rotary embeddings, activations.
//!
//! This is the portable reference path. Matrix products dequantize one weight row at a time into
//! a cache-resident buffer and dot it against every activation row of the batch, so a weight row
//! is read from memory once per step however many tokens the batch holds. The dot product is
//! compiled twice: for the baseline x86-64 target and, chosen at run time, with AVX2+FMA.

use crate::qdot::{act_kind, dot_row, ActKind, QuantActs};
use crate::quant::GgmlType;
use crate::tensor::Weight;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Output rows handed to one rayon task: large enough to amortise scheduling, small enough to
/// balance two cores.
const ROWS_PER_TASK: usize = 32;

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

fn has_avx2() -> bool {
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

/// Quantized weight row times activation row `i`, with the best instruction set available.
#[inline]
fn qdot(ty: GgmlType, w: &[u8], a: &QuantActs, i: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU was checked for AVX2, FMA and F16C.
        return unsafe { crate::qdot::x86::dot_row(ty, w, a, i) };
    }
    dot_row(ty, w, a, i)
}

/// `out[t][r] = sum_c w[r][c] * x[t][c]` for `n` activation rows `x` (n x w.cols) into
/// `out` (n x w.rows).
pub fn matmul(w: &Weight, x: &[f32], n: usize, out: &mut [f32]) {
    let (k, m) = (w.cols, w.rows);
    assert_eq!(x.len(), n * k, "activation shape");
    assert_eq!(out.len(), n * m, "output shape");
    let kind = act_kind(w.ty);
    if kind != ActKind::F32 {
        let acts = QuantActs::new(kind, x, k);
        if n == 1 {
            out.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(ci, chunk)| {
                for (j, o) in chunk.iter_mut().enumerate() {
                    *o = qdot(w.ty, w.row_bytes(ci * ROWS_PER_TASK + j), &acts, 0);
                }
            });
            return;
        }
        let mut t = vec![0f32; m * n];
        t.par_chunks_mut(ROWS_PER_TASK * n).enumerate().for_each(|(ci, chunk)| {
            for (j, orow) in chunk.chunks_exact_mut(n).enumerate() {
                let wr = w.row_bytes(ci * ROWS_PER_TASK + j);
                for (i, o) in orow.iter_mut().enumerate() {
                    *o = qdot(w.ty, wr, &acts, i);
                }
            }
        });
        transpose_into(&t, m, n, out);
        return;
    }
    if n == 1 {
        out.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each_init(
            || vec![0f32; k],
            |buf, (ci, chunk)| {
                for (j, o) in chunk.iter_mut().enumerate() {
                    w.dequantize_row_into(ci * ROWS_PER_TASK + j, buf);
                    *o = dot(buf, x);
                }
            },
        );
        return;
    }
    // Transposed result (m x n): each task owns whole weight rows, then one transpose.
    let mut t = vec![0f32; m * n];
    t.par_chunks_mut(ROWS_PER_TASK * n).enumerate().for_each_init(
        || vec![0f32; k],
        |buf, (ci, chunk)| {
            for (j, orow) in chunk.chunks_exact_mut(n).enumerate() {
                w.dequantize_row_into(ci * ROWS_PER_TASK + j, buf);
                for (i, o) in orow.iter_mut().enumerate() {
                    *o = dot(buf, &x[i * k..(i + 1) * k]);
                }
            }
        },
    );
    transpose_into(&t, m, n, out);
}

fn transpose_into(t: &[f32], m: usize, n: usize, out: &mut [f32]) {
    for r in 0..m {
        for i in 0..n {
            out[i * m + r] = t[r * n + i];
        }
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
    let d = x.len();
    let half = d / 2;
    // theta_i = pos * base^(-2i/d), built by repeated multiplication in f32 as ggml does, so
    // angles round the same way as in llama.cpp.
    let theta_scale = base.powf(-2.0 / d as f32);
    let mut theta = pos as f32;
    for i in 0..half {
        let (s, c) = theta.sin_cos();
        theta *= theta_scale;
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

    #[test]
    fn dispatch_agrees_with_generic() {
        let a: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.01).sin()).collect();
        let b: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.02).cos()).collect();
        assert!((dot(&a, &b) - dot_generic(&a, &b)).abs() < 1e-3);
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
