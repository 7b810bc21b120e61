//! Test support: a fake [`InferenceBackend`] so HTTP tests run without a model.
//!
//! The fake "model" answers by echoing the words of the last message (or the raw prompt) back,
//! one word per token, which makes streaming, usage and stop handling checkable by exact text.

use crate::backend::{BackendError, EmbedInput, EmbedRequest, Embeddings, Event, EventStream, InferenceBackend, ModelInfo, ModelKind, ToolFormat};
use crate::ids::ModelId;
use crate::request::{FinishReason, GenerateRequest, Prompt, Usage};
use tokio::sync::mpsc;

/// A backend that serves one model id and echoes the prompt's words.
#[derive(Debug, Clone)]
pub struct EchoBackend {
    /// The single model id it serves.
    pub model: ModelId,
    /// Its context length, for overflow checks.
    pub context_length: usize,
    /// How its "template" writes tool calls.
    pub tool_format: ToolFormat,
    /// The last prompt submitted, for tests to inspect.
    pub last_prompt: std::sync::Arc<std::sync::Mutex<Option<Prompt>>>,
}

impl EchoBackend {
    /// An echo backend serving `model` with a 64-token context.
    pub fn new(model: &str) -> Self {
        EchoBackend { model: ModelId::new(model), context_length: 64, tool_format: ToolFormat::Json, last_prompt: Default::default() }
    }
}

fn words(prompt: &Prompt) -> Vec<String> {
    let text = match prompt {
        Prompt::Chat(msgs) | Prompt::ChatWithTools { messages: msgs, .. } => msgs.last().map(|m| m.content.clone()).unwrap_or_default(),
        Prompt::Text(t) => t.clone(),
    };
    text.split_whitespace().map(|w| format!(" {w}")).collect()
}

#[async_trait::async_trait]
impl InferenceBackend for EchoBackend {
    async fn models(&self) -> Vec<ModelInfo> {
        vec![ModelInfo { id: self.model.clone(), owned_by: "test".into(), created: 0, kind: ModelKind::Chat }]
    }

    /// The echo model embeds too: a text becomes `[words, characters]`, token ids `[count, sum]`;
    /// each word or id counts as a token.
    async fn embed(&self, req: EmbedRequest) -> Result<Embeddings, BackendError> {
        if req.model != self.model {
            return Err(BackendError::ModelNotFound { model: req.model });
        }
        let mut prompt_tokens = 0;
        let vectors = req
            .inputs
            .iter()
            .map(|i| match i {
                EmbedInput::Text(t) => {
                    let w = t.split_whitespace().count();
                    prompt_tokens += w;
                    vec![w as f32, t.chars().count() as f32]
                }
                EmbedInput::Tokens(ids) => {
                    prompt_tokens += ids.len();
                    vec![ids.len() as f32, ids.iter().map(|&x| x as f32).sum()]
                }
            })
            .collect();
        Ok(Embeddings { vectors, prompt_tokens })
    }

    async fn tool_format(&self, model: &ModelId) -> Result<ToolFormat, BackendError> {
        if *model != self.model {
            return Err(BackendError::ModelNotFound { model: model.clone() });
        }
        Ok(self.tool_format)
    }

    async fn submit(&self, req: GenerateRequest) -> Result<EventStream, BackendError> {
        if req.model != self.model {
            return Err(BackendError::ModelNotFound { model: req.model });
        }
        *self.last_prompt.lock().expect("not poisoned") = Some(req.prompt.clone());
        let words = words(&req.prompt);
        if words.is_empty() {
            return Err(BackendError::EmptyPrompt);
        }
        let prompt_tokens = words.len();
        let max_tokens = req.max_tokens.unwrap_or(self.context_length - prompt_tokens);
        if prompt_tokens + max_tokens > self.context_length {
            return Err(BackendError::ContextOverflow { prompt_tokens, max_tokens, requested: prompt_tokens + max_tokens, context_length: self.context_length });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let _ = tx.send(Event::Started { prompt_tokens });
            let mut n = 0;
            let mut out = String::new();
            let mut finish = FinishReason::Stop;
            for (i, w) in words.iter().enumerate() {
                if n == max_tokens {
                    finish = FinishReason::Length;
                    break;
                }
                out.push_str(w);
                if req.stop.iter().any(|s| !s.is_empty() && out.contains(s.as_str())) {
                    break;
                }
                n += 1;
                if tx.send(Event::Token { text: w.clone(), id: i as u32, logprob: None }).is_err() {
                    return;
                }
            }
            let usage = Usage { prompt_tokens, completion_tokens: n, cached_tokens: 0 };
            let _ = tx.send(Event::Done { finish_reason: finish, usage });
        });
        Ok(rx)
    }
}
