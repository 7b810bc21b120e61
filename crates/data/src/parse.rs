//! Reading each format into [`Example`]s, collecting every bad line with its field.

use crate::{Error, Example, Format, LineError, Parsed, Turn, MAX_ERRORS};
use serde_json::{Map, Value};

const ROLES: &[&str] = &["system", "user", "assistant", "tool"];

struct Sink {
    errors: Vec<LineError>,
    count: usize,
}

impl Sink {
    fn push(&mut self, line: usize, field: impl Into<String>, message: impl Into<String>) {
        self.count += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(LineError { line, field: field.into(), message: message.into() });
        }
    }
}

fn detect(text: &str, file_name: Option<&str>) -> Result<Format, Error> {
    if file_name.is_some_and(|n| n.to_ascii_lowercase().ends_with(".csv")) {
        return Ok(Format::Csv);
    }
    let t = text.trim_start();
    if t.starts_with('[') {
        return Ok(Format::Alpaca);
    }
    let first = t.lines().next().unwrap_or("");
    let v: Value = serde_json::from_str(first).map_err(|e| Error::UnknownFormat(format!("the first line is not a JSON object ({e}); CSV files need a .csv name")))?;
    let has = |k: &str| v.get(k).is_some();
    Ok(if has("messages") {
        Format::OpenaiChat
    } else if has("conversations") {
        Format::Sharegpt
    } else if has("instruction") {
        Format::Alpaca
    } else if has("prompt") || has("completion") {
        Format::PromptCompletion
    } else {
        return Err(Error::UnknownFormat("the first record has none of messages, conversations, instruction, prompt/completion".into()));
    })
}

/// Parses a dataset. `hint` forces a format; otherwise it is recognised from the file name
/// (`.csv`) and the first record's fields.
pub fn parse(bytes: &[u8], hint: Option<Format>, file_name: Option<&str>) -> Result<Parsed, Error> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error::NotUtf8(e.valid_up_to()))?;
    let format = match hint {
        Some(f) => f,
        None => detect(text, file_name)?,
    };
    let mut sink = Sink { errors: Vec::new(), count: 0 };
    let mut examples = Vec::new();
    match format {
        Format::Csv => parse_csv(text, &mut sink, &mut examples),
        Format::Alpaca if text.trim_start().starts_with('[') => match serde_json::from_str::<Vec<Value>>(text) {
            Ok(records) => {
                for (i, v) in records.iter().enumerate() {
                    if let Some(e) = record(Format::Alpaca, v, i + 1, &mut sink) {
                        examples.push(e);
                    }
                }
            }
            Err(e) => sink.push(e.line(), "", format!("is not valid JSON: {e}")),
        },
        _ => {
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(line) {
                    Ok(v) => {
                        if let Some(e) = record(format, &v, i + 1, &mut sink) {
                            examples.push(e);
                        }
                    }
                    Err(e) => sink.push(i + 1, "", format!("is not valid JSON: {e}")),
                }
            }
        }
    }
    Ok(Parsed { format, examples, errors: sink.errors, error_count: sink.count })
}

fn string_field(obj: &Map<String, Value>, key: &str, path: &str, line: usize, sink: &mut Sink, required: bool) -> Option<String> {
    match obj.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) if !required => Some(String::new()),
        None => {
            sink.push(line, path, "is missing");
            None
        }
        Some(_) => {
            sink.push(line, path, "must be a string");
            None
        }
    }
}

fn record(format: Format, v: &Value, line: usize, sink: &mut Sink) -> Option<Example> {
    let Some(obj) = v.as_object() else {
        sink.push(line, "", "must be a JSON object");
        return None;
    };
    let before = sink.count;
    let turns = match format {
        Format::OpenaiChat => chat(obj, line, sink),
        Format::Sharegpt => sharegpt(obj, line, sink),
        Format::PromptCompletion => {
            let p = string_field(obj, "prompt", "prompt", line, sink, true);
            let c = string_field(obj, "completion", "completion", line, sink, true);
            Some(vec![turn("user", p?), turn("assistant", c?)])
        }
        Format::Alpaca => {
            let ins = string_field(obj, "instruction", "instruction", line, sink, true);
            let inp = string_field(obj, "input", "input", line, sink, false);
            let out = string_field(obj, "output", "output", line, sink, true);
            let (ins, inp, out) = (ins?, inp?, out?);
            let user = if inp.trim().is_empty() { ins } else { format!("{ins}\n\n{inp}") };
            Some(vec![turn("user", user), turn("assistant", out)])
        }
        Format::Csv => unreachable!("CSV is parsed by rows"),
    }?;
    if sink.count > before {
        return None;
    }
    if !turns.iter().any(|t| t.role == "assistant" && t.weight > 0.0) {
        sink.push(line, if format == Format::OpenaiChat { "messages" } else { "" }, "must contain at least one assistant message to learn from");
        return None;
    }
    Some(Example { messages: turns, line })
}

fn turn(role: &str, content: String) -> Turn {
    Turn { role: role.into(), content, weight: if role == "assistant" { 1.0 } else { 0.0 } }
}

fn chat(obj: &Map<String, Value>, line: usize, sink: &mut Sink) -> Option<Vec<Turn>> {
    let msgs = match obj.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => {
            sink.push(line, "messages", "must not be empty");
            return None;
        }
        Some(_) => {
            sink.push(line, "messages", "must be an array");
            return None;
        }
        None => {
            sink.push(line, "messages", "is missing");
            return None;
        }
    };
    let mut turns = Vec::with_capacity(msgs.len());
    let mut ok = true;
    for (i, m) in msgs.iter().enumerate() {
        let p = format!("messages[{i}]");
        let Some(m) = m.as_object() else {
            sink.push(line, p, "must be an object");
            ok = false;
            continue;
        };
        let role = match m.get("role") {
            Some(Value::String(r)) if ROLES.contains(&r.as_str()) => Some(r.clone()),
            Some(_) => {
                sink.push(line, format!("{p}.role"), format!("must be one of {}", ROLES.join(", ")));
                None
            }
            None => {
                sink.push(line, format!("{p}.role"), "is missing");
                None
            }
        };
        let content = string_field(m, "content", &format!("{p}.content"), line, sink, true);
        let weight = match (m.get("weight"), role.as_deref()) {
            (None, Some("assistant")) => Some(1.0),
            (None, _) => Some(0.0),
            (Some(w), Some("assistant")) => match w.as_f64() {
                Some(x) if x == 0.0 || x == 1.0 => Some(x as f32),
                _ => {
                    sink.push(line, format!("{p}.weight"), "must be 0 or 1");
                    None
                }
            },
            (Some(_), _) => {
                sink.push(line, format!("{p}.weight"), "is only allowed on assistant messages");
                None
            }
        };
        match (role, content, weight) {
            (Some(role), Some(content), Some(weight)) => turns.push(Turn { role, content, weight }),
            _ => ok = false,
        }
    }
    ok.then_some(turns)
}

fn sharegpt(obj: &Map<String, Value>, line: usize, sink: &mut Sink) -> Option<Vec<Turn>> {
    let Some(Value::Array(conv)) = obj.get("conversations") else {
        sink.push(line, "conversations", "must be an array of {from, value}");
        return None;
    };
    let mut turns = Vec::new();
    let mut ok = true;
    for (i, m) in conv.iter().enumerate() {
        let p = format!("conversations[{i}]");
        let Some(m) = m.as_object() else {
            sink.push(line, p, "must be an object");
            ok = false;
            continue;
        };
        let role = match m.get("from").and_then(Value::as_str) {
            Some("human" | "user") => Some("user"),
            Some("gpt" | "assistant") => Some("assistant"),
            Some("system") => Some("system"),
            _ => {
                sink.push(line, format!("{p}.from"), "must be one of human, gpt, system");
                None
            }
        };
        let value = string_field(m, "value", &format!("{p}.value"), line, sink, true);
        match (role, value) {
            (Some(r), Some(v)) => turns.push(turn(r, v)),
            _ => ok = false,
        }
    }
    ok.then_some(turns)
}

fn parse_csv(text: &str, sink: &mut Sink, examples: &mut Vec<Example>) {
    let mut rdr = csv::ReaderBuilder::new().flexible(false).from_reader(text.as_bytes());
    let headers = match rdr.headers() {
        Ok(h) => h.iter().map(|s| s.trim().to_ascii_lowercase()).collect::<Vec<_>>(),
        Err(e) => {
            sink.push(1, "", format!("is not a valid CSV header: {e}"));
            return;
        }
    };
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(q), Some(a)) = (col("question"), col("answer")) else {
        sink.push(1, "", format!("the header must name `question` and `answer` columns (found: {})", headers.join(", ")));
        return;
    };
    let sys = col("system");
    for rec in rdr.records() {
        match rec {
            Ok(r) => {
                let line = r.position().map_or(0, |p| p.line() as usize);
                let get = |i: usize| r.get(i).unwrap_or("").to_string();
                let (question, answer) = (get(q), get(a));
                if question.trim().is_empty() {
                    sink.push(line, "question", "is empty");
                    continue;
                }
                if answer.trim().is_empty() {
                    sink.push(line, "answer", "is empty");
                    continue;
                }
                let mut messages = Vec::new();
                if let Some(s) = sys.map(get).filter(|s| !s.trim().is_empty()) {
                    messages.push(turn("system", s));
                }
                messages.push(turn("user", question));
                messages.push(turn("assistant", answer));
                examples.push(Example { messages, line });
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                sink.push(line, "", format!("is not valid CSV: {e}"));
            }
        }
    }
}
