//! Times the trainer's bf16 product kernels on the shapes of a SmolLM2-135M training step
//! (1024 rows of activations), each kernel this CPU has, one after the other. A benchmark, not
//! a test: `cargo run --release -p shovel-train --example bf16_kernels`.
use shovel_train::bf16::{self, Kernel, PackedB};
use std::time::Instant;

fn main() {
    let mut kernels = Vec::new();
    if bf16::available() {
        kernels.push(Kernel::Avx512);
    }
    if bf16::kernel() == Kernel::Amx {
        kernels.push(Kernel::Amx);
    }
    if kernels.is_empty() {
        println!("this CPU has neither AVX512-BF16 nor AMX; nothing to time");
        return;
    }
    println!("{:<24} {:>8} {:>12} {:>10}", "t x k x n", "kernel", "ms", "GFLOP/s");
    let t = 1024;
    // q/o, k/v, gate/up, down, and the 49152-token head forward and backward.
    for (k, n) in [(576, 576), (576, 192), (576, 1536), (1536, 576), (576, 49152), (49152, 576)] {
        let x: Vec<f32> = (0..t * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0).collect();
        let b = PackedB::from_nt(&w, n, k);
        let mut out = vec![0f32; t * n];
        for &kern in &kernels {
            bf16::matmul_on(kern, &x, t, &b, &mut out, false);
            let reps = 5;
            let s = Instant::now();
            for _ in 0..reps {
                bf16::matmul_on(kern, &x, t, &b, &mut out, false);
            }
            let dt = s.elapsed().as_secs_f64() / reps as f64;
            println!("{:<24} {:>8} {:>12.2} {:>10.0}", format!("{t} x {k} x {n}"), format!("{kern:?}"), dt * 1e3, 2.0 * (t * k * n) as f64 / dt / 1e9);
        }
    }
}
