//! The training step checked against finite differences on a tiny random model, and the loop's
//! learning, determinism and resume-after-crash guarantees.

use crate::model::{zero_grads, Base, Pass, Precision};
use crate::tokens::TokSeq;
use crate::trainer::{train, Control, Observer, Spec, StepReport};
use rand::{Rng, SeedableRng};
use shovel_engine::lora::{Adapter, LoraConfig, Target};
use shovel_engine::model::{Arch, Layer, Model, ModelConfig};
use shovel_engine::ops::RopeStyle;
use shovel_engine::tensor::Weight;

fn tiny_model(style: RopeStyle) -> Model {
    let c = ModelConfig {
        arch: Arch::Llama,
        n_layers: 2,
        hidden: 16,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 4,
        vocab: 32,
        context_length: 64,
        rms_eps: 1e-5,
        rope_base: 10000.0,
        rope_base_local: 10000.0,
        rope_style: style,
        sliding_window: None,
        swa_pattern: 0,
        attn_scale: 0.5,
        embed_scale: 1.0,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut w = |r: usize, cols: usize| {
        let d: Vec<f32> = (0..r * cols).map(|_| rng.gen_range(-0.5f32..0.5)).collect();
        Weight::from_f32(r, cols, &d)
    };
    let ffn = 24;
    let layers = (0..c.n_layers)
        .map(|_| Layer {
            attn_norm: vec![1.1; 16],
            wq: w(16, 16),
            wk: w(8, 16),
            wv: w(8, 16),
            wo: w(16, 16),
            q_norm: None,
            k_norm: None,
            post_attn_norm: None,
            ffn_norm: vec![0.9; 16],
            gate: w(ffn, 16),
            up: w(ffn, 16),
            down: w(16, ffn),
            post_ffn_norm: None,
            qkv_bias: None,
        })
        .collect();
    let embed = w(32, 16);
    let output = w(32, 16);
    Model { config: c, embed, layers, out_norm: vec![1.0; 16], output }
}

/// Qwen 2: llama with rotate-half rope and q/k/v biases.
fn tiny_qwen2() -> Model {
    let mut m = tiny_model(RopeStyle::Neox);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let (qd, kvd) = (m.config.q_dim(), m.config.kv_dim());
    let mut v = |n: usize| (0..n).map(|_| rng.gen_range(-0.5f32..0.5)).collect::<Vec<f32>>();
    for l in &mut m.layers {
        l.qkv_bias = Some([v(qd), v(kvd), v(kvd)]);
    }
    m
}

/// A tiny Gemma 3: per-head q/k norms, post-norms, GELU, an embedding scale, and a first layer
/// with a 3-token sliding window and its own rope base (so the window bites on [`seq`]).
fn tiny_gemma() -> Model {
    let mut m = tiny_model(RopeStyle::Neox);
    let c = &mut m.config;
    c.arch = Arch::Gemma3;
    c.sliding_window = Some(3);
    c.swa_pattern = 2;
    c.rope_base = 1_000_000.0;
    c.rope_base_local = 2.0;
    c.embed_scale = 4.0;
    let norm = |n: usize, a: f32| -> Vec<f32> { (0..n).map(|i| a + 0.07 * i as f32).collect() };
    for (l, layer) in m.layers.iter_mut().enumerate() {
        let a = 0.6 + 0.1 * l as f32;
        layer.q_norm = Some(norm(4, a));
        layer.k_norm = Some(norm(4, a + 0.2));
        layer.post_attn_norm = Some(norm(16, a - 0.1));
        layer.post_ffn_norm = Some(norm(16, a + 0.1));
    }
    assert!(m.config.is_swa(0) && !m.config.is_swa(1));
    m
}

fn random_adapter(base: &Base, seed: u64) -> Adapter {
    let lc = LoraConfig { r: 3, alpha: 6.0, dropout: 0.0, targets: Target::ALL.to_vec() };
    let mut a = Adapter::init(&base.config, base.ffn, lc, seed);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + 1);
    for p in a.layers.iter_mut().flatten().flatten() {
        p.b.iter_mut().for_each(|v| *v = rng.gen_range(-0.3..0.3));
    }
    a
}

fn seq() -> TokSeq {
    let tokens = vec![1, 5, 9, 2, 30, 7, 7, 3, 11];
    let weights = vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0];
    TokSeq { tokens, weights, truncated: false }
}

fn check_gradients(model: Model, dropout: f32, chunk: usize) {
    crate::model::TEST_ATTN_CHUNK.with(|c| c.set(chunk));
    let base = Base::with_precision(&model, Precision::F32).unwrap();
    let mut adapter = random_adapter(&base, 11);
    let s = seq();
    let key = [1, 2, 3];
    let mut grads = zero_grads(&adapter);
    let pass = Pass { base: &base, adapter: &adapter, dropout, key };
    pass.loss_and_grad(&s.tokens, &s.weights, 1.0, &mut grads);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut checked = 0;
    for l in 0..2 {
        for t in Target::ALL {
            for which in 0..2 {
                for _ in 0..3 {
                    let len = {
                        let p = adapter.layers[l][t.index()].as_ref().unwrap();
                        if which == 0 {
                            p.a.len()
                        } else {
                            p.b.len()
                        }
                    };
                    let i = rng.gen_range(0..len);
                    let get = |a: &mut Adapter| -> *mut f32 {
                        let p = a.layers[l][t.index()].as_mut().unwrap();
                        if which == 0 {
                            &mut p.a[i]
                        } else {
                            &mut p.b[i]
                        }
                    };
                    let eps = 1e-2f32;
                    let orig = unsafe { *get(&mut adapter) };
                    unsafe { *get(&mut adapter) = orig + eps };
                    let up = Pass { base: &base, adapter: &adapter, dropout, key }.loss(&s.tokens, &s.weights).loss_sum;
                    unsafe { *get(&mut adapter) = orig - eps };
                    let down = Pass { base: &base, adapter: &adapter, dropout, key }.loss(&s.tokens, &s.weights).loss_sum;
                    unsafe { *get(&mut adapter) = orig };
                    let numeric = (up - down) / (2.0 * eps as f64);
                    let analytic = unsafe { *get(&mut grads) } as f64;
                    let tol = 2e-3 + 0.03 * numeric.abs().max(analytic.abs());
                    assert!((numeric - analytic).abs() < tol, "layer {l} {} {} [{i}]: numeric {numeric} vs analytic {analytic}", t.name(), if which == 0 { "A" } else { "B" });
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 2 * 7 * 2 * 3);
}

/// Sequences sharing a prefix, run as one tree-shaped pass, give the losses and gradients of
/// the same sequences run one by one (both rope layouts), with the attention in one block per
/// branch or in blocks of 1 and 2 query rows.
#[test]
fn a_shared_prefix_pass_equals_separate_passes() {
    let models =
        [(tiny_model(RopeStyle::Interleaved), 64), (tiny_model(RopeStyle::Neox), 64), (tiny_model(RopeStyle::Interleaved), 1), (tiny_model(RopeStyle::Neox), 2), (tiny_gemma(), 64), (tiny_gemma(), 2)];
    for (model, chunk) in models {
        let style = (model.config.arch, model.config.rope_style);
        let base = Base::with_precision(&model, Precision::F32).unwrap();
        let adapter = random_adapter(&base, 13);
        let pass = Pass { base: &base, adapter: &adapter, dropout: 0.0, key: [0; 3] };
        let prefix = [1u32, 5, 9, 2, 30];
        let tails: [&[u32]; 3] = [&[7, 7, 3, 11], &[4, 8], &[12, 30, 1, 1, 6, 2]];
        let seqs: Vec<(Vec<u32>, Vec<f32>)> = tails
            .iter()
            .map(|t| {
                let tokens: Vec<u32> = prefix.iter().chain(t.iter()).copied().collect();
                let weights: Vec<f32> = (0..tokens.len()).map(|i| if i > prefix.len() { 1.0 + i as f32 * 0.1 } else { 0.0 }).collect();
                (tokens, weights)
            })
            .collect();
        let mut separate = zero_grads(&adapter);
        let (mut loss, mut wsum) = (0f64, 0f64);
        for (t, w) in &seqs {
            let r = pass.loss_and_grad(t, w, 0.5, &mut separate);
            loss += r.loss_sum;
            wsum += r.weight_sum;
        }
        let mut shared = zero_grads(&adapter);
        crate::model::TEST_ATTN_CHUNK.with(|c| c.set(chunk));
        let views: Vec<(&[u32], &[f32])> = seqs.iter().map(|(t, w)| (&t[..], &w[..])).collect();
        let r = pass.loss_and_grad_shared(&views, prefix.len(), 0.5, &mut shared);
        crate::model::TEST_ATTN_CHUNK.with(|c| c.set(64));
        assert!((r.loss_sum - loss).abs() < 1e-4 * loss.abs().max(1.0), "{} vs {loss}", r.loss_sum);
        assert!((r.weight_sum - wsum).abs() < 1e-9);
        let mut n = 0;
        for (a, b) in separate.layers.iter().flatten().flatten().zip(shared.layers.iter().flatten().flatten()) {
            for (x, y) in a.a.iter().zip(&b.a).chain(a.b.iter().zip(&b.b)) {
                assert!((x - y).abs() < 1e-4 + 1e-3 * x.abs(), "{style:?} in blocks of {chunk}: gradient {x} vs {y}");
                n += 1;
            }
        }
        assert!(n > 1000 && separate.layers.iter().flatten().flatten().any(|p| p.a.iter().any(|v| v.abs() > 1e-3)));
    }
}

#[test]
fn gradients_match_finite_differences_interleaved_rope() {
    check_gradients(tiny_model(RopeStyle::Interleaved), 0.0, 64);
}

#[test]
fn gradients_match_finite_differences_neox_rope_with_dropout_attention_in_blocks_of_two() {
    check_gradients(tiny_model(RopeStyle::Neox), 0.25, 2);
}

#[test]
fn gradients_match_finite_differences_qwen2_with_qkv_biases() {
    check_gradients(tiny_qwen2(), 0.0, 64);
}

#[test]
fn gradients_match_finite_differences_gemma3_with_a_sliding_window() {
    check_gradients(tiny_gemma(), 0.0, 64);
    check_gradients(tiny_gemma(), 0.25, 2);
}

#[test]
fn zero_b_adapter_leaves_the_base_loss_unchanged() {
    // A fresh adapter (B = 0) must not change the model: the loss equals the loss with no
    // adapted target at all.
    let base = Base::with_precision(&tiny_model(RopeStyle::Interleaved), Precision::F32).unwrap();
    let fresh = Adapter::init(&base.config, base.ffn, LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, targets: Target::ALL.to_vec() }, 1);
    let none = Adapter { config: fresh.config.clone(), layers: (0..2).map(|_| Default::default()).collect() };
    let s = seq();
    let a = Pass { base: &base, adapter: &fresh, dropout: 0.0, key: [0; 3] }.loss(&s.tokens, &s.weights).loss_sum;
    let b = Pass { base: &base, adapter: &none, dropout: 0.0, key: [0; 3] }.loss(&s.tokens, &s.weights).loss_sum;
    assert_eq!(a, b);
}

struct Quiet {
    stop_at: Option<usize>,
    losses: Vec<f64>,
}

impl Observer for Quiet {
    fn step(&mut self, r: &StepReport) -> Control {
        self.losses.push(r.loss);
        if Some(r.step) == self.stop_at {
            Control::Stop
        } else {
            Control::Continue
        }
    }
}

fn data() -> Vec<TokSeq> {
    (0..6u32)
        .map(|i| {
            let tokens: Vec<u32> = (0..10).map(|j| (i * 3 + j * 5) % 32).collect();
            let weights = (0..10).map(|j| if j >= 5 { 1.0 } else { 0.0 }).collect();
            TokSeq { tokens, weights, truncated: false }
        })
        .collect()
}

fn spec() -> Spec {
    Spec {
        n_epochs: 4,
        batch_size: 2,
        learning_rate: 1e-2,
        warmup_ratio: 0.0,
        weight_decay: 0.01,
        max_length: 64,
        lora: LoraConfig { r: 4, alpha: 8.0, dropout: 0.1, targets: Target::ALL.to_vec() },
        seed: 9,
        checkpoint_every: 4,
        grad_clip: 1.0,
    }
}

#[test]
fn training_lowers_the_loss() {
    let base = Base::with_precision(&tiny_model(RopeStyle::Interleaved), Precision::F32).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut obs = Quiet { stop_at: None, losses: vec![] };
    let out = train(&base, &data(), &data(), &Spec { n_epochs: 10, ..spec() }, dir.path(), &mut obs).unwrap();
    assert_eq!(out.steps, 30);
    let first = obs.losses[..3].iter().sum::<f64>() / 3.0;
    let last = obs.losses[27..].iter().sum::<f64>() / 3.0;
    assert!(last < first * 0.7, "loss went from {first} to {last}");
    assert_eq!(out.valid_losses.len(), 10);
}

#[test]
fn a_run_resumed_after_a_crash_ends_with_the_same_adapter() {
    let base = Base::with_precision(&tiny_model(RopeStyle::Interleaved), Precision::F32).unwrap();
    let whole_dir = tempfile::tempdir().unwrap();
    let whole = train(&base, &data(), &[], &spec(), whole_dir.path(), &mut Quiet { stop_at: None, losses: vec![] }).unwrap();
    assert_eq!(whole.steps, 12);
    // Same seed again: the same adapter, bit for bit.
    let again_dir = tempfile::tempdir().unwrap();
    let again = train(&base, &data(), &[], &spec(), again_dir.path(), &mut Quiet { stop_at: None, losses: vec![] }).unwrap();
    assert_eq!(again.adapter, whole.adapter);
    // Stopped (as a crash would) at step 7, after the checkpoint at step 4; then restarted.
    let dir = tempfile::tempdir().unwrap();
    let cut = train(&base, &data(), &[], &spec(), dir.path(), &mut Quiet { stop_at: Some(7), losses: vec![] }).unwrap();
    assert!(cut.stopped);
    assert_ne!(cut.adapter, whole.adapter);
    let resumed = train(&base, &data(), &[], &spec(), dir.path(), &mut Quiet { stop_at: None, losses: vec![] }).unwrap();
    assert_eq!(resumed.steps, 12);
    assert_eq!(resumed.adapter, whole.adapter);
    assert_eq!(resumed.losses, whole.losses);
    // A different seed gives a different adapter.
    let other_dir = tempfile::tempdir().unwrap();
    let other = train(&base, &data(), &[], &Spec { seed: 10, ..spec() }, other_dir.path(), &mut Quiet { stop_at: None, losses: vec![] }).unwrap();
    assert_ne!(other.adapter, whole.adapter);
}

#[test]
fn checkpoints_from_other_settings_are_refused() {
    let base = Base::with_precision(&tiny_model(RopeStyle::Interleaved), Precision::F32).unwrap();
    let dir = tempfile::tempdir().unwrap();
    train(&base, &data(), &[], &spec(), dir.path(), &mut Quiet { stop_at: Some(5), losses: vec![] }).unwrap();
    let e = train(&base, &data(), &[], &Spec { learning_rate: 0.5, ..spec() }, dir.path(), &mut Quiet { stop_at: None, losses: vec![] }).err().unwrap();
    assert!(e.to_string().contains("other settings"), "{e}");
}

#[test]
fn bad_hyperparameters_name_the_parameter() {
    for (s, param) in [
        (Spec { n_epochs: 0, ..spec() }, "n_epochs"),
        (Spec { batch_size: 0, ..spec() }, "batch_size"),
        (Spec { learning_rate: -1.0, ..spec() }, "learning_rate"),
        (Spec { lora: LoraConfig { r: 0, ..spec().lora }, ..spec() }, "lora.r"),
    ] {
        let e = s.validate().unwrap_err().to_string();
        assert!(e.starts_with(param), "{e}");
    }
}

#[test]
fn the_engine_serves_an_adapter_as_the_trainer_trained_it() {
    // The engine's batched forward with a per-sequence adapter, after a PEFT save and load,
    // scores the next token as the trainer's own forward does (up to the engine's f16 KV cache).
    use shovel_engine::model::{BatchItem, KvCache};
    for model in [tiny_model(RopeStyle::Interleaved), tiny_model(RopeStyle::Neox), tiny_qwen2(), tiny_gemma()] {
        let style = (model.config.arch, model.config.rope_style, model.layers[0].qkv_bias.is_some());
        let base = Base::with_precision(&model, Precision::F32).unwrap();
        let mut adapter = random_adapter(&base, 21);
        if model.config.arch == Arch::Gemma3 {
            // Gemma's post-norms rescale what the adapter adds: a stronger one, to be seen.
            adapter.layers.iter_mut().flatten().flatten().for_each(|p| p.b.iter_mut().for_each(|v| *v *= 4.0));
        }
        let dir = tempfile::tempdir().unwrap();
        adapter.save_peft(dir.path(), &base.config, "tiny").unwrap();
        let mut loaded = Adapter::load_peft(dir.path(), &base.config, base.ffn).unwrap();
        assert_eq!(loaded, adapter);
        loaded.prepare();
        let prompt = [1u32, 5, 9, 2, 30, 7];
        let target = 11u32;
        let ce = |adapter: Option<&Adapter>| {
            let mut kv = KvCache::new(2);
            let l = model.forward(&mut [BatchItem { tokens: &prompt, kv: &mut kv, want_logits: true, adapter }]).remove(0).unwrap();
            let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max + l.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
            (lse - l[target as usize]) as f64
        };
        let mut tokens = prompt.to_vec();
        tokens.push(target);
        let mut weights = vec![0.0; tokens.len()];
        *weights.last_mut().unwrap() = 1.0;
        let trained = Pass { base: &base, adapter: &adapter, dropout: 0.0, key: [0; 3] }.loss(&tokens, &weights).loss_sum;
        let served = ce(Some(&loaded));
        let plain = ce(None);
        assert!((trained - served).abs() < 1e-2, "{style:?}: trainer {trained} vs engine {served}");
        assert!((served - plain).abs() > 0.1, "{style:?}: the adapter changed nothing ({served} vs {plain})");
    }
}

#[test]
fn bf16_products_give_the_f32_loss_and_gradients_up_to_rounding() {
    if !crate::bf16::available() {
        eprintln!("skipped: this CPU has no AVX512-BF16");
        return;
    }
    let model = tiny_model(RopeStyle::Interleaved);
    let f = Base::with_precision(&model, Precision::F32).unwrap();
    let b = Base::with_precision(&model, Precision::Bf16).unwrap();
    let adapter = random_adapter(&f, 11);
    let s = seq();
    let run = |base: &Base| {
        let mut g = zero_grads(&adapter);
        let l = Pass { base, adapter: &adapter, dropout: 0.0, key: [0; 3] }.loss_and_grad(&s.tokens, &s.weights, 1.0, &mut g).loss_sum;
        let flat: Vec<f64> = g.layers.iter().flatten().flatten().flat_map(|p| p.a.iter().chain(&p.b)).map(|v| *v as f64).collect();
        (l, flat)
    };
    let (lf, gf) = run(&f);
    let (lb, gb) = run(&b);
    assert!((lf - lb).abs() < 0.02 * lf.abs(), "loss {lf} vs {lb}");
    let dot: f64 = gf.iter().zip(&gb).map(|(a, b)| a * b).sum();
    let cos = dot / (gf.iter().map(|a| a * a).sum::<f64>().sqrt() * gb.iter().map(|a| a * a).sum::<f64>().sqrt());
    assert!(cos > 0.995, "gradient directions differ: cosine {cos}");
    // bf16 runs are as reproducible as f32 ones.
    assert_eq!(run(&b).1, gb);
}
