//! Shovel's inference engine: loads models (GGUF, safetensors), tokenizes, renders chat
//! templates, runs our own batched model code and samples, on a scheduler thread per model.
//!
//! The engine knows nothing of HTTP or SQL. The server reaches it through
//! `shovel_core::InferenceBackend`, which [`Engine`] implements.
#![warn(missing_docs)]

pub mod bench;
pub mod bert;
pub mod constrain;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod loader;
pub mod lora;
pub mod model;
pub mod ops;
pub mod packed;
pub mod pool;
pub mod prefix;
pub mod qdot;
pub mod quant;
pub mod sampler;
pub mod scheduler;
pub mod template;
pub mod tensor;
pub mod testing;
pub mod tokenizer;

pub use engine::{CatalogEntry, Engine, EngineConfig, LoadedModel};
pub use error::{Error, Result};
