//! A validated generation request and what comes back for it.
//!
//! The server parses the OpenAI wire DTOs once into [`GenerateRequest`] (ranges checked, defaults
//! filled) and from then on the engine trusts it.

use crate::ids::ModelId;
use serde::{Deserialize, Serialize};

/// One chat message: its text and, for templates that write tool calls themselves
/// ([`crate::ToolFormat::Hermes`]), the calls an assistant message made and the call a `tool`
/// message answers. Serialized as the template sees it (Hugging Face's message dicts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The message text.
    pub content: String,
    /// An assistant message's calls, OpenAI-shaped (`{"id", "type": "function", "function":
    /// {"name", "arguments"}}`) with `arguments` a JSON object, as templates write it; empty
    /// where the calls are written into `content`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<serde_json::Value>,
    /// A `tool` message's call id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message of text alone.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into(), ..Default::default() }
    }
}

/// What the model continues from.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Chat messages, rendered with the model's chat template (generation prompt added).
    Chat(Vec<ChatMessage>),
    /// Chat messages and the tools the model may call, OpenAI-shaped (`{"type": "function",
    /// "function": {"name", "description", "parameters"}}`), both given to a template that
    /// describes tools itself ([`crate::ToolFormat::Hermes`]).
    ChatWithTools {
        /// The conversation.
        messages: Vec<ChatMessage>,
        /// The tools.
        tools: Vec<serde_json::Value>,
    },
    /// Raw text, tokenized with BOS as the model's metadata asks; no template.
    Text(String),
}

/// Sampling settings, with OpenAI's defaults and llama.cpp-style extensions.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling mass, in (0, 1].
    pub top_p: f32,
    /// Keep only the k most likely tokens; 0 disables.
    pub top_k: usize,
    /// Drop tokens whose probability is below `min_p` times the best one's; 0 disables.
    pub min_p: f32,
    /// Multiplicative penalty on tokens already seen (llama.cpp semantics); 1 disables.
    pub repetition_penalty: f32,
    /// OpenAI frequency penalty, in [-2, 2].
    pub frequency_penalty: f32,
    /// OpenAI presence penalty, in [-2, 2].
    pub presence_penalty: f32,
    /// Seed for the sampler's RNG; `None` draws one.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0, repetition_penalty: 1.0, frequency_penalty: 0.0, presence_penalty: 0.0, seed: None }
    }
}

/// A request the engine can run as is.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// Which model to run.
    pub model: ModelId,
    /// What to continue.
    pub prompt: Prompt,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Upper bound on generated tokens; `None` means "until the context is full".
    pub max_tokens: Option<usize>,
    /// Strings that end generation; they are not included in the output.
    pub stop: Vec<String>,
    /// Number of most likely alternatives to report per token; `None` means no logprobs.
    pub top_logprobs: Option<usize>,
    /// A grammar the output must follow (structured output); `None` leaves it free.
    pub constraint: Option<OutputConstraint>,
}

/// A grammar generated text must follow. The engine masks every token that would leave it, so
/// the output is valid by construction; generation ends when the grammar is complete.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputConstraint {
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// A JSON value matching this JSON Schema (OpenAI's `json_schema` response format).
    JsonSchema(serde_json::Value),
    /// A grammar in llguidance's Lark dialect (which can embed JSON schemas with `%json`).
    Lark(String),
}

/// Why generation ended, spelled as OpenAI spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-turn token or a stop string.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
}

impl FinishReason {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Token counts for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt (after templating).
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache instead of being computed.
    #[serde(default)]
    pub cached_tokens: usize,
}

impl Usage {
    /// Prompt plus completion.
    pub fn total_tokens(&self) -> usize {
        self.prompt_tokens + self.completion_tokens
    }
}

/// One alternative at a position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its natural-log probability under the model (before sampling filters).
    pub logprob: f32,
    /// Its UTF-8 bytes (a token may hold part of a character).
    pub bytes: Vec<u8>,
}

/// The log probability of a chosen token and, on request, the alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The chosen token.
    pub chosen: TopLogprob,
    /// The most likely tokens at this position, best first.
    pub top: Vec<TopLogprob>,
}
