//! bf16 products for the training step's large matrices, with AVX512-BF16's `vdpbf16ps`
//! (two bf16 products summed into each f32 lane per instruction).
//!
//! Why our own kernel: the `gemm` crate (0.18) runs f32 on this CPU through its AVX2/FMA kernel
//! (its AVX-512 kernels need a nightly feature) and has no bf16 path; profiling the trainer on
//! SmolLM2 put 67% of the step in it at 213 tokens/s. On Zen 4 an f32 FMA does 16 multiply-adds
//! per cycle per core and `vdpbf16ps` 32, so products can run up to twice as fast with bf16
//! inputs and f32 accumulation (mixed precision, as PEFT runs in bf16). A first dot-product
//! tiling (4 x 4 rows, horizontal sums) reached only 230 tokens/s: it loaded 512 bytes per
//! 16 instructions from L2. This one is the classic broadcast form: the weight is packed once
//! into 64-column panels of bf16 pairs, a 6 x 64 block of outputs lives in 24 registers, and
//! each step broadcasts one pair of activations per row (6 x 4 bytes) against 4 panel loads
//! (256 bytes) for 24 `vdpbf16ps`.
//!
//! `out[t][j] = sum_k x[t][k] * B[k][j]`, where B is a weight packed from either `w^T` (the
//! forward product, `w` is `out x in`) or `w` itself (the backward product): one f32 source,
//! two packings, no transposed copy in f32.

use half::bf16;
use rayon::prelude::*;

/// Output columns per panel (4 registers of 16 lanes).
const NR: usize = 64;
/// Rows per register tile.
const MR: usize = 6;
/// Pairs of k per cache block (512 k values: a 64 KiB panel slice stays in L2).
const KC: usize = 256;
/// Rows per task.
const ROWS_PER_TASK: usize = 4 * MR;

fn pack_pair(lo: f32, hi: f32) -> u32 {
    (bf16::from_f32(lo).to_bits() as u32) | ((bf16::from_f32(hi).to_bits() as u32) << 16)
}

/// A `k x n` matrix packed for the kernel: panel `p`, pair `q`, column `c` at
/// `data[(p * pairs + q) * 64 + c]` holds `(B[2q][64p + c], B[2q + 1][64p + c])`.
pub struct PackedB {
    /// Rows of B (the reduction length).
    pub k: usize,
    /// Columns of B (outputs).
    pub n: usize,
    pairs: usize,
    panels: usize,
    data: Vec<u32>,
}

impl PackedB {
    /// Packs `B = w^T` for a row-major `w` of `n x k` (a weight `out x in`, for `x w^T`).
    pub fn from_nt(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k);
        Self::pack(n, k, |kk, j| w[j * k + kk])
    }

    /// Packs `B = w` for a row-major `w` of `k x n` (a weight `out x in` read as `k = out`,
    /// for the backward product `dy w`).
    pub fn from_nn(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n);
        Self::pack(n, k, |kk, j| w[kk * n + j])
    }

    fn pack(n: usize, k: usize, at: impl Fn(usize, usize) -> f32 + Sync) -> Self {
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u32; panels * pairs * NR];
        data.par_chunks_mut(pairs * NR).enumerate().for_each(|(p, panel)| {
            for q in 0..pairs {
                for c in 0..NR {
                    let j = p * NR + c;
                    if j >= n {
                        continue;
                    }
                    let lo = at(2 * q, j);
                    let hi = if 2 * q + 1 < k { at(2 * q + 1, j) } else { 0.0 };
                    panel[q * NR + c] = pack_pair(lo, hi);
                }
            }
        });
        PackedB { k, n, pairs, panels, data }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }

    /// Column `j` of B as f32 (for `from_nt(w)`, row `j` of `w`, rounded to bf16).
    pub fn column(&self, j: usize, out: &mut [f32]) {
        let (p, c) = (j / NR, j % NR);
        let panel = &self.data[p * self.pairs * NR..(p + 1) * self.pairs * NR];
        for (q, pair) in out.chunks_mut(2).enumerate() {
            let (lo, hi) = unpack(panel[q * NR + c]);
            pair[0] = lo;
            if let Some(h) = pair.get_mut(1) {
                *h = hi;
            }
        }
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

struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint (row range, panel) blocks of the output (see `matmul`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `out (t x b.n) (+)= x (t x b.k) . B`, bf16 products with f32 accumulation; `acc` adds to
/// what `out` holds. A portable loop stands in where the CPU lacks AVX512-BF16.
pub fn matmul(x: &[f32], t: usize, b: &PackedB, out: &mut [f32], acc: bool) {
    let (k, n, pairs) = (b.k, b.n, b.pairs);
    assert_eq!(x.len(), t * k);
    assert_eq!(out.len(), t * n);
    if t == 0 || n == 0 {
        return;
    }
    // Activations as bf16 pairs, row-major, `pairs` per row: a row of bf16 in natural order is
    // already its pairs (little-endian: element 2q low, 2q + 1 high).
    let fast = available();
    let mut a = vec![0u32; t * pairs];
    let convert = |(d, s): (&mut [u32], &[f32])| {
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: the CPU has avx512bf16; `d` holds ceil(k / 2) pairs for `s`'s k values.
            unsafe { x86::to_pairs(s, d) };
            return;
        }
        for (q, o) in d.iter_mut().enumerate() {
            *o = pack_pair(s[2 * q], if 2 * q + 1 < k { s[2 * q + 1] } else { 0.0 });
        }
    };
    if t * k >= 1 << 16 {
        a.par_chunks_mut(pairs).zip(x.par_chunks(k)).for_each(convert);
    } else {
        a.chunks_mut(pairs).zip(x.chunks(k)).for_each(convert);
    }
    let ptr = OutPtr(out.as_mut_ptr());
    let row_tasks = t.div_ceil(ROWS_PER_TASK);
    (0..b.panels * row_tasks).into_par_iter().for_each(|task| {
        let ptr = &ptr;
        let (p, rt) = (task / row_tasks, task % row_tasks);
        let panel = &b.data[p * pairs * NR..(p + 1) * pairs * NR];
        let cols = (n - p * NR).min(NR);
        let r_end = ((rt + 1) * ROWS_PER_TASK).min(t);
        let mut tile = [[0f32; NR]; MR];
        let mut q0 = 0;
        while q0 < pairs {
            let q1 = (q0 + KC).min(pairs);
            let mut r0 = rt * ROWS_PER_TASK;
            while r0 < r_end {
                let mr = (r_end - r0).min(MR);
                // Start from what the output holds (accumulating, or a later k block).
                for (i, row) in tile.iter_mut().enumerate().take(mr) {
                    if acc || q0 > 0 {
                        // SAFETY: row r0 + i, columns p*64 .. p*64 + cols are this task's.
                        unsafe { std::ptr::copy_nonoverlapping(ptr.0.add((r0 + i) * n + p * NR), row.as_mut_ptr(), cols) };
                    } else {
                        row.fill(0.0);
                    }
                }
                let arows = &a[r0 * pairs..(r0 + mr) * pairs];
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: the CPU has avx512f + avx512bf16; slices cover q0..q1 for mr rows.
                    unsafe { x86::kernel(arows, pairs, mr, panel, q0, q1, &mut tile) };
                } else {
                    portable(arows, pairs, mr, panel, q0, q1, &mut tile);
                }
                #[cfg(not(target_arch = "x86_64"))]
                portable(arows, pairs, mr, panel, q0, q1, &mut tile);
                for (i, row) in tile.iter().enumerate().take(mr) {
                    // SAFETY: as above.
                    unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), ptr.0.add((r0 + i) * n + p * NR), cols) };
                }
                r0 += mr;
            }
            q0 = q1;
        }
    });
}

fn unpack(v: u32) -> (f32, f32) {
    (bf16::from_bits(v as u16).to_f32(), bf16::from_bits((v >> 16) as u16).to_f32())
}

fn portable(a: &[u32], pairs: usize, mr: usize, panel: &[u32], q0: usize, q1: usize, tile: &mut [[f32; NR]; MR]) {
    for (r, row) in tile.iter_mut().enumerate().take(mr) {
        for q in q0..q1 {
            let (x0, x1) = unpack(a[r * pairs + q]);
            for (c, o) in row.iter_mut().enumerate() {
                let (w0, w1) = unpack(panel[q * NR + c]);
                *o += x0 * w0 + x1 * w1;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// Rounds `s` to bf16 (nearest even, as `half` does) into `d` as pairs, zero-padded.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn to_pairs(s: &[f32], d: &mut [u32]) {
        let dp = d.as_mut_ptr() as *mut u16;
        let mut i = 0;
        while i + 16 <= s.len() {
            let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(s.as_ptr().add(i)));
            _mm256_storeu_si256(dp.add(i) as *mut __m256i, std::mem::transmute::<__m256bh, __m256i>(v));
            i += 16;
        }
        while i < s.len() {
            *dp.add(i) = half::bf16::from_f32(s[i]).to_bits();
            i += 1;
        }
        if s.len() % 2 == 1 {
            *dp.add(s.len()) = 0;
        }
    }

    /// Adds `a[0..mr] . panel` over pairs `q0..q1` into `tile`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn kernel(a: &[u32], pairs: usize, mr: usize, panel: &[u32], q0: usize, q1: usize, tile: &mut [[f32; NR]; MR]) {
        match mr {
            6 => kernel_n::<6>(a, pairs, panel, q0, q1, tile),
            5 => kernel_n::<5>(a, pairs, panel, q0, q1, tile),
            4 => kernel_n::<4>(a, pairs, panel, q0, q1, tile),
            3 => kernel_n::<3>(a, pairs, panel, q0, q1, tile),
            2 => kernel_n::<2>(a, pairs, panel, q0, q1, tile),
            _ => kernel_n::<1>(a, pairs, panel, q0, q1, tile),
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn kernel_n<const M: usize>(a: &[u32], pairs: usize, panel: &[u32], q0: usize, q1: usize, tile: &mut [[f32; NR]; MR]) {
        let mut c: [[__m512; 4]; M] = [[_mm512_setzero_ps(); 4]; M];
        for (r, row) in c.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(tile[r].as_ptr().add(16 * j));
            }
        }
        let ap = a.as_ptr();
        let bp = panel.as_ptr();
        for q in q0..q1 {
            let b: [__m512bh; 4] = std::array::from_fn(|j| std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(bp.add(q * NR + 16 * j) as *const _)));
            for (r, row) in c.iter_mut().enumerate() {
                let x = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*ap.add(r * pairs + q) as i32));
                for (j, v) in row.iter_mut().enumerate() {
                    *v = _mm512_dpbf16_ps(*v, x, b[j]);
                }
            }
        }
        for (r, row) in c.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                _mm512_storeu_ps(tile[r].as_mut_ptr().add(16 * j), *v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(t: usize, k: usize, n: usize) {
        let x: Vec<f32> = (0..t * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0).collect();
        let r = |v: f32| bf16::from_f32(v).to_f32();
        let mut want = vec![0f32; t * n];
        for a in 0..t {
            for b in 0..n {
                want[a * n + b] = (0..k).map(|i| r(x[a * k + i]) * r(w[b * k + i])).sum();
            }
        }
        let close = |g: f32, e: f32| (g - e).abs() <= 1e-3 * e.abs().max(1.0);
        let mut got = vec![7f32; t * n];
        matmul(&x, t, &PackedB::from_nt(&w, n, k), &mut got, false);
        for (g, e) in got.iter().zip(&want) {
            assert!(close(*g, *e), "{t}x{k}x{n}: {g} vs {e}");
        }
        // Columns read back as the rounded rows of w.
        let pb = PackedB::from_nt(&w, n, k);
        let mut col = vec![0f32; k];
        pb.column(n - 1, &mut col);
        assert_eq!(col, w[(n - 1) * k..].iter().map(|v| r(*v)).collect::<Vec<_>>());
        // The same product through the other packing (B = (w^T) as a k x n matrix), accumulated.
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        matmul(&x, t, &PackedB::from_nn(&wt, k, n), &mut got, true);
        for (g, e) in got.iter().zip(&want) {
            assert!(close(*g, 2.0 * e), "{t}x{k}x{n} accumulated: {g} vs {}", 2.0 * e);
        }
    }

    #[test]
    fn bf16_products_match_f32_within_bf16_rounding() {
        // Odd k, partial panels, partial row tiles, several k blocks and row tasks.
        check(7, 101, 13);
        check(30, 600, 130);
        check(1, 1200, 64);
    }
}
