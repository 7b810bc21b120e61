//! Tool calls in chat completions (`tools`, `tool_choice`, `parallel_tool_calls`): the tools are
//! described to the model in the system prompt; the model calls one by replying with a JSON
//! object `{"name", "arguments"}`, or, when the request sets `parallel_tool_calls: true`, several
//! with one such object per line, up to [`MAX_CALLS`]; the engine's grammar holds each to its
//! tool's parameter schema; the reply is returned as OpenAI's `tool_calls`.
//!
//! One call per reply is the default (as in llama.cpp's server; OpenAI's default is several):
//! the built-in models, allowed several, call a tool once per value of an enum ("Weather in
//! Rome?" -> celsius, then fahrenheit) or repeat their first call until `max_tokens`. With
//! several allowed, a call repeated word for word ends the reply ([`end_at_repeated_call`]). Earlier calls and their results in `messages` are written
//! back into the conversation in the same shape, so any chat template can carry them.
//!
//! The built-in models' templates have no tool-call format of their own, so this one format
//! ([`ToolFormat::Json`]) serves every model. A model whose template defines Hermes-style
//! `<tool_call>` tags (Qwen 2 and 2.5, Hermes, and their fine-tunes; [`ToolFormat::Hermes`]) is
//! prompted the way it was trained: its template lists the tools and renders earlier calls and
//! `tool` results itself, and a call is `<tool_call>\n{"name", "arguments"}\n</tool_call>`,
//! held to the tool's schema the same way. Llama 3.1 / 3.2's template ([`ToolFormat::Llama3`])
//! lists the tools itself too, and a call is a bare `{"name", "parameters"}`, one per reply.
//! Mistral's templates ([`ToolFormat::Mistral`]) list the tools in `[AVAILABLE_TOOLS]`, and a
//! reply of calls is the control token `[TOOL_CALLS]` and a JSON list of `{"name", "arguments"}`;
//! in the later form ([`ToolFormat::MistralArgs`]) each call is `[TOOL_CALLS]` name `[ARGS]`
//! arguments. The control tokens have no text, so the reply's text is the list (or the names
//! and arguments) alone; text that is not a call may not start the way calls do.

use crate::error::ApiError;
use serde_json::{json, Value};
use shovel_core::{ChatMessage, Event, EventStream, FinishReason, OutputConstraint, ToolFormat, Usage};

/// A validated function tool.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments (an object schema).
    pub parameters: Value,
}

/// How the reply may use the tools.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// The model answers in text or calls one tool.
    Auto,
    /// The model must call one of the tools.
    Required,
    /// The model must call this tool.
    Named(String),
}

/// Tools of a request and how they may be used; `None` from [`parse`] when there are no tools
/// or `tool_choice` is `none`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolUse {
    /// The tools.
    pub tools: Vec<Tool>,
    /// The choice.
    pub choice: Choice,
    /// Whether one reply may make several calls (`parallel_tool_calls`, default false).
    pub parallel: bool,
    /// How the model writes a call.
    pub format: ToolFormat,
}

/// Hermes-style tags around one call ([`ToolFormat::Hermes`]).
const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// Most calls in one reply: a small model asked for "several" can otherwise repeat calls until
/// `max_tokens`.
pub const MAX_CALLS: usize = 8;

/// OpenAI's rule for function and schema names: 1 to 64 of a-z, A-Z, 0-9, `_`, `-`.
pub(crate) fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Validates `tools` and `tool_choice`; `parallel` is `parallel_tool_calls`; `format` is how the
/// model writes calls.
pub fn parse(tools: Option<&[Value]>, choice: Option<&Value>, parallel: Option<bool>, format: ToolFormat) -> Result<Option<ToolUse>, ApiError> {
    let tools = tools.unwrap_or_default();
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(ApiError::invalid(format!("tools[{i}].type"), format!("`tools[{i}].type` must be `function`")));
        }
        let Some(f) = t.get("function").and_then(Value::as_object) else {
            return Err(ApiError::invalid(format!("tools[{i}].function"), format!("`tools[{i}].function` is required: {{\"name\": ..., \"parameters\": {{...}}}}")));
        };
        let name = f.get("name").and_then(Value::as_str).unwrap_or("");
        if !valid_name(name) {
            return Err(ApiError::invalid(format!("tools[{i}].function.name"), format!("`tools[{i}].function.name` must be 1 to 64 characters of a-z, A-Z, 0-9, `_` or `-`")));
        }
        if out.iter().any(|o: &Tool| o.name == name) {
            return Err(ApiError::invalid(format!("tools[{i}].function.name"), format!("two tools are named `{name}`")));
        }
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p) if p.is_object() => p.clone(),
            Some(_) => return Err(ApiError::invalid(format!("tools[{i}].function.parameters"), format!("`tools[{i}].function.parameters` must be a JSON Schema object"))),
        };
        let description = f.get("description").and_then(Value::as_str).unwrap_or("").to_string();
        out.push(Tool { name: name.to_string(), description, parameters });
    }
    let choice = match choice {
        None => Choice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => return Ok(None),
            "auto" => Choice::Auto,
            "required" => Choice::Required,
            other => return Err(ApiError::invalid("tool_choice", format!("`tool_choice` must be none, auto, required or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}; got `{other}`"))),
        },
        Some(v) => {
            let name = v.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
            match (v.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(n)) if out.iter().any(|t| t.name == n) => Choice::Named(n.to_string()),
                (Some("function"), Some(n)) => return Err(ApiError::invalid("tool_choice", format!("`tool_choice` names `{n}`, which is not among `tools`"))),
                _ => return Err(ApiError::invalid("tool_choice", "`tool_choice` must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}")),
            }
        }
    };
    if out.is_empty() {
        return match choice {
            Choice::Auto => Ok(None),
            _ => Err(ApiError::invalid("tool_choice", "`tool_choice` asks for a tool call but `tools` is empty")),
        };
    }
    // Llama 3's template renders one call per assistant turn and refuses more.
    let parallel = parallel.unwrap_or(false) && format != ToolFormat::Llama3;
    Ok(Some(ToolUse { tools: out, choice, parallel, format }))
}

/// The JSON Schema of one call of `t`.
fn call_schema(t: &Tool, format: ToolFormat) -> Value {
    let args = args_key(format);
    json!({"type": "object", "properties": {"name": {"const": t.name}, args: t.parameters}, "required": ["name", args], "additionalProperties": false})
}

/// The key a call's arguments go under: Llama 3 writes `parameters`.
fn args_key(format: ToolFormat) -> &'static str {
    match format {
        ToolFormat::Llama3 => "parameters",
        ToolFormat::Json | ToolFormat::Hermes | ToolFormat::Mistral { .. } | ToolFormat::MistralArgs { .. } => "arguments",
    }
}

/// JSON spacing as the model learnt it: compact for Shovel's format; Python's `json.dumps`
/// spacing for the models' own formats, as their templates and training data write calls
/// (`{"name": "f", "arguments": {"a": 1}}`).
fn spacing(format: ToolFormat) -> Value {
    match format {
        ToolFormat::Json => json!({"whitespace_flexible": false}),
        _ => json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
    }
}

/// A control token in a Lark grammar, by its id (llguidance's `<[id]>`): Mistral's are written
/// `[TOOL_CALLS]`, which llguidance cannot name as it names `<|python_tag|>`.
fn token(id: u32) -> String {
    format!("<[{id}]>")
}

/// A call id as Mistral's templates take it: 9 letters and digits (Mistral 7B v0.3's template
/// refuses any other length; later ones use the last 9). An id already so shaped is kept;
/// another (Shovel's own are `call_` and 32 hex digits) becomes 9 derived from a hash of all of
/// it, so ids that differ anywhere stay apart (53 bits: two ids of one conversation collide
/// about once in 10^15). A call and the result naming it map alike, so they still pair.
pub fn mistral_call_id(id: &str) -> String {
    if id.len() == 9 && id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return id.to_string();
    }
    // FNV-1a, written out so the mapping never changes between builds.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x1000_0000_01b3);
    }
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..9)
        .map(|_| {
            let c = DIGITS[(h % 62) as usize] as char;
            h /= 62;
            c
        })
        .collect()
}

impl ToolUse {
    /// What the model is told, appended to the system prompt.
    pub fn instructions(&self) -> String {
        let list: Vec<String> = self.tools.iter().map(|t| json!({"name": t.name, "description": t.description, "parameters": t.parameters}).to_string()).collect();
        // With several calls allowed the model is still shown one: told it may write several,
        // the built-in models called a tool once per value of an enum.
        let how = match &self.choice {
            Choice::Auto => "To call a tool, reply with only a JSON object {\"name\": <tool name>, \"arguments\": {...}}; otherwise answer in text.",
            Choice::Required | Choice::Named(_) => "Call a tool: reply with only a JSON object {\"name\": <tool name>, \"arguments\": {...}}.",
        };
        format!("You have these tools:\n{}\n{how}", list.join("\n"))
    }

    /// The grammar of the reply: calls of the chosen tool(s), one per line, at most
    /// [`MAX_CALLS`] (one unless parallel), or (auto) text that does not open a call (with
    /// `{`, or with `<tool_call>` in the Hermes format) or the calls, either after optional
    /// whitespace.
    pub fn constraint(&self) -> OutputConstraint {
        let calls: Vec<Value> = match &self.choice {
            Choice::Named(n) => self.tools.iter().filter(|t| &t.name == n).map(|t| call_schema(t, self.format)).collect(),
            _ => self.tools.iter().map(|t| call_schema(t, self.format)).collect(),
        };
        let chosen: Vec<&Tool> = match &self.choice {
            Choice::Named(n) => self.tools.iter().filter(|t| &t.name == n).collect(),
            _ => self.tools.iter().collect(),
        };
        let schema = json!({"anyOf": calls, "x-guidance": spacing(self.format)});
        let n_more = if self.parallel { MAX_CALLS - 1 } else { 0 };
        let more = |sep: &str| if n_more > 0 { format!(" ({sep}call)~0..{n_more}") } else { String::new() };
        // A reply of calls, and the text a reply that is not one may be. With `auto`, leading
        // whitespace before calls written as text is allowed: some models open every turn with
        // a newline, and forbidding it pushes them onto junk tokens. Mistral's calls open with a
        // control token instead.
        let (calls, text) = match self.format {
            ToolFormat::Json | ToolFormat::Llama3 => (format!("call{}\ncall: %json {schema}", more("NL ")), r"TEXT: /\s*[^{\s](.|\n)*/".to_string()),
            ToolFormat::Hermes => (format!("call{}\ncall: {OPEN:?} NL %json {schema} NL {CLOSE:?}", more("NL ")), format!(r"TEXT: /\s*[^\s](.|\n)*/ & ~/\s*{OPEN}(.|\n)*/")),
            ToolFormat::Mistral { calls } => (format!("{} \" \"? \"[\" call{} \"]\"\ncall: %json {schema}", token(calls), more("\", \" ")), r"TEXT: /\s*[^\[\s](.|\n)*/".to_string()),
            ToolFormat::MistralArgs { calls, args: args_token } => {
                let args = |t: &Tool| {
                    let mut p = t.parameters.clone();
                    p["x-guidance"] = spacing(self.format);
                    p
                };
                let one: Vec<String> = chosen.iter().map(|t| format!("{:?} {} %json {}", t.name, token(args_token), args(t))).collect();
                // Tool names are letters, digits, `_` and `-` (`valid_name`): nothing to escape.
                // Text may not look like a call either, markers written out included (a
                // vocabulary may have them as ordinary tokens with text).
                let names: Vec<&str> = chosen.iter().map(|t| t.name.as_str()).collect();
                (format!("call{}\ncall: {} ({})", more(""), token(calls), one.join(" | ")), format!(r"TEXT: /\s*[^\s](.|\n)*/ & ~/\s*(\[TOOL_CALLS\]|({})\{{)(.|\n)*/", names.join("|")))
            }
        };
        let lead = if matches!(self.format, ToolFormat::Mistral { .. } | ToolFormat::MistralArgs { .. }) { "" } else { "LEAD? " };
        let calls = format!("{calls}\nNL: \"\\n\"");
        match self.choice {
            Choice::Auto => OutputConstraint::Lark(format!("start: text | calls\ntext: TEXT\n{text}\ncalls: {lead}{calls}\nLEAD: /\\s+/")),
            _ => OutputConstraint::Lark(format!("start: {calls}")),
        }
    }

    /// The tools as the request gave them, for a template that lists them itself.
    pub fn definitions(&self) -> Vec<Value> {
        self.tools.iter().map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}})).collect()
    }

    /// Adds the tool instructions to the conversation: to its system message, or as a new first
    /// one. A template with its own format describes the tools itself: nothing is added.
    pub fn add_to(&self, messages: &mut Vec<ChatMessage>) {
        if self.format.own_template() {
            return;
        }
        let text = self.instructions();
        match messages.first_mut() {
            Some(m) if m.role == "system" => m.content = format!("{}\n\n{text}", m.content),
            _ => messages.insert(0, ChatMessage::new("system", text)),
        }
    }

    /// The calls a reply makes, if it makes any: (name, arguments as a JSON string) for each
    /// JSON object of the reply, which must all be calls of these tools (one unless parallel); a
    /// call repeated word for word is made once, and a call cut short after complete ones (a
    /// reply [`end_at_repeated_call`] ended mid-token) is left out.
    pub fn calls_in(&self, text: &str) -> Option<Vec<(String, String)>> {
        let t = text.trim();
        let mut values = Vec::new();
        match self.format {
            ToolFormat::Json | ToolFormat::Llama3 if t.starts_with('{') => {
                for v in serde_json::Deserializer::from_str(t).into_iter::<Value>() {
                    match v {
                        Ok(v) => values.push(v),
                        Err(e) if e.is_eof() && self.parallel && !values.is_empty() => break,
                        Err(_) => return None,
                    }
                }
            }
            // Each call in its tags, nothing but whitespace between. The object is read as
            // JSON first, so a tag inside an argument's string is just text. A repeated call
            // ends the reply after its object: the closing tag may be missing or cut short.
            ToolFormat::Hermes if t.starts_with(OPEN) => {
                let mut rest = t;
                while !rest.is_empty() {
                    let body = rest.strip_prefix(OPEN)?;
                    let mut it = serde_json::Deserializer::from_str(body).into_iter::<Value>();
                    match it.next()? {
                        Ok(v) => values.push(v),
                        Err(e) if e.is_eof() && self.parallel && !values.is_empty() => break,
                        Err(_) => return None,
                    }
                    let after = body[it.byte_offset()..].trim_start();
                    match after.strip_prefix(CLOSE) {
                        Some(r) => rest = r.trim_start(),
                        None if self.parallel && values.len() > 1 && CLOSE.starts_with(after) => break,
                        None => return None,
                    }
                }
            }
            // The list after `[TOOL_CALLS]` (which has no text), and nothing after it.
            ToolFormat::Mistral { .. } if t.starts_with('[') => {
                // A vocabulary that has `[TOOL_CALLS]` as an ordinary added token writes it.
                let t = t.strip_prefix("[TOOL_CALLS]").unwrap_or(t);
                let mut it = serde_json::Deserializer::from_str(t).into_iter::<Value>();
                let Some(Ok(Value::Array(list))) = it.next() else { return None };
                if !t[it.byte_offset()..].trim().is_empty() {
                    return None;
                }
                values = list;
            }
            // Name, then arguments, per call (`[TOOL_CALLS]` and `[ARGS]` have no text).
            ToolFormat::MistralArgs { .. } => {
                let mut rest = t;
                while !rest.is_empty() {
                    let brace = rest.find('{')?;
                    // As above, the markers may have text.
                    let name = rest[..brace].trim_start_matches("[TOOL_CALLS]").trim_end_matches("[ARGS]");
                    let mut it = serde_json::Deserializer::from_str(&rest[brace..]).into_iter::<Value>();
                    let args = it.next()?.ok()?;
                    values.push(json!({"name": name, "arguments": args}));
                    rest = rest[brace + it.byte_offset()..].trim_start();
                }
            }
            _ => return None,
        }
        let mut calls = Vec::new();
        for v in &values {
            let name = v.get("name")?.as_str()?;
            let args = v.get(args_key(self.format))?;
            if !self.tools.iter().any(|x| x.name == name) {
                return None;
            }
            let call = (name.to_string(), args.to_string());
            if !calls.contains(&call) {
                calls.push(call);
            }
        }
        (!calls.is_empty() && values.len() <= if self.parallel { MAX_CALLS } else { 1 }).then_some(calls)
    }
}

/// Whether a reply of calls has written a call it wrote before: its newest complete line (a
/// whole JSON object; a token may carry the newline and the next call's `{` with it) equals an
/// earlier line. A small model allowed several calls can repeat its first until `max_tokens`.
/// In the Hermes format the calls are the lines between the tags.
pub fn repeats_a_call(text: &str) -> bool {
    let t = text.trim_start();
    if !t.starts_with('{') && !t.starts_with(OPEN) {
        return false;
    }
    let lines: Vec<&str> = t.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect();
    let Some(k) = lines.iter().rposition(|l| serde_json::from_str::<Value>(l).is_ok()) else { return false };
    lines[..k].contains(&lines[k])
}

/// `rx`, ended (and its sequence cancelled, by dropping it) at the first call repeated word for
/// word ([`repeats_a_call`]), as if the reply had stopped there; [`ToolUse::calls_in`] makes
/// the repeated call once. The usage of a reply ended this way counts no cached prompt tokens
/// (`Event::Started` does not carry them; the engine's own `Done` would have).
pub fn end_at_repeated_call(mut rx: EventStream) -> EventStream {
    let (tx, out) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut text, mut usage) = (String::new(), Usage::default());
        while let Some(ev) = rx.recv().await {
            let repeated = match &ev {
                Event::Started { prompt_tokens } => {
                    usage.prompt_tokens = *prompt_tokens;
                    false
                }
                Event::Token { text: t, .. } => {
                    usage.completion_tokens += 1;
                    text.push_str(t);
                    // A call can only complete on a token that closes an object.
                    t.contains('}') && repeats_a_call(&text)
                }
                _ => false,
            };
            if tx.send(ev).is_err() {
                return;
            }
            if repeated {
                let _ = tx.send(Event::Done { finish_reason: FinishReason::Stop, usage });
                return;
            }
        }
    });
    out
}

/// An assistant message's `tool_calls` as (name, arguments), the arguments parsed from
/// OpenAI's JSON string where they parse.
fn call_parts(calls: &[Value]) -> Result<Vec<(&str, Value)>, String> {
    let mut out = Vec::new();
    for (j, c) in calls.iter().enumerate() {
        let f = c.get("function").ok_or(format!("tool_calls[{j}].function is required"))?;
        let name = f.get("name").and_then(Value::as_str).ok_or(format!("tool_calls[{j}].function.name is required"))?;
        let args = match f.get("arguments") {
            Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
            Some(v) => v.clone(),
            None => json!({}),
        };
        out.push((name, args));
    }
    Ok(out)
}

/// An assistant message's `tool_calls` as a template that writes calls itself reads them
/// (Hugging Face's convention): `arguments` a JSON object, not OpenAI's string; ids as
/// [`template_call_id`] gives them.
pub fn calls_for_template(calls: &[Value], format: ToolFormat) -> Result<Vec<Value>, String> {
    let parts = call_parts(calls)?;
    let id = |c: &Value| c.get("id").and_then(Value::as_str).map_or(Value::Null, |id| Value::from(template_call_id(id, format)));
    Ok(calls.iter().zip(parts).map(|(c, (name, args))| json!({"id": id(c), "type": "function", "function": {"name": name, "arguments": args}})).collect())
}

/// A call id as `format`'s template takes it: Mistral's as [`mistral_call_id`] makes them,
/// others as given.
pub fn template_call_id(id: &str, format: ToolFormat) -> String {
    match format {
        ToolFormat::Mistral { .. } | ToolFormat::MistralArgs { .. } => mistral_call_id(id),
        _ => id.to_string(),
    }
}

/// An assistant message's `tool_calls`, written as the model writes a call (one JSON object per
/// line), so the conversation shows the model its own earlier calls.
pub fn calls_as_text(calls: &[Value]) -> Result<String, String> {
    let mut lines = Vec::new();
    for (name, args) in call_parts(calls)? {
        // Written by hand so `name` comes first, as the model is told to write a call, whether or
        // not serde_json keeps insertion order in this build.
        lines.push(format!("{{\"name\":{},\"arguments\":{args}}}", Value::from(name)));
    }
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    }

    #[test]
    fn tools_and_choices_validate_naming_the_field() {
        let t = weather();
        let tools = t.as_array().unwrap();
        assert_eq!(parse(Some(tools), None, None, ToolFormat::Json).unwrap().unwrap().choice, Choice::Auto);
        assert_eq!(parse(Some(tools), Some(&json!("none")), None, ToolFormat::Json).unwrap(), None);
        assert_eq!(parse(Some(tools), Some(&json!({"type": "function", "function": {"name": "get_weather"}})), None, ToolFormat::Json).unwrap().unwrap().choice, Choice::Named("get_weather".into()));
        let err = |tools: Value, choice: Option<Value>| parse(Some(tools.as_array().unwrap()), choice.as_ref(), None, ToolFormat::Json).unwrap_err().param.unwrap();
        assert_eq!(err(weather(), Some(json!({"type": "function", "function": {"name": "nope"}}))), "tool_choice");
        assert_eq!(err(weather(), Some(json!("always"))), "tool_choice");
        assert_eq!(err(json!([{"type": "retrieval"}]), None), "tools[0].type");
        assert_eq!(err(json!([{"type": "function", "function": {"name": "a b"}}]), None), "tools[0].function.name");
        assert_eq!(err(json!([{"type": "function", "function": {"name": "a", "parameters": "x"}}]), None), "tools[0].function.parameters");
        assert_eq!(err(json!([]), Some(json!("required"))), "tool_choice");
        assert_eq!(parse(None, None, None, ToolFormat::Json).unwrap(), None);
    }

    #[test]
    fn a_reply_is_a_call_only_when_it_names_a_tool() {
        let u = parse(Some(weather().as_array().unwrap()), None, Some(true), ToolFormat::Json).unwrap().unwrap();
        let paris = ("get_weather".to_string(), r#"{"city":"Paris"}"#.to_string());
        assert_eq!(u.calls_in(r#" {"name":"get_weather","arguments":{"city":"Paris"}}"#), Some(vec![paris.clone()]));
        assert_eq!(u.calls_in(r#"{"name":"other","arguments":{}}"#), None);
        assert_eq!(u.calls_in("It is sunny."), None);
        // Several calls, one per line; all must be calls, and one only when not parallel.
        let two = "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Tokyo\"}}";
        assert_eq!(u.calls_in(two).map(|c| c.len()), Some(2));
        assert_eq!(u.calls_in(&format!("{two}\nand then")), None);
        let single = parse(Some(weather().as_array().unwrap()), None, None, ToolFormat::Json).unwrap().unwrap();
        assert!(!single.parallel, "one call per reply unless asked");
        assert_eq!(single.calls_in(two), None);
        // A call repeated word for word is made once, and ends the reply.
        let again = "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}";
        assert_eq!(u.calls_in(again).map(|c| c.len()), Some(1));
        assert!(repeats_a_call(again) && !repeats_a_call(two) && !repeats_a_call(&again[..again.len() - 1]));
        // The token that ends a repeated call may carry the newline and the next call's opening.
        assert!(repeats_a_call(&format!("{again}\n")) && repeats_a_call(&format!("{again}\n{{\"na")));
        assert_eq!(u.calls_in(&format!("{again}\n{{\"na")).map(|c| c.len()), Some(1));
        assert_eq!(single.calls_in(again), None, "one call only, even repeated");
        assert_eq!(single.calls_in(r#"{"name":"get_weather","arguments":{"city":"Paris"}}"#), Some(vec![paris]));
        // The grammar: up to MAX_CALLS lines of calls when parallel, one otherwise.
        let OutputConstraint::Lark(g) = u.constraint() else { panic!("a Lark grammar") };
        assert!(g.contains(&format!("call (NL call)~0..{}", MAX_CALLS - 1)), "{g}");
        let OutputConstraint::Lark(g) = single.constraint() else { panic!("a Lark grammar") };
        assert!(g.contains("calls: LEAD? call\n"), "{g}");
        let mut msgs = vec![ChatMessage::new("user", "hi")];
        u.add_to(&mut msgs);
        assert_eq!(msgs[0].role, "system");
        assert!(msgs[0].content.contains("get_weather") && msgs[0].content.contains("\"city\""));
        assert_eq!(calls_as_text(&[json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}})]).unwrap(), r#"{"name":"f","arguments":{"a":1}}"#);
    }

    #[test]
    fn the_hermes_format_writes_and_reads_calls_in_tags() {
        let tools = weather();
        let u = parse(Some(tools.as_array().unwrap()), None, Some(true), ToolFormat::Hermes).unwrap().unwrap();
        let paris = ("get_weather".to_string(), r#"{"city":"Paris"}"#.to_string());
        let one = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        assert_eq!(u.calls_in(one), Some(vec![paris.clone()]));
        assert_eq!(u.calls_in(&format!("\n{one}\n")), Some(vec![paris.clone()]), "whitespace around");
        let tokyo = one.replace("Paris", "Tokyo");
        assert_eq!(u.calls_in(&format!("{one}\n{tokyo}")).map(|c| c.len()), Some(2));
        // Text is not a call; neither is a bare object, text after a call, or a tag left open
        // unless a repeated call ended the reply there.
        assert_eq!(u.calls_in("It is sunny."), None);
        assert_eq!(u.calls_in(r#"{"name":"get_weather","arguments":{"city":"Paris"}}"#), None);
        assert_eq!(u.calls_in(&format!("{one} and more")), None);
        assert_eq!(u.calls_in(&one[..one.len() - CLOSE.len()]), None);
        let repeated = format!("{one}\n<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"Paris\"}}}}");
        assert!(repeats_a_call(&repeated) && !repeats_a_call(one));
        assert_eq!(u.calls_in(&repeated), Some(vec![paris.clone()]));
        // The tags inside an argument are text; a repeat may cut the closing tag short.
        let echo = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"a </tool_call> <tool_call> b\"}}\n</tool_call>";
        assert_eq!(u.calls_in(echo).map(|c| c[0].1.clone()), Some(r#"{"city":"a </tool_call> <tool_call> b"}"#.to_string()));
        assert_eq!(u.calls_in(&format!("{repeated}\n</")), Some(vec![paris.clone()]));
        assert_eq!(u.calls_in(&format!("{one}\n</")), None, "a cut tag only after a repeat");
        let single = parse(Some(tools.as_array().unwrap()), None, None, ToolFormat::Hermes).unwrap().unwrap();
        assert_eq!(single.calls_in(&format!("{one}\n{tokyo}")), None, "one call unless parallel");
        assert_eq!(single.calls_in(&repeated), None);
        // The grammar wraps each call in the tags; text may not open one; nothing is added to
        // the conversation (the template lists the tools).
        let OutputConstraint::Lark(g) = u.constraint() else { panic!("a Lark grammar") };
        assert!(g.contains(r#"call: "<tool_call>" NL %json"#) && g.contains(r#"NL "</tool_call>""#) && g.contains("~/\\s*<tool_call>"), "{g}");
        assert!(g.contains(r#""key_separator":": ""#), "Python's spacing: {g}");
        let mut msgs = vec![ChatMessage::new("user", "hi")];
        u.add_to(&mut msgs);
        assert_eq!(msgs.len(), 1);
        assert_eq!(u.definitions()[0]["function"]["name"], "get_weather");
        let c = calls_for_template(&[json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}})], ToolFormat::Hermes).unwrap();
        assert_eq!(c[0]["function"]["arguments"], json!({"a": 1}));
        assert_eq!(c[0]["id"], "c1");
    }

    #[test]
    fn the_llama3_format_writes_calls_as_parameters_one_per_reply() {
        let tools = weather();
        let u = parse(Some(tools.as_array().unwrap()), None, Some(true), ToolFormat::Llama3).unwrap().unwrap();
        assert!(!u.parallel, "Llama 3's template renders one call per turn");
        let call = r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#;
        assert_eq!(u.calls_in(call), Some(vec![("get_weather".to_string(), r#"{"city":"Paris"}"#.to_string())]));
        assert_eq!(u.calls_in(r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#), None, "Llama 3 writes parameters");
        assert_eq!(u.calls_in(&format!("{call}\n{call}")), None);
        let OutputConstraint::Lark(g) = u.constraint() else { panic!("a Lark grammar") };
        assert!(g.contains(r#""required":["name","parameters"]"#) && g.contains(r#""key_separator":": ""#), "{g}");
        let mut msgs = vec![ChatMessage::new("user", "hi")];
        u.add_to(&mut msgs);
        assert_eq!(msgs.len(), 1, "the template lists the tools");
    }

    const MISTRAL: ToolFormat = ToolFormat::Mistral { calls: 5 };
    const LATER: ToolFormat = ToolFormat::MistralArgs { calls: 5, args: 32 };

    #[test]
    fn the_mistral_format_reads_a_list_after_the_control_token() {
        let tools = weather();
        let u = parse(Some(tools.as_array().unwrap()), None, Some(true), MISTRAL).unwrap().unwrap();
        let paris = ("get_weather".to_string(), r#"{"city":"Paris"}"#.to_string());
        // `[TOOL_CALLS]` has no text: the reply's text is the list.
        let one = r#" [{"name": "get_weather", "arguments": {"city": "Paris"}}]"#;
        assert_eq!(u.calls_in(one), Some(vec![paris.clone()]));
        let two = r#"[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_weather", "arguments": {"city": "Tokyo"}}]"#;
        assert_eq!(u.calls_in(two).map(|c| c.len()), Some(2));
        assert_eq!(u.calls_in(&format!("{one} and more")), None);
        assert_eq!(u.calls_in(r#"[{"name": "other", "arguments": {}}]"#), None);
        assert_eq!(u.calls_in(r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#), None, "a bare object is not Mistral's");
        assert_eq!(u.calls_in("[1, 2]"), None);
        assert_eq!(u.calls_in(&format!("[TOOL_CALLS]{one}")), Some(vec![paris.clone()]), "the marker as text");
        let single = parse(Some(tools.as_array().unwrap()), None, None, MISTRAL).unwrap().unwrap();
        assert_eq!(single.calls_in(two), None, "one call unless parallel");
        // The grammar opens calls with the control token; text may not open with `[`.
        let OutputConstraint::Lark(g) = u.constraint() else { panic!("a Lark grammar") };
        assert!(g.contains(r#"<[5]> " "? "[" call (", " call)~0..7 "]""#) && g.contains(r"TEXT: /\s*[^\[\s]"), "{g}");
        let OutputConstraint::Lark(g) = single.constraint() else { panic!("a Lark grammar") };
        assert!(g.contains(r#""[" call "]""#), "{g}");
        // Ids become 9 letters and digits, alike for a call and its result.
        assert_eq!(mistral_call_id("abcDEF123"), "abcDEF123");
        let ours = mistral_call_id("call_0123456789abcdef0123456789abcdef");
        assert!(ours.len() == 9 && ours.chars().all(|c| c.is_ascii_alphanumeric()), "{ours}");
        assert_ne!(mistral_call_id("0_get_weather"), mistral_call_id("1_get_weather"), "ids that share an ending stay apart");
        let short = mistral_call_id("c1");
        assert!(short.len() == 9 && short.chars().all(|c| c.is_ascii_alphanumeric()) && short == mistral_call_id("c1") && short != mistral_call_id("c2"), "{short}");
        let c = calls_for_template(&[json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}})], MISTRAL).unwrap();
        assert_eq!(c[0]["id"], json!(short));
        assert_eq!(template_call_id("c1", ToolFormat::Hermes), "c1");
    }

    #[test]
    fn the_later_mistral_format_reads_names_and_arguments() {
        let mut tools = weather();
        tools.as_array_mut().unwrap().push(json!({"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}));
        let u = parse(Some(tools.as_array().unwrap()), None, Some(true), LATER).unwrap().unwrap();
        // `[TOOL_CALLS]` and `[ARGS]` have no text: name, then arguments, per call.
        assert_eq!(u.calls_in(r#"get_weather{"city": "Paris"}"#), Some(vec![("get_weather".to_string(), r#"{"city":"Paris"}"#.to_string())]));
        assert_eq!(u.calls_in(r#"get_weather{"city": "Paris"}get_time{}"#).map(|c| c.len()), Some(2));
        assert_eq!(u.calls_in(r#"get_weather{"city": "Paris"} then"#), None);
        assert_eq!(u.calls_in(r#"[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}"#).map(|c| c.len()), Some(1), "the markers as text");
        assert_eq!(u.calls_in("It is {warm}."), None);
        assert_eq!(u.calls_in("sunny"), None);
        let OutputConstraint::Lark(g) = u.constraint() else { panic!("a Lark grammar") };
        assert!(g.contains(r#"call: <[5]> ("get_weather" <[32]> %json {"#) && g.contains(r#"| "get_time" <[32]> %json {"#), "{g}");
        assert!(g.contains(r"& ~/\s*(\[TOOL_CALLS\]|(get_weather|get_time)\{)"), "{g}");
        let named = parse(Some(tools.as_array().unwrap()), Some(&json!({"type": "function", "function": {"name": "get_time"}})), None, LATER).unwrap().unwrap();
        let OutputConstraint::Lark(g) = named.constraint() else { panic!("a Lark grammar") };
        assert!(g.contains(r#"("get_time" <[32]>"#) && !g.contains("get_weather"), "{g}");
    }
}
