//! OpenAI wire types for chat completions and completions, and their validation into
//! `GenerateRequest` (parse once, then trust the type). Field names spell OpenAI's.

use crate::error::ApiError;
use serde::Deserialize;
use serde_json::Value;
use shovel_core::{ChatMessage, GenerateRequest, ModelId, OutputConstraint, Prompt, SamplingParams, ToolFormat};

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopDto {
    /// One stop string.
    One(String),
    /// Up to four stop strings.
    Many(Vec<String>),
}

/// Message content: a string, or a list of typed parts (text parts are joined).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ContentDto {
    /// Plain text.
    Text(String),
    /// Content parts.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    /// Part type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

/// One chat message.
#[derive(Debug, Deserialize)]
pub struct MessageDto {
    /// Author role.
    pub role: String,
    /// Content; may be null for assistant messages with tool calls.
    pub content: Option<ContentDto>,
    /// Optional author name (ignored).
    pub name: Option<String>,
    /// An assistant message's tool calls (OpenAI's shape).
    pub tool_calls: Option<Vec<Value>>,
    /// A tool message: the call it answers.
    pub tool_call_id: Option<String>,
}

/// `stream_options`.
#[derive(Debug, Deserialize, Default)]
pub struct StreamOptions {
    /// Send a final chunk with usage.
    pub include_usage: Option<bool>,
}

/// Sampling fields shared by both endpoints.
#[derive(Debug, Deserialize, Default)]
pub struct CommonDto {
    /// 0..2.
    pub temperature: Option<f32>,
    /// (0, 1].
    pub top_p: Option<f32>,
    /// Choices to generate, 1..=8.
    pub n: Option<usize>,
    /// Stream with SSE.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Stop strings.
    pub stop: Option<StopDto>,
    /// Maximum generated tokens.
    pub max_tokens: Option<usize>,
    /// -2..2.
    pub presence_penalty: Option<f32>,
    /// -2..2.
    pub frequency_penalty: Option<f32>,
    /// Sampler seed.
    pub seed: Option<u64>,
    /// End-user id (ignored).
    pub user: Option<String>,
    /// Extension: top-k.
    pub top_k: Option<usize>,
    /// Extension: min-p.
    pub min_p: Option<f32>,
    /// Extension: multiplicative repetition penalty.
    pub repetition_penalty: Option<f32>,
    /// Not supported yet.
    pub logit_bias: Option<Value>,
}

/// POST /v1/chat/completions body.
#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    /// Model id.
    pub model: String,
    /// The conversation.
    pub messages: Vec<MessageDto>,
    /// Newer name for `max_tokens`.
    pub max_completion_tokens: Option<usize>,
    /// Return log probabilities of output tokens.
    pub logprobs: Option<bool>,
    /// Alternatives per position, 0..=20 (needs `logprobs`).
    pub top_logprobs: Option<usize>,
    /// Structured output: `{"type": "text" | "json_object"}` or `{"type": "json_schema",
    /// "json_schema": {"name", "schema", "strict"?, "description"?}}`.
    pub response_format: Option<Value>,
    /// Function tools the model may call.
    pub tools: Option<Vec<Value>>,
    /// `none`, `auto` (the default with tools), `required`, or one named function.
    pub tool_choice: Option<Value>,
    /// Whether one reply may make several calls (default false: one call per reply).
    pub parallel_tool_calls: Option<bool>,
    /// Shared sampling fields.
    #[serde(flatten)]
    pub common: CommonDto,
}

/// `prompt`: a string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptDto {
    /// One prompt.
    One(String),
    /// Several prompts (one choice set each).
    Many(Vec<String>),
}

/// POST /v1/completions body.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// Model id.
    pub model: String,
    /// Prompt text.
    pub prompt: PromptDto,
    /// Legacy logprobs: number of alternatives, 0..=5.
    pub logprobs: Option<usize>,
    /// Echo the prompt (not supported).
    pub echo: Option<bool>,
    /// Text appended after the completion (not supported).
    pub suffix: Option<String>,
    /// Shared sampling fields.
    #[serde(flatten)]
    pub common: CommonDto,
}

/// Validated options both endpoints share.
#[derive(Debug, Clone)]
pub struct Plan {
    /// One request per choice (seed offset per choice).
    pub requests: Vec<GenerateRequest>,
    /// Stream?
    pub stream: bool,
    /// Final usage chunk when streaming?
    pub include_usage: bool,
    /// Whether logprobs were asked for.
    pub logprobs: bool,
    /// The tools a chat reply may call; its text is read back as a call when it is one.
    pub tools: Option<crate::tools::ToolUse>,
}

fn range(param: &str, v: Option<f32>, lo: f32, hi: f32, lo_inclusive: bool) -> Result<(), ApiError> {
    if let Some(x) = v {
        let ok = x.is_finite() && (if lo_inclusive { x >= lo } else { x > lo }) && x <= hi;
        if !ok {
            let open = if lo_inclusive { "[" } else { "(" };
            return Err(ApiError::invalid(param, format!("`{param}` must be in {open}{lo}, {hi}], got {x}")));
        }
    }
    Ok(())
}

fn sampling(c: &CommonDto) -> Result<SamplingParams, ApiError> {
    range("temperature", c.temperature, 0.0, 2.0, true)?;
    range("top_p", c.top_p, 0.0, 1.0, false)?;
    range("presence_penalty", c.presence_penalty, -2.0, 2.0, true)?;
    range("frequency_penalty", c.frequency_penalty, -2.0, 2.0, true)?;
    range("min_p", c.min_p, 0.0, 1.0, true)?;
    range("repetition_penalty", c.repetition_penalty, 0.0, 10.0, false)?;
    if c.logit_bias.as_ref().is_some_and(|v| v.as_object().is_some_and(|o| !o.is_empty())) {
        return Err(ApiError::unsupported("logit_bias", "`logit_bias` is not supported yet"));
    }
    let d = SamplingParams::default();
    Ok(SamplingParams {
        temperature: c.temperature.unwrap_or(d.temperature),
        top_p: c.top_p.unwrap_or(d.top_p),
        top_k: c.top_k.unwrap_or(d.top_k),
        min_p: c.min_p.unwrap_or(d.min_p),
        repetition_penalty: c.repetition_penalty.unwrap_or(d.repetition_penalty),
        frequency_penalty: c.frequency_penalty.unwrap_or(d.frequency_penalty),
        presence_penalty: c.presence_penalty.unwrap_or(d.presence_penalty),
        seed: c.seed,
    })
}

fn stops(c: &CommonDto) -> Result<Vec<String>, ApiError> {
    let v = match &c.stop {
        None => vec![],
        Some(StopDto::One(s)) => vec![s.clone()],
        Some(StopDto::Many(v)) => v.clone(),
    };
    if v.len() > 4 {
        return Err(ApiError::invalid("stop", format!("`stop` takes at most 4 sequences, got {}", v.len())));
    }
    if v.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop", "`stop` sequences must not be empty"));
    }
    Ok(v)
}

fn choices(c: &CommonDto) -> Result<usize, ApiError> {
    match c.n {
        None => Ok(1),
        Some(n) if (1..=8).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::invalid("n", format!("`n` must be between 1 and 8, got {n}"))),
    }
}

fn max_tokens(param: &str, v: Option<usize>) -> Result<Option<usize>, ApiError> {
    match v {
        Some(0) => Err(ApiError::invalid(param, format!("`{param}` must be at least 1"))),
        v => Ok(v),
    }
}

fn fan_out(base: GenerateRequest, n: usize) -> Vec<GenerateRequest> {
    (0..n)
        .map(|i| {
            let mut r = base.clone();
            r.sampling.seed = base.sampling.seed.map(|s| s.wrapping_add(i as u64));
            r
        })
        .collect()
}

impl ChatCompletionRequest {
    /// Whether the conversation or the request involves tools (the model's
    /// [`ToolFormat`] then decides how they are written).
    pub fn uses_tools(&self) -> bool {
        self.tools.as_ref().is_some_and(|t| !t.is_empty()) || self.history_has_tools()
    }

    /// Whether earlier turns made tool calls or gave their results.
    fn history_has_tools(&self) -> bool {
        self.messages.iter().any(|m| m.role == "tool" || m.tool_calls.as_ref().is_some_and(|c| !c.is_empty()))
    }

    /// Validates into engine requests; `format` is how the model writes tool calls.
    pub fn plan(self, format: ToolFormat) -> Result<Plan, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid("messages", "`messages` must contain at least one message"));
        }
        // A template with its own format renders earlier calls and results only through its
        // tool template (transformers picks a `tool_use` template whenever tools are passed).
        let history_has_tools = self.history_has_tools();
        let mut messages = Vec::with_capacity(self.messages.len() + 1);
        let mut call_names: std::collections::HashMap<String, String> = Default::default();
        for (i, m) in self.messages.into_iter().enumerate() {
            if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
                return Err(ApiError::invalid(format!("messages[{i}].role"), format!("messages[{i}].role must be one of system, developer, user, assistant, tool; got `{}`", m.role)));
            }
            let content = match m.content {
                None => String::new(),
                Some(ContentDto::Text(t)) => t,
                Some(ContentDto::Parts(parts)) => {
                    let mut s = String::new();
                    for (j, p) in parts.into_iter().enumerate() {
                        if p.kind != "text" {
                            return Err(ApiError::unsupported(format!("messages[{i}].content[{j}].type"), format!("content parts of type `{}` are not supported; only `text`", p.kind)));
                        }
                        s.push_str(&p.text.unwrap_or_default());
                    }
                    s
                }
            };
            // Tool calls and results are written into the conversation as text: the calls as
            // the model writes them, a result as a user turn naming its tool (every chat
            // template has user turns; few have a tool role). A template with its own format
            // gets them as they are, and writes them its way.
            let calls = m.tool_calls.as_deref().unwrap_or_default();
            let field = |e: String| ApiError::invalid(format!("messages[{i}].tool_calls"), format!("messages[{i}].{e}"));
            let turns = match (m.role.as_str(), format) {
                ("developer", _) => vec![ChatMessage::new("system", content)],
                // Llama 3's template renders one call per assistant turn (and refuses more): one
                // turn per call, the text with the first.
                ("assistant", ToolFormat::Llama3) if calls.len() > 1 => crate::tools::calls_for_template(calls, format)
                    .map_err(field)?
                    .into_iter()
                    .enumerate()
                    .map(|(j, c)| ChatMessage { role: "assistant".into(), content: if j == 0 { content.clone() } else { String::new() }, tool_calls: vec![c], tool_call_id: None })
                    .collect(),
                ("assistant", f) if f.own_template() && !calls.is_empty() => {
                    vec![ChatMessage { role: m.role, content, tool_calls: crate::tools::calls_for_template(calls, format).map_err(field)?, tool_call_id: None }]
                }
                ("tool", f) if f.own_template() => {
                    let tool_call_id = m.tool_call_id.map(|id| crate::tools::template_call_id(&id, f));
                    vec![ChatMessage { role: m.role, content, tool_calls: vec![], tool_call_id }]
                }
                ("assistant", _) if !calls.is_empty() => {
                    let text = crate::tools::calls_as_text(calls).map_err(field)?;
                    for c in calls {
                        if let (Some(id), Some(name)) = (c.get("id").and_then(Value::as_str), c.get("function").and_then(|f| f.get("name")).and_then(Value::as_str)) {
                            call_names.insert(id.to_string(), name.to_string());
                        }
                    }
                    vec![ChatMessage::new("assistant", if content.is_empty() { text } else { format!("{content}\n{text}") })]
                }
                ("tool", _) => {
                    let name = m.tool_call_id.as_deref().and_then(|id| call_names.get(id)).map(String::as_str).unwrap_or("the tool");
                    vec![ChatMessage::new("user", format!("Result of {name}: {content}"))]
                }
                _ => vec![ChatMessage::new(m.role, content)],
            };
            messages.extend(turns);
        }
        let tools = crate::tools::parse(self.tools.as_deref(), self.tool_choice.as_ref(), self.parallel_tool_calls, format)?;
        let constraint = match (&self.response_format, &tools) {
            (Some(rf), Some(_)) if response_format(rf)?.is_some() => {
                return Err(ApiError::invalid("response_format", "`response_format` cannot be combined with `tools`: both decide the reply's shape"));
            }
            (_, Some(u)) => {
                u.add_to(&mut messages);
                Some(u.constraint())
            }
            (Some(rf), None) => response_format(rf)?,
            (None, None) => None,
        };
        let logprobs = self.logprobs.unwrap_or(false);
        let top = match (logprobs, self.top_logprobs) {
            (_, Some(k)) if k > 20 => return Err(ApiError::invalid("top_logprobs", format!("`top_logprobs` must be between 0 and 20, got {k}"))),
            (false, Some(_)) => return Err(ApiError::invalid("top_logprobs", "`top_logprobs` needs `logprobs` set to true")),
            (true, k) => Some(k.unwrap_or(0)),
            (false, None) => None,
        };
        let c = &self.common;
        let base = GenerateRequest {
            model: ModelId::new(self.model),
            // Without tools a Hermes conversation with earlier calls still goes through the tool
            // template (a separate `tool_use` one renders them); Llama 3's one template renders
            // them with no tools given.
            prompt: match (&tools, format) {
                (Some(u), f) if f.own_template() => Prompt::ChatWithTools { messages, tools: u.definitions() },
                (None, ToolFormat::Hermes) if history_has_tools => Prompt::ChatWithTools { messages, tools: vec![] },
                _ => Prompt::Chat(messages),
            },
            sampling: sampling(c)?,
            max_tokens: max_tokens("max_completion_tokens", self.max_completion_tokens)?.or(max_tokens("max_tokens", c.max_tokens)?),
            stop: stops(c)?,
            top_logprobs: top,
            constraint,
        };
        Ok(Plan { requests: fan_out(base, choices(c)?), stream: c.stream.unwrap_or(false), include_usage: c.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false), logprobs, tools })
    }
}

impl CompletionRequest {
    /// Validates into engine requests (prompts x n).
    pub fn plan(self) -> Result<Plan, ApiError> {
        let prompts = match self.prompt {
            PromptDto::One(p) => vec![p],
            PromptDto::Many(v) => v,
        };
        if prompts.is_empty() || prompts.iter().all(String::is_empty) {
            return Err(ApiError::invalid("prompt", "`prompt` must not be empty"));
        }
        if self.echo == Some(true) {
            return Err(ApiError::unsupported("echo", "`echo` is not supported yet"));
        }
        if self.suffix.is_some() {
            return Err(ApiError::unsupported("suffix", "`suffix` is not supported"));
        }
        if let Some(k) = self.logprobs {
            if k > 5 {
                return Err(ApiError::invalid("logprobs", format!("`logprobs` must be between 0 and 5, got {k}")));
            }
        }
        let c = &self.common;
        let n = choices(c)?;
        let mut requests = Vec::new();
        for p in prompts {
            let base = GenerateRequest {
                model: ModelId::new(self.model.clone()),
                prompt: Prompt::Text(p),
                sampling: sampling(c)?,
                // OpenAI's legacy default for completions.
                max_tokens: max_tokens("max_tokens", c.max_tokens)?.or(Some(16)),
                stop: stops(c)?,
                top_logprobs: self.logprobs,
                constraint: None,
            };
            requests.extend(fan_out(base, n));
        }
        Ok(Plan {
            requests,
            stream: c.stream.unwrap_or(false),
            include_usage: c.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false),
            logprobs: self.logprobs.is_some(),
            tools: None,
        })
    }
}

/// Parses OpenAI's `response_format` into the engine's output constraint.
fn response_format(rf: &Value) -> Result<Option<OutputConstraint>, ApiError> {
    let Some(obj) = rf.as_object() else {
        return Err(ApiError::invalid("response_format", "`response_format` must be an object such as {\"type\": \"json_object\"}"));
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(OutputConstraint::JsonObject)),
        Some("json_schema") => {
            let Some(js) = obj.get("json_schema").and_then(Value::as_object) else {
                return Err(ApiError::invalid("response_format.json_schema", "`response_format.json_schema` is required when the type is `json_schema`: {\"name\": ..., \"schema\": {...}}"));
            };
            let name = js.get("name").and_then(Value::as_str).unwrap_or("");
            if !crate::tools::valid_name(name) {
                return Err(ApiError::invalid("response_format.json_schema.name", "`response_format.json_schema.name` must be 1 to 64 characters of a-z, A-Z, 0-9, `_` or `-`"));
            }
            if js.get("strict").is_some_and(|v| !v.is_boolean() && !v.is_null()) {
                return Err(ApiError::invalid("response_format.json_schema.strict", "`response_format.json_schema.strict` must be a boolean"));
            }
            // Without a schema any JSON value is allowed; the output is always held to the schema
            // (`strict` false is treated as true: a mask costs nothing extra).
            match js.get("schema") {
                None => Ok(Some(OutputConstraint::JsonSchema(serde_json::json!({})))),
                Some(s) if s.is_object() => Ok(Some(OutputConstraint::JsonSchema(s.clone()))),
                Some(_) => Err(ApiError::invalid("response_format.json_schema.schema", "`response_format.json_schema.schema` must be a JSON Schema object")),
            }
        }
        Some(other) => Err(ApiError::invalid("response_format.type", format!("`response_format.type` must be one of text, json_object, json_schema; got `{other}`"))),
        None => Err(ApiError::invalid("response_format.type", "`response_format.type` is required: text, json_object or json_schema")),
    }
}
