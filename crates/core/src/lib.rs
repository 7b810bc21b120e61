//! Shovel's core: ids, domain types and the seam traits the subsystems talk through.
//!
//! Nothing here does I/O, speaks HTTP or touches a tensor. The server talks to whatever runs
//! models through [`InferenceBackend`]; the engine implements it, and tests implement it with a
//! fake (see [`testing`]) so HTTP can be tested without a model.
#![warn(missing_docs)]

pub mod backend;
pub mod files;
pub mod fine_tuning;
pub mod ids;
pub mod request;
pub mod testing;

pub use backend::{BackendError, EmbedInput, EmbedRequest, Embeddings, Event, EventStream, Gauge, InferenceBackend, ModelInfo, ModelKind, ToolFormat};
pub use files::{FileError, FileObject, FileStore, Purpose};
pub use fine_tuning::{CreateJob, FineTuning, FtError, Job, JobCheckpoint, JobEvent};
pub use ids::{ModelId, Principal, TenantId};
pub use request::{ChatMessage, FinishReason, GenerateRequest, OutputConstraint, Prompt, SamplingParams, TokenLogprob, TopLogprob, Usage};
