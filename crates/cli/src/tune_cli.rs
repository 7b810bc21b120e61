//! `shovel tune` and `shovel jobs`: the terminal face of fine-tuning. `tune` queues a job like
//! the API does and runs it in this process with a live progress line; `jobs` reads the store.

use crate::config::Config;
use crate::tune::{FtService, Paths, Progress, Worker};
use anyhow::{bail, Context, Result};
use shovel_core::{CreateJob, FileStore, FineTuning, Purpose, TenantId};
use shovel_store::{JobStatus, LocalFiles, Store};
use std::path::Path;
use std::sync::Arc;

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// A text plot of a loss curve, `height` rows by up to `width` columns (steps averaged into
/// columns).
pub fn loss_plot(losses: &[f64], width: usize, height: usize) -> String {
    if losses.is_empty() {
        return String::new();
    }
    let cols = losses.len().min(width).max(1);
    let col: Vec<f64> = (0..cols)
        .map(|c| {
            let (a, b) = (c * losses.len() / cols, ((c + 1) * losses.len() / cols).max(c * losses.len() / cols + 1));
            losses[a..b].iter().sum::<f64>() / (b - a) as f64
        })
        .collect();
    let (lo, hi) = col.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let span = (hi - lo).max(1e-9);
    let mut out = String::new();
    for r in 0..height {
        let level = hi - span * r as f64 / (height - 1).max(1) as f64;
        let label = if r == 0 || r == height - 1 || r == height / 2 { format!("{level:>7.3} |") } else { "        |".to_string() };
        out.push_str(&label);
        for &v in &col {
            let row = ((hi - v) / span * (height - 1) as f64).round() as usize;
            out.push(if row == r { '*' } else { ' ' });
        }
        out.push('\n');
    }
    out.push_str(&format!("        +{}\n         step 1{:>w$}\n", "-".repeat(cols), losses.len(), w = cols.saturating_sub(6)));
    out
}

/// Examples as OpenAI chat JSONL (weights kept on assistant turns).
fn to_chat_jsonl(exs: &[shovel_data::Example]) -> String {
    let mut out = String::new();
    for e in exs {
        let msgs: Vec<serde_json::Value> = e
            .messages
            .iter()
            .map(|t| if t.role == "assistant" { serde_json::json!({"role": t.role, "content": t.content, "weight": t.weight}) } else { serde_json::json!({"role": t.role, "content": t.content}) })
            .collect();
        out.push_str(&serde_json::json!({ "messages": msgs }).to_string());
        out.push('\n');
    }
    out
}

async fn upload(files: &LocalFiles, path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("data.jsonl");
    let f = files.create(&TenantId::default_tenant(), Purpose::FineTune, name, &bytes).await.map_err(|e| anyhow::anyhow!("storing {}: {e}", path.display()))?;
    Ok(f.id)
}

/// `shovel tune`; returns the new model's id.
pub async fn tune(cfg: &Config, mut req: CreateJob, data: &Path, val: Option<&Path>, val_ratio: f64, json: bool) -> Result<String> {
    let store = crate::open_store(cfg).await?;
    crate::ensure_model(cfg, &store, &req.model).await?;
    let files = Arc::new(LocalFiles::new(store.clone(), cfg.files_dir()));
    if val.is_none() && val_ratio > 0.0 {
        if !(val_ratio < 1.0) {
            bail!("--val-ratio must be below 1, got {val_ratio}");
        }
        // Split here and store both parts, so the job (and a resumed job) sees fixed files.
        let bytes = std::fs::read(data).with_context(|| format!("reading {}", data.display()))?;
        // The same check (every bad line listed) the service applies to a training file.
        let examples = crate::tune::check_dataset(&bytes, &data.display().to_string(), "training_file").map_err(|e| anyhow::anyhow!("{e}"))?;
        let (train, valid) = shovel_data::split(examples, val_ratio, req.seed.unwrap_or(42));
        let tenant = TenantId::default_tenant();
        let stem = data.file_stem().and_then(|n| n.to_str()).unwrap_or("data");
        for (part, exs) in [("train", &train), ("valid", &valid)] {
            let text = to_chat_jsonl(exs);
            let f = files.create(&tenant, Purpose::FineTune, &format!("{stem}.{part}.jsonl"), text.as_bytes()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            if part == "train" {
                req.training_file = f.id;
            } else {
                req.validation_file = Some(f.id);
            }
        }
        eprintln!("split {}: {} training / {} validation examples", data.display(), train.len(), valid.len());
    } else {
        req.training_file = upload(&files, data).await?;
        if let Some(v) = val {
            req.validation_file = Some(upload(&files, v).await?);
        }
    }
    let running = crate::tune::Running::default();
    let svc = FtService::new(store.clone(), files.clone(), cfg.checkpoint_every, running.clone());
    let tenant = TenantId::default_tenant();
    let job = match svc.create(&tenant, req).await {
        Ok(j) => j,
        Err(e) => bail!("{e}"),
    };
    eprintln!("job {} queued: {} on {}", job.id, job.model, data.display());
    let worker = Worker::new(store.clone(), files, Paths { adapters: cfg.adapters_dir(), jobs: cfg.jobs_dir() }, None, running, cfg.train_precision);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let id = job.id.clone();
    let run = tokio::spawn(async move { worker.run_one(&id, Some(tx)).await });
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("valid template"));
    let mut losses = Vec::new();
    let started = std::time::Instant::now();
    let mut last_rate = 0.0;
    let mut valid_losses = Vec::new();
    loop {
        tokio::select! {
            p = rx.recv() => match p {
                Some(Progress::Step(r)) => {
                    bar.set_length(r.total_steps as u64);
                    bar.set_position(r.step as u64);
                    bar.set_message(format!("epoch {} loss {:.4} {:.0} tok/s ETA {}", r.epoch, r.loss, r.tokens_per_second, fmt_secs(r.eta_s)));
                    losses.push(r.loss);
                    last_rate = r.tokens_per_second;
                }
                Some(Progress::Epoch(e)) => {
                    let v = e.valid_loss.map(|v| format!(", validation loss {v:.4}")).unwrap_or_default();
                    bar.println(format!("epoch {}: training loss {:.4}{v}", e.epoch, e.train_loss));
                    valid_losses.extend(e.valid_loss);
                }
                Some(Progress::Resumed(step)) => bar.println(format!("resumed from the checkpoint at step {step}")),
                None => break,
            },
            _ = tokio::signal::ctrl_c() => {
                bar.println("interrupted: cancelling the job");
                svc.cancel(&tenant, &job.id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
    }
    bar.finish_and_clear();
    let ran = run.await.context("worker task")?;
    let ran = match ran {
        Ok(r) => r,
        Err(e) => bail!("job {} failed: {e:#}", job.id),
    };
    if !ran {
        bail!("job {} is held by another worker (a running `shovel serve`?); follow it with `shovel jobs show {}`", job.id, job.id);
    }
    let done = store.get_job(&tenant, &job.id).await?.context("job vanished")?;
    match done.status {
        JobStatus::Succeeded => {
            let model = done.fine_tuned_model.unwrap_or_default();
            println!("{}", loss_plot(&losses, 60, 10));
            println!(
                "trained {} tokens in {} ({:.0} tokens/s); final loss {:.4}",
                done.trained_tokens.unwrap_or(0),
                fmt_secs(started.elapsed().as_secs_f64()),
                last_rate,
                losses.last().copied().unwrap_or(f64::NAN)
            );
            println!("fine-tuned model: {model}");
            println!("try it: shovel run '{model}' \"your question\"");
            if json {
                let summary = serde_json::json!({
                    "job": done.id, "model": model, "tokens_per_second": last_rate, "seconds": started.elapsed().as_secs_f64(),
                    "trained_tokens": done.trained_tokens, "losses": losses, "valid_losses": valid_losses,
                });
                println!("{summary}");
            }
            Ok(model)
        }
        JobStatus::Cancelled => {
            eprintln!("job {} cancelled", job.id);
            std::process::exit(130);
        }
        s => {
            let msg = done.error.as_ref().and_then(|e| e.get("message")).and_then(|m| m.as_str()).unwrap_or("").to_string();
            bail!("job {} {}: {msg}", job.id, s.as_str())
        }
    }
}

fn when(t: i64) -> String {
    let ago = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64) - t).max(0);
    format!("{} ago", fmt_secs(ago as f64))
}

/// `shovel jobs`.
pub async fn list_jobs(store: &Store) -> Result<()> {
    let jobs = store.list_jobs(&TenantId::default_tenant(), None, 100).await?;
    println!("{:<32} {:<10} {:<24} {:<14} FINE-TUNED MODEL", "ID", "STATUS", "BASE", "CREATED");
    for j in jobs {
        println!("{:<32} {:<10} {:<24} {:<14} {}", j.id, j.status.as_str(), j.model, when(j.created_at), j.fine_tuned_model.unwrap_or_default());
    }
    Ok(())
}

/// `shovel jobs show ID`.
pub async fn show_job(store: &Store, id: &str) -> Result<()> {
    let j = store.get_job(&TenantId::default_tenant(), id).await?.with_context(|| format!("no fine-tuning job {id}; `shovel jobs` lists them"))?;
    println!("id:               {}", j.id);
    println!("status:           {}", j.status.as_str());
    println!("base model:       {}", j.model);
    println!("training file:    {}", j.training_file);
    if let Some(v) = &j.validation_file {
        println!("validation file:  {v}");
    }
    println!("settings:         {}", j.spec);
    if let Some(m) = &j.fine_tuned_model {
        println!("fine-tuned model: {m}");
    }
    if let Some(t) = j.trained_tokens {
        println!("trained tokens:   {t}");
    }
    if let Some(e) = &j.error {
        println!("error:            {}", e.get("message").and_then(|m| m.as_str()).unwrap_or(""));
    }
    let cps = store.list_checkpoints(id).await?;
    if !cps.is_empty() {
        println!("checkpoints:");
        for c in cps {
            println!("  step {:>5}  {}", c.step, c.metrics);
        }
    }
    let mut ev = store.list_events(id, None, 15).await?;
    ev.reverse();
    println!("recent events:");
    for e in ev {
        println!("  [{}] {}", e.level, e.message);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_plot_puts_the_first_point_high_and_the_last_low() {
        let losses: Vec<f64> = (0..30).map(|i| 3.0 - i as f64 * 0.1).collect();
        let p = loss_plot(&losses, 60, 5);
        let lines: Vec<&str> = p.lines().collect();
        assert!(lines[0].starts_with("  3.000 |*"), "{p}");
        assert!(lines[4].ends_with('*'), "{p}");
    }
}
