//! What a `shovel tune` run with a given seed starts from, for another trainer to replay: the
//! order of the examples in each epoch and the adapter's starting values (PEFT's layout).
//! bench/train/replay.py feeds both to the PEFT anchor so the two trainers' losses can be
//! compared step by step on the same batches from the same start.
//!
//! `cargo run --release -p shovel-train --example replay_plan -- MODEL N_EXAMPLES SEED EPOCHS R ALPHA OUT_DIR`
//! writes OUT_DIR/order.json (a list per epoch) and OUT_DIR/init/ (adapter_config.json +
//! adapter_model.safetensors), for all seven projections as `shovel tune` trains by default.
use shovel_engine::lora::{Adapter, LoraConfig, Target};
use std::path::Path;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [model, n, seed, epochs, r, alpha, out] = &a[..] else {
        eprintln!("usage: replay_plan MODEL N_EXAMPLES SEED EPOCHS R ALPHA OUT_DIR");
        std::process::exit(2);
    };
    let num = |s: &str| s.parse::<u64>().unwrap_or_else(|e| panic!("{s}: {e}"));
    let parts = shovel_engine::loader::load(Path::new(model)).expect("loading the model");
    let (config, ffn) = (parts.model.config.clone(), parts.model.ffn());
    let lora = LoraConfig { r: num(r) as usize, alpha: alpha.parse().expect("alpha"), dropout: 0.0, targets: Target::ALL.to_vec() };
    let init = Adapter::init(&config, ffn, lora, num(seed));
    let out = Path::new(out);
    init.save_peft(&out.join("init"), &config, "base").expect("writing the adapter");
    let orders: Vec<Vec<usize>> = (0..num(epochs) as usize).map(|e| shovel_train::trainer::epoch_order(num(n) as usize, num(seed), e)).collect();
    std::fs::write(out.join("order.json"), serde_json::to_string(&orders).unwrap()).expect("writing order.json");
}
