//! Quantized dot products: activations are quantized once per matrix product to 8 bits in the
//! block format ggml pairs with each weight type (Q8_0, Q8_1 or Q8_K), and every weight row is
//! dotted against them in integer arithmetic, without dequantizing it.
//!
//! This is ggml's scheme, kept on purpose: it reads 4-6 bits per weight instead of 32, does the
//! inner loop in integers, and rounds activations the way llama.cpp does, so our greedy outputs
//! agree with the reference outputs it produced (near-tie logits flip otherwise; FINDINGS.md).
//! These are the portable reference kernels; the compiler vectorises them, and [`crate::ops`]
//! calls them through an AVX2 entry point when the CPU has it.

use crate::quant::{q6k_quad, scale_min_k4, GgmlType};
use half::f16;

/// How activations are quantized for a weight type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    /// 32 per block, f16 scale (for Q4_0, Q5_0, Q8_0 weights).
    Q8_0,
    /// 32 per block, f16 scale and scaled sum (for Q4_1).
    Q8_1,
    /// 256 per block, f32 scale, 16-element sums (for k-quants).
    Q8K,
    /// Plain f32 (float weights).
    F32,
}

/// The activation format ggml pairs with a weight type.
pub fn act_kind(ty: GgmlType) -> ActKind {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => ActKind::Q8_0,
        GgmlType::Q4_1 => ActKind::Q8_1,
        GgmlType::Q4K | GgmlType::Q6K => ActKind::Q8K,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => ActKind::F32,
    }
}

/// `n` activation rows of width `k`, quantized.
pub struct QuantActs {
    /// Format.
    pub kind: ActKind,
    /// Row width.
    pub k: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    bsums: Vec<i16>,
}

/// ggml's AVX2 quantizers round to nearest-even (`_MM_ROUND_NEAREST`).
#[inline(always)]
fn round_half_even(x: f32) -> i32 {
    x.round_ties_even() as i32
}

impl QuantActs {
    /// Quantizes `x` (n rows of k) for weights of type `ty`. `k` must be a whole number of blocks.
    /// Inlined so a caller compiled with SSE4.1+ rounds with one instruction, not a libm call.
    #[inline(always)]
    pub fn new(kind: ActKind, x: &[f32], k: usize) -> Self {
        let mut a = QuantActs { kind, k, qs: Vec::new(), d: Vec::new(), s: Vec::new(), bsums: Vec::new() };
        match kind {
            ActKind::F32 => {}
            ActKind::Q8_0 | ActKind::Q8_1 => {
                a.qs.reserve(x.len());
                for blk in x.chunks_exact(32) {
                    let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    // 127 / amax rather than 1 / d: the same rounding as ggml's x86 quantizer.
                    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                    let mut sum = 0i32;
                    for &v in blk {
                        let q = round_half_even(v * id) as i8;
                        sum += q as i32;
                        a.qs.push(q);
                    }
                    a.d.push(f16::from_f32(d).to_f32());
                    if kind == ActKind::Q8_1 {
                        a.s.push(f16::from_f32(d * sum as f32).to_f32());
                    }
                }
            }
            ActKind::Q8K => {
                a.qs.reserve(x.len());
                for blk in x.chunks_exact(256) {
                    let (mut amax, mut max) = (0f32, 0f32);
                    for &v in blk {
                        if v.abs() > amax {
                            amax = v.abs();
                            max = v;
                        }
                    }
                    if amax == 0.0 {
                        a.qs.extend(std::iter::repeat_n(0i8, 256));
                        a.bsums.extend(std::iter::repeat_n(0i16, 16));
                        a.d.push(0.0);
                        continue;
                    }
                    let iscale = -127.0 / max;
                    let start = a.qs.len();
                    for &v in blk {
                        a.qs.push(round_half_even(iscale * v).min(127) as i8);
                    }
                    for g in a.qs[start..].chunks_exact(16) {
                        a.bsums.push(g.iter().map(|&q| q as i16).sum());
                    }
                    a.d.push(1.0 / iscale);
                }
            }
        }
        a
    }

    /// [`QuantActs::new`] for Q8_0 and Q8_1 with AVX-512: the same arithmetic (the scale from
    /// the block's absolute maximum, `127 / amax` times each value rounded to nearest-even), so
    /// the same bytes, 32 values in two registers instead of one at a time. The scalar loop
    /// was 4-6% of 8-sequence decode (perf).
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `kind` must be Q8_0 or Q8_1 and `x.len()` a multiple of 32.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,f16c")]
    pub unsafe fn new_q8_avx512(kind: ActKind, x: &[f32], k: usize) -> Self {
        use std::arch::x86_64::*;
        debug_assert!(matches!(kind, ActKind::Q8_0 | ActKind::Q8_1) && x.len().is_multiple_of(32));
        let nb = x.len() / 32;
        let mut a = QuantActs { kind, k, qs: vec![0i8; x.len()], d: Vec::with_capacity(nb), s: Vec::new(), bsums: Vec::new() };
        if kind == ActKind::Q8_1 {
            a.s.reserve(nb);
        }
        let abs = |v: __m512| _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7FFF_FFFF)));
        for b in 0..nb {
            let p = x.as_ptr().add(32 * b);
            let (v0, v1) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(abs(v0), abs(v1)));
            let d = amax / 127.0;
            let id = _mm512_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            let round = |v: __m512| _mm512_cvtps_epi32(_mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(v, id)));
            let (q0, q1) = (round(v0), round(v1));
            let out = a.qs.as_mut_ptr().add(32 * b) as *mut __m128i;
            _mm_storeu_si128(out, _mm512_cvtepi32_epi8(q0));
            _mm_storeu_si128(out.add(1), _mm512_cvtepi32_epi8(q1));
            a.d.push(f16::from_f32(d).to_f32());
            if kind == ActKind::Q8_1 {
                let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
                a.s.push(f16::from_f32(d * sum as f32).to_f32());
            }
        }
        a
    }

    /// The rows of `parts`, in order, as one set (all of one kind and width).
    pub(crate) fn concat(mut parts: Vec<QuantActs>) -> QuantActs {
        let mut all = parts.remove(0);
        for p in parts {
            assert!(p.kind == all.kind && p.k == all.k, "parts of one activation matrix");
            all.qs.extend_from_slice(&p.qs);
            all.d.extend_from_slice(&p.d);
            all.s.extend_from_slice(&p.s);
            all.bsums.extend_from_slice(&p.bsums);
        }
        all
    }

    /// Row `i`'s quantized values, block scales, sums and 16-sums.
    #[inline(always)]
    pub(crate) fn row(&self, i: usize) -> (&[i8], &[f32], &[f32], &[i16]) {
        let k = self.k;
        match self.kind {
            ActKind::Q8_0 => (&self.qs[i * k..(i + 1) * k], &self.d[i * k / 32..(i + 1) * k / 32], &[], &[]),
            ActKind::Q8_1 => (&self.qs[i * k..(i + 1) * k], &self.d[i * k / 32..(i + 1) * k / 32], &self.s[i * k / 32..(i + 1) * k / 32], &[]),
            ActKind::Q8K => (&self.qs[i * k..(i + 1) * k], &self.d[i * k / 256..(i + 1) * k / 256], &[], &self.bsums[i * k / 16..(i + 1) * k / 16]),
            ActKind::F32 => (&[], &[], &[], &[]),
        }
    }
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dot product of one quantized weight row with activation row `i`. Float weight types are not
/// handled here (the caller dequantizes them).
#[inline(always)]
pub fn dot_row(ty: GgmlType, w: &[u8], a: &QuantActs, i: usize) -> f32 {
    let (q8, d8, s8, bs8) = a.row(i);
    let bb = ty.block_bytes();
    let mut sum = 0f32;
    match ty {
        GgmlType::Q4_0 => {
            for (b, (wb, qa)) in w.chunks_exact(bb).zip(q8.chunks_exact(32)).enumerate() {
                let qs = &wb[2..18];
                let mut s = 0i32;
                for j in 0..16 {
                    s += ((qs[j] & 0x0F) as i32 - 8) * qa[j] as i32 + ((qs[j] >> 4) as i32 - 8) * qa[j + 16] as i32;
                }
                sum += f16_at(wb, 0) * d8[b] * s as f32;
            }
        }
        GgmlType::Q4_1 => {
            for (b, (wb, qa)) in w.chunks_exact(bb).zip(q8.chunks_exact(32)).enumerate() {
                let qs = &wb[4..20];
                let mut s = 0i32;
                for j in 0..16 {
                    s += (qs[j] & 0x0F) as i32 * qa[j] as i32 + (qs[j] >> 4) as i32 * qa[j + 16] as i32;
                }
                sum += f16_at(wb, 0) * d8[b] * s as f32 + f16_at(wb, 2) * s8[b];
            }
        }
        GgmlType::Q5_0 => {
            for (b, (wb, qa)) in w.chunks_exact(bb).zip(q8.chunks_exact(32)).enumerate() {
                let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
                let qs = &wb[6..22];
                let mut s = 0i32;
                for j in 0..16 {
                    let lo = ((qs[j] & 0x0F) as u32 | (((qh >> j) & 1) << 4)) as i32 - 16;
                    let hi = ((qs[j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4)) as i32 - 16;
                    s += lo * qa[j] as i32 + hi * qa[j + 16] as i32;
                }
                sum += f16_at(wb, 0) * d8[b] * s as f32;
            }
        }
        GgmlType::Q8_0 => {
            for (b, (wb, qa)) in w.chunks_exact(bb).zip(q8.chunks_exact(32)).enumerate() {
                let mut s = 0i32;
                for j in 0..32 {
                    s += wb[2 + j] as i8 as i32 * qa[j] as i32;
                }
                sum += f16_at(wb, 0) * d8[b] * s as f32;
            }
        }
        GgmlType::Q4K => {
            for (b, (wb, qa)) in w.chunks_exact(bb).zip(q8.chunks_exact(256)).enumerate() {
                let d = f16_at(wb, 0) * d8[b];
                let dmin = f16_at(wb, 2) * d8[b];
                let sc = &wb[4..16];
                let qs = &wb[16..144];
                let bs = &bs8[b * 16..b * 16 + 16];
                let (mut sumi, mut summ) = (0i32, 0i32);
                for j in 0..4 {
                    let (s1, m1) = scale_min_k4(2 * j, sc);
                    let (s2, m2) = scale_min_k4(2 * j + 1, sc);
                    let q = &qs[32 * j..32 * j + 32];
                    let qa1 = &qa[64 * j..64 * j + 32];
                    let qa2 = &qa[64 * j + 32..64 * j + 64];
                    let (mut a1, mut a2) = (0i32, 0i32);
                    for l in 0..32 {
                        a1 += (q[l] & 0x0F) as i32 * qa1[l] as i32;
                        a2 += (q[l] >> 4) as i32 * qa2[l] as i32;
                    }
                    sumi += a1 * s1 as i32 + a2 * s2 as i32;
                    summ += m1 as i32 * (bs[4 * j] as i32 + bs[4 * j + 1] as i32) + m2 as i32 * (bs[4 * j + 2] as i32 + bs[4 * j + 3] as i32);
                }
                sum += d * sumi as f32 - dmin * summ as f32;
            }
        }
        GgmlType::Q6K => {
            for (b, (wb, qa)) in w.chunks_exact(bb).zip(q8.chunks_exact(256)).enumerate() {
                let d = f16_at(wb, 208) * d8[b];
                let mut sumi = 0i32;
                for half in 0..2 {
                    let ql = &wb[64 * half..64 * half + 64];
                    let qh = &wb[128 + 32 * half..128 + 32 * half + 32];
                    let sc = &wb[192 + 8 * half..192 + 8 * half + 8];
                    let qa = &qa[128 * half..128 * half + 128];
                    // Four 32-wide groups, each split into two 16-wide sub-blocks with own scales.
                    let mut acc = [0i32; 8];
                    for l in 0..32 {
                        let is = l / 16;
                        let [q1, q2, q3, q4] = q6k_quad(ql, qh, l);
                        acc[is] += q1 * qa[l] as i32;
                        acc[is + 2] += q2 * qa[l + 32] as i32;
                        acc[is + 4] += q3 * qa[l + 64] as i32;
                        acc[is + 6] += q4 * qa[l + 96] as i32;
                    }
                    for (k, &v) in acc.iter().enumerate() {
                        sumi += v * sc[k] as i8 as i32;
                    }
                }
                sum += d * sumi as f32;
            }
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            unreachable!("float weights use the f32 path")
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize_row;
    use rand::{Rng, SeedableRng};

    /// A random but valid row of `ty`: random bytes with sane f16 scales.
    fn random_row(ty: GgmlType, k: usize, rng: &mut impl Rng) -> Vec<u8> {
        let mut b: Vec<u8> = (0..ty.row_bytes(k).unwrap()).map(|_| rng.gen()).collect();
        let bb = ty.block_bytes();
        let put = |b: &mut [u8], off: usize, v: f32| b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        for blk in b.chunks_exact_mut(bb) {
            match ty {
                GgmlType::Q4_1 => {
                    put(blk, 0, 0.01);
                    put(blk, 2, -0.05)
                }
                GgmlType::Q4K => {
                    put(blk, 0, 0.01);
                    put(blk, 2, 0.002)
                }
                GgmlType::Q6K => put(blk, 208, 0.001),
                _ => put(blk, 0, 0.01),
            }
        }
        b
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernels_match_the_portable_ones() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")) {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let k = 1024;
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K] {
            for _ in 0..4 {
                let w = random_row(ty, k, &mut rng);
                let x: Vec<f32> = (0..k).map(|_| rng.gen_range(-2.0..2.0)).collect();
                let acts = QuantActs::new(act_kind(ty), &x, k);
                let want = dot_row(ty, &w, &acts, 0);
                // SAFETY: features checked above.
                let got = unsafe { x86::dot_row(ty, &w, &acts, 0) };
                assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "{ty:?}: avx2 {got} vs portable {want}");
                if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
                    // SAFETY: features checked.
                    let got = unsafe { x86::dot_row_vnni(ty, &w, &acts, 0) };
                    assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "{ty:?}: vnni {got} vs portable {want}");
                }
                // Four rows at once agree with one at a time.
                let x4: Vec<f32> = (0..4 * k).map(|_| rng.gen_range(-2.0..2.0)).collect();
                let acts4 = QuantActs::new(act_kind(ty), &x4, k);
                let mut out = [0f32; 4];
                // SAFETY: features checked above.
                if unsafe { x86::dot_rows4(ty, &w, &acts4, 0, &mut out) } {
                    for (r, o) in out.iter().enumerate() {
                        // SAFETY: features checked above.
                        let one = unsafe { x86::dot_row(ty, &w, &acts4, r) };
                        assert_eq!(o.to_bits(), one.to_bits(), "{ty:?} rows4[{r}] must equal the one-row kernel exactly");
                    }
                }
            }
        }
    }

    #[test]
    fn vector_quantizer_gives_the_same_bytes() {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Random values, an all-zero block, and exact halves (ties round to even).
        let mut x: Vec<f32> = (0..32 * 40).map(|_| rng.gen_range(-3.0..3.0)).collect();
        x[64..96].iter_mut().for_each(|v| *v = 0.0);
        x[96..128].iter_mut().enumerate().for_each(|(i, v)| *v = (i as f32 - 16.0) * 0.5 + 0.25);
        x[96] = 127.0 / 8.0;
        for kind in [ActKind::Q8_0, ActKind::Q8_1] {
            let want = QuantActs::new(kind, &x, 32 * 8);
            // SAFETY: checked above.
            let got = unsafe { QuantActs::new_q8_avx512(kind, &x, 32 * 8) };
            assert_eq!(got.qs, want.qs, "{kind:?}");
            assert_eq!(got.d, want.d, "{kind:?}");
            assert_eq!(got.s, want.s, "{kind:?}");
        }
    }

    #[test]
    fn quantized_dot_matches_dequantized_dot() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let k = 512;
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K] {
            let w = random_row(ty, k, &mut rng);
            let x: Vec<f32> = (0..2 * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let acts = QuantActs::new(act_kind(ty), &x, k);
            let mut wf = vec![0f32; k];
            dequantize_row(ty, &w, &mut wf);
            for i in 0..2 {
                let exact: f32 = wf.iter().zip(&x[i * k..(i + 1) * k]).map(|(a, b)| a * b).sum();
                let got = dot_row(ty, &w, &acts, i);
                let scale: f32 = wf.iter().map(|v| v.abs()).sum::<f32>() / 127.0;
                assert!((got - exact).abs() < scale + 1e-3, "{ty:?} row {i}: {got} vs {exact}");
            }
        }
    }
}

/// AVX2 kernels for the dot products above: 32 weights per block are widened to bytes and
/// multiplied against the activation bytes with `maddubs` (32 multiply-adds in one instruction),
/// as ggml does. Profiling the portable path (perf, SmolLM2 decode) put 75% of the time in
/// `dot_row`, which the compiler had not vectorised across the nibble unpacking.
#[cfg(target_arch = "x86_64")]
pub mod x86 {
    use super::QuantActs;
    use crate::quant::{scale_min_k4, GgmlType};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn f16(p: *const u8) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes([*p, *p.add(1)]) as i32)))
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Unsigned bytes times signed bytes, summed in quads into 8 x i32: `maddubs` + `madd` on
    /// AVX2, one `vpdpbusd` with AVX-512 VNNI.
    pub trait Dp {
        /// The quad sums.
        unsafe fn dp(x: __m256i, y: __m256i) -> __m256i;
    }
    /// AVX2 form.
    pub struct Avx2;
    impl Dp for Avx2 {
        #[inline(always)]
        unsafe fn dp(x: __m256i, y: __m256i) -> __m256i {
            _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
        }
    }
    /// AVX-512 VNNI form.
    pub struct Vnni;
    impl Dp for Vnni {
        #[inline(always)]
        unsafe fn dp(x: __m256i, y: __m256i) -> __m256i {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y)
        }
    }

    /// Signed bytes times signed bytes, summed in quads into 8 x i32.
    #[inline(always)]
    unsafe fn dot_i8<D: Dp>(x: __m256i, y: __m256i) -> __m256i {
        D::dp(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
    }

    /// 32 bits to 32 bytes, 0xFF where the bit is set (ggml's `bytes_from_bits_32`).
    #[inline(always)]
    unsafe fn bytes_from_bits(bits: u32) -> __m256i {
        let shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
        let b = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuf);
        let b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
        _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1))
    }

    /// 16 bytes of nibbles to 32 bytes: low nibbles first, then high nibbles.
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let q = _mm_loadu_si128(p as *const __m128i);
        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F))
    }

    /// The AVX2 version of [`super::dot_row`].
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `w` must hold one row of `ty` matching `a.k`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_row(ty: GgmlType, w: &[u8], a: &QuantActs, i: usize) -> f32 {
        dot_row_impl::<Avx2>(ty, w, a, i)
    }

    /// The AVX-512 VNNI version of [`super::dot_row`].
    ///
    /// # Safety
    /// As [`dot_row`], and the CPU must support AVX-512 VNNI and VL.
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    pub unsafe fn dot_row_vnni(ty: GgmlType, w: &[u8], a: &QuantActs, i: usize) -> f32 {
        dot_row_impl::<Vnni>(ty, w, a, i)
    }

    /// Four activation rows (`i0..i0+4`) against one weight row at once, for Q4_1 and Q8_0:
    /// the weight block is loaded and unpacked once for all four, which is where batched prefill
    /// spent its time. Returns false for other types (the caller uses [`dot_row`]).
    ///
    /// # Safety
    /// As [`dot_row`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_rows4(ty: GgmlType, w: &[u8], a: &QuantActs, i0: usize, out: &mut [f32]) -> bool {
        rows4_impl::<Avx2>(ty, w, a, i0, out)
    }

    /// As [`dot_rows4`], with AVX-512 VNNI.
    ///
    /// # Safety
    /// As [`dot_row_vnni`].
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    pub unsafe fn dot_rows4_vnni(ty: GgmlType, w: &[u8], a: &QuantActs, i0: usize, out: &mut [f32]) -> bool {
        rows4_impl::<Vnni>(ty, w, a, i0, out)
    }

    #[inline(always)]
    unsafe fn rows4_impl<D: Dp>(ty: GgmlType, w: &[u8], a: &QuantActs, i0: usize, out: &mut [f32]) -> bool {
        if !matches!(ty, GgmlType::Q4_1 | GgmlType::Q8_0) {
            return false;
        }
        let rows = [a.row(i0), a.row(i0 + 1), a.row(i0 + 2), a.row(i0 + 3)];
        let nb = rows[0].1.len();
        let wp = w.as_ptr();
        // Even blocks into one accumulator and odd blocks into another, summed in the same order
        // as `dot_row_impl`: a row's result is bit-identical whether it is computed alone or in a
        // batch, so batching never changes a greedy choice.
        let mut accs = [[_mm256_setzero_ps(); 4]; 2];
        let mut extras = [[0f32; 4]; 2];
        for b in 0..nb {
            let acc = &mut accs[b & 1];
            let extra = &mut extras[b & 1];
            if ty == GgmlType::Q4_1 {
                let wb = wp.add(b * 20);
                let x = nibbles(wb.add(4));
                let (dw, mw) = (f16(wb), f16(wb.add(2)));
                for r in 0..4 {
                    let (q8, d8, s8, _) = rows[r];
                    let p = D::dp(x, _mm256_loadu_si256(q8.as_ptr().add(b * 32) as *const __m256i));
                    acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * d8[b]), _mm256_cvtepi32_ps(p), acc[r]);
                    extra[r] += mw * s8[b];
                }
            } else {
                let wb = wp.add(b * 34);
                let x = _mm256_loadu_si256(wb.add(2) as *const __m256i);
                let ax = _mm256_sign_epi8(x, x);
                let dw = f16(wb);
                for r in 0..4 {
                    let (q8, d8, _, _) = rows[r];
                    let y = _mm256_loadu_si256(q8.as_ptr().add(b * 32) as *const __m256i);
                    let p = D::dp(ax, _mm256_sign_epi8(y, x));
                    acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * d8[b]), _mm256_cvtepi32_ps(p), acc[r]);
                }
            }
        }
        for r in 0..4 {
            out[r] = hsum(_mm256_add_ps(accs[0][r], accs[1][r])) + (extras[0][r] + extras[1][r]);
        }
        true
    }

    #[inline(always)]
    unsafe fn dot_row_impl<D: Dp>(ty: GgmlType, w: &[u8], a: &QuantActs, i: usize) -> f32 {
        let (q8, d8, s8, bs8) = a.row(i);
        let wp = w.as_ptr();
        let qp = q8.as_ptr();
        let nb = d8.len();
        let mut acc = _mm256_setzero_ps();
        let mut extra = 0f32;
        match ty {
            GgmlType::Q4_1 => {
                // Two blocks per iteration with independent accumulators: the fmadd chain, not
                // the arithmetic, bounded the one-block loop.
                let mut acc2 = _mm256_setzero_ps();
                let mut extra2 = 0f32;
                let mut b = 0;
                while b + 1 < nb {
                    let w0 = wp.add(b * 20);
                    let w1 = wp.add(b * 20 + 20);
                    let y0 = _mm256_loadu_si256(qp.add(b * 32) as *const __m256i);
                    let y1 = _mm256_loadu_si256(qp.add(b * 32 + 32) as *const __m256i);
                    let p0 = D::dp(nibbles(w0.add(4)), y0);
                    let p1 = D::dp(nibbles(w1.add(4)), y1);
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(w0) * d8[b]), _mm256_cvtepi32_ps(p0), acc);
                    acc2 = _mm256_fmadd_ps(_mm256_set1_ps(f16(w1) * d8[b + 1]), _mm256_cvtepi32_ps(p1), acc2);
                    extra += f16(w0.add(2)) * s8[b];
                    extra2 += f16(w1.add(2)) * s8[b + 1];
                    b += 2;
                }
                if b < nb {
                    let wb = wp.add(b * 20);
                    let y = _mm256_loadu_si256(qp.add(b * 32) as *const __m256i);
                    let p = D::dp(nibbles(wb.add(4)), y);
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(wb) * d8[b]), _mm256_cvtepi32_ps(p), acc);
                    extra += f16(wb.add(2)) * s8[b];
                }
                acc = _mm256_add_ps(acc, acc2);
                extra += extra2;
            }
            GgmlType::Q4_0 => {
                for b in 0..nb {
                    let wb = wp.add(b * 18);
                    let x = _mm256_sub_epi8(nibbles(wb.add(2)), _mm256_set1_epi8(8));
                    let y = _mm256_loadu_si256(qp.add(b * 32) as *const __m256i);
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(wb) * d8[b]), _mm256_cvtepi32_ps(dot_i8::<D>(x, y)), acc);
                }
            }
            GgmlType::Q5_0 => {
                for b in 0..nb {
                    let wb = wp.add(b * 22);
                    let qh = u32::from_le_bytes([*wb.add(2), *wb.add(3), *wb.add(4), *wb.add(5)]);
                    let hi = _mm256_andnot_si256(bytes_from_bits(qh), _mm256_set1_epi8(0xF0u8 as i8));
                    let x = _mm256_or_si256(nibbles(wb.add(6)), hi);
                    let y = _mm256_loadu_si256(qp.add(b * 32) as *const __m256i);
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(wb) * d8[b]), _mm256_cvtepi32_ps(dot_i8::<D>(x, y)), acc);
                }
            }
            GgmlType::Q8_0 => {
                let mut acc2 = _mm256_setzero_ps();
                let mut b = 0;
                while b + 1 < nb {
                    let w0 = wp.add(b * 34);
                    let w1 = wp.add(b * 34 + 34);
                    let p0 = dot_i8::<D>(_mm256_loadu_si256(w0.add(2) as *const __m256i), _mm256_loadu_si256(qp.add(b * 32) as *const __m256i));
                    let p1 = dot_i8::<D>(_mm256_loadu_si256(w1.add(2) as *const __m256i), _mm256_loadu_si256(qp.add(b * 32 + 32) as *const __m256i));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(w0) * d8[b]), _mm256_cvtepi32_ps(p0), acc);
                    acc2 = _mm256_fmadd_ps(_mm256_set1_ps(f16(w1) * d8[b + 1]), _mm256_cvtepi32_ps(p1), acc2);
                    b += 2;
                }
                if b < nb {
                    let wb = wp.add(b * 34);
                    let p = dot_i8::<D>(_mm256_loadu_si256(wb.add(2) as *const __m256i), _mm256_loadu_si256(qp.add(b * 32) as *const __m256i));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(wb) * d8[b]), _mm256_cvtepi32_ps(p), acc);
                }
                acc = _mm256_add_ps(acc, acc2);
            }
            GgmlType::Q4K => {
                for b in 0..nb {
                    let wb = wp.add(b * 144);
                    let sc = std::slice::from_raw_parts(wb.add(4), 12);
                    let qs = wb.add(16);
                    let ya = qp.add(b * 256);
                    let bs = &bs8[b * 16..b * 16 + 16];
                    let mut sumi = _mm256_setzero_si256();
                    let mut summ = 0i32;
                    for j in 0..4 {
                        let (s1, m1) = scale_min_k4(2 * j, sc);
                        let (s2, m2) = scale_min_k4(2 * j + 1, sc);
                        let q = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
                        let lo = _mm256_and_si256(q, _mm256_set1_epi8(0x0F));
                        let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), _mm256_set1_epi8(0x0F));
                        let y1 = _mm256_loadu_si256(ya.add(64 * j) as *const __m256i);
                        let y2 = _mm256_loadu_si256(ya.add(64 * j + 32) as *const __m256i);
                        let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y1), _mm256_set1_epi16(s1 as i16));
                        let p2 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y2), _mm256_set1_epi16(s2 as i16));
                        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p1, p2));
                        summ += m1 as i32 * (bs[4 * j] as i32 + bs[4 * j + 1] as i32) + m2 as i32 * (bs[4 * j + 2] as i32 + bs[4 * j + 3] as i32);
                    }
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(wb) * d8[b]), _mm256_cvtepi32_ps(sumi), acc);
                    extra -= f16(wb.add(2)) * d8[b] * summ as f32;
                }
            }
            GgmlType::Q6K => {
                let m3 = _mm256_set1_epi8(3);
                let m4 = _mm256_set1_epi8(0x0F);
                let k32 = _mm256_set1_epi8(32);
                for b in 0..nb {
                    let wb = wp.add(b * 210);
                    let ya = qp.add(b * 256);
                    let mut sumi = _mm256_setzero_si256();
                    for half in 0..2 {
                        let ql = wb.add(64 * half);
                        let qh = _mm256_loadu_si256(wb.add(128 + 32 * half) as *const __m256i);
                        let sc = wb.add(192 + 8 * half) as *const i8;
                        let l1 = _mm256_loadu_si256(ql as *const __m256i);
                        let l2 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
                        let q = [
                            _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4)),
                            _mm256_or_si256(_mm256_and_si256(l2, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4)),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4)),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l2, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4)),
                        ];
                        for (k, qk) in q.iter().enumerate() {
                            let y = _mm256_loadu_si256(ya.add(128 * half + 32 * k) as *const __m256i);
                            // (q - 32) . y  =  q . y - 32 . y, both in unsigned-by-signed form.
                            let p = _mm256_sub_epi16(_mm256_maddubs_epi16(*qk, y), _mm256_maddubs_epi16(k32, y));
                            let s = _mm256_set_m128i(_mm_set1_epi16(*sc.add(2 * k + 1) as i16), _mm_set1_epi16(*sc.add(2 * k) as i16));
                            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
                        }
                    }
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(wb.add(208)) * d8[b]), _mm256_cvtepi32_ps(sumi), acc);
                }
            }
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                unreachable!("float weights use the f32 path")
            }
        }
        hsum(acc) + extra
    }
}
