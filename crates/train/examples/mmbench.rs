//! Measures the training products' throughput (GFLOP/s) for SmolLM2's shapes: the bf16 kernel
//! against the f32 `gemm` path. `cargo run --release -p shovel-train --example mmbench`.
use shovel_train::bf16::{matmul, PackedB};
use shovel_train::mm::{mm, View};
use std::time::Instant;

fn main() {
    for (t, k, n) in [(170, 576, 576), (170, 576, 1536), (170, 1536, 576), (170, 576, 192), (60, 576, 49152), (60, 49152, 576)] {
        let x: Vec<f32> = (0..t * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
        let pb = PackedB::from_nt(&w, n, k);
        let mut out = vec![0f32; t * n];
        let reps = (2e9 / (2.0 * (t * k * n) as f64)).ceil() as usize;
        matmul(&x, t, &pb, &mut out, false);
        let t0 = Instant::now();
        for _ in 0..reps {
            matmul(&x, t, &pb, &mut out, false);
        }
        let bf = 2.0 * (t * k * n * reps) as f64 / t0.elapsed().as_secs_f64() / 1e9;
        let t0 = Instant::now();
        for _ in 0..reps {
            mm(t, n, k, &mut out, n, false, View::rm(&x, k), View::rm(&w, k).t());
        }
        let f = 2.0 * (t * k * n * reps) as f64 / t0.elapsed().as_secs_f64() / 1e9;
        println!("t {t:>4} k {k:>6} n {n:>6}: bf16 {bf:6.1} GFLOP/s   f32 gemm {f:6.1} GFLOP/s");
    }
}
