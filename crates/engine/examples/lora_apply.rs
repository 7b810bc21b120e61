//! Times the serving kernels of LoRA adapters on SmolLM2-135M's shapes (rank 16, all seven
//! projections, 30 layers): 8 rows over 1, 2 or 4 adapters, as one decoding step applies them.
//! Each step is timed twice: back to back (the adapters stay in cache) and after reading 92 MB
//! of other memory (as the Q4_1 base's weights pass between two steps in serving). `LAYERS=2`
//! keeps the adapters in L2: the same time per layer there as with 30 means the kernels are
//! bound by arithmetic, not bytes. A benchmark, not a test:
//! `cargo run --release -p shovel-engine --example lora_apply`.
use shovel_engine::lora::{Adapter, LoraConfig, Plan, Target};
use shovel_engine::model::{Arch, ModelConfig};
use shovel_engine::ops::RopeStyle;
use std::time::Instant;

fn main() {
    let c = ModelConfig {
        arch: Arch::Llama,
        n_layers: std::env::var("LAYERS").ok().and_then(|v| v.parse().ok()).unwrap_or(30),
        hidden: 576,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        vocab: 49152,
        context_length: 8192,
        rms_eps: 1e-5,
        rope_base: 100000.0,
        rope_base_local: 100000.0,
        rope_style: RopeStyle::Interleaved,
        sliding_window: None,
        swa_pattern: 0,
        attn_scale: 0.125,
        embed_scale: 1.0,
    };
    let ffn = 1536;
    let lc = LoraConfig { r: 16, alpha: 32.0, dropout: 0.0, targets: Target::ALL.to_vec() };
    let adapters: Vec<Adapter> = (0..4)
        .map(|i| {
            let mut a = Adapter::init(&c, ffn, lc.clone(), i);
            a.layers.iter_mut().flatten().flatten().for_each(|p| p.b.iter_mut().for_each(|v| *v = 0.01));
            a.prepare();
            a
        })
        .collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = shovel_engine::pool::Pool::new(threads);
    let rows = 8;
    let evict = vec![1u64; 92_000_000 / 8];
    let x = vec![0.1f32; rows * ffn];
    let mut out = vec![0f32; rows * 3 * ffn];
    // What the parallel regions alone cost: four per layer, as the forward opens them.
    let t0 = Instant::now();
    for _ in 0..50 * 4 * c.n_layers {
        pool.run(2, &|_| {});
    }
    println!("{} empty parallel regions: {:.2} ms per step", 4 * c.n_layers, t0.elapsed().as_secs_f64() * 1e3 / 50.0);
    for n_adapters in [1, 2, 4] {
        let row_adapter: Vec<Option<&Adapter>> = (0..rows).map(|i| Some(&adapters[i % n_adapters])).collect();
        let plan = Plan::new(&row_adapter);
        let step = |out: &mut [f32]| {
            // As the model's forward groups them: targets that share an input in one region.
            for l in 0..c.n_layers {
                for group in [&[Target::QProj, Target::KProj, Target::VProj][..], &[Target::OProj], &[Target::GateProj, Target::UpProj], &[Target::DownProj]] {
                    let inp = group[0].shape(&c, ffn).1;
                    let mut rest = &mut out[..];
                    let mut outs = Vec::new();
                    for t in group {
                        let (o, _) = t.shape(&c, ffn);
                        let (head, tail) = std::mem::take(&mut rest).split_at_mut(rows * o);
                        outs.push((*t, head));
                        rest = tail;
                    }
                    plan.apply(&pool, l, &x[..rows * inp], &mut outs);
                }
            }
        };
        step(&mut out);
        let n = 50;
        let t0 = Instant::now();
        for _ in 0..n {
            step(&mut out);
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3 / n as f64;
        // As in serving, where the base's 92 MB pass through the caches between two uses of an
        // adapter: the same, with that many bytes read between steps (timed apart).
        let mut cold = 0.0;
        let mut sink = 0u64;
        for _ in 0..10 {
            sink = sink.wrapping_add(evict.iter().step_by(8).sum::<u64>());
            let t0 = Instant::now();
            step(&mut out);
            cold += t0.elapsed().as_secs_f64() * 1e3 / 10.0;
        }
        std::hint::black_box(sink);
        // int8 weights: 4.9 M per adapter on 30 layers.
        let mb = n_adapters as f64 * 4.9e6 * c.n_layers as f64 / 30.0 / 1e6;
        println!("{rows} rows over {n_adapters} adapter(s), {threads} threads: {ms:.2} ms per step ({mb:.0} MB of weights, {:.1} GB/s); {cold:.2} ms after 92 MB of other reads", mb / ms);
    }
}
