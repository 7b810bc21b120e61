//! bf16 products for the training step's large matrices, with AVX512-BF16's `vdpbf16ps`
//! (two bf16 products summed into each f32 lane per instruction).
//!
//! Why our own kernel: the `gemm` crate (0.18) runs f32 on this CPU through its AVX2/FMA kernel
//! (its AVX-512 kernels need a nightly feature) and has no bf16 path; profiling the trainer on
//! SmolLM2 put 67% of the step in it at 213 tokens/s. On Zen 4 an f32 FMA does 16 multiply-adds
//! per cycle per core and `vdpbf16ps` 32, so the products can run up to twice as fast with bf16
//! inputs and f32 accumulation (mixed precision, as PEFT runs in bf16).
//!
//! Layout: `out[t][j] = sum_k x[t][k] * w[j][k]`, both operands row-major along `k` (the weight
//! as it is stored, `out x in`; for the backward pass a transposed copy, `in x out`). Rows are
//! padded with zeros to a multiple of 32 so the kernel never needs a tail.

use half::bf16;
use rayon::prelude::*;

/// Elements per `vdpbf16ps` step.
const K_STEP: usize = 32;

/// A row-major bf16 matrix with rows padded to a multiple of 32.
pub struct Bf16Mat {
    /// Rows.
    pub rows: usize,
    /// Columns before padding.
    pub cols: usize,
    /// Columns after padding.
    pub stride: usize,
    data: Vec<bf16>,
}

fn padded(cols: usize) -> usize {
    cols.div_ceil(K_STEP) * K_STEP
}

impl Bf16Mat {
    /// From a row-major f32 matrix.
    pub fn from_f32(rows: usize, cols: usize, src: &[f32]) -> Self {
        assert_eq!(src.len(), rows * cols);
        let stride = padded(cols);
        let mut data = vec![bf16::ZERO; rows * stride];
        data.par_chunks_mut(stride).zip(src.par_chunks(cols)).for_each(|(d, s)| {
            for (o, v) in d.iter_mut().zip(s) {
                *o = bf16::from_f32(*v);
            }
        });
        Bf16Mat { rows, cols, stride, data }
    }

    /// The transpose of a row-major f32 matrix (`rows x cols` in, `cols x rows` out).
    pub fn transposed_from_f32(rows: usize, cols: usize, src: &[f32]) -> Self {
        assert_eq!(src.len(), rows * cols);
        let stride = padded(rows);
        let mut data = vec![bf16::ZERO; cols * stride];
        data.par_chunks_mut(stride).enumerate().for_each(|(c, d)| {
            for (r, o) in d.iter_mut().take(rows).enumerate() {
                *o = bf16::from_f32(src[r * cols + c]);
            }
        });
        Bf16Mat { rows: cols, cols: rows, stride, data }
    }

    /// Row `i`, padded.
    pub fn row(&self, i: usize) -> &[bf16] {
        &self.data[i * self.stride..(i + 1) * self.stride]
    }

    /// Row `i` as f32 (unpadded).
    pub fn row_f32(&self, i: usize, out: &mut [f32]) {
        for (o, v) in out.iter_mut().zip(&self.row(i)[..self.cols]) {
            *o = v.to_f32();
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 2
    }
}

/// Whether this CPU runs the bf16 kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x` (`t x w.cols`, f32) rounded to bf16 with the matrix's padding.
fn pack_rows(x: &[f32], t: usize, cols: usize, stride: usize) -> Vec<bf16> {
    let mut out = vec![bf16::ZERO; t * stride];
    for (d, s) in out.chunks_exact_mut(stride).zip(x.chunks_exact(cols)) {
        for (o, v) in d.iter_mut().zip(s) {
            *o = bf16::from_f32(*v);
        }
    }
    out
}

struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint columns of the output (see `matmul`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Columns of the output one task computes.
const J_BLOCK: usize = 64;

/// `out (t x w.rows) (+)= x (t x w.cols) . w^T`, in bf16 with f32 accumulation; `acc` adds to
/// what `out` holds. Falls back to a portable loop where the CPU lacks AVX512-BF16.
pub fn matmul(x: &[f32], t: usize, w: &Bf16Mat, out: &mut [f32], acc: bool) {
    assert_eq!(x.len(), t * w.cols);
    assert_eq!(out.len(), t * w.rows);
    let xb = pack_rows(x, t, w.cols, w.stride);
    let n = w.rows;
    let ptr = OutPtr(out.as_mut_ptr());
    let fast = available();
    (0..n.div_ceil(J_BLOCK)).into_par_iter().for_each(|jb| {
        let j0 = jb * J_BLOCK;
        let j1 = (j0 + J_BLOCK).min(n);
        let p = &ptr;
        for t0 in (0..t).step_by(4) {
            let tr = (t - t0).min(4);
            let mut j = j0;
            while j < j1 {
                let jr = (j1 - j).min(4);
                let mut tile = [[0f32; 4]; 4];
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: the CPU has avx512f + avx512bf16 (checked above); rows are padded.
                    unsafe { x86::tile(&xb, w, t0, tr, j, jr, &mut tile) };
                } else {
                    portable_tile(&xb, w, t0, tr, j, jr, &mut tile);
                }
                #[cfg(not(target_arch = "x86_64"))]
                portable_tile(&xb, w, t0, tr, j, jr, &mut tile);
                for (a, row) in tile.iter().enumerate().take(tr) {
                    for (b, v) in row.iter().enumerate().take(jr) {
                        // SAFETY: (t0 + a, j + b) is in bounds, and column j + b belongs to
                        // this task alone.
                        unsafe {
                            let o = p.0.add((t0 + a) * n + j + b);
                            *o = if acc { *o + v } else { *v };
                        }
                    }
                }
                j += jr;
            }
        }
    });
}

fn portable_tile(xb: &[bf16], w: &Bf16Mat, t0: usize, tr: usize, j: usize, jr: usize, tile: &mut [[f32; 4]; 4]) {
    let s = w.stride;
    for a in 0..tr {
        let xr = &xb[(t0 + a) * s..(t0 + a + 1) * s];
        for b in 0..jr {
            tile[a][b] = xr.iter().zip(w.row(j + b)).map(|(p, q)| p.to_f32() * q.to_f32()).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Bf16Mat, K_STEP};
    use half::bf16;
    use std::arch::x86_64::*;

    /// A `tr x jr` (at most 4 x 4) tile of dot products over the whole padded row.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn tile(xb: &[bf16], w: &Bf16Mat, t0: usize, tr: usize, j: usize, jr: usize, tile: &mut [[f32; 4]; 4]) {
        let s = w.stride;
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        let xp: [*const bf16; 4] = std::array::from_fn(|a| xb.as_ptr().add((t0 + a.min(tr - 1)) * s));
        let wp: [*const bf16; 4] = std::array::from_fn(|b| w.row(j + b.min(jr - 1)).as_ptr());
        let mut k = 0;
        while k < s {
            let xv: [__m512bh; 4] = std::array::from_fn(|a| std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(xp[a].add(k) as *const _)));
            for b in 0..4 {
                let wv: __m512bh = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(wp[b].add(k) as *const _));
                for a in 0..4 {
                    acc[a][b] = _mm512_dpbf16_ps(acc[a][b], xv[a], wv);
                }
            }
            k += K_STEP;
        }
        for a in 0..tr {
            for b in 0..jr {
                tile[a][b] = _mm512_reduce_add_ps(acc[a][b]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_products_match_f32_within_bf16_rounding() {
        let (t, k, n) = (7, 100, 13);
        let x: Vec<f32> = (0..t * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0).collect();
        let mut want = vec![0f32; t * n];
        for a in 0..t {
            for b in 0..n {
                want[a * n + b] = (0..k).map(|i| bf16::from_f32(x[a * k + i]).to_f32() * bf16::from_f32(w[b * k + i]).to_f32()).sum();
            }
        }
        let wm = Bf16Mat::from_f32(n, k, &w);
        let mut got = vec![0f32; t * n];
        matmul(&x, t, &wm, &mut got, false);
        for (g, e) in got.iter().zip(&want) {
            assert!((g - e).abs() <= 1e-3 * e.abs().max(1.0), "{g} vs {e}");
        }
        // Accumulating, and through a transposed copy: (w^T)^T = w.
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        let wtm = Bf16Mat::transposed_from_f32(k, n, &wt);
        assert_eq!((wtm.rows, wtm.cols), (n, k));
        matmul(&x, t, &wtm, &mut got, true);
        for (g, e) in got.iter().zip(&want) {
            assert!((g - 2.0 * e).abs() <= 2e-3 * e.abs().max(1.0), "{g} vs {}", 2.0 * e);
        }
    }
}
