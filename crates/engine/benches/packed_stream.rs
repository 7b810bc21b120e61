//! How fast the packed kernels stream weights from memory: 64 matrices of 1536 x 576 (a
//! SmolLM2 layer's gate, 35 MB of Q4_1, 61 MB of Q8_0: more than the L3 cache) against N
//! activation rows, on one thread, then on the pool in tasks of different sizes. The figures
//! behind the task size of `ops::matmul_many` and the kernels' prefetch distance.
//!
//! `cargo bench -p shovel-engine --bench packed_stream [-- N]` (N activation rows, default 1).
//! A benchmark, not a test: it asserts nothing.

use rand::{Rng, SeedableRng};
use shovel_engine::packed::{matmul_rows, pack, Kernel};
use shovel_engine::qdot::{act_kind, QuantActs};
use shovel_engine::quant::GgmlType;

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let (mat_rows, k) = (1536usize, 576usize);
    let (rows, nb) = (mat_rows * 64, k / 32);
    println!("kernel {:?}, {n} activation row(s), {} threads", Kernel::best(), shovel_engine::pool::global().threads());
    for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
        let bytes = rows * nb * ty.block_bytes();
        // Small quants and positive scales: any bytes would do for timing, but no NaNs.
        let src: Vec<u8> = (0..bytes).map(|_| rng.gen::<u8>() & 0x3F).collect();
        let mut packed = Vec::new();
        pack(ty, &src, rows, nb, &mut packed);
        let x: Vec<f32> = (0..k * n).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let a = QuantActs::new(act_kind(ty), &x, k);
        let rate = |secs: f64| bytes as f64 / secs / 1e9;
        let time = |f: &dyn Fn()| {
            f();
            let t = std::time::Instant::now();
            for _ in 0..5 {
                f();
            }
            t.elapsed().as_secs_f64() / 5.0
        };
        let one = time(&|| {
            let mut acc = 0f32;
            matmul_rows(Kernel::best(), ty, &packed, nb, 0, rows, &a, n, |_, _, v| acc += v[0]);
            std::hint::black_box(acc);
        });
        println!("{ty:?}: {} MB, one thread: {:.1} GB/s", bytes >> 20, rate(one));
        for per in [32usize, 64, 128, 256, 768] {
            let s = time(&|| {
                for m in 0..64 {
                    shovel_engine::pool::global().run(mat_rows.div_ceil(per), &|ti| {
                        let r0 = m * mat_rows + ti * per;
                        let rr = per.min(m * mat_rows + mat_rows - r0);
                        let mut acc = 0f32;
                        matmul_rows(Kernel::best(), ty, &packed, nb, r0, rr, &a, n, |_, _, v| acc += v[0]);
                        std::hint::black_box(acc);
                    });
                }
            });
            println!("  pool, tasks of {per} rows: {:.1} GB/s", rate(s));
        }
    }
}
