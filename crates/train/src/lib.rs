//! Shovel's fine-tuning: LoRA supervised fine-tuning on a frozen base, with a forward and
//! backward pass written for this job (see [`model`]), AdamW with warmup + cosine schedule,
//! resumable checkpoints, and adapters in PEFT's layout.
//!
//! The trainer knows nothing of HTTP or of the job queue: a caller hands it a base model,
//! tokenized data and a [`Spec`], and an [`Observer`] that hears progress and can stop it.
#![warn(missing_docs)]

pub mod bf16;
pub mod export;
pub mod mm;
pub mod model;
pub mod optim;
pub mod tokens;
pub mod trainer;

pub use model::{Base, Precision};
pub use tokens::{encode, encode_all, TokSeq};
pub use trainer::{evaluate, train, Control, EpochReport, Observer, Outcome, Spec, StepReport};

/// Training errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A hyperparameter is out of range.
    #[error("{param} {message}")]
    BadParam {
        /// The parameter, as the API names it.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// The data cannot be trained on.
    #[error("{0}")]
    Data(String),
    /// A checkpoint is unreadable or does not belong to this run.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The engine failed (loading the base, writing the adapter).
    #[error(transparent)]
    Engine(#[from] shovel_engine::Error),
}

/// Training result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
