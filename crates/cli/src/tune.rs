//! Fine-tuning glue: the jobs service behind `/v1/fine_tuning/jobs` (validation, queueing) and
//! the worker that leases jobs from the store's queue and runs the trainer, writing events and
//! checkpoints as it goes and registering the adapter as a new model when it is done.

use anyhow::{Context, Result};
use shovel_core::{CreateJob, FileStore, FineTuning, FtError, Job, JobCheckpoint, JobEvent, ModelId, ModelKind, TenantId};
use shovel_engine::lora::{LoraConfig, Target};
use shovel_store::{new_id, JobRecord, JobStatus, LocalFiles, ModelFormat, ModelRecord, Store};
use shovel_train::{Control, EpochReport, Observer, Spec, StepReport};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The learning rate a multiplier of 1 means (LoRA on small models learns well at 1e-3).
pub const BASE_LEARNING_RATE: f32 = 1e-3;
/// Seconds a lease lasts without renewal; a crashed worker's job is taken over after this.
const LEASE_TTL_S: i64 = 15;
/// How often a worker renews its lease.
const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(3);
/// Line errors quoted in a rejection message.
const ERRORS_QUOTED: usize = 20;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn internal(e: impl std::fmt::Display) -> FtError {
    FtError::Internal(e.to_string())
}

fn invalid(param: &str, message: impl Into<String>) -> FtError {
    FtError::Invalid { message: message.into(), param: Some(param.into()) }
}

/// Where things live, shared by the service and the worker.
#[derive(Clone)]
pub struct Paths {
    /// Adapters: `<dir>/<job id>`.
    pub adapters: PathBuf,
    /// Jobs' working directories: `<dir>/<job id>`.
    pub jobs: PathBuf,
}

/// Stop flags of the jobs this process is training, so a cancel reaches the trainer at once
/// (it stops at the end of the step in progress) rather than at the next lease renewal.
pub type Running = Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<AtomicBool>>>>;

/// The jobs service.
pub struct FtService {
    store: Store,
    files: Arc<LocalFiles>,
    checkpoint_every: usize,
    running: Running,
}

impl FtService {
    /// A service over the store and files; jobs checkpoint every `checkpoint_every` steps;
    /// `running` is shared with this process's worker.
    pub fn new(store: Store, files: Arc<LocalFiles>, checkpoint_every: usize, running: Running) -> Self {
        FtService { store, files, checkpoint_every, running }
    }
}

/// Parses a dataset file and rejects it, listing bad lines, if it cannot be trained on.
pub fn check_dataset(bytes: &[u8], name: &str, param: &str) -> Result<Vec<shovel_data::Example>, FtError> {
    let parsed = shovel_data::parse(bytes, None, Some(name)).map_err(|e| invalid(param, format!("{param} `{name}`: {e}")))?;
    match parsed.validate() {
        Ok(v) => Ok(v.examples),
        Err(shovel_data::Rejection::BadLines { errors, total }) => {
            let mut msg = format!("{param} `{name}` has {total} bad line(s):");
            for e in errors.iter().take(ERRORS_QUOTED) {
                msg.push_str(&format!("\n{e}"));
            }
            if total > ERRORS_QUOTED {
                msg.push_str(&format!("\n... and {} more", total - ERRORS_QUOTED));
            }
            Err(invalid(param, msg))
        }
        Err(r) => Err(invalid(param, format!("{param} `{name}`: {r}"))),
    }
}

/// A validation file needs no minimum size, but every line must be good.
pub fn check_validation(bytes: &[u8], name: &str) -> Result<Vec<shovel_data::Example>, FtError> {
    let param = "validation_file";
    let parsed = shovel_data::parse(bytes, None, Some(name)).map_err(|e| invalid(param, format!("{param} `{name}`: {e}")))?;
    if parsed.error_count > 0 {
        return check_dataset(bytes, name, param);
    }
    if parsed.examples.is_empty() {
        return Err(invalid(param, format!("{param} `{name}` has no examples")));
    }
    Ok(parsed.examples)
}

/// Builds and checks the trainer's settings from a request; errors name the API parameter.
pub fn spec_for(req: &CreateJob, seed: u64) -> Result<Spec, FtError> {
    let d = Spec::default();
    let mult = req.learning_rate_multiplier.unwrap_or(1.0);
    let targets = match &req.target_modules {
        None => d.lora.targets.clone(),
        Some(names) => names
            .iter()
            .map(|n| Target::parse(n).ok_or_else(|| invalid("lora.target_modules", format!("unknown module `{n}` (known: {})", Target::ALL.map(|t| t.name()).join(", ")))))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let spec = Spec {
        n_epochs: req.n_epochs.unwrap_or(d.n_epochs),
        batch_size: req.batch_size.unwrap_or(d.batch_size),
        learning_rate: BASE_LEARNING_RATE * mult,
        max_length: req.max_length.unwrap_or(d.max_length),
        lora: LoraConfig { r: req.lora_r.unwrap_or(d.lora.r), alpha: req.lora_alpha.unwrap_or(d.lora.alpha), dropout: req.lora_dropout.unwrap_or(d.lora.dropout), targets },
        seed,
        ..d
    };
    if !(mult > 0.0 && mult <= 100.0) {
        return Err(invalid("hyperparameters.learning_rate_multiplier", format!("hyperparameters.learning_rate_multiplier must be in (0, 100], got {mult}")));
    }
    spec.validate().map_err(|e| match e {
        shovel_train::Error::BadParam { param, message } => {
            // The trainer's names, as the API spells them: LoRA settings (and max_length) live
            // in the `lora` block, the rest under `hyperparameters`.
            let p = match param.as_str() {
                "max_length" => "lora.max_length".to_string(),
                p if p.starts_with("lora.") => p.to_string(),
                p => format!("hyperparameters.{p}"),
            };
            invalid(&p, format!("{p} {message}"))
        }
        other => internal(other),
    })?;
    Ok(spec)
}

fn job_view(j: &JobRecord) -> Job {
    let spec: Option<Spec> = serde_json::from_value(j.spec.clone()).ok();
    let hyperparameters = match &spec {
        Some(s) => serde_json::json!({
            "n_epochs": s.n_epochs,
            "batch_size": s.batch_size,
            "learning_rate_multiplier": s.learning_rate / BASE_LEARNING_RATE,
            "lora": {
                "r": s.lora.r, "alpha": s.lora.alpha, "dropout": s.lora.dropout,
                "target_modules": s.lora.targets.iter().map(|t| t.name()).collect::<Vec<_>>(),
                "max_length": s.max_length,
            },
        }),
        None => j.spec.clone(),
    };
    Job {
        id: j.id.clone(),
        model: j.model.clone(),
        created_at: j.created_at,
        finished_at: j.finished_at,
        fine_tuned_model: j.fine_tuned_model.clone(),
        status: j.status.as_str().into(),
        training_file: j.training_file.clone(),
        validation_file: j.validation_file.clone(),
        hyperparameters,
        trained_tokens: j.trained_tokens,
        error: j.error.clone(),
        seed: j.seed,
        suffix: j.suffix.clone(),
    }
}

/// The id of the model a job makes.
pub fn model_id_for(base: &str, suffix: Option<&str>, job_id: &str) -> String {
    format!("ft:{base}:{}:{job_id}", suffix.unwrap_or("tuned"))
}

#[async_trait::async_trait]
impl FineTuning for FtService {
    async fn create(&self, tenant: &TenantId, req: CreateJob) -> Result<Job, FtError> {
        let base = self.store.get_model(tenant, &ModelId::new(req.model.clone())).await.map_err(internal)?;
        let base = base.ok_or_else(|| invalid("model", format!("model `{}` does not exist; GET /v1/models lists the models you can fine-tune", req.model)))?;
        if base.kind != ModelKind::Chat || base.format == ModelFormat::Lora {
            return Err(invalid("model", format!("model `{}` cannot be fine-tuned: only base chat models can (not embedding models or fine-tuned adapters)", req.model)));
        }
        let arch = shovel_engine::loader::arch_name(Path::new(&base.path)).map_err(|e| invalid("model", format!("model `{}` cannot be read: {e}", req.model)))?;
        if !matches!(arch.as_str(), "llama" | "mistral" | "qwen2" | "gemma3" | "gemma3_text") {
            return Err(invalid("model", format!("model `{}` has architecture `{arch}`, which cannot be fine-tuned yet (supported: llama, mistral, qwen2, gemma3)", req.model)));
        }
        if let Some(s) = &req.suffix {
            if s.is_empty() || s.len() > 40 || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(invalid("suffix", "suffix must be 1 to 40 characters of letters, digits, `-` and `_`"));
            }
        }
        let seed = req.seed.unwrap_or_else(|| now() as u64 % 1_000_000);
        let spec = Spec { checkpoint_every: self.checkpoint_every, ..spec_for(&req, seed)? };
        for (param, id) in [("training_file", Some(&req.training_file)), ("validation_file", req.validation_file.as_ref())] {
            let Some(id) = id else { continue };
            let f = self.files.get(tenant, id).await.map_err(|_| invalid(param, format!("{param}: no such file `{id}`; upload it with POST /v1/files first")))?;
            let bytes = self.files.content(tenant, id).await.map_err(internal)?;
            if param == "training_file" {
                check_dataset(&bytes, &f.filename, param)?;
            } else {
                check_validation(&bytes, &f.filename)?;
            }
        }
        let job = JobRecord {
            tenant: tenant.clone(),
            id: new_id("ftjob"),
            model: req.model.clone(),
            training_file: req.training_file.clone(),
            validation_file: req.validation_file.clone(),
            suffix: req.suffix.clone(),
            seed: seed as i64,
            spec: serde_json::to_value(&spec).map_err(internal)?,
            status: JobStatus::Queued,
            created_at: now(),
            started_at: None,
            finished_at: None,
            fine_tuned_model: None,
            trained_tokens: None,
            error: None,
        };
        self.store.create_job(&job).await.map_err(internal)?;
        self.store.add_event(&job.id, "info", &format!("Validated training file {}; job queued", job.training_file), None).await.map_err(internal)?;
        Ok(job_view(&job))
    }

    async fn list(&self, tenant: &TenantId, after: Option<&str>, limit: usize) -> Result<Vec<Job>, FtError> {
        Ok(self.store.list_jobs(tenant, after, limit).await.map_err(internal)?.iter().map(job_view).collect())
    }

    async fn get(&self, tenant: &TenantId, id: &str) -> Result<Job, FtError> {
        self.store.get_job(tenant, id).await.map_err(internal)?.map(|j| job_view(&j)).ok_or_else(|| not_found(id))
    }

    async fn cancel(&self, tenant: &TenantId, id: &str) -> Result<Job, FtError> {
        let before = self.store.get_job(tenant, id).await.map_err(internal)?.ok_or_else(|| not_found(id))?;
        if before.status.is_terminal() {
            return Err(FtError::Invalid { message: format!("job {id} has already {}; it cannot be cancelled", before.status.as_str()), param: None });
        }
        let j = self.store.cancel_job(tenant, id).await.map_err(internal)?.ok_or_else(|| not_found(id))?;
        if let Some(flag) = self.running.lock().unwrap().get(id) {
            flag.store(true, Ordering::Release);
        }
        self.store.add_event(id, "info", "Job cancelled by request", None).await.map_err(internal)?;
        Ok(job_view(&j))
    }

    async fn events(&self, tenant: &TenantId, id: &str, after: Option<&str>, limit: usize) -> Result<Vec<JobEvent>, FtError> {
        self.get(tenant, id).await?;
        self.store.list_events(id, after, limit).await.map_err(internal)
    }

    async fn checkpoints(&self, tenant: &TenantId, id: &str) -> Result<Vec<JobCheckpoint>, FtError> {
        let job = self.get(tenant, id).await?;
        let cps = self.store.list_checkpoints(id).await.map_err(internal)?;
        Ok(cps
            .into_iter()
            .map(|c| JobCheckpoint {
                id: c.id,
                created_at: c.created_at,
                step_number: c.step,
                metrics: c.metrics,
                fine_tuning_job_id: id.to_string(),
                fine_tuned_model_checkpoint: format!("{}:ckpt-step-{}", model_id_for(&job.model, job.suffix.as_deref(), id), c.step),
            })
            .collect())
    }
}

fn not_found(id: &str) -> FtError {
    FtError::NotFound { message: format!("No fine-tuning job {id}"), param: Some("fine_tuning_job_id".into()) }
}

/// What the worker reports while a job runs (for a terminal progress bar).
pub enum Progress {
    /// A step finished.
    Step(StepReport),
    /// An epoch finished.
    Epoch(EpochReport),
    /// The run picked up from a checkpoint.
    Resumed(usize),
}

enum Msg {
    Step(StepReport),
    Epoch(EpochReport),
    Checkpoint(usize, PathBuf, serde_json::Value),
    Resumed(usize),
}

struct ChannelObserver {
    tx: tokio::sync::mpsc::UnboundedSender<Msg>,
    cancel: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
}

impl Observer for ChannelObserver {
    fn step(&mut self, r: &StepReport) -> Control {
        let _ = self.tx.send(Msg::Step(r.clone()));
        if self.cancel.load(Ordering::Acquire) || self.shutdown.load(Ordering::Acquire) {
            Control::Stop
        } else {
            Control::Continue
        }
    }
    fn epoch(&mut self, r: &EpochReport) {
        let _ = self.tx.send(Msg::Epoch(r.clone()));
    }
    fn checkpoint(&mut self, step: usize, dir: &Path, metrics: &serde_json::Value) {
        let _ = self.tx.send(Msg::Checkpoint(step, dir.to_path_buf(), metrics.clone()));
    }
    fn resumed(&mut self, step: usize) {
        let _ = self.tx.send(Msg::Resumed(step));
    }
}

/// Removes a job's stop flag however its run ends.
struct Unregister(Running, String);

impl Drop for Unregister {
    fn drop(&mut self) {
        self.0.lock().unwrap().remove(&self.1);
    }
}

/// Called with each model a job registers (the server adds it to the engine's catalogue).
pub type OnModel = Arc<dyn Fn(&ModelRecord) + Send + Sync>;

/// Runs jobs from the store's queue.
#[derive(Clone)]
pub struct Worker {
    store: Store,
    files: Arc<LocalFiles>,
    paths: Paths,
    owner: String,
    on_model: Option<OnModel>,
    shutdown: Arc<AtomicBool>,
    running: Running,
    precision: shovel_train::Precision,
}

impl Worker {
    /// A worker with a fresh owner id.
    pub fn new(store: Store, files: Arc<LocalFiles>, paths: Paths, on_model: Option<OnModel>, running: Running, precision: shovel_train::Precision) -> Self {
        let owner = format!("worker-{}-{}", std::process::id(), &new_id("w")[2..10]);
        Worker { store, files, paths, owner, on_model, shutdown: Arc::new(AtomicBool::new(false)), running, precision }
    }

    /// Setting this stops the worker: a running job stops within a step and keeps its lease
    /// and checkpoints, so the next start resumes it.
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.shutdown.clone()
    }

    /// Leases and runs jobs forever, one at a time.
    pub async fn run_forever(self) {
        while !self.shutdown.load(Ordering::Acquire) {
            match self.store.lease_job(&self.owner, LEASE_TTL_S).await {
                Ok(Some(job)) => {
                    let id = job.id.clone();
                    if let Err(e) = self.run_leased(job, None).await {
                        tracing::error!(job = %id, error = %format!("{e:#}"), "fine-tuning job failed");
                    }
                }
                Ok(None) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
                Err(e) => {
                    tracing::error!(error = %e, "leasing a job");
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            }
        }
    }

    /// Takes one job if it needs a worker and runs it; `false` if another worker holds it.
    pub async fn run_one(&self, id: &str, progress: Option<tokio::sync::mpsc::UnboundedSender<Progress>>) -> Result<bool> {
        let Some(job) = self.store.lease_job_by_id(id, &self.owner, LEASE_TTL_S).await? else {
            return Ok(false);
        };
        self.run_leased(job, progress).await?;
        Ok(true)
    }

    async fn fail(&self, job: &JobRecord, code: &str, message: String) -> Result<()> {
        self.store.add_event(&job.id, "error", &message, None).await?;
        let err = serde_json::json!({"code": code, "message": message, "param": null});
        self.store.finish_job(&job.id, &self.owner, JobStatus::Failed, None, None, Some(&err)).await?;
        Ok(())
    }

    async fn run_leased(&self, job: JobRecord, progress: Option<tokio::sync::mpsc::UnboundedSender<Progress>>) -> Result<()> {
        match self.train_job(&job, progress).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let msg = format!("{e:#}");
                self.fail(&job, "training_failed", msg.clone()).await?;
                Err(e)
            }
        }
    }

    async fn train_job(&self, job: &JobRecord, progress: Option<tokio::sync::mpsc::UnboundedSender<Progress>>) -> Result<()> {
        let spec: Spec = serde_json::from_value(job.spec.clone()).context("reading the job's settings")?;
        let base = self.store.get_model(&job.tenant, &ModelId::new(job.model.clone())).await?.with_context(|| format!("base model `{}` is no longer registered", job.model))?;
        let read = |id: String| {
            let files = self.files.clone();
            let tenant = job.tenant.clone();
            async move {
                let f = files.get(&tenant, &id).await.map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
                let bytes = files.content(&tenant, &id).await.map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
                anyhow::Ok((f.filename, bytes))
            }
        };
        let (tname, tbytes) = read(job.training_file.clone()).await?;
        let train_ex = match check_dataset(&tbytes, &tname, "training_file") {
            Ok(v) => v,
            Err(e) => {
                self.fail(job, "invalid_training_file", e.to_string()).await?;
                return Ok(());
            }
        };
        let valid_ex = match &job.validation_file {
            Some(id) => {
                let (n, b) = read(id.clone()).await?;
                match check_validation(&b, &n) {
                    Ok(v) => v,
                    Err(e) => {
                        self.fail(job, "invalid_validation_file", e.to_string()).await?;
                        return Ok(());
                    }
                }
            }
            None => Vec::new(),
        };
        let started_fresh = self.store.list_checkpoints(&job.id).await?.is_empty();
        self.store.add_event(&job.id, "info", if started_fresh { "Fine-tuning job started" } else { "Fine-tuning job restarted by a worker" }, None).await?;
        let work = self.paths.jobs.join(&job.id);
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let cancel = Arc::new(AtomicBool::new(false));
        self.running.lock().unwrap().insert(job.id.clone(), cancel.clone());
        let _unregister = Unregister(self.running.clone(), job.id.clone());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let obs_cancel = cancel.clone();
        let shutdown = self.shutdown.clone();
        let precision = self.precision;
        let base_path = PathBuf::from(&base.path);
        let spec2 = spec.clone();
        let work2 = work.clone();
        let handle = tokio::task::spawn_blocking(move || -> Result<(shovel_train::Outcome, shovel_engine::model::ModelConfig, usize)> {
            let parts = shovel_engine::loader::load(&base_path)?;
            let (train, dropped) = shovel_train::encode_all(&parts.tokenizer, &parts.template, &train_ex, spec2.max_length)?;
            let (valid, _) = shovel_train::encode_all(&parts.tokenizer, &parts.template, &valid_ex, spec2.max_length)?;
            let b = shovel_train::Base::with_precision(&parts.model, precision)?;
            // The quantized file is no longer needed: unmapping it returns its pages.
            drop(parts);
            let mut obs = ChannelObserver { tx, cancel: obs_cancel, shutdown };
            let out = shovel_train::train(&b, &train, &valid, &spec2, &work2, &mut obs)?;
            Ok((out, b.config.clone(), dropped.len()))
        });
        let mut renew = tokio::time::interval(RENEW_EVERY);
        let mut lost = false;
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    match msg {
                        Msg::Step(r) => {
                            let data = serde_json::json!({"step": r.step, "total_steps": r.total_steps, "epoch": r.epoch, "train_loss": r.loss, "learning_rate": r.lr, "tokens_per_second": r.tokens_per_second, "eta_seconds": r.eta_s});
                            self.store.add_event(&job.id, "info", &format!("Step {}/{}: training loss={:.4}", r.step, r.total_steps, r.loss), Some(&data)).await?;
                            if let Some(p) = &progress { let _ = p.send(Progress::Step(r)); }
                        }
                        Msg::Epoch(e) => {
                            let text = match e.valid_loss { Some(v) => format!("Epoch {} done: training loss {:.4}, validation loss {:.4}", e.epoch, e.train_loss, v), None => format!("Epoch {} done: training loss {:.4}", e.epoch, e.train_loss) };
                            self.store.add_event(&job.id, "info", &text, None).await?;
                            if let Some(p) = &progress { let _ = p.send(Progress::Epoch(e)); }
                        }
                        Msg::Checkpoint(step, dir, metrics) => {
                            self.store.add_checkpoint(&job.id, step as i64, &metrics, &dir.to_string_lossy()).await?;
                            self.store.add_event(&job.id, "info", &format!("Checkpoint created at step {step}"), None).await?;
                        }
                        Msg::Resumed(step) => {
                            self.store.add_event(&job.id, "info", &format!("Resumed from the checkpoint at step {step}"), None).await?;
                            if let Some(p) = &progress { let _ = p.send(Progress::Resumed(step)); }
                        }
                    }
                }
                _ = renew.tick() => {
                    if !self.store.renew_lease(&job.id, &self.owner, LEASE_TTL_S).await? {
                        // Cancelled, or taken over by another worker: stop within a step.
                        cancel.store(true, Ordering::Release);
                        lost = true;
                    }
                }
            }
        }
        let (out, cfg, dropped) = handle.await.context("training thread")??;
        if out.stopped || lost {
            tracing::info!(job = %job.id, step = out.steps, "fine-tuning job stopped");
            return Ok(());
        }
        if dropped > 0 {
            self.store.add_event(&job.id, "warn", &format!("{dropped} example(s) had nothing left to learn after cutting at max_length {} and were skipped", spec.max_length), None).await?;
        }
        // The adapter is written whole (temporary directory, then renamed) before its model is
        // registered, so no partial adapter is ever visible.
        let model_id = model_id_for(&job.model, job.suffix.as_deref(), &job.id);
        let dir = self.paths.adapters.join(&job.id);
        let tmp = self.paths.adapters.join(format!("{}.tmp", job.id));
        let _ = std::fs::remove_dir_all(&tmp);
        out.adapter.save_peft(&tmp, &cfg, &job.model)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).with_context(|| format!("moving the adapter into {}", dir.display()))?;
        let size = std::fs::metadata(dir.join("adapter_model.safetensors")).map(|m| m.len()).unwrap_or(0);
        let rec = ModelRecord {
            tenant: job.tenant.clone(),
            id: ModelId::new(model_id.clone()),
            kind: ModelKind::Chat,
            format: ModelFormat::Lora,
            path: dir.to_string_lossy().into_owned(),
            sha256: None,
            size_bytes: size,
            source: format!("fine-tune:{}", job.id),
            owned_by: "user".into(),
            created_at: now(),
            base: Some(ModelId::new(job.model.clone())),
        };
        self.store.upsert_model(&rec).await?;
        if !self.store.finish_job(&job.id, &self.owner, JobStatus::Succeeded, Some(&model_id), Some(out.trained_tokens as i64), None).await? {
            // Cancelled at the last moment: take the model back.
            self.store.delete_model(&job.tenant, &rec.id).await?;
            let _ = std::fs::remove_dir_all(&dir);
            return Ok(());
        }
        if let Some(f) = &self.on_model {
            f(&rec);
        }
        self.store.add_event(&job.id, "info", &format!("New fine-tuned model created: {model_id}"), None).await?;
        self.store.add_event(&job.id, "info", "The job has successfully completed", None).await?;
        let _ = std::fs::remove_dir_all(&work);
        Ok(())
    }
}
