//! The fine-tuning jobs seam: what the HTTP API needs from whatever queues and runs jobs. The
//! server maps these types to OpenAI's JSON; the CLI implements the trait over the store and the
//! trainer.

use crate::TenantId;
use serde::{Deserialize, Serialize};

/// A request to create a job (OpenAI's fields plus Shovel's LoRA block).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateJob {
    /// Base model id.
    pub model: String,
    /// File id of the training data.
    pub training_file: String,
    /// File id of validation data.
    pub validation_file: Option<String>,
    /// Goes into the new model's id.
    pub suffix: Option<String>,
    /// Seed (a random one is chosen when absent).
    pub seed: Option<u64>,
    /// Passes over the data.
    pub n_epochs: Option<usize>,
    /// Examples per step.
    pub batch_size: Option<usize>,
    /// Multiplier on the default learning rate.
    pub learning_rate_multiplier: Option<f32>,
    /// LoRA rank.
    pub lora_r: Option<usize>,
    /// LoRA alpha.
    pub lora_alpha: Option<f32>,
    /// LoRA dropout.
    pub lora_dropout: Option<f32>,
    /// Modules to adapt (PEFT names).
    pub target_modules: Option<Vec<String>>,
    /// Longest example in tokens.
    pub max_length: Option<usize>,
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// `ftjob-...`.
    pub id: String,
    /// Base model.
    pub model: String,
    /// Unix seconds.
    pub created_at: i64,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// The model it made.
    pub fine_tuned_model: Option<String>,
    /// `validating_files`, `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Training file id.
    pub training_file: String,
    /// Validation file id.
    pub validation_file: Option<String>,
    /// Resolved hyperparameters: `n_epochs`, `batch_size`, `learning_rate_multiplier`, and the
    /// LoRA block.
    pub hyperparameters: serde_json::Value,
    /// Tokens trained on.
    pub trained_tokens: Option<i64>,
    /// `{code, message, param}` when it failed.
    pub error: Option<serde_json::Value>,
    /// Seed.
    pub seed: i64,
    /// The suffix given.
    pub suffix: Option<String>,
}

/// One entry of a job's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// `ftevent-...`.
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// `info`, `warn` or `error`.
    pub level: String,
    /// Text.
    pub message: String,
    /// Figures (step, loss, ...) for metrics events.
    pub data: Option<serde_json::Value>,
}

/// A checkpoint of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobCheckpoint {
    /// `ftckpt-...`.
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Step.
    pub step_number: i64,
    /// Loss figures.
    pub metrics: serde_json::Value,
    /// The job.
    pub fine_tuning_job_id: String,
    /// A name for the checkpoint as a model.
    pub fine_tuned_model_checkpoint: String,
}

/// Errors of the jobs API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FtError {
    /// No such job (or file, or model) for this tenant.
    #[error("{message}")]
    NotFound {
        /// What was missing.
        message: String,
        /// The parameter that named it.
        param: Option<String>,
    },
    /// The request is invalid; `param` names the field.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// The field.
        param: Option<String>,
    },
    /// Storage failed.
    #[error("fine-tuning service failed: {0}")]
    Internal(String),
}

/// Creates, lists and cancels jobs.
#[async_trait::async_trait]
pub trait FineTuning: Send + Sync + 'static {
    /// Validates and queues a job.
    async fn create(&self, tenant: &TenantId, req: CreateJob) -> Result<Job, FtError>;
    /// Jobs, newest first.
    async fn list(&self, tenant: &TenantId, after: Option<&str>, limit: usize) -> Result<Vec<Job>, FtError>;
    /// One job.
    async fn get(&self, tenant: &TenantId, id: &str) -> Result<Job, FtError>;
    /// Cancels a job that has not ended.
    async fn cancel(&self, tenant: &TenantId, id: &str) -> Result<Job, FtError>;
    /// A job's events, newest first.
    async fn events(&self, tenant: &TenantId, id: &str, after: Option<&str>, limit: usize) -> Result<Vec<JobEvent>, FtError>;
    /// A job's checkpoints, newest first.
    async fn checkpoints(&self, tenant: &TenantId, id: &str) -> Result<Vec<JobCheckpoint>, FtError>;
}
