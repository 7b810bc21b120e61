//! The training loop: seeded data order, gradient accumulation over a batch of sequences (each
//! run whole, no padding), AdamW with warmup + cosine schedule, validation loss per epoch, and
//! checkpoints that make a run resumable after `kill -9` with the same result.
//!
//! Determinism: the data order of epoch `e` comes from `(seed, e)`, dropout masks from
//! `(seed, step, example)`, and products split work over output tiles only; so a run is a pure
//! function of its inputs, and a run resumed from a checkpoint (adapter, AdamW moments, step,
//! loss history) ends with the same adapter, bit for bit, as one that never stopped.

use crate::model::{zero_grads, Base, Pass, SeqLoss};
use crate::optim::{lr_at, AdamW, AdamWConfig};
use crate::tokens::TokSeq;
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use shovel_engine::lora::{write_atomic, Adapter, LoraConfig, Target};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to train and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Passes over the training data.
    pub n_epochs: usize,
    /// Sequences per optimizer step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f32,
    /// Fraction of steps spent warming the learning rate up from 0.
    pub warmup_ratio: f32,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f32,
    /// Longest sequence in tokens; longer examples are cut.
    pub max_length: usize,
    /// Adapter shape.
    pub lora: LoraConfig,
    /// Seed for adapter initialisation, data order and dropout.
    pub seed: u64,
    /// Checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Gradient clipping by global norm (0: off).
    pub grad_clip: f32,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            n_epochs: 3,
            batch_size: 4,
            learning_rate: 1e-3,
            warmup_ratio: 0.05,
            weight_decay: 0.0,
            max_length: 1024,
            lora: LoraConfig { r: 16, alpha: 32.0, dropout: 0.0, targets: Target::ALL.to_vec() },
            seed: 42,
            checkpoint_every: 10,
            grad_clip: 1.0,
        }
    }
}

impl Spec {
    /// Checks ranges; the error names the parameter.
    pub fn validate(&self) -> Result<()> {
        let bad = |param: &str, msg: String| Err(Error::BadParam { param: param.into(), message: msg });
        if !(1..=100).contains(&self.n_epochs) {
            return bad("n_epochs", format!("must be between 1 and 100, got {}", self.n_epochs));
        }
        if !(1..=256).contains(&self.batch_size) {
            return bad("batch_size", format!("must be between 1 and 256, got {}", self.batch_size));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad("learning_rate", format!("must be in (0, 1], got {}", self.learning_rate));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad("warmup_ratio", format!("must be in [0, 1), got {}", self.warmup_ratio));
        }
        if !(0.0..=1.0).contains(&self.weight_decay) {
            return bad("weight_decay", format!("must be in [0, 1], got {}", self.weight_decay));
        }
        if !(16..=32768).contains(&self.max_length) {
            return bad("max_length", format!("must be between 16 and 32768, got {}", self.max_length));
        }
        if !(1..=256).contains(&self.lora.r) {
            return bad("lora.r", format!("must be between 1 and 256, got {}", self.lora.r));
        }
        if !(self.lora.alpha > 0.0 && self.lora.alpha <= 4096.0) {
            return bad("lora.alpha", format!("must be in (0, 4096], got {}", self.lora.alpha));
        }
        if !(0.0..1.0).contains(&self.lora.dropout) {
            return bad("lora.dropout", format!("must be in [0, 1), got {}", self.lora.dropout));
        }
        if self.lora.targets.is_empty() {
            return bad("lora.target_modules", "must name at least one module".into());
        }
        Ok(())
    }
}

/// Progress after one optimizer step.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Step just finished (1-based).
    pub step: usize,
    /// Steps in the whole run.
    pub total_steps: usize,
    /// Epoch (1-based).
    pub epoch: usize,
    /// Mean loss per weighted token in this step's batch.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// Tokens processed per second since this run (re)started.
    pub tokens_per_second: f64,
    /// Seconds spent training since this run (re)started (validation left out).
    pub elapsed_s: f64,
    /// Estimated seconds to go.
    pub eta_s: f64,
}

/// Losses at the end of an epoch.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Mean of the epoch's step losses.
    pub train_loss: f64,
    /// Mean loss per weighted token on the validation set, if there is one.
    pub valid_loss: Option<f64>,
}

/// Whether to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Keep training.
    Continue,
    /// Stop now (cancelled); no adapter is produced.
    Stop,
}

/// Receives progress; every method but `step` has a default.
pub trait Observer {
    /// After each step; `Stop` ends the run within this step.
    fn step(&mut self, r: &StepReport) -> Control;
    /// After each epoch.
    fn epoch(&mut self, _r: &EpochReport) {}
    /// After a checkpoint is safely on disk.
    fn checkpoint(&mut self, _step: usize, _dir: &Path, _metrics: &serde_json::Value) {}
    /// When a run picks up from a checkpoint.
    fn resumed(&mut self, _step: usize) {}
}

/// A finished (or stopped) run.
pub struct Outcome {
    /// The trained adapter.
    pub adapter: Adapter,
    /// Steps done.
    pub steps: usize,
    /// Tokens trained on (all epochs, counted once per pass).
    pub trained_tokens: u64,
    /// Loss of every step.
    pub losses: Vec<f64>,
    /// Validation loss per epoch.
    pub valid_losses: Vec<f64>,
    /// Whether the observer stopped it.
    pub stopped: bool,
}

#[derive(Serialize, Deserialize)]
struct State {
    step: usize,
    adam_t: u64,
    losses: Vec<f64>,
    valid_losses: Vec<f64>,
    trained_tokens: u64,
    spec: Spec,
    data_hash: u64,
}

fn data_hash(train: &[TokSeq]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for s in train {
        for (t, w) in s.tokens.iter().zip(&s.weights) {
            h = (h ^ *t as u64).wrapping_mul(0x1000_0000_01b3);
            h = (h ^ w.to_bits() as u64).wrapping_mul(0x1000_0000_01b3);
        }
        h = (h ^ 0xff).wrapping_mul(0x1000_0000_01b3);
    }
    h
}

/// The order of the training examples in epoch `e` (public so a benchmark can replay a run's
/// order in another trainer: bench/train/replay.py).
pub fn epoch_order(n: usize, seed: u64, e: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (e as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    idx.shuffle(&mut rng);
    idx
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io { path: path.to_path_buf(), source: e }
}

fn tensors_of(a: &Adapter, tag: &str, out: &mut Vec<(String, Vec<f32>)>) {
    for (l, pairs) in a.layers.iter().enumerate() {
        for (ti, p) in pairs.iter().enumerate() {
            if let Some(p) = p {
                out.push((format!("{tag}.{l}.{ti}.a"), p.a.clone()));
                out.push((format!("{tag}.{l}.{ti}.b"), p.b.clone()));
            }
        }
    }
}

fn restore(a: &mut Adapter, tag: &str, st: &safetensors::SafeTensors<'_>, path: &Path) -> Result<()> {
    for (l, pairs) in a.layers.iter_mut().enumerate() {
        for (ti, p) in pairs.iter_mut().enumerate() {
            if let Some(p) = p {
                for (which, dst) in [("a", &mut p.a), ("b", &mut p.b)] {
                    let name = format!("{tag}.{l}.{ti}.{which}");
                    let v = st.tensor(&name).map_err(|e| Error::Checkpoint(format!("{}: {name}: {e}", path.display())))?;
                    if v.data().len() != dst.len() * 4 {
                        return Err(Error::Checkpoint(format!("{}: {name} has the wrong size", path.display())));
                    }
                    for (d, b) in dst.iter_mut().zip(v.data().chunks_exact(4)) {
                        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    }
                }
            }
        }
    }
    Ok(())
}

fn checkpoint_dir(work: &Path, step: usize) -> PathBuf {
    work.join("checkpoints").join(format!("step-{step:06}"))
}

fn save_checkpoint(work: &Path, step: usize, adapter: &Adapter, opt: &AdamW, state: &State) -> Result<PathBuf> {
    let dir = checkpoint_dir(work, step);
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let mut tensors = Vec::new();
    tensors_of(adapter, "p", &mut tensors);
    tensors_of(&opt.m, "m", &mut tensors);
    tensors_of(&opt.v, "v", &mut tensors);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors.into_iter().map(|(n, v)| (n, vec![v.len()], v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        bytes.iter().map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).expect("sizes match"))).collect();
    let data = safetensors::serialize(views, &None).map_err(|e| Error::Checkpoint(e.to_string()))?;
    write_atomic(&tmp.join("state.safetensors"), &data)?;
    write_atomic(&tmp.join("state.json"), &serde_json::to_vec_pretty(state).expect("state serializes"))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
    // Keep the newest three.
    let mut all = complete_checkpoints(work);
    all.sort();
    while all.len() > 3 {
        let (_, old) = all.remove(0);
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(dir)
}

fn complete_checkpoints(work: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(work.join("checkpoints")) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse::<usize>().ok()?;
            e.path().join("state.json").exists().then_some((step, e.path()))
        })
        .collect()
}

fn load_checkpoint(dir: &Path, adapter: &mut Adapter, opt: &mut AdamW) -> Result<State> {
    let sj = dir.join("state.json");
    let state: State = serde_json::from_slice(&std::fs::read(&sj).map_err(io(&sj))?).map_err(|e| Error::Checkpoint(format!("{}: {e}", sj.display())))?;
    let sp = dir.join("state.safetensors");
    let bytes = std::fs::read(&sp).map_err(io(&sp))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Checkpoint(format!("{}: {e}", sp.display())))?;
    restore(adapter, "p", &st, &sp)?;
    restore(&mut opt.m, "m", &st, &sp)?;
    restore(&mut opt.v, "v", &st, &sp)?;
    opt.t = state.adam_t;
    Ok(state)
}

/// Shared prefixes shorter than this run as separate passes: the tree pass's attention covers
/// both branches, which costs more than a few shared rows save.
const MIN_SHARED_PREFIX: usize = 32;

/// Sequences per pass group (see the step loop). Measured on the Ask-Data teaching set (every
/// example starts with the same 130-token schema prompt), one epoch, this machine: pairs 377
/// tokens/s; groups of 4 (one pass on both cores, the prefix computed once per batch) 351;
/// no sharing 334. Measured again once attention skipped masked keys (80 of those examples, one
/// epoch): pairs 41.4 s, groups of 4 43.4 s.
const GROUP: usize = 2;

/// How many leading tokens `a` and `b` share with no loss taken on them or on the token after
/// (the last shared row predicts a different next token in each).
fn shared_prefix(a: &TokSeq, b: &TokSeq) -> usize {
    let common = a.tokens.iter().zip(&b.tokens).take_while(|(x, y)| x == y).count();
    let first_weighted = |s: &TokSeq| s.weights.iter().position(|&w| w > 0.0).unwrap_or(s.weights.len());
    // weights[..=p] must be zero: p < first weighted index; each sequence keeps a row after it.
    common.min(first_weighted(a).saturating_sub(1)).min(first_weighted(b).saturating_sub(1)).min(a.tokens.len() - 1).min(b.tokens.len() - 1)
}

/// Mean loss per weighted token of `data` under `adapter` (no dropout).
pub fn evaluate(base: &Base, adapter: &Adapter, data: &[TokSeq]) -> Option<f64> {
    let pass = Pass { base, adapter, dropout: 0.0, key: [0, 0, 0] };
    let (mut l, mut w) = (0f64, 0f64);
    // Two sequences at a time, as in training; summed in order.
    for pair in data.chunks(2) {
        let (a, b) = match pair {
            [a, b] => rayon::join(|| pass.loss(&a.tokens, &a.weights), || Some(pass.loss(&b.tokens, &b.weights))),
            [a] => (pass.loss(&a.tokens, &a.weights), None),
            _ => unreachable!("chunks of at most 2"),
        };
        for r in std::iter::once(a).chain(b) {
            l += r.loss_sum;
            w += r.weight_sum;
        }
    }
    (w > 0.0).then(|| l / w)
}

/// Trains an adapter on `train`, resuming from the newest checkpoint under `work` if there is
/// one for the same spec and data.
pub fn train(base: &Base, train: &[TokSeq], valid: &[TokSeq], spec: &Spec, work: &Path, obs: &mut dyn Observer) -> Result<Outcome> {
    spec.validate()?;
    if train.is_empty() {
        return Err(Error::Data("no training example has a token to learn from".into()));
    }
    let n = train.len();
    let steps_per_epoch = n.div_ceil(spec.batch_size);
    let total = steps_per_epoch * spec.n_epochs;
    let warmup = (spec.warmup_ratio * total as f32).ceil() as usize;
    let hash = data_hash(train);
    let mut adapter = Adapter::init(&base.config, base.ffn, spec.lora.clone(), spec.seed);
    let mut opt = AdamW::new(&adapter);
    let mut state = State { step: 0, adam_t: 0, losses: Vec::new(), valid_losses: Vec::new(), trained_tokens: 0, spec: spec.clone(), data_hash: hash };
    if let Some((_, dir)) = complete_checkpoints(work).into_iter().max() {
        let s = load_checkpoint(&dir, &mut adapter, &mut opt)?;
        if s.spec != *spec || s.data_hash != hash {
            return Err(Error::Checkpoint(format!("{}: made with other settings or data; remove it to start over", dir.display())));
        }
        tracing::info!(step = s.step, dir = %dir.display(), "resuming from checkpoint");
        obs.resumed(s.step);
        state = s;
    }
    let cfg = AdamWConfig { weight_decay: spec.weight_decay, ..Default::default() };
    let started = Instant::now();
    // Time spent on validation, left out of the training throughput.
    let mut eval_s = 0f64;
    let (mut run_tokens, mut run_steps) = (0u64, 0usize);
    let mut order = epoch_order(n, spec.seed, state.step / steps_per_epoch);
    while state.step < total {
        let step = state.step;
        let (epoch, b) = (step / steps_per_epoch, step % steps_per_epoch);
        if b == 0 {
            order = epoch_order(n, spec.seed, epoch);
        }
        let batch: Vec<&TokSeq> = order[b * spec.batch_size..((b + 1) * spec.batch_size).min(n)].iter().map(|&i| &train[i]).collect();
        let weight: f32 = batch.iter().map(|s| s.weight()).sum();
        let norm = 1.0 / weight.max(1e-6);
        // The batch runs in pairs, two pairs side by side (each product inside is parallel too,
        // and a thread that finishes early steals the other's product tiles): this keeps both
        // cores busy through the elementwise parts one pass runs on one thread, and bounds the
        // activations held to two pairs'. A pair whose sequences start with the same tokens (a
        // system prompt, a schema) runs as one tree-shaped pass that computes the shared prefix
        // once. Each pair has its own gradient buffer, summed in batch order, so the result does
        // not depend on scheduling.
        let run = |j: usize| {
            let mut g = zero_grads(&adapter);
            let group = &batch[j..(j + GROUP).min(batch.len())];
            let shared = if group.len() > 1 { group[1..].iter().map(|s| shared_prefix(group[0], s)).min().unwrap_or(0) } else { 0 };
            let mut r = SeqLoss { loss_sum: 0.0, weight_sum: 0.0 };
            if shared >= MIN_SHARED_PREFIX {
                let pass = Pass { base, adapter: &adapter, dropout: spec.lora.dropout, key: [spec.seed, step as u64, j as u64] };
                let views: Vec<(&[u32], &[f32])> = group.iter().map(|s| (&s.tokens[..], &s.weights[..])).collect();
                r = pass.loss_and_grad_shared(&views, shared, norm, &mut g);
            } else {
                for (i, s) in group.iter().enumerate() {
                    let pass = Pass { base, adapter: &adapter, dropout: spec.lora.dropout, key: [spec.seed, step as u64, (j + i) as u64] };
                    let one = pass.loss_and_grad(&s.tokens, &s.weights, norm, &mut g);
                    r.loss_sum += one.loss_sum;
                    r.weight_sum += one.weight_sum;
                }
            }
            (r, g)
        };
        let mut per_seq = Vec::with_capacity(batch.len());
        for j in (0..batch.len()).step_by(2 * GROUP) {
            if j + GROUP < batch.len() {
                let (a, b) = rayon::join(|| run(j), || run(j + GROUP));
                per_seq.push(a);
                per_seq.push(b);
            } else {
                per_seq.push(run(j));
            }
        }
        let (mut loss, mut wsum) = (0f64, 0f64);
        let tokens: u64 = batch.iter().map(|s| s.tokens.len() as u64).sum();
        let mut grads = zero_grads(&adapter);
        for (r, g) in &per_seq {
            loss += r.loss_sum;
            wsum += r.weight_sum;
            crate::optim::add_into(&mut grads, g);
        }
        drop(per_seq);
        let lr = lr_at(step, total, warmup, spec.learning_rate);
        let gn = opt.step(&mut adapter, &grads, lr, spec.grad_clip, cfg);
        state.step += 1;
        state.adam_t = opt.t;
        state.trained_tokens += tokens;
        run_tokens += tokens;
        let mean = loss / wsum.max(1e-9);
        state.losses.push(mean);
        let elapsed = started.elapsed().as_secs_f64() - eval_s;
        run_steps += 1;
        let rate = run_tokens as f64 / elapsed.max(1e-9);
        let steps_left = (total - state.step) as f64;
        let per_step = elapsed / run_steps as f64;
        let report = StepReport { step: state.step, total_steps: total, epoch: epoch + 1, loss: mean, lr, grad_norm: gn, tokens_per_second: rate, elapsed_s: elapsed, eta_s: steps_left * per_step };
        let control = obs.step(&report);
        let epoch_done = state.step % steps_per_epoch == 0;
        if epoch_done {
            let losses = &state.losses[state.losses.len().saturating_sub(steps_per_epoch)..];
            let t_eval = Instant::now();
            let valid_loss = if valid.is_empty() { None } else { evaluate(base, &adapter, valid) };
            eval_s += t_eval.elapsed().as_secs_f64();
            if let Some(v) = valid_loss {
                state.valid_losses.push(v);
            }
            obs.epoch(&EpochReport { epoch: epoch + 1, train_loss: losses.iter().sum::<f64>() / losses.len() as f64, valid_loss });
        }
        if control == Control::Stop {
            return Ok(Outcome { adapter, steps: state.step, trained_tokens: state.trained_tokens, losses: state.losses, valid_losses: state.valid_losses, stopped: true });
        }
        if (spec.checkpoint_every > 0 && state.step % spec.checkpoint_every == 0) || state.step == total {
            let dir = save_checkpoint(work, state.step, &adapter, &opt, &state)?;
            let metrics = serde_json::json!({"step": state.step, "train_loss": mean, "valid_loss": state.valid_losses.last()});
            obs.checkpoint(state.step, &dir, &metrics);
        }
    }
    Ok(Outcome { adapter, steps: state.step, trained_tokens: state.trained_tokens, losses: state.losses, valid_losses: state.valid_losses, stopped: false })
}
