//! The engine's error type. Variants carry the context a user needs (which file, which tensor,
//! what is wrong); the server maps them to HTTP through `shovel_core::BackendError`.

use std::path::PathBuf;

/// Engine errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A GGUF file is corrupt, truncated or unsupported.
    #[error("{path}: {reason}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A model directory (safetensors + config.json) is incomplete or inconsistent.
    #[error("{path}: {reason}")]
    ModelDir {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The model's architecture is not one the engine runs.
    #[error("unsupported architecture `{arch}` (supported: llama, qwen2 and gemma3; mistral from a Hugging Face directory)")]
    UnsupportedArch {
        /// The architecture named by the model.
        arch: String,
    },
    /// The weights do not fit together (a tensor the architecture needs beside one it has).
    #[error("weights: {0}")]
    Weights(String),
    /// Building or running the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to compile or render.
    #[error("chat template: {0}")]
    Template(String),
}

/// Engine result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
