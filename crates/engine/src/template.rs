//! Chat templates: the model's own Jinja template rendered with minijinja the way Hugging Face
//! transformers renders it (`trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`,
//! Python string methods), so a prompt here is byte-for-byte the prompt the model was trained on.
//!
//! This is the one implementation: the trainer renders its examples through it too, so a tuned
//! model sees at serving time exactly what it was trained on.

use crate::error::{Error, Result};
use minijinja::{context, Environment, ErrorKind, Value};
use shovel_core::{ChatMessage, ToolFormat};

/// ChatML, the fallback llama.cpp uses for models without a template of their own; used when the
/// vocabulary has ChatML's tokens.
pub const CHATML: &str = "{%- for message in messages -%}{{ '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}";

/// A plain transcript, the fallback for base models whose vocabulary has no ChatML tokens
/// (Gemma 3 270M): in ChatML such a model only sees unfamiliar markup and echoes the question,
/// while it continues a "User:/Assistant:" transcript sensibly. Generation stops at the next
/// "\nUser:".
pub const TRANSCRIPT: &str = "{%- for message in messages -%}{%- if message.role == 'system' -%}{{ message.content + '\n\n' }}{%- elif message.role == 'user' -%}{{ 'User: ' + message.content + '\n' }}{%- else -%}{{ 'Assistant: ' + message.content + '\n' }}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}";

/// Which template a model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// The model's own template.
    Own,
    /// The ChatML fallback.
    ChatMl,
    /// The plain transcript fallback.
    Transcript,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template source.
    pub source: String,
    /// Whether this is the model's own template or a fallback.
    pub kind: TemplateKind,
    /// Stop strings the template implies (a fallback's turn marker the vocabulary lacks).
    pub stops: Vec<String>,
    /// A separate template for prompts with tools (a tokenizer's named `tool_use` template).
    pub tool_use: Option<String>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("kind", &self.kind).finish()
    }
}

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(fmt: String) -> String {
    // Templates use this for "today's date" lines. Without a time-zone database we give UTC.
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86400) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    const MON: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    fmt.replace("%Y", &y.to_string()).replace("%m", &format!("{m:02}")).replace("%d", &format!("{d:02}")).replace("%B", MONTHS[(m - 1) as usize]).replace("%b", MON[(m - 1) as usize])
}

/// JSON the way transformers' chat templates write it: Python's `json.dumps` with
/// `ensure_ascii=False` (its override of Jinja's filter), so `", "` and `": "` between items
/// (`","` with an `indent`), `separators`, `ensure_ascii` and `sort_keys` as keywords, and no HTML
/// escaping.
/// minijinja's own filter writes compact JSON with `<`, `>`, `&` and `'` escaped: a tool list
/// rendered by it is not the text the model was trained on. Keys keep the order they were
/// written in (serde_json's and minijinja's `preserve_order`), as Python's dicts do, unless
/// `sort_keys`.
fn tojson(value: &Value, indent: Option<Value>, kwargs: minijinja::value::Kwargs) -> std::result::Result<String, minijinja::Error> {
    let bad = |what: &str| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {what}"));
    let indent = match indent.or(kwargs.get::<Option<Value>>("indent")?) {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(usize::try_from(v).map_err(|_| bad("indent must be a number"))?),
    };
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let seps: Option<Vec<String>> = kwargs.get("separators")?;
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let (item, key) = match seps {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        Some(_) => return Err(bad("separators must be two strings")),
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    let mut out = Vec::new();
    let f = PyJson { item, key, indent: indent.map(|n| " ".repeat(n)), level: 0, has_value: false, ensure_ascii };
    let mut ser = serde_json::Serializer::with_formatter(&mut out, f);
    if sort_keys {
        let mut v = serde_json::to_value(value).map_err(|e| bad(&e.to_string()))?;
        v.sort_all_objects();
        serde::Serialize::serialize(&v, &mut ser)
    } else {
        serde::Serialize::serialize(value, &mut ser)
    }
    .map_err(|e| bad(&e.to_string()))?;
    String::from_utf8(out).map_err(|e| bad(&e.to_string()))
}

/// A serde_json formatter with Python's `json.dumps` layout.
struct PyJson {
    item: String,
    key: String,
    indent: Option<String>,
    level: usize,
    has_value: bool,
    ensure_ascii: bool,
}

impl PyJson {
    fn newline<W: ?Sized + std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        if let Some(ind) = &self.indent {
            w.write_all(b"\n")?;
            for _ in 0..self.level {
                w.write_all(ind.as_bytes())?;
            }
        }
        Ok(())
    }
    fn open<W: ?Sized + std::io::Write>(&mut self, w: &mut W, c: &[u8]) -> std::io::Result<()> {
        self.level += 1;
        self.has_value = false;
        w.write_all(c)
    }
    fn close<W: ?Sized + std::io::Write>(&mut self, w: &mut W, c: &[u8]) -> std::io::Result<()> {
        self.level -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        self.has_value = true;
        w.write_all(c)
    }
    fn next<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if !first {
            w.write_all(self.item.as_bytes())?;
        }
        self.newline(w)
    }
}

impl serde_json::ser::Formatter for PyJson {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"[")
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"]")
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.next(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"{")
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"}")
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.next(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(self.key.as_bytes())
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn write_string_fragment<W: ?Sized + std::io::Write>(&mut self, w: &mut W, fragment: &str) -> std::io::Result<()> {
        if !self.ensure_ascii {
            return w.write_all(fragment.as_bytes());
        }
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                for u in c.encode_utf16(&mut [0; 2]) {
                    write!(w, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

impl ChatTemplate {
    /// Compiles `source`; without one, a fallback: ChatML when the vocabulary has its tokens
    /// (`has_chatml`), else a plain transcript.
    pub fn new(source: Option<&str>, bos: &str, eos: &str, has_chatml: bool) -> Result<Self> {
        let (src, kind, stops) = match source {
            Some(s) if !s.trim().is_empty() => (s.to_string(), TemplateKind::Own, vec![]),
            _ if has_chatml => (CHATML.to_string(), TemplateKind::ChatMl, vec![]),
            _ => (TRANSCRIPT.to_string(), TemplateKind::Transcript, vec!["\nUser:".to_string()]),
        };
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", src.clone()).map_err(|e| Error::Template(e.to_string()))?;
        Ok(ChatTemplate { env, source: src, kind, stops, tool_use: None, bos: bos.to_string(), eos: eos.to_string() })
    }

    /// Adds the template a tokenizer names `tool_use`, which transformers renders instead of the
    /// default one when tools are given.
    pub fn with_tool_use(mut self, source: Option<&str>) -> Result<Self> {
        if let Some(src) = source.filter(|s| !s.trim().is_empty()) {
            self.env.add_template_owned("tool_use", src.to_string()).map_err(|e| Error::Template(e.to_string()))?;
            self.tool_use = Some(src.to_string());
        }
        Ok(self)
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// answer begins.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// Renders `messages` with the `tools` a template that describes them itself lists (as
    /// Hugging Face's `apply_chat_template(tools=...)` passes them; `None` passes `none`, as
    /// transformers does), through the `tool_use` template when there are tools and one.
    pub fn render_with_tools(&self, messages: &[ChatMessage], tools: Option<&[serde_json::Value]>, add_generation_prompt: bool) -> Result<String> {
        let name = if tools.is_some() && self.tool_use.is_some() { "tool_use" } else { "chat" };
        let tmpl = self.env.get_template(name).map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        })
        .map_err(|e| Error::Template(e.to_string()))
    }

    /// How the model writes tool calls: [`ToolFormat::Hermes`] when its own template lists
    /// `tools` and writes calls in `<tool_call>` tags (Qwen 2 and 2.5, Hermes 2 and 3, and their
    /// fine-tunes); [`ToolFormat::Llama3`] when it is Llama 3's (header tokens, `tools`, calls
    /// written as `"parameters": `); [`ToolFormat::Mistral`] or [`ToolFormat::MistralArgs`] when
    /// it is Mistral's (`[TOOL_CALLS]`, with `[ARGS]` in the later form); else Shovel's own
    /// [`ToolFormat::Json`], which any template carries as text.
    ///
    /// `token` looks a token up by its text in the model's vocabulary: Mistral's formats need
    /// their control tokens there, and a template that writes them for a vocabulary without
    /// them gets the JSON format.
    pub fn tool_format(&self, token: impl Fn(&str) -> Option<u32>) -> ToolFormat {
        let src = match &self.tool_use {
            Some(t) => t.as_str(),
            None if self.kind == TemplateKind::Own => self.source.as_str(),
            None => "",
        };
        if !src.contains("tools") {
            ToolFormat::Json
        } else if src.contains("<tool_call>") {
            ToolFormat::Hermes
        } else if src.contains("<|start_header_id|>") && src.contains("\"parameters\": ") {
            ToolFormat::Llama3
        } else if src.contains("[TOOL_CALLS]") {
            match (token("[TOOL_CALLS]"), src.contains("[ARGS]")) {
                (Some(calls), false) => ToolFormat::Mistral { calls },
                (Some(calls), true) => token("[ARGS]").map_or(ToolFormat::Json, |args| ToolFormat::MistralArgs { calls, args }),
                (None, _) => ToolFormat::Json,
            }
        } else {
            ToolFormat::Json
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage::new(role, content)
    }

    #[test]
    fn chatml_fallback_renders_generation_prompt() {
        let t = ChatTemplate::new(None, "", "", true).unwrap();
        assert_eq!(t.kind, TemplateKind::ChatMl);
        let s = t.render(&[msg("user", "hi")], true).unwrap();
        assert_eq!(s, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn transcript_fallback_without_chatml_tokens() {
        let t = ChatTemplate::new(None, "", "", false).unwrap();
        assert_eq!(t.kind, TemplateKind::Transcript);
        let s = t.render(&[msg("system", "Be brief."), msg("user", "hi"), msg("assistant", "Hello."), msg("user", "bye")], true).unwrap();
        assert_eq!(s, "Be brief.\n\nUser: hi\nAssistant: Hello.\nUser: bye\nAssistant:");
        assert_eq!(t.stops, vec!["\nUser:".to_string()]);
    }

    #[test]
    fn hf_semantics_trim_blocks_and_python_methods() {
        let src = "{% for m in messages %}\n  {{ m.role.upper() }}:{{ m.content.strip() }}\n{% endfor %}";
        let t = ChatTemplate::new(Some(src), "<s>", "</s>", true).unwrap();
        assert_eq!(t.render(&[msg("user", " a ")], false).unwrap(), "  USER:a\n");
    }

    #[test]
    fn a_template_with_tool_call_tags_renders_tools_calls_and_results() {
        let t = ChatTemplate::new(Some(crate::testing::HERMES_TEMPLATE), "", "<|im_end|>", true).unwrap();
        assert_eq!(t.tool_format(|_| None), ToolFormat::Hermes);
        let tools = [serde_json::json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}})];
        let call = serde_json::json!({"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}});
        let msgs = [
            msg("user", "Weather in Paris?"),
            ChatMessage { role: "assistant".into(), content: String::new(), tool_calls: vec![call], tool_call_id: None },
            ChatMessage { role: "tool".into(), content: "sunny".into(), tool_calls: vec![], tool_call_id: Some("c1".into()) },
        ];
        let s = t.render_with_tools(&msgs, Some(&tools), true).unwrap();
        assert!(
            s.starts_with("<|im_start|>system\n# Tools\n<tools>\n{") && s.contains("{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\"}}}"),
            "{s}"
        );
        assert!(s.contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"), "{s}");
        assert!(s.contains("<tool_response>\nsunny\n</tool_response>") && s.ends_with("<|im_start|>assistant\n"), "{s}");
        // Without tools the same template is a plain chat.
        assert_eq!(t.render(&[msg("user", "hi")], true).unwrap(), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        // Fallbacks and templates without tags use Shovel's own format.
        assert_eq!(ChatTemplate::new(None, "", "", true).unwrap().tool_format(|_| None), ToolFormat::Json);
        assert_eq!(ChatTemplate::new(Some("{{ tools }}"), "", "", true).unwrap().tool_format(|_| None), ToolFormat::Json);
        // A separate tool_use template (Hermes 2 Pro and 3) serves prompts with tools.
        let named = ChatTemplate::new(Some(crate::testing::CHATML_TEMPLATE), "", "<|im_end|>", true).unwrap().with_tool_use(Some(crate::testing::HERMES_TEMPLATE)).unwrap();
        assert_eq!(named.tool_format(|_| None), ToolFormat::Hermes);
        assert_eq!(named.render_with_tools(&msgs, Some(&tools), true).unwrap(), s);
        assert!(!named.render(&msgs[..1], true).unwrap().contains("<tools>"));
    }

    #[test]
    fn a_llama3_template_lists_tools_in_the_first_user_turn_and_renders_calls_as_parameters() {
        let t = ChatTemplate::new(Some(crate::testing::LLAMA3_TEMPLATE), "", "<|eot_id|>", false).unwrap();
        assert_eq!(t.tool_format(|_| None), ToolFormat::Llama3);
        let tools = [serde_json::json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}})];
        let call = serde_json::json!({"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}});
        let msgs = [
            msg("system", "Be brief."),
            msg("user", "Weather in Paris?"),
            ChatMessage { role: "assistant".into(), content: String::new(), tool_calls: vec![call], tool_call_id: None },
            ChatMessage { role: "tool".into(), content: "sunny".into(), tool_calls: vec![], tool_call_id: Some("c1".into()) },
        ];
        let s = t.render_with_tools(&msgs, Some(&tools), true).unwrap();
        assert!(s.contains("<|start_header_id|>user<|end_header_id|>\n\nRespond in the format") && s.contains("{\n    \"type\": \"function\",\n    \"function\": {"), "{s}");
        assert!(s.contains("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|>"), "{s}");
        assert!(s.contains("<|start_header_id|>ipython<|end_header_id|>\n\nsunny<|eot_id|>"), "{s}");
        // Without tools: no list, and earlier calls still render.
        let plain = t.render(&msgs, true).unwrap();
        assert!(!plain.contains("Respond in the format") && plain.contains("\"parameters\": {\"city\": \"Paris\"}"), "{plain}");
    }

    #[test]
    fn a_mistral_template_lists_tools_and_renders_calls_with_their_ids() {
        let t = ChatTemplate::new(Some(crate::testing::MISTRAL_TEMPLATE), "<s>", "</s>", false).unwrap();
        let vocab = |t: &str| [("[TOOL_CALLS]", 5), ("[ARGS]", 32)].iter().find(|(s, _)| *s == t).map(|(_, id)| *id);
        assert_eq!(t.tool_format(vocab), ToolFormat::Mistral { calls: 5 });
        let later = ChatTemplate::new(Some(crate::testing::MISTRAL_ARGS_TEMPLATE), "<s>", "</s>", false).unwrap();
        assert_eq!(later.tool_format(vocab), ToolFormat::MistralArgs { calls: 5, args: 32 });
        // A vocabulary without the control tokens gets the JSON format.
        assert_eq!(t.tool_format(|_| None), ToolFormat::Json);
        assert_eq!(later.tool_format(|t| (t == "[TOOL_CALLS]").then_some(5)), ToolFormat::Json);
        let tools = [serde_json::json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}})];
        let call = |id: &str| serde_json::json!({"id": id, "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}});
        let msgs = |id: &str| {
            [
                msg("user", "Weather in Paris?"),
                ChatMessage { role: "assistant".into(), content: String::new(), tool_calls: vec![call(id)], tool_call_id: None },
                ChatMessage { role: "tool".into(), content: "sunny".into(), tool_calls: vec![], tool_call_id: Some(id.into()) },
                msg("user", "Thanks. Tomorrow?"),
            ]
        };
        let s = t.render_with_tools(&msgs("abcDEF123"), Some(&tools), true).unwrap();
        assert_eq!(
            s,
            concat!(
                "<s>[INST] Weather in Paris?[/INST]",
                "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}, \"id\": \"abcDEF123\"}]</s>",
                "[TOOL_RESULTS] {\"content\": \"sunny\", \"call_id\": \"abcDEF123\"}[/TOOL_RESULTS]",
                "[AVAILABLE_TOOLS] [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\"}}}][/AVAILABLE_TOOLS][INST] Thanks. Tomorrow?[/INST]"
            )
        );
        // Its ids are 9 characters, as the server maps them; any other is the template's error.
        let e = t.render_with_tools(&msgs("call_1"), Some(&tools), true).unwrap_err().to_string();
        assert!(e.contains("length 9"), "{e}");
        let s = later.render_with_tools(&msgs("abcDEF123"), Some(&tools), true).unwrap();
        assert!(s.contains("[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}</s>[TOOL_RESULTS]sunny[/TOOL_RESULTS]"), "{s}");
    }

    #[test]
    fn tojson_writes_what_transformers_writes() {
        // Expected strings are Python's: json.dumps(v, ensure_ascii=False[, indent=2]).
        let t = ChatTemplate::new(
            Some("{{ v | tojson }}|{{ v | tojson(indent=2) }}|{{ v | tojson(separators=[',', ':']) }}|{{ 'é' | tojson(ensure_ascii=true) }}|{{ [] | tojson(indent=2) }}|{{ w | tojson }}|{{ w | tojson(sort_keys=true) }}"),
            "",
            "",
            true,
        )
        .unwrap();
        let tmpl = t.env.get_template("chat").unwrap();
        let v = serde_json::json!({"a": [1, "<b> & 'c' é"], "d": {}});
        let w = serde_json::json!({"b": 1, "a": {"d": 2, "c": 3}});
        let s = tmpl.render(context! { v => v, w => w }).unwrap();
        let want = [
            r#"{"a": [1, "<b> & 'c' é"], "d": {}}"#,
            "{\n  \"a\": [\n    1,\n    \"<b> & 'c' é\"\n  ],\n  \"d\": {}\n}",
            r#"{"a":[1,"<b> & 'c' é"],"d":{}}"#,
            r#""\u00e9""#,
            "[]",
            // Keys in the order they were written, as Python's dicts keep them, unless sorted.
            r#"{"b": 1, "a": {"d": 2, "c": 3}}"#,
            r#"{"a": {"c": 3, "d": 2}, "b": 1}"#,
        ];
        assert_eq!(s, want.join("|"));
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new(Some("{{ raise_exception('no system role') }}"), "", "", true).unwrap();
        let e = t.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("no system role"), "{e}");
    }
}
