//! Matrix products for the training step, through the `gemm` crate (blocked, AVX-512/AVX2/FMA
//! kernels chosen at run time, rayon-parallel over output tiles, so results do not depend on
//! thread timing). Views carry strides, so transposes cost nothing.

use gemm::Parallelism;

/// A read-only strided matrix view: element `(i, j)` is `d[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    d: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn rm(d: &'a [f32], cols: usize) -> Self {
        View { d, rs: cols, cs: 1 }
    }
    /// A row-major matrix with row stride `rs` (a column block of a wider matrix).
    pub fn strided(d: &'a [f32], rs: usize) -> Self {
        View { d, rs, cs: 1 }
    }
    /// The transpose.
    pub fn t(self) -> Self {
        View { d: self.d, rs: self.cs, cs: self.rs }
    }
    fn check(&self, rows: usize, cols: usize) {
        if rows > 0 && cols > 0 {
            assert!((rows - 1) * self.rs + (cols - 1) * self.cs < self.d.len(), "matrix view out of bounds");
        }
    }
}

/// Whether a product is worth splitting across threads: two sequences already run side by side,
/// so only large products (4M multiply-adds and up) are split; below that the hand-off cost more
/// than it won (measured 1-3% of the step).
fn par(m: usize, n: usize, k: usize) -> Parallelism {
    if m * n * k >= 1 << 22 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    }
}

/// `dst (m x n, row stride dst_rs) (+)= a (m x k) . b (k x n)`; `acc` adds to what is there.
pub fn mm(m: usize, n: usize, k: usize, dst: &mut [f32], dst_rs: usize, acc: bool, a: View<'_>, b: View<'_>) {
    mm_with(m, n, k, dst, dst_rs, acc, a, b, par(m, n, k))
}

/// [`mm`] on the calling thread only (inside an already parallel region).
pub fn mm_serial(m: usize, n: usize, k: usize, dst: &mut [f32], dst_rs: usize, acc: bool, a: View<'_>, b: View<'_>) {
    mm_with(m, n, k, dst, dst_rs, acc, a, b, Parallelism::None)
}

#[allow(clippy::too_many_arguments)]
fn mm_with(m: usize, n: usize, k: usize, dst: &mut [f32], dst_rs: usize, acc: bool, a: View<'_>, b: View<'_>, p: Parallelism) {
    if m == 0 || n == 0 {
        return;
    }
    a.check(m, k);
    b.check(k, n);
    assert!((m - 1) * dst_rs + n <= dst.len(), "destination out of bounds");
    if k == 0 {
        if !acc {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: every index the product touches was bounds-checked above; `dst` is borrowed
    // mutably and does not alias `a` or `b` (distinct borrows).
    unsafe { gemm::gemm(m, n, k, dst.as_mut_ptr(), 1, dst_rs as isize, acc, a.d.as_ptr(), a.cs as isize, a.rs as isize, b.d.as_ptr(), b.cs as isize, b.rs as isize, 1.0, 1.0, false, false, false, p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_and_transposes_match_a_naive_loop() {
        let (m, n, k) = (5, 7, 300);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 3) % 13) as f32 - 6.0).collect();
        let mut want = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        let mut got = vec![1f32; m * n];
        mm(m, n, k, &mut got, n, false, View::rm(&a, k), View::rm(&b, n));
        assert_eq!(got, want);
        // b given as its transpose (n x k, row-major), read through a transposed view.
        let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
        let mut got2 = vec![0f32; m * n];
        mm(m, n, k, &mut got2, n, false, View::rm(&a, k), View::rm(&bt, k).t());
        assert_eq!(got2, want);
        mm(m, n, k, &mut got2, n, true, View::rm(&a, k), View::rm(&bt, k).t());
        assert_eq!(got2, want.iter().map(|v| 2.0 * v).collect::<Vec<_>>());
    }
}
