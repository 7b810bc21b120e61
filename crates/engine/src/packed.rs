//! Quantized weights repacked at load time for the CPU kernels: Q4_1 and Q8_0 matrices in
//! groups of 8 rows whose blocks are interleaved, so one pass over a column of blocks feeds 8
//! output rows from one load of the activations, and the 8 rows' scales convert in one
//! instruction.
//!
//! Why: perf of SmolLM2 decode put 70% of the time in the one-row Q4_1 dot
//! (`qdot::x86::dot_row_vnni`), at ~100 tokens/s where the machine's memory would allow ~290
//! (96 MB of weights per token, 28 GB/s measured with two threads): the kernel was bound by its
//! per-block scalar work (two f16 conversions, a multiply and a broadcast per row and block),
//! not by memory. Here that work is done for 8 rows by a handful of vector instructions.
//!
//! Layout of one group (rows `8g..8g+8`, `nb` blocks each), block column after block column:
//! - Q4_1, 160 bytes: `[d_0..d_7: 8 x f16][m_0..m_7: 8 x f16][qs_0: 16 B] .. [qs_7: 16 B]`;
//! - Q8_0, 272 bytes: `[d_0..d_7: 8 x f16][u_0: 32 B] .. [u_7: 32 B]` with `u = q + 128` as an
//!   unsigned byte, so `vpdpbusd` multiplies it directly: `q.y = u.y - 128 * sum(y)`.
//!
//! The same bytes per row and block as ggml's blocks, in another order ([`pack`],
//! [`unpack_row`]).
//!
//! Arithmetic, the same bit for bit in every kernel here (the tests check it): for weight row `r`
//! and activation row `a` (bytes `y`, scales `d8`, and for Q4_1 scaled sums `s8`), each block
//! gives integer partial sums ("lanes"): Q4_1 has four, lane `j` = sum over `t < 4` of
//! `lo[4j+t]*y[4j+t] + hi[4j+t]*y[16+4j+t]`; Q8_0 has eight, lane `j` = sum over `t < 4` of
//! `q[4j+t]*y[4j+t]`. Lanes accumulate over blocks as `acc_j = (d_r*d8_b) * lane_j + acc_j`, and
//! Q4_1's minimum as `m = m_r*s8_b + m`, each a fused multiply-add. The result is
//! `((acc_0 + acc_1) + (acc_2 + acc_3)) + m` for Q4_1 and
//! `((acc_0 + acc_1) + (acc_2 + acc_3)) + ((acc_4 + acc_5) + (acc_6 + acc_7))` for Q8_0. A row's
//! result never depends on the rows or activations it shares a tile with, so batching never
//! changes a greedy choice.

use crate::qdot::QuantActs;
use crate::quant::GgmlType;
use half::f16;

/// Rows per group.
pub const GROUP: usize = 8;

/// Whether weights of `ty` have a packed layout.
pub fn packs(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_1 | GgmlType::Q8_0)
}

/// Bytes of one block column of a group.
fn block_bytes(ty: GgmlType) -> usize {
    ty.block_bytes() * GROUP
}

/// Repacks `rows` rows of `nb` blocks of `ty` each (ggml's layout, row after row) into groups,
/// appended to `out` (a tensor can be packed a run of groups at a time). `ty` must be one that
/// [`packs`]; `rows` a multiple of [`GROUP`].
pub fn pack(ty: GgmlType, src: &[u8], rows: usize, nb: usize, out: &mut Vec<u8>) {
    assert!(packs(ty), "{ty:?} has no packed layout");
    assert!(rows.is_multiple_of(GROUP), "rows must be a multiple of {GROUP}");
    let (bb, gb) = (ty.block_bytes(), block_bytes(ty));
    assert_eq!(src.len(), rows * nb * bb, "source size");
    let start = out.len();
    out.resize(start + src.len(), 0);
    let out = &mut out[start..];
    for g in 0..rows / GROUP {
        for b in 0..nb {
            let dst = &mut out[(g * nb + b) * gb..][..gb];
            for r in 0..GROUP {
                let s = &src[((g * GROUP + r) * nb + b) * bb..][..bb];
                dst[2 * r..2 * r + 2].copy_from_slice(&s[0..2]);
                if ty == GgmlType::Q4_1 {
                    dst[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&s[2..4]);
                    dst[32 + 16 * r..32 + 16 * r + 16].copy_from_slice(&s[4..20]);
                } else {
                    for (d, q) in dst[16 + 32 * r..16 + 32 * r + 32].iter_mut().zip(&s[2..34]) {
                        *d = q ^ 0x80;
                    }
                }
            }
        }
    }
}

/// Row `r` of packed data back in ggml's layout (`nb` blocks).
pub fn unpack_row(ty: GgmlType, packed: &[u8], nb: usize, r: usize, out: &mut Vec<u8>) {
    out.clear();
    let (g, i, gb) = (r / GROUP, r % GROUP, block_bytes(ty));
    for b in 0..nb {
        let blk = &packed[(g * nb + b) * gb..][..gb];
        out.extend_from_slice(&blk[2 * i..2 * i + 2]);
        if ty == GgmlType::Q4_1 {
            out.extend_from_slice(&blk[16 + 2 * i..16 + 2 * i + 2]);
            out.extend_from_slice(&blk[32 + 16 * i..32 + 16 * i + 16]);
        } else {
            out.extend(blk[16 + 32 * i..16 + 32 * i + 32].iter().map(|u| u ^ 0x80));
        }
    }
}

/// Activation rows a tile reads: (quantized bytes, block scales, scaled block sums) per row
/// (the sums only for Q4_1).
type ActRows<'a, const NA: usize> = [(&'a [i8], &'a [f32], &'a [f32]); NA];

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The portable reference for Q4_1: `out[a][r]` = weight row `r` of group `g` (`nb` blocks)
/// dotted with activation row `a`, in the order the module documents.
pub fn tile_ref_q4_1<const NA: usize>(g: &[u8], nb: usize, acts: &ActRows<'_, NA>, out: &mut [[f32; GROUP]; NA]) {
    let gb = block_bytes(GgmlType::Q4_1);
    for (o, &(y, d8, s8)) in out.iter_mut().zip(acts.iter()) {
        for (r, or) in o.iter_mut().enumerate() {
            let (mut acc, mut m) = ([0f32; 4], 0f32);
            for b in 0..nb {
                let blk = &g[b * gb..][..gb];
                let qs = &blk[32 + 16 * r..32 + 16 * r + 16];
                let yb = &y[32 * b..32 * b + 32];
                let s = f16_at(blk, 2 * r) * d8[b];
                for (j, aj) in acc.iter_mut().enumerate() {
                    let mut lane = 0i32;
                    for c in 4 * j..4 * j + 4 {
                        lane += (qs[c] & 0x0F) as i32 * yb[c] as i32 + (qs[c] >> 4) as i32 * yb[16 + c] as i32;
                    }
                    *aj = s.mul_add(lane as f32, *aj);
                }
                m = f16_at(blk, 16 + 2 * r).mul_add(s8[b], m);
            }
            *or = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + m;
        }
    }
}

/// The portable reference for Q8_0, as [`tile_ref_q4_1`].
pub fn tile_ref_q8_0<const NA: usize>(g: &[u8], nb: usize, acts: &ActRows<'_, NA>, out: &mut [[f32; GROUP]; NA]) {
    let gb = block_bytes(GgmlType::Q8_0);
    for (o, &(y, d8, _)) in out.iter_mut().zip(acts.iter()) {
        for (r, or) in o.iter_mut().enumerate() {
            let mut acc = [0f32; 8];
            for b in 0..nb {
                let blk = &g[b * gb..][..gb];
                let us = &blk[16 + 32 * r..16 + 32 * r + 32];
                let yb = &y[32 * b..32 * b + 32];
                let s = f16_at(blk, 2 * r) * d8[b];
                for (j, aj) in acc.iter_mut().enumerate() {
                    let lane: i32 = (4 * j..4 * j + 4).map(|c| (us[c] ^ 0x80) as i8 as i32 * yb[c] as i32).sum();
                    *aj = s.mul_add(lane as f32, *aj);
                }
            }
            *or = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        }
    }
}

/// Which kernel [`matmul_rows`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// [`tile_ref_q4_1`], [`tile_ref_q8_0`].
    Portable,
    /// AVX2 + FMA + F16C, two rows per register.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 (F, BW, VL) with VNNI, four rows per register.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn best() -> Kernel {
        static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            for k in [Kernel::Avx512, Kernel::Avx2] {
                if k.supported() {
                    return k;
                }
            }
            Kernel::Portable
        })
    }

    /// Whether this CPU runs the kernel ([`matmul_rows`] refuses one it does not).
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        use crate::ops::{has_avx2, has_avx512f, has_vnni};
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => has_avx2(),
            // VNNI here includes AVX2, FMA, F16C and AVX-512 VL; the byte shifts need BW.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => has_vnni() && has_avx512f() && is_x86_feature_detected!("avx512bw"),
        }
    }

    /// Activation rows per tile: as many as the registers hold accumulators for.
    fn width(self, ty: GgmlType) -> usize {
        match (self, ty) {
            (Kernel::Portable, _) => 1,
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2, GgmlType::Q4_1) => 2,
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2, _) => 1,
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx512, GgmlType::Q4_1) => 4,
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx512, _) => 4,
        }
    }
}

/// Weight rows `r0..r0 + rows` of a packed matrix of `ty` (`nb` blocks per row) against all
/// `n` activation rows of `a` (quantized as ggml pairs with `ty`); each tile's results go to
/// `put(i, r, values)`: activation row `i`, weight rows `r..r + 8`. `r0` and `rows` are
/// multiples of [`GROUP`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_rows(kernel: Kernel, ty: GgmlType, packed: &[u8], nb: usize, r0: usize, rows: usize, a: &QuantActs, n: usize, mut put: impl FnMut(usize, usize, &[f32; GROUP])) {
    assert!(packs(ty) && r0.is_multiple_of(GROUP) && rows.is_multiple_of(GROUP));
    assert!(kernel.supported(), "{kernel:?} kernels need CPU features this machine lacks");
    let gb = block_bytes(ty);
    assert!(packed.len() >= (r0 + rows) / GROUP * nb * gb, "rows within the matrix");
    // The activation rows' parts, checked once here rather than in every tile.
    let q4_1 = ty == GgmlType::Q4_1;
    let acts: Vec<(&[i8], &[f32], &[f32])> = (0..n)
        .map(|i| {
            let (y, d8, s8, _) = a.row(i);
            assert!(y.len() == 32 * nb && d8.len() == nb && (!q4_1 || s8.len() == nb), "activations match the weight's width and format");
            (y, d8, s8)
        })
        .collect();
    let width = kernel.width(ty);
    for gi in 0..rows / GROUP {
        let g = &packed[(r0 / GROUP + gi) * nb * gb..][..nb * gb];
        let r = r0 + gi * GROUP;
        let mut i = 0;
        while i < n {
            let na = (n - i).min(width);
            let mut emit = |t: &[[f32; GROUP]]| t.iter().enumerate().for_each(|(ai, ta)| put(i + ai, r, ta));
            let part = &acts[i..i + na];
            match na {
                1 => emit(&tile::<1>(kernel, q4_1, g, nb, part.try_into().expect("1 row"))),
                2 => emit(&tile::<2>(kernel, q4_1, g, nb, part.try_into().expect("2 rows"))),
                3 => emit(&tile::<3>(kernel, q4_1, g, nb, part.try_into().expect("3 rows"))),
                _ => emit(&tile::<4>(kernel, q4_1, g, nb, part.try_into().expect("4 rows"))),
            }
            i += na;
        }
    }
}

/// One tile: 8 weight rows (group `g`) against `NA` activation rows, whose sizes
/// [`matmul_rows`] has checked.
#[inline(always)]
fn tile<const NA: usize>(kernel: Kernel, q4_1: bool, g: &[u8], nb: usize, acts: &ActRows<'_, NA>) -> [[f32; GROUP]; NA] {
    let mut out = [[0f32; GROUP]; NA];
    match (kernel, q4_1) {
        (Kernel::Portable, true) => tile_ref_q4_1(g, nb, acts, &mut out),
        (Kernel::Portable, false) => tile_ref_q8_0(g, nb, acts, &mut out),
        // SAFETY (all four): `matmul_rows` checked that the CPU runs the kernel, that
        // the group holds `nb` block columns and every activation row `nb` blocks.
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx512, true) => unsafe { x86::q4_1_avx512(g.as_ptr(), nb, acts, &mut out) },
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx512, false) => unsafe { x86::q8_0_avx512(g.as_ptr(), nb, acts, &mut out) },
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx2, true) => unsafe { x86::q4_1_avx2(g.as_ptr(), nb, acts, &mut out) },
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx2, false) => unsafe { x86::q8_0_avx2(g.as_ptr(), nb, acts, &mut out) },
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{ActRows, GROUP};
    use std::arch::x86_64::*;

    /// How far ahead of the block being read the kernels prefetch, in bytes. Software
    /// prefetch paid where the arithmetic per byte is larger: 8 activation rows against
    /// 1536-row Q4_1 matrices on two threads, 7.4 -> 9.4 GB/s at 1280-2560 bytes ahead
    /// (benches/packed_stream.rs); a single row was unchanged.
    const PREFETCH: usize = 2048;

    /// Prefetches the cache lines of one block column `PREFETCH` bytes past `blk`.
    #[inline(always)]
    unsafe fn prefetch(blk: *const u8, bytes: usize) {
        let ahead = blk.add(PREFETCH) as *const i8;
        let mut off = 0;
        while off < bytes {
            _mm_prefetch::<_MM_HINT_T0>(ahead.add(off));
            off += 64;
        }
    }

    /// Bytes of a group's block column.
    const Q4_1_BLOCK: usize = 20 * GROUP;
    const Q8_0_BLOCK: usize = 34 * GROUP;

    /// [`super::tile_ref_q4_1`] with AVX-512: one zmm holds four rows' 16 nibble bytes (one row per
    /// 128-bit lane), so a block of 8 rows is two loads, four `vpdpbusd` per activation row, and
    /// the scales are one `vcvtph2ps` and two permutes per block.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C; `g` holds `nb` block columns; each activation
    /// row holds `nb` blocks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn q4_1_avx512<const NA: usize>(g: *const u8, nb: usize, acts: &ActRows<'_, NA>, out: &mut [[f32; GROUP]; NA]) {
        let m4 = _mm512_set1_epi8(0x0F);
        let idx0 = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        let idx1 = _mm512_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7);
        let mut acc = [[_mm512_setzero_ps(); 2]; NA];
        let mut accm = [_mm256_setzero_ps(); NA];
        for b in 0..nb {
            let blk = g.add(b * Q4_1_BLOCK);
            prefetch(blk, Q4_1_BLOCK);
            let dv = _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i)));
            let mv = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16) as *const __m128i));
            let de = [_mm512_permutexvar_ps(idx0, dv), _mm512_permutexvar_ps(idx1, dv)];
            let q = [_mm512_loadu_si512(blk.add(32) as *const _), _mm512_loadu_si512(blk.add(96) as *const _)];
            let lo = [_mm512_and_si512(q[0], m4), _mm512_and_si512(q[1], m4)];
            let hi = [_mm512_and_si512(_mm512_srli_epi16(q[0], 4), m4), _mm512_and_si512(_mm512_srli_epi16(q[1], 4), m4)];
            for (a, &(y, d8, s8)) in acts.iter().enumerate() {
                let yp = y.as_ptr().add(32 * b);
                let ylo = _mm512_broadcast_i32x4(_mm_loadu_si128(yp as *const __m128i));
                let yhi = _mm512_broadcast_i32x4(_mm_loadu_si128(yp.add(16) as *const __m128i));
                let d = _mm512_set1_ps(*d8.get_unchecked(b));
                for h in 0..2 {
                    let lanes = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[h], ylo), hi[h], yhi);
                    acc[a][h] = _mm512_fmadd_ps(_mm512_mul_ps(de[h], d), _mm512_cvtepi32_ps(lanes), acc[a][h]);
                }
                accm[a] = _mm256_fmadd_ps(mv, _mm256_set1_ps(*s8.get_unchecked(b)), accm[a]);
            }
        }
        let pick = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
        for a in 0..NA {
            let [x, z] = acc[a];
            // Per 128-bit lane k: [x0+x1, x2+x3, z0+z1, z2+z3] (x: row k, z: row k+4), then the
            // two halves summed: ((l0+l1)+(l2+l3)) per row.
            let w = _mm512_add_ps(_mm512_shuffle_ps::<0x88>(x, z), _mm512_shuffle_ps::<0xDD>(x, z));
            let s = _mm512_add_ps(_mm512_shuffle_ps::<0x88>(w, w), _mm512_shuffle_ps::<0xDD>(w, w));
            let rows = _mm512_castps512_ps256(_mm512_permutexvar_ps(pick, s));
            _mm256_storeu_ps(out[a].as_mut_ptr(), _mm256_add_ps(rows, accm[a]));
        }
    }

    /// [`super::tile_ref_q4_1`] with AVX2: one ymm holds two rows' nibble bytes.
    ///
    /// # Safety
    /// AVX2, FMA and F16C; bounds as [`tile_avx512`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4_1_avx2<const NA: usize>(g: *const u8, nb: usize, acts: &ActRows<'_, NA>, out: &mut [[f32; GROUP]; NA]) {
        let m4 = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let idx: [__m256i; 4] = std::array::from_fn(|p| {
            let (r0, r1) = (2 * p as i32, 2 * p as i32 + 1);
            _mm256_setr_epi32(r0, r0, r0, r0, r1, r1, r1, r1)
        });
        let mut acc = [[_mm256_setzero_ps(); 4]; NA];
        let mut accm = [_mm256_setzero_ps(); NA];
        for b in 0..nb {
            let blk = g.add(b * Q4_1_BLOCK);
            let dv = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
            let mv = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16) as *const __m128i));
            for p in 0..4 {
                let q = _mm256_loadu_si256(blk.add(32 + 32 * p) as *const __m256i);
                let lo = _mm256_and_si256(q, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                let de = _mm256_permutevar8x32_ps(dv, idx[p]);
                for (a, &(y, d8, _)) in acts.iter().enumerate() {
                    let yp = y.as_ptr().add(32 * b);
                    let ylo = _mm256_broadcastsi128_si256(_mm_loadu_si128(yp as *const __m128i));
                    let yhi = _mm256_broadcastsi128_si256(_mm_loadu_si128(yp.add(16) as *const __m128i));
                    let lanes = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, ylo), ones), _mm256_madd_epi16(_mm256_maddubs_epi16(hi, yhi), ones));
                    acc[a][p] = _mm256_fmadd_ps(_mm256_mul_ps(de, _mm256_set1_ps(*d8.get_unchecked(b))), _mm256_cvtepi32_ps(lanes), acc[a][p]);
                }
            }
            for (a, &(_, _, s8)) in acts.iter().enumerate() {
                accm[a] = _mm256_fmadd_ps(mv, _mm256_set1_ps(*s8.get_unchecked(b)), accm[a]);
            }
        }
        for a in 0..NA {
            // hadd pairs neighbours: [r0: l0+l1, l2+l3, r2: .. | r1: .., r3: ..], then again:
            // ((l0+l1)+(l2+l3)) per row, rows in the order 0 2 4 6 | 1 3 5 7 after the second
            // step; a permute puts them back in order.
            let h01 = _mm256_hadd_ps(acc[a][0], acc[a][1]);
            let h23 = _mm256_hadd_ps(acc[a][2], acc[a][3]);
            let s = _mm256_hadd_ps(h01, h23);
            let rows = _mm256_permutevar8x32_ps(s, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_ps(out[a].as_mut_ptr(), _mm256_add_ps(rows, accm[a]));
        }
    }

    /// [`super::tile_ref_q8_0`] with AVX-512: one zmm holds two rows' 32 offset bytes, so a block
    /// of 8 rows is four loads and four `vpdpbusd` per activation row, plus one for the
    /// activations' sums that undo the offset.
    ///
    /// # Safety
    /// As [`q4_1_avx512`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn q8_0_avx512<const NA: usize>(g: *const u8, nb: usize, acts: &ActRows<'_, NA>, out: &mut [[f32; GROUP]; NA]) {
        let ones = _mm512_set1_epi8(1);
        let idx: [__m512i; 4] = std::array::from_fn(|p| {
            let (r0, r1) = (2 * p as i32, 2 * p as i32 + 1);
            _mm512_setr_epi32(r0, r0, r0, r0, r0, r0, r0, r0, r1, r1, r1, r1, r1, r1, r1, r1)
        });
        let mut acc = [[_mm512_setzero_ps(); 4]; NA];
        for b in 0..nb {
            let blk = g.add(b * Q8_0_BLOCK);
            prefetch(blk, Q8_0_BLOCK);
            let dv = _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i)));
            let de: [__m512; 4] = std::array::from_fn(|p| _mm512_permutexvar_ps(idx[p], dv));
            let u: [__m512i; 4] = std::array::from_fn(|p| _mm512_loadu_si512(blk.add(16 + 64 * p) as *const _));
            for (a, &(y, d8, _)) in acts.iter().enumerate() {
                let yv = _mm512_broadcast_i64x4(_mm256_loadu_si256(y.as_ptr().add(32 * b) as *const __m256i));
                let ysum = _mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, yv), 7);
                let d = _mm512_set1_ps(*d8.get_unchecked(b));
                for p in 0..4 {
                    let lanes = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u[p], yv), ysum);
                    acc[a][p] = _mm512_fmadd_ps(_mm512_mul_ps(de[p], d), _mm512_cvtepi32_ps(lanes), acc[a][p]);
                }
            }
        }
        for a in 0..NA {
            let [x0, x1, x2, x3] = acc[a];
            // Pairs, then quads, within 128-bit lanes: lane c of `s` holds, for the four
            // registers, row 2p's lanes 0-3 (c = 0) or 4-7 (c = 1), row 2p+1's (c = 2, 3).
            let w01 = _mm512_add_ps(_mm512_shuffle_ps::<0x88>(x0, x1), _mm512_shuffle_ps::<0xDD>(x0, x1));
            let w23 = _mm512_add_ps(_mm512_shuffle_ps::<0x88>(x2, x3), _mm512_shuffle_ps::<0xDD>(x2, x3));
            let s = _mm512_add_ps(_mm512_shuffle_ps::<0x88>(w01, w23), _mm512_shuffle_ps::<0xDD>(w01, w23));
            let even = _mm_add_ps(_mm512_extractf32x4_ps::<0>(s), _mm512_extractf32x4_ps::<1>(s));
            let odd = _mm_add_ps(_mm512_extractf32x4_ps::<2>(s), _mm512_extractf32x4_ps::<3>(s));
            _mm_storeu_ps(out[a].as_mut_ptr(), _mm_unpacklo_ps(even, odd));
            _mm_storeu_ps(out[a].as_mut_ptr().add(4), _mm_unpackhi_ps(even, odd));
        }
    }

    /// [`super::tile_ref_q8_0`] with AVX2: one ymm per row, the offset undone to signed bytes
    /// and multiplied with `maddubs` on absolute values, as ggml does.
    ///
    /// # Safety
    /// As [`q4_1_avx2`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q8_0_avx2<const NA: usize>(g: *const u8, nb: usize, acts: &ActRows<'_, NA>, out: &mut [[f32; GROUP]; NA]) {
        let flip = _mm256_set1_epi8(0x80u8 as i8);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); GROUP]; NA];
        for b in 0..nb {
            let blk = g.add(b * Q8_0_BLOCK);
            let dv = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
            for r in 0..GROUP {
                let x = _mm256_xor_si256(_mm256_loadu_si256(blk.add(16 + 32 * r) as *const __m256i), flip);
                let ax = _mm256_sign_epi8(x, x);
                for (a, &(y, d8, _)) in acts.iter().enumerate() {
                    let yv = _mm256_loadu_si256(y.as_ptr().add(32 * b) as *const __m256i);
                    let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(yv, x)), ones);
                    let sc = _mm256_permutevar8x32_ps(_mm256_mul_ps(dv, _mm256_set1_ps(*d8.get_unchecked(b))), _mm256_set1_epi32(r as i32));
                    acc[a][r] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(lanes), acc[a][r]);
                }
            }
        }
        for a in 0..NA {
            for half in 0..2 {
                let v = &acc[a][4 * half..4 * half + 4];
                // [r0: pairs | r1: pairs] twice, then quads: [r0L r1L r2L r3L | r0H r1H r2H r3H].
                let q = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
                _mm_storeu_ps(out[a].as_mut_ptr().add(4 * half), _mm_add_ps(_mm256_castps256_ps128(q), _mm256_extractf128_ps::<1>(q)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qdot::{act_kind, dot_row};
    use rand::{Rng, SeedableRng};

    fn random_rows(ty: GgmlType, rows: usize, nb: usize, rng: &mut impl Rng) -> Vec<u8> {
        let mut v = Vec::with_capacity(rows * nb * ty.block_bytes());
        for _ in 0..rows * nb {
            v.extend_from_slice(&f16::from_f32(rng.gen_range(0.001..0.05)).to_le_bytes());
            if ty == GgmlType::Q4_1 {
                v.extend_from_slice(&f16::from_f32(rng.gen_range(-0.4..0.0)).to_le_bytes());
                v.extend((0..16).map(|_| rng.gen::<u8>()));
            } else {
                // The full range, -128 included.
                v.extend((0..32).map(|_| rng.gen::<u8>()));
            }
        }
        v
    }

    fn kernels() -> Vec<Kernel> {
        let all = [
            Kernel::Portable,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512,
        ];
        all.into_iter().filter(|k| k.supported()).collect()
    }

    #[test]
    fn packing_round_trips_every_row() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
            let (rows, nb, bb) = (24, 5, ty.block_bytes());
            let src = random_rows(ty, rows, nb, &mut rng);
            let mut packed = Vec::new();
            pack(ty, &src, rows, nb, &mut packed);
            let mut row = Vec::new();
            for r in 0..rows {
                unpack_row(ty, &packed, nb, r, &mut row);
                assert_eq!(row, src[r * nb * bb..(r + 1) * nb * bb], "{ty:?} row {r}");
            }
        }
    }

    /// Every kernel gives the same bits, for any batch size and split, and the same sum as the
    /// row-at-a-time dot to float rounding.
    #[test]
    fn kernels_agree_bit_for_bit_and_with_the_row_kernel() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
            let (rows, nb, n, bb) = (16, 18, 7, ty.block_bytes());
            let k = nb * 32;
            let src = random_rows(ty, rows, nb, &mut rng);
            let mut packed = Vec::new();
            pack(ty, &src, rows, nb, &mut packed);
            let x: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let a = QuantActs::new(act_kind(ty), &x, k);
            let mut results = Vec::new();
            for kernel in kernels() {
                // Results as rows x n.
                let mut out = vec![0f32; rows * n];
                matmul_rows(kernel, ty, &packed, nb, 0, rows, &a, n, |i, r, v| (0..GROUP).for_each(|j| out[(r + j) * n + i] = v[j]));
                // The second group alone, one activation row at a time: the same bits.
                for i in 0..n {
                    let one = QuantActs::new(act_kind(ty), &x[i * k..(i + 1) * k], k);
                    let mut o = vec![0f32; GROUP];
                    matmul_rows(kernel, ty, &packed, nb, GROUP, GROUP, &one, 1, |_, _, v| o.copy_from_slice(v));
                    for r in 0..GROUP {
                        assert_eq!(o[r].to_bits(), out[(GROUP + r) * n + i].to_bits(), "{ty:?} {kernel:?}: row {} act {i} alone vs batched", GROUP + r);
                    }
                }
                results.push((kernel, out));
            }
            for (kernel, out) in &results[1..] {
                for (i, (g, w)) in out.iter().zip(&results[0].1).enumerate() {
                    assert_eq!(g.to_bits(), w.to_bits(), "{ty:?} {kernel:?} vs portable at {i}: {g} vs {w}");
                }
            }
            for r in 0..rows {
                for i in 0..n {
                    let want = dot_row(ty, &src[r * nb * bb..(r + 1) * nb * bb], &a, i);
                    let got = results[0].1[r * n + i];
                    assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "{ty:?} row {r} act {i}: {got} vs {want}");
                }
            }
        }
    }
}
