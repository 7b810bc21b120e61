//! bf16 products for the training step's large matrices: Intel AMX tiles (`tdpbf16ps`) where
//! the CPU and the OS allow them, else AVX512-BF16's `vdpbf16ps` (two bf16 products summed into
//! each f32 lane per instruction), else a portable loop.
//!
//! Why our own kernel: the `gemm` crate (0.18) runs f32 on this CPU through its AVX2/FMA kernel
//! (its AVX-512 kernels need a nightly feature) and has no bf16 path; profiling the trainer on
//! SmolLM2 put 67% of the step in it at 213 tokens/s. On Zen 4 an f32 FMA does 16 multiply-adds
//! per cycle per core and `vdpbf16ps` 32, so products can run up to twice as fast with bf16
//! inputs and f32 accumulation (mixed precision, as PEFT runs in bf16). A first dot-product
//! tiling (4 x 4 rows, horizontal sums) reached only 230 tokens/s: it loaded 512 bytes per
//! 16 instructions from L2. The AVX-512 kernel is the classic broadcast form: the weight is
//! packed once into 64-column panels of bf16 pairs, a 6 x 64 block of outputs lives in 24
//! registers, and each step broadcasts one pair of activations per row (6 x 4 bytes) against 4
//! panel loads (256 bytes) for 24 `vdpbf16ps`.
//!
//! AMX (Sapphire Rapids and later): one `tdpbf16ps` multiplies a 16 x 32 bf16 tile by a 32 x 16
//! one into 16 x 16 f32 sums, 8192 multiply-adds; a loop of them ran at 3.2 TFLOP/s on one core
//! of the 2-vCPU Xeon this was written on, about ten times what `vdpbf16ps` can issue. There the
//! AVX-512 kernel took 52% of a training step (perf, SmolLM2 Ask-Data demo, 276 tokens/s). The
//! panel layout above is already what a B tile wants (16 pairs of rows by 16 columns, 64 bytes a
//! row, rows 256 bytes apart), and a row of activation pairs is what an A tile wants, so both
//! kernels share the packing: pairs are padded to a multiple of 16 (zeros) so no tile reads past
//! a panel. Stable Rust has no AMX intrinsics, so the few instructions are inline assembly.
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
/// Pairs per AMX tile row (64 bytes); packed pairs are padded to a multiple of it.
const TILE_PAIRS: usize = 16;
/// Rows of activations per AMX task (two tiles of 16).
const AMX_ROWS: usize = 32;

fn pack_pair(lo: f32, hi: f32) -> u32 {
    (bf16::from_f32(lo).to_bits() as u32) | ((bf16::from_f32(hi).to_bits() as u32) << 16)
}

/// A `k x n` matrix packed for the kernels: panel `p`, pair `q`, column `c` at
/// `data[(p * pairs + q) * 64 + c]` holds `(B[2q][64p + c], B[2q + 1][64p + c])`; `pairs` is
/// `ceil(k / 2)` rounded up to a multiple of 16, the padding zeros.
pub struct PackedB {
    /// Rows of B (the reduction length).
    pub k: usize,
    /// Columns of B (outputs).
    pub n: usize,
    /// Pairs per panel column, padded (see above).
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
        let real = k.div_ceil(2);
        let pairs = real.next_multiple_of(TILE_PAIRS);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u32; panels * pairs * NR];
        data.par_chunks_mut(pairs * NR).enumerate().for_each(|(p, panel)| {
            for q in 0..real {
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

/// Whether AMX may be used where the CPU and OS have it (`train.amx` in the config); on by
/// default.
static AMX_ALLOWED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Allows or forbids the AMX kernel for this process (forbidden, bf16 products run on
/// AVX512-BF16).
pub fn allow_amx(on: bool) {
    AMX_ALLOWED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// The kernel a product runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Intel AMX tiles.
    Amx,
    /// AVX512-BF16 registers.
    Avx512,
    /// Plain Rust (no bf16 instructions; for other CPUs and tests).
    Portable,
}

/// The fastest kernel this CPU, OS and configuration allow.
pub fn kernel() -> Kernel {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if AMX_ALLOWED.load(std::sync::atomic::Ordering::Relaxed) && amx::ready() {
        return Kernel::Amx;
    }
    if available() {
        Kernel::Avx512
    } else {
        Kernel::Portable
    }
}

/// The output (`n` columns a row) that parallel tasks read and write in disjoint blocks.
struct OutPtr {
    p: *mut f32,
    n: usize,
}
// SAFETY: tasks touch disjoint (row range, column range) blocks of the output (see `matmul`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Copies columns `c0 .. c0 + cols` of rows `r0 ..` into the rows of `dst`.
    ///
    /// SAFETY: those rows and columns are inside the output and no other task's.
    unsafe fn read<const W: usize>(&self, r0: usize, c0: usize, cols: usize, dst: &mut [[f32; W]]) {
        for (i, row) in dst.iter_mut().enumerate() {
            std::ptr::copy_nonoverlapping(self.p.add((r0 + i) * self.n + c0), row.as_mut_ptr(), cols);
        }
    }

    /// Copies the rows of `src` into columns `c0 .. c0 + cols` of rows `r0 ..`.
    ///
    /// SAFETY: as for [`OutPtr::read`].
    unsafe fn write<const W: usize>(&self, r0: usize, c0: usize, cols: usize, src: &[[f32; W]]) {
        for (i, row) in src.iter().enumerate() {
            std::ptr::copy_nonoverlapping(row.as_ptr(), self.p.add((r0 + i) * self.n + c0), cols);
        }
    }
}

/// `out (t x b.n) (+)= x (t x b.k) . B`, bf16 products with f32 accumulation; `acc` adds to
/// what `out` holds. Runs on [`kernel()`].
pub fn matmul(x: &[f32], t: usize, b: &PackedB, out: &mut [f32], acc: bool) {
    matmul_on(kernel(), x, t, b, out, acc)
}

/// [`matmul`] on a given kernel; panics if this CPU, OS or configuration cannot run it.
pub fn matmul_on(kern: Kernel, x: &[f32], t: usize, b: &PackedB, out: &mut [f32], acc: bool) {
    let usable = match kern {
        Kernel::Amx => kernel() == Kernel::Amx,
        Kernel::Avx512 => available(),
        Kernel::Portable => true,
    };
    assert!(usable, "the {kern:?} bf16 kernel cannot run here");
    let (k, n, pairs) = (b.k, b.n, b.pairs);
    assert_eq!(x.len(), t * k);
    assert_eq!(out.len(), t * n);
    if t == 0 || n == 0 {
        return;
    }
    // Activations as bf16 pairs, row-major, `pairs` per row (padded with zeros, as B's are): a
    // row of bf16 in natural order is already its pairs (little-endian: element 2q low, 2q + 1
    // high). AMX reads whole tiles of 32 rows, so its rows are padded with zeros too.
    let fast = kern != Kernel::Portable;
    let rows = if kern == Kernel::Amx { t.next_multiple_of(AMX_ROWS) } else { t };
    let mut a = vec![0u32; rows * pairs];
    let convert = |(d, s): (&mut [u32], &[f32])| {
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: the CPU has avx512bf16; `d` holds ceil(k / 2) pairs for `s`'s k values.
            unsafe { x86::to_pairs(s, d) };
            return;
        }
        for (q, o) in d.iter_mut().enumerate().take(k.div_ceil(2)) {
            *o = pack_pair(s[2 * q], if 2 * q + 1 < k { s[2 * q + 1] } else { 0.0 });
        }
    };
    if t * k >= 1 << 16 {
        a.par_chunks_mut(pairs).zip(x.par_chunks(k)).for_each(convert);
    } else {
        a.chunks_mut(pairs).zip(x.chunks(k)).for_each(convert);
    }
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if kern == Kernel::Amx {
        amx::matmul(&a, t, b, out, acc);
        return;
    }
    let ptr = OutPtr { p: out.as_mut_ptr(), n };
    let row_tasks = t.div_ceil(ROWS_PER_TASK);
    (0..b.panels * row_tasks).into_par_iter().for_each(|task| {
        let ptr = &ptr;
        let (p, rt) = (task / row_tasks, task % row_tasks);
        let panel = &b.data[p * pairs * NR..(p + 1) * pairs * NR];
        let cols = (n - p * NR).min(NR);
        let r_end = ((rt + 1) * ROWS_PER_TASK).min(t);
        let mut tile = [[0f32; NR]; MR];
        // The padding pairs are zeros; only AMX's whole tiles need them.
        let real = k.div_ceil(2);
        let mut q0 = 0;
        while q0 < real {
            let q1 = (q0 + KC).min(real);
            let mut r0 = rt * ROWS_PER_TASK;
            while r0 < r_end {
                let mr = (r_end - r0).min(MR);
                // Start from what the output holds (accumulating, or a later k block).
                if acc || q0 > 0 {
                    // SAFETY: rows r0 .. r0 + mr, columns p*64 .. p*64 + cols are this task's.
                    unsafe { ptr.read(r0, p * NR, cols, &mut tile[..mr]) };
                } else {
                    tile[..mr].iter_mut().for_each(|row| row.fill(0.0));
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
                // SAFETY: as above.
                unsafe { ptr.write(r0, p * NR, cols, &tile[..mr]) };
                r0 += mr;
            }
            q0 = q1;
        }
    });
}

/// The AMX kernel: tasks of 32 rows by one 64-column panel; each half panel keeps a 32 x 32
/// block of sums in four tiles (tmm0-3) while tmm4-5 hold two 16-row tiles of activations and
/// tmm6-7 two 16-column tiles of the panel, so 4 tile loads (4 KiB) feed 4 `tdpbf16ps`
/// (32768 multiply-adds).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx {
    use super::{OutPtr, PackedB, AMX_ROWS, NR, TILE_PAIRS};
    use rayon::prelude::*;
    use std::arch::asm;
    use std::sync::OnceLock;

    /// Whether the CPU has AMX-TILE and AMX-BF16 and the kernel lets this process use the tile
    /// data (Linux asks each process to request it: `arch_prctl(ARCH_REQ_XCOMP_PERM)`).
    pub fn ready() -> bool {
        static READY: OnceLock<bool> = OnceLock::new();
        *READY.get_or_init(|| {
            // CPUID leaf 7: EDX bit 24 AMX-TILE, bit 22 AMX-BF16.
            // The activations are converted with AVX512-BF16 instructions, so AMX needs them too.
            // (CPUID is an `unsafe fn` before Rust 1.94.)
            #[allow(unused_unsafe)]
            // SAFETY: CPUID leaf 7 is read only when the CPU reports it (max leaf >= 7).
            let has = unsafe {
                std::arch::x86_64::__cpuid(0).eax >= 7 && {
                    let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
                    edx & (1 << 24) != 0 && edx & (1 << 22) != 0
                }
            };
            if !has || !super::available() {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: a plain syscall with integer arguments.
            let r = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) };
            if r != 0 {
                tracing::info!("the CPU has AMX but the OS refused its tile data (arch_prctl: {}); bf16 products run on AVX-512", std::io::Error::last_os_error());
            }
            r == 0
        })
    }

    /// The tile configuration: palette 1, eight tiles of 16 rows by 64 bytes.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    static CONFIG: Config = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
            t += 1;
        }
        Config(c)
    };

    /// `out (+)= a . b` for activations `a` already as pairs, `b.pairs` a row, rows padded to a
    /// multiple of 32 with zeros. Only call when [`ready`].
    pub fn matmul(a: &[u32], t: usize, b: &PackedB, out: &mut [f32], acc: bool) {
        let (n, pairs) = (b.n, b.pairs);
        debug_assert!(ready() && pairs % TILE_PAIRS == 0 && a.len() >= t.next_multiple_of(AMX_ROWS) * pairs);
        let ptr = OutPtr { p: out.as_mut_ptr(), n };
        let row_tasks = t.div_ceil(AMX_ROWS);
        (0..b.panels * row_tasks).into_par_iter().for_each(|task| {
            let ptr = &ptr;
            let (p, rt) = (task / row_tasks, task % row_tasks);
            let panel = &b.data[p * pairs * NR..(p + 1) * pairs * NR];
            let r0 = rt * AMX_ROWS;
            let rows = (t - r0).min(AMX_ROWS);
            let arows = &a[r0 * pairs..(r0 + AMX_ROWS) * pairs];
            // The 32 x 32 sums of one half panel, rows 128 bytes apart.
            let mut sums = [[0f32; 32]; AMX_ROWS];
            // SAFETY: `ready()` (AMX usable); the configuration is loaded before any tile
            // instruction and released after.
            unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
            for h in 0..2 {
                let c0 = p * NR + h * 32;
                if c0 >= n {
                    break;
                }
                let cols = (n - c0).min(32);
                if acc {
                    // SAFETY: rows r0 .. r0 + rows, columns c0 .. c0 + cols are this task's.
                    unsafe { ptr.read(r0, c0, cols, &mut sums[..rows]) };
                }
                // SAFETY: `arows` holds 32 rows of `pairs` pairs and `panel` `pairs` rows of 64
                // columns; every tile read stays inside them (q + 16 <= pairs, h * 32 + 32 <= 64),
                // and `sums` is 32 x 32 f32.
                unsafe { block(arows.as_ptr(), pairs, panel.as_ptr().add(h * 32), &mut sums, acc) };
                // SAFETY: as above.
                unsafe { ptr.write(r0, c0, cols, &sums[..rows]) };
            }
            // SAFETY: ends this task's use of the tiles.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        });
    }

    /// `sums (+)= a[0..32] . panel[.., 0..32]` over all `pairs`; `a` rows are `pairs` apart,
    /// panel rows 64 apart (both in u32). The tile configuration must be loaded.
    unsafe fn block(a: *const u32, pairs: usize, panel: *const u32, sums: &mut [[f32; 32]; AMX_ROWS], acc: bool) {
        let s = sums.as_mut_ptr() as *mut f32;
        let (sa, sb, sc): (usize, usize, usize) = (pairs * 4, NR * 4, 32 * 4);
        if acc {
            asm!(
                "tileloadd tmm0, [{s} + {sc}*1]",
                "tileloadd tmm1, [{s1} + {sc}*1]",
                "tileloadd tmm2, [{s2} + {sc}*1]",
                "tileloadd tmm3, [{s3} + {sc}*1]",
                s = in(reg) s, s1 = in(reg) s.add(16), s2 = in(reg) s.add(16 * 32), s3 = in(reg) s.add(16 * 32 + 16), sc = in(reg) sc,
                options(nostack, readonly)
            );
        } else {
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        }
        let a1 = a.add(16 * pairs);
        let mut q = 0;
        while q < pairs {
            asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a.add(q), a1 = in(reg) a1.add(q), b0 = in(reg) panel.add(q * NR), b1 = in(reg) panel.add(q * NR + 16),
                sa = in(reg) sa, sb = in(reg) sb,
                options(nostack, readonly)
            );
            q += TILE_PAIRS;
        }
        asm!(
            "tilestored [{s} + {sc}*1], tmm0",
            "tilestored [{s1} + {sc}*1], tmm1",
            "tilestored [{s2} + {sc}*1], tmm2",
            "tilestored [{s3} + {sc}*1], tmm3",
            s = in(reg) s, s1 = in(reg) s.add(16), s2 = in(reg) s.add(16 * 32), s3 = in(reg) s.add(16 * 32 + 16), sc = in(reg) sc,
            options(nostack)
        );
    }
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
        let mut kernels = vec![Kernel::Portable];
        if available() {
            kernels.push(Kernel::Avx512);
        }
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        if amx::ready() {
            kernels.push(Kernel::Amx);
        }
        if std::env::var_os("CI").is_some() && std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains(" amx_bf16")) {
            assert!(kernels.contains(&Kernel::Amx), "the CPU has AMX-BF16 but the AMX kernel is not ready");
        }
        for kern in kernels {
            check_on(kern, &x, &w, t, k, n, &want);
        }
    }

    fn check_on(kern: Kernel, x: &[f32], w: &[f32], t: usize, k: usize, n: usize, want: &[f32]) {
        let r = |v: f32| bf16::from_f32(v).to_f32();
        let close = |g: f32, e: f32| (g - e).abs() <= 1e-3 * e.abs().max(1.0);
        let mut got = vec![7f32; t * n];
        matmul_on(kern, x, t, &PackedB::from_nt(w, n, k), &mut got, false);
        for (g, e) in got.iter().zip(want) {
            assert!(close(*g, *e), "{kern:?} {t}x{k}x{n}: {g} vs {e}");
        }
        // Columns read back as the rounded rows of w.
        let pb = PackedB::from_nt(w, n, k);
        let mut col = vec![0f32; k];
        pb.column(n - 1, &mut col);
        assert_eq!(col, w[(n - 1) * k..].iter().map(|v| r(*v)).collect::<Vec<_>>());
        // The same product through the other packing (B = (w^T) as a k x n matrix), accumulated.
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        matmul_on(kern, x, t, &PackedB::from_nn(&wt, k, n), &mut got, true);
        for (g, e) in got.iter().zip(want) {
            assert!(close(*g, 2.0 * e), "{kern:?} {t}x{k}x{n} accumulated: {g} vs {}", 2.0 * e);
        }
    }

    #[test]
    fn bf16_products_match_f32_within_bf16_rounding() {
        // Odd k, partial panels, partial row tiles, several k blocks and row tasks.
        check(7, 101, 13);
        check(30, 600, 130);
        check(1, 1200, 64);
        // More than one AMX row task, a partial last one, and a partial half panel.
        check(70, 64, 100);
    }
}
