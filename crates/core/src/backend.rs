//! The seam between the HTTP server and whatever runs models.

use crate::ids::ModelId;
use crate::request::{FinishReason, GenerateRequest, TokenLogprob, Usage};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Generates text (chat and completions).
    Chat,
    /// Produces embeddings.
    Embedding,
}

/// How a model writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// Shovel's own, for any template: the tools are described in the system prompt and a call
    /// is a bare JSON object `{"name", "arguments"}` per line.
    Json,
    /// The model's own, Hermes-style, as Qwen 2.5 and Hermes templates define it: the template
    /// renders the tools, earlier calls and `tool` results itself, and a call is
    /// `<tool_call>\n{"name", "arguments"}\n</tool_call>`.
    Hermes,
    /// The model's own, as Llama 3.1's and 3.2's templates define it: the template lists the
    /// tools (in the first user turn) and renders earlier calls and `tool` results itself (as
    /// `ipython` turns), and a call is a bare JSON object `{"name", "parameters"}`, one per
    /// reply (the template refuses to render several).
    Llama3,
    /// The model's own, as Mistral's templates define it for the v3 and v7 tokenizers (Mistral
    /// 7B Instruct v0.3, Mistral Nemo, Mistral Small 3 and 3.1): the template lists the tools
    /// (`[AVAILABLE_TOOLS]`) and renders earlier calls and `tool` results itself, with call ids
    /// of 9 letters and digits, and a reply of calls is the control token `[TOOL_CALLS]` and a
    /// JSON list `[{"name", "arguments"}, ...]`.
    Mistral {
        /// The id of the `[TOOL_CALLS]` token in the model's vocabulary.
        calls: u32,
    },
    /// Mistral's later form (v11 tokenizers and on: Mistral Small 3.2, Magistral): each call is
    /// `[TOOL_CALLS]` name `[ARGS]` arguments, the two markers control tokens.
    MistralArgs {
        /// The id of `[TOOL_CALLS]`.
        calls: u32,
        /// The id of `[ARGS]`.
        args: u32,
    },
}

impl ToolFormat {
    /// Whether the model's template lists the tools and renders calls and results itself.
    pub fn own_template(self) -> bool {
        self != ToolFormat::Json
    }
}

/// A model as the catalogue lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Public id.
    pub id: ModelId,
    /// Who provides it (`shovel` for built-in ones, `user` for imports).
    pub owned_by: String,
    /// Unix seconds when it was registered.
    pub created: i64,
    /// What it is for.
    pub kind: ModelKind,
}

/// One step of a running generation, sent from the engine to whoever submitted the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The prompt was accepted; how many tokens it has.
    Started {
        /// Tokens in the prompt after templating.
        prompt_tokens: usize,
    },
    /// New output text. A token that ends inside a UTF-8 character yields its text when complete,
    /// so `text` may be empty for such a token and longer for the next.
    Token {
        /// The text this token completes.
        text: String,
        /// The token's id.
        id: u32,
        /// Its log probability, when the request asked for logprobs.
        logprob: Option<TokenLogprob>,
    },
    /// Generation ended normally.
    Done {
        /// Why it ended.
        finish_reason: FinishReason,
        /// The engine's token counts.
        usage: Usage,
    },
    /// Generation failed after it had started.
    Error(BackendError),
}

/// The receiving end of a generation (unbounded: a slow reader must never stall the engine's
/// batch; output is bounded by `max_tokens`). Dropping it cancels the request: the engine frees the
/// sequence at its next step.
pub type EventStream = mpsc::UnboundedReceiver<Event>;

/// Errors a backend reports; the server maps each to an HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// No model with this id is served.
    #[error("The model `{model}` does not exist")]
    ModelNotFound {
        /// The id asked for.
        model: ModelId,
    },
    /// The model exists but cannot do what was asked (e.g. chat on an embedding model).
    #[error("{message}")]
    Unsupported {
        /// What cannot be done.
        message: String,
        /// The request field at fault.
        param: Option<String>,
    },
    /// A request field the backend cannot use as given (e.g. a JSON schema that does not compile).
    #[error("{message}")]
    InvalidParam {
        /// What is wrong, naming the problem.
        message: String,
        /// The request field at fault.
        param: String,
    },
    /// The prompt plus `max_tokens` does not fit in the model's context.
    #[error(
        "This model's maximum context length is {context_length} tokens. However, you requested \
         {requested} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). \
         Please reduce the length of the messages or completion."
    )]
    ContextOverflow {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// Tokens asked for.
        max_tokens: usize,
        /// Their sum.
        requested: usize,
        /// The model's context length.
        context_length: usize,
    },
    /// The prompt has no tokens to continue from.
    #[error("The prompt is empty")]
    EmptyPrompt,
    /// Loading the model failed.
    #[error("Model `{model}` could not be loaded: {reason}")]
    LoadFailed {
        /// The model.
        model: ModelId,
        /// What went wrong.
        reason: String,
    },
    /// The backend is at capacity; retry later.
    #[error("The server is overloaded; retry later")]
    Overloaded,
    /// Constrained decoding reached a state where its grammar allows no token (rules that no
    /// output satisfies together); details are logged, not sent.
    #[error("constrained decoding failed: {0}")]
    ConstraintFailed(String),
    /// Anything else; details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A gauge a backend reports for /metrics, per model.
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    /// Metric family, `shovel_<noun>_<unit>`.
    pub family: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// The model it describes.
    pub model: ModelId,
    /// The value now.
    pub value: f64,
}

/// One input to embed.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbedInput {
    /// A text, tokenized by the model.
    Text(String),
    /// Token ids of a text in the model's vocabulary, without special tokens (the model adds its
    /// own, as it does for a text).
    Tokens(Vec<u32>),
}

/// A request for embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    /// The embedding model.
    pub model: ModelId,
    /// What to embed, in order.
    pub inputs: Vec<EmbedInput>,
}

/// The answer to an [`EmbedRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector per input, in the inputs' order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read, special tokens included.
    pub prompt_tokens: usize,
}

/// Runs generation requests. Implemented by the engine (local models) and by fakes in tests.
#[async_trait::async_trait]
pub trait InferenceBackend: Send + Sync + 'static {
    /// The models this backend can serve now.
    async fn models(&self) -> Vec<ModelInfo>;

    /// Starts a generation. Errors found before any token (unknown model, context overflow)
    /// come back here; later ones arrive as [`Event::Error`].
    async fn submit(&self, req: GenerateRequest) -> Result<EventStream, BackendError>;

    /// Embeds texts with an embedding model. Backends without embedding models refuse.
    async fn embed(&self, req: EmbedRequest) -> Result<Embeddings, BackendError> {
        Err(BackendError::Unsupported { message: format!("`{}` cannot produce embeddings here", req.model), param: Some("model".into()) })
    }

    /// How `model` writes tool calls ([`ToolFormat::Json`] unless its chat template has a
    /// format of its own). May load the model.
    async fn tool_format(&self, model: &ModelId) -> Result<ToolFormat, BackendError> {
        let _ = model;
        Ok(ToolFormat::Json)
    }

    /// Gauges for /metrics (running and waiting sequences, cache sizes); none by default.
    async fn gauges(&self) -> Vec<Gauge> {
        Vec::new()
    }
}
