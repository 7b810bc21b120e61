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

    /// Row `i`'s quantized values, block scales, sums and 16-sums.
    #[inline(always)]
    fn row(&self, i: usize) -> (&[i8], &[f32], &[f32], &[i16]) {
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
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => unreachable!("float weights use the f32 path"),
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
