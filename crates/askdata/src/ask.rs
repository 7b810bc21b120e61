//! The pipeline: question -> prompt (schema + linked values) -> the model's JSON reply ->
//! SQL guard -> read-only execution under a time limit -> chart -> a one-sentence answer.
//!
//! The same [`messages`] render the prompt at question time and the training examples
//! ([`chat_example`]), so a fine-tuned model sees exactly what it was taught on.

use crate::catalog::Catalog;
use crate::chart::{self, ChartSpec, ChartType};
use crate::exec::Conn;
use crate::exec::{self, Rows};
use crate::guard;
use serde::{Deserialize, Serialize};
use shovel_core::{ChatMessage, Event, GenerateRequest, InferenceBackend, ModelId, OutputConstraint, Prompt, SamplingParams};
use std::time::Duration;

/// The system message: the schema and the reply format.
pub fn system_prompt(catalog: &Catalog) -> String {
    format!(
        "SQLite tables:\n{}Answer with JSON: {{\"sql\":...,\"chart\":{{\"type\":line|bar|pie|table|number,\"x\":...,\"y\":...}}}} or {{\"error\":...}} if the tables cannot answer.",
        catalog.schema_text()
    )
}

/// The user message: the question, then what it names, normalised: the stored values (and
/// where they are stored), the columns its business words name (the glossary), the period and
/// how many top rows it wants.
pub fn user_prompt(catalog: &Catalog, question: &str) -> String {
    let links = catalog.link(question);
    let mut s = question.trim().to_string();
    if !links.is_empty() {
        let v: Vec<String> = links
            .iter()
            .map(|l| match &l.alias {
                Some(a) => format!("{}.{}='{}' ({a})", l.table, l.column, l.value),
                None => format!("{}.{}='{}'", l.table, l.column, l.value),
            })
            .collect();
        s.push_str("\nValues: ");
        s.push_str(&v.join(", "));
    }
    let columns = catalog.link_columns(question);
    if !columns.is_empty() {
        let v: Vec<String> = columns.iter().map(|(c, w)| format!("{c} ({w})")).collect();
        s.push_str("\nColumns: ");
        s.push_str(&v.join(", "));
    }
    // Of a change between two periods, the later: the pipeline compares it with the earlier
    // ([`crate::compose`]).
    if let Some(p) = crate::period::asked(question) {
        s.push_str(&format!("\nPeriod: {p}"));
    }
    if let Some(n) = crate::period::top_n(question) {
        s.push_str(&format!("\nTop: {n}"));
    }
    s
}

/// The conversation the model continues.
pub fn messages(catalog: &Catalog, question: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new("system", system_prompt(catalog)), ChatMessage::new("user", user_prompt(catalog, question))]
}

/// What the model replies: a query and a chart, or why it cannot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// The chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartSpec>,
    /// Why the tables cannot answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    /// Parses the first JSON object in `text` (text after it is ignored).
    pub fn parse(text: &str) -> Option<Reply> {
        let start = text.find('{')?;
        let mut it = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Reply>();
        let r = it.next()?.ok()?;
        (r.sql.is_some() || r.error.is_some()).then_some(r)
    }
}

/// A labelled example: a question and the reply the model should give.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// The question.
    pub question: String,
    /// The gold reply.
    #[serde(flatten)]
    pub reply: Reply,
}

/// One training example in chat JSONL form (`{"messages": [...]}`).
pub fn chat_example(catalog: &Catalog, ex: &Example) -> serde_json::Value {
    let mut msgs: Vec<serde_json::Value> = messages(catalog, &ex.question).into_iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect();
    msgs.push(serde_json::json!({"role": "assistant", "content": serde_json::to_string(&ex.reply).expect("a reply serializes")}));
    serde_json::json!({ "messages": msgs })
}

/// A connected database and its catalogue.
pub struct Database {
    /// Read-only connection.
    pub conn: Conn,
    /// Its catalogue.
    pub catalog: Catalog,
}

/// How [`Answer::error`] starts when the model said the tables cannot answer the question.
pub const DECLINED: &str = "outside the schema: ";

/// Settings of one question.
#[derive(Debug, Clone)]
pub struct AskOptions {
    /// Rows returned at most (the guard's LIMIT).
    pub max_rows: u64,
    /// Statement time limit.
    pub timeout: Duration,
    /// Tokens the model may write.
    pub max_tokens: usize,
    /// Hold the reply to what the question says outright ([`crate::cues`]); off only to measure
    /// what the cues add (the reply's JSON schema applies either way).
    pub cues: bool,
    /// Hold the reply's chart to the one the question asks for ([`crate::cues::chart_for`]),
    /// also where a question's SQL rules are dropped because no query satisfies them together
    /// ([`generate`]): the chart is not what failed (two such replies had drawn a number and a
    /// line for gaps the reviewers drew as bars and a table, fresh2 and fresh15). Off with the
    /// cues, to measure what they add.
    pub chart_cue: bool,
    /// Hold the SQL to the catalogue's query shape ([`crate::shape`]: real tables, columns and
    /// values only); off only to measure what it adds.
    pub shape: bool,
    /// Decline when [`decline_margin`] exceeds this, and answer otherwise (the reply is then
    /// held to that branch); `None` leaves the choice to greedy decoding.
    pub decline_above: Option<f32>,
    /// Decline a question about a business concept the catalogue holds nowhere (customers,
    /// staff, inventory, ...) or a period wholly outside its dates ([`crate::concepts`]) before
    /// the model runs; off only to measure what it adds.
    pub concepts: bool,
    /// How long a request the engine refuses as overloaded is retried; zero: the refusal is the
    /// answer (the API returns it as 429). A redo, which follows its first decode at once, waits
    /// at least [`REDO_WAIT`] for the place that decode gave up.
    pub overloaded_wait: Duration,
}

/// How long a redo waits for the place its first decode gave up: the engine frees that
/// sequence only at its next step, and where nothing may wait (`max_waiting = 0`) the redo was
/// refused every time.
pub const REDO_WAIT: Duration = Duration::from_secs(1);

impl Default for AskOptions {
    fn default() -> Self {
        AskOptions {
            max_rows: 1000,
            timeout: Duration::from_secs(5),
            max_tokens: 256,
            cues: true,
            chart_cue: true,
            shape: true,
            decline_above: Some(DECLINE_ABOVE),
            concepts: true,
            overloaded_wait: Duration::ZERO,
        }
    }
}

/// The answer to a question, as the CLI prints it with `--format json` and the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The question.
    pub question: String,
    /// The query that was run (as the guard rewrote it), if one was; `None` when the guard
    /// refused the model's SQL (which stays in `model_output`).
    pub sql: Option<String>,
    /// The chart, fitted to the result.
    pub chart: Option<ChartSpec>,
    /// Result columns.
    pub columns: Vec<String>,
    /// Result rows.
    pub rows: Vec<Vec<serde_json::Value>>,
    /// One sentence.
    pub answer: String,
    /// Why no result: the question is outside the schema, or the query was refused or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The Apache ECharts option for the chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echarts: Option<serde_json::Value>,
    /// What the model wrote.
    pub model_output: String,
}

impl Answer {
    /// The model said the database cannot answer the question (rather than failing to).
    pub fn declined(&self) -> bool {
        self.sql.is_none() && self.error.as_deref().is_some_and(|e| e.starts_with(DECLINED))
    }

    fn failed(question: &str, output: String, sql: Option<String>, error: String, answer: String) -> Answer {
        Answer { question: question.into(), sql, chart: None, columns: vec![], rows: vec![], answer, error: Some(error), echarts: None, model_output: output }
    }

    /// The chart as SVG, when there is one.
    pub fn svg(&self) -> Option<String> {
        let spec = self.chart.as_ref()?;
        Some(chart::svg(spec, &Rows { columns: self.columns.clone(), rows: self.rows.clone() }))
    }
}

/// Errors of the pipeline that are not answers (the model could not run).
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The backend refused or failed.
    #[error("{0}")]
    Backend(#[from] shovel_core::BackendError),
}

pub(crate) fn is_chinese(s: &str) -> bool {
    s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
}

/// The JSON schema of [`Reply`] as the model writes it (compact, keys in the teaching data's
/// order): `{"sql", "chart": {"type", "x"?, "y"?, "series"?, "title"?}}` or `{"error"}`, with
/// the chart type the question names, or a month-by-month series's line
/// ([`crate::cues::chart_for`]), the only one allowed. Generation is held to it, its SQL string
/// further held by [`reply_constraint`].
pub fn reply_schema(catalog: &Catalog, question: &str, cues: bool) -> serde_json::Value {
    let s = || serde_json::json!({"type": "string"});
    let types: Vec<&str> = match crate::cues::chart_for(catalog, question).filter(|_| cues) {
        Some(t) => vec![t.as_str()],
        None => ChartType::ALL.iter().map(|t| t.as_str()).collect(),
    };
    serde_json::json!({
        "x-guidance": {"whitespace_flexible": false},
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "sql": s(),
                    "chart": {
                        "type": "object",
                        "properties": {"type": {"enum": types}, "x": s(), "y": s(), "series": s(), "title": s()},
                        "required": ["type"],
                        "additionalProperties": false
                    }
                },
                "required": ["sql", "chart"],
                "additionalProperties": false
            },
            {"type": "object", "properties": {"error": s()}, "required": ["error"], "additionalProperties": false}
        ]
    })
}

/// Which replies generation may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branch {
    /// A query or a refusal, as the model chooses.
    Either,
    /// A query.
    Answer,
    /// A refusal.
    Decline,
}

/// The margin above which a question is declined: log P(refusal) - log P(query) at the reply's
/// first choice, calibrated on the development sets (docs/BENCHMARKS.md).
pub const DECLINE_ABOVE: f32 = 0.0;

/// How much likelier the model finds declining than answering: `log P({"error) - log P({"sql)`
/// where its reply first chooses between them (a short constrained decode with the top 20
/// log probabilities; an alternative outside the top 20 counts at the 20th's). The tuned model
/// rarely declines greedily, but out-of-schema questions raise the refusal's probability well
/// above the rest; a threshold on it declines them. `None` if the reply never reached the choice.
pub async fn decline_margin(backend: &dyn InferenceBackend, model: &ModelId, catalog: &Catalog, question: &str) -> Result<Option<f32>, shovel_core::BackendError> {
    let constraint = OutputConstraint::Lark(format!("start: {:?} | {:?}\n", BRANCHES[0], BRANCHES[1]));
    let mut rx = backend.submit(reply_request(model, catalog, question, 8, Some(20), constraint)).await?;
    let mut prefix = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token { text, logprob, .. } => {
                if let Some((_, margin)) = logprob.as_ref().and_then(|lp| choice(&prefix, lp)) {
                    return Ok(margin);
                }
                prefix.push_str(&text);
            }
            Event::Done { .. } => break,
            Event::Error(e) => return Err(e),
            Event::Started { .. } => {}
        }
    }
    Ok(None)
}

/// A greedy reply to `question` under `constraint`.
fn reply_request(model: &ModelId, catalog: &Catalog, question: &str, max_tokens: usize, top_logprobs: Option<usize>, constraint: OutputConstraint) -> GenerateRequest {
    GenerateRequest {
        model: model.clone(),
        prompt: Prompt::Chat(messages(catalog, question)),
        sampling: SamplingParams { temperature: 0.0, ..Default::default() },
        max_tokens: Some(max_tokens),
        stop: vec![],
        top_logprobs,
        constraint: Some(constraint),
    }
}

/// Whether text written so far can still be, or already is, the opening `branch`.
fn on_branch(text: &str, branch: &str) -> bool {
    branch.starts_with(text) || text.starts_with(branch)
}

/// At the step where the reply, having written `prefix`, commits to answering or declining (its
/// chosen token opens one branch and not the other): which it took, and the decline margin from
/// the alternatives. `None` before that step.
fn choice(prefix: &str, lp: &shovel_core::TokenLogprob) -> Option<(Branch, Option<f32>)> {
    let text = format!("{prefix}{}", lp.chosen.token);
    let (answer, decline) = (on_branch(&text, BRANCHES[0]), on_branch(&text, BRANCHES[1]));
    (answer != decline).then(|| (if decline { Branch::Decline } else { Branch::Answer }, branch_margin(prefix, &lp.top, BRANCHES)))
}

/// At one step of a reply that has written `prefix`, with the model's `top` alternatives: if
/// some alternative commits to one of two `branches` (the text so far plus it fits one and not
/// the other), `log P(branches[1]) - log P(branches[0])`, each side summed over its tokens, a
/// side with none in `top` counted at the lowest listed probability; else `None`.
fn branch_margin(prefix: &str, top: &[shovel_core::TopLogprob], branches: [&str; 2]) -> Option<f32> {
    let mut best = [f32::NEG_INFINITY; 2];
    for t in top {
        let c = format!("{prefix}{}", t.token);
        for i in 0..2 {
            if on_branch(&c, branches[i]) && !on_branch(&c, branches[1 - i]) {
                // log(exp(a) + exp(b))
                let (a, b) = (best[i].max(t.logprob), best[i].min(t.logprob));
                best[i] = if b == f32::NEG_INFINITY { a } else { a + (b - a).exp().ln_1p() };
            }
        }
    }
    if !best.iter().any(|b| b.is_finite()) {
        return None;
    }
    let floor = top.iter().map(|t| t.logprob).fold(f32::INFINITY, f32::min);
    let [a, d] = best.map(|b| if b.is_finite() { b } else { floor });
    Some(d - a)
}

/// What generation is held to: [`reply_schema`], written as a Lark grammar whose SQL is one
/// terminal, the intersection of: the catalogue's query shape for the question
/// ([`crate::shape::sql_shape`]: real tables and columns, values the question names, dates only
/// with a period; it writes no character a JSON string would escape) or, with the shape off, a
/// JSON string's characters and not [`crate::cues::sql_forbidden`]; the question's cue pattern
/// ([`crate::cues::sql_pattern`]); for the lowest rows, no `DESC`; the expression of each
/// measure the question asks for ([`crate::cues::measures_required`]); and no percentage where
/// it asks for none ([`crate::cues::percent_forbidden`]). A JSON Schema `pattern`
/// is one regex and cannot say "not" or "and"; llguidance's terminals take `&` and `~`. A
/// refusal keeps the plain schema.
///
/// Tried before the shape and dropped then: holding every quoted literal to the values the
/// question names and its period (without the shape's structure the model, kept from inventing
/// `city='淑'`, wrote worse SQL elsewhere: 86.7% vs 88.9% held-out). Inside the shape the same
/// rule for values helps (docs/BENCHMARKS.md).
pub fn reply_constraint(catalog: &Catalog, question: &str, opts: &AskOptions, branch: Branch) -> OutputConstraint {
    let schema = reply_schema(catalog, question, opts.chart_cue);
    if branch == Branch::Decline {
        return OutputConstraint::JsonSchema(serde_json::json!({"x-guidance": schema["x-guidance"].clone(), "anyOf": [schema["anyOf"][1].clone()]}));
    }
    let compact = serde_json::json!({"whitespace_flexible": false});
    let mut chart = schema["anyOf"][0]["properties"]["chart"].clone();
    chart["x-guidance"] = compact.clone();
    let error = (branch == Branch::Either).then(|| {
        let mut e = schema["anyOf"][1].clone();
        e["x-guidance"] = compact;
        e
    });
    // A Lark regex literal ends at an unescaped `/`.
    let lark = |re: &str| format!("/{}/", re.replace('/', r"\/"));
    // The query shape, or else any JSON string's characters (the teaching SQL needs no
    // escapes; the shape writes none). With the shape and the cues, the values the question
    // names must also be in the query (`shape::values_pattern`).
    let shape = opts.shape.then(|| crate::shape::sql_shape(catalog, Some(question))).flatten();
    let mut sql = vec![lark(shape.as_deref().unwrap_or(r#"[^"\\\x00-\x1f]*"#))];
    if opts.cues {
        if let Some(p) = crate::cues::sql_pattern(catalog, question) {
            sql.push(lark(p.trim_start_matches('^').trim_end_matches('$')));
        }
        if crate::cues::lowest(question) {
            sql.push(format!("~{}", lark(".*DESC.*")));
        }
        sql.extend(crate::cues::measures_required(catalog, question).iter().map(|p| lark(p)));
        if let Some(p) = crate::cues::percent_forbidden(catalog, question) {
            sql.push(format!("~{}", lark(&p)));
        }
        if shape.is_some() {
            if let Some(p) = crate::shape::values_pattern(&crate::shape::required_values(catalog, question)) {
                sql.push(lark(&p));
            }
        }
        // The shape already leaves dates out of a question without a period.
        if let Some(forbid) = crate::cues::sql_forbidden(catalog, question).filter(|_| shape.is_none()) {
            sql.push(format!("~{}", lark(&forbid)));
        }
    }
    let mut g = String::new();
    match error {
        Some(e) => g.push_str(&format!("start: reply | %json {e}\n")),
        None => g.push_str("start: reply\n"),
    }
    g.push_str(&format!(r#"reply: "{{\"sql\":\"" SQL "\",\"chart\":" %json {chart} "}}""#));
    g.push('\n');
    g.push_str(&format!("SQL: {}\n", sql.join(" & ")));
    OutputConstraint::Lark(g)
}

/// The model's reply to `question` (greedy, so the same model answers the same way), held to
/// [`reply_constraint`]; with `decline_above`, a query or a refusal as [`decline_margin`]'s
/// threshold says.
/// A question about a concept the catalogue lacks, or a period outside its dates, gets the
/// refusal [`crate::concepts::refusal`] writes, in the reply's own form, without running the model.
pub async fn generate(backend: &dyn InferenceBackend, model: &ModelId, catalog: &Catalog, question: &str, opts: &AskOptions) -> Result<String, shovel_core::BackendError> {
    if let Some(why) = opts.concepts.then(|| crate::concepts::refusal(catalog, question, is_chinese(question))).flatten() {
        return Ok(serde_json::json!({ "error": why }).to_string());
    }
    // The question's rules are intersected in one terminal; should a question bring rules that
    // no query satisfies together (the reply then stops with no token allowed), it is answered
    // again under fewer: without the cues, then without the shape.
    let mut looser: Vec<AskOptions> = Vec::new();
    if opts.cues {
        looser.push(AskOptions { cues: false, ..opts.clone() });
    }
    if opts.shape {
        looser.push(AskOptions { cues: false, shape: false, ..opts.clone() });
    }
    let mut result = generate_once(backend, model, catalog, question, opts).await;
    for o in &looser {
        match &result {
            Err(shovel_core::BackendError::ConstraintFailed(why)) => {
                tracing::warn!(question, cues = o.cues, shape = o.shape, "no query fits all of the question's rules ({why}); answering under fewer");
                result = generate_once(backend, model, catalog, question, o).await;
            }
            _ => break,
        }
    }
    result
}

async fn generate_once(backend: &dyn InferenceBackend, model: &ModelId, catalog: &Catalog, question: &str, opts: &AskOptions) -> Result<String, shovel_core::BackendError> {
    // One decode as a rule: with the decline threshold on, it carries the top log probabilities
    // until the reply commits to answering or declining, and is redone held to the other branch
    // only where the threshold and the greedy choice disagree.
    let out = match decode(backend, model, catalog, question, opts, Branch::Either, opts.decline_above).await? {
        Decoded::Reply(out) => out,
        Decoded::Redo(branch) => match decode(backend, model, catalog, question, opts, branch, None).await? {
            Decoded::Reply(out) => out,
            Decoded::Redo(_) => unreachable!("a decode without a threshold never asks to be redone"),
        },
    };
    // A refusal for want of what the catalogue holds is answered after all.
    match Reply::parse(&out).and_then(|r| r.error).filter(|why| opts.cues && refutes(catalog, why)) {
        Some(_) => match decode(backend, model, catalog, question, opts, Branch::Answer, None).await? {
            Decoded::Reply(answer) => Ok(answer),
            Decoded::Redo(_) => unreachable!("a decode without a threshold never asks to be redone"),
        },
        None => Ok(out),
    }
}

/// Whether the catalogue refutes a refusal's reason: what it says the database has no data of
/// ("no X data", "has no X records", "没有X数据/信息") is a table, a column (by its name or
/// through the glossary) or a value the catalogue holds ("no sale data", "没有订单数据", "no
/// profit data", "no electronics data"). A refusal says what the database lacks; where that is
/// there, the model declined a question it could answer. A reason of another form ("the sales
/// table has no customer column", "no weather data by region") is left as it is.
///
/// Why: the tuned model declined 13 of the 100 answerable questions of the reviewers' refusal
/// sets and four of fresh1-10 so ("How much did we sell online in November 2020?": "no sale
/// data"). The concept check's refusals ([`crate::concepts`]) come before the model and are
/// not second-guessed.
pub fn refutes(catalog: &Catalog, why: &str) -> bool {
    use std::sync::LazyLock;
    static SUBJECT: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"(?i)\bno ([a-z ]+?) (data|records?|information|info)\b|没有([^,，。数信记]+?)(的)?(数据|信息|记录)").expect("valid pattern"));
    static WORD: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"[A-Za-z_]+").expect("valid pattern"));
    let Some(c) = SUBJECT.captures(why) else { return false };
    let subject = c.get(1).or_else(|| c.get(3)).map_or("", |m| m.as_str());
    // Tables and columns by their names.
    let names: Vec<&str> = catalog.tables.iter().flat_map(|t| std::iter::once(t.name.as_str()).chain(t.columns.iter().map(|c| c.name.as_str()))).collect();
    // English nouns in the singular too ("no sale data").
    let plural = WORD.replace_all(subject, "${0}s");
    [subject, plural.as_ref()].iter().any(|w| !catalog.mentions(w).is_empty() || WORD.find_iter(w).any(|w| names.iter().any(|n| n.eq_ignore_ascii_case(w.as_str()))))
        || !catalog.link(subject).is_empty()
}

/// The two ways a reply opens: a query or a refusal.
const BRANCHES: [&str; 2] = ["{\"sql\"", "{\"error\""];

enum Decoded {
    Reply(String),
    /// The threshold wants the other branch than greedy decoding took.
    Redo(Branch),
}

async fn decode(
    backend: &dyn InferenceBackend,
    model: &ModelId,
    catalog: &Catalog,
    question: &str,
    opts: &AskOptions,
    branch: Branch,
    decline_above: Option<f32>,
) -> Result<Decoded, shovel_core::BackendError> {
    let req = reply_request(model, catalog, question, opts.max_tokens, decline_above.map(|_| 20), reply_constraint(catalog, question, opts, branch));
    let patience = if branch == Branch::Either { opts.overloaded_wait } else { opts.overloaded_wait.max(REDO_WAIT) };
    let asked = std::time::Instant::now();
    let mut rx = loop {
        match backend.submit(req.clone()).await {
            Err(shovel_core::BackendError::Overloaded) if asked.elapsed() < patience => tokio::time::sleep(Duration::from_millis(10)).await,
            other => break other?,
        }
    };
    let mut output = String::new();
    let mut scan = ObjectEnd::default();
    let mut deciding = decline_above;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token { text, logprob, .. } => {
                if let (Some(limit), Some((took, margin))) = (deciding, logprob.as_ref().and_then(|lp| choice(&output, lp))) {
                    deciding = None;
                    let want = match margin {
                        Some(m) if m > limit => Branch::Decline,
                        Some(_) => Branch::Answer,
                        None => took,
                    };
                    if took != want {
                        return Ok(Decoded::Redo(want));
                    }
                }
                output.push_str(&text);
                // The reply is one JSON object: once it closes, stop (dropping the stream
                // cancels the sequence) instead of paying for whatever the model adds.
                if scan.feed(&text) {
                    break;
                }
            }
            Event::Done { .. } => break,
            Event::Error(e) => return Err(e),
            Event::Started { .. } => {}
        }
    }
    Ok(Decoded::Reply(output))
}

/// Finds where the first top-level JSON object in a stream of text closes.
#[derive(Default)]
struct ObjectEnd {
    depth: usize,
    started: bool,
    in_string: bool,
    escaped: bool,
}

impl ObjectEnd {
    /// Feeds more text; true once the first object has closed.
    fn feed(&mut self, text: &str) -> bool {
        for c in text.chars() {
            if self.in_string {
                match (self.escaped, c) {
                    (true, _) => self.escaped = false,
                    (false, '\\') => self.escaped = true,
                    (false, '"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' if self.started => self.in_string = true,
                '{' => {
                    self.started = true;
                    self.depth += 1;
                }
                '}' if self.started => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return true;
                    }
                }
                _ => {}
            }
        }
        false
    }
}

/// Asks the model, then runs and charts its query.
pub async fn ask(backend: &dyn InferenceBackend, model: &ModelId, db: &mut Database, question: &str, opts: &AskOptions) -> Result<Answer, AskError> {
    let output = generate(backend, model, &db.catalog, question, opts).await?;
    Ok(answer_reply(db, question, output, opts).await)
}

/// Runs the model's `output` for `question` through the guard, the database and the chart.
pub async fn answer_reply(db: &mut Database, question: &str, output: String, opts: &AskOptions) -> Answer {
    let zh = is_chinese(question);
    let tables = db.catalog.table_names().join(", ");
    let Some(reply) = Reply::parse(&output) else {
        let msg = "the model did not reply with a query".to_string();
        let a = if zh { "没能为这个问题生成查询,请换个问法。".into() } else { "I could not write a query for this question; try rephrasing it.".into() };
        return Answer::failed(question, output, None, msg, a);
    };
    let Some(sql) = reply.sql.filter(|s| !s.trim().is_empty()) else {
        let why = reply.error.unwrap_or_default();
        let a = if zh { format!("数据库({tables})里没有能回答这个问题的数据:{why}") } else { format!("The database ({tables}) has no data to answer this: {why}") };
        return Answer::failed(question, output, None, format!("{DECLINED}{why}"), a);
    };
    let mut guarded = match guard::check_in(db.conn.dialect(), &sql, &db.catalog.table_names(), opts.max_rows) {
        Ok(s) => s,
        Err(e) => return refused(question, output, e, zh),
    };
    // The model's query mended in turn, each rewrite where it applies ([`crate::compose`]).
    {
        use crate::compose as c;
        let (catalog, dialect) = (&db.catalog, db.conn.dialect());
        // Each takes the query and returns it rewritten, or `None` where it does not apply.
        type Rewrite<'a> = &'a dyn Fn(&str) -> Option<String>;
        let rewrites: [Rewrite; 13] = [
            // A quarter written without its month: the teaching data's.
            &|s| c::mend_quarter(catalog, s),
            // A date compared whole with a month or a year: compared as that month or year.
            &|s| c::date_prefixes(catalog, dialect, s),
            // One total asked for, grouped by its own figure: the total.
            &|s| c::ungroup_totals(dialect, s),
            // A group named by a select alias that a joined table's column shadows: its expression.
            &|s| c::unalias_groups(dialect, s),
            // Every plain column selected beside an aggregate is grouped.
            &|s| c::complete_group_by(dialect, s),
            // Every value the question names of a column in the query's list of them.
            &|s| c::complete_in_list(catalog, dialect, question, s),
            // A filter on each value the question names of a column the query never mentions.
            &|s| c::fill_named(catalog, dialect, question, s),
            // Groups pinned to the one value the question names: no groups.
            &|s| c::unpin_groups(dialect, s),
            // A measure of one aggregate asked for (客单价): written in place of the model's sum.
            &|s| c::with_measures(catalog, dialect, question, s),
            // A number of orders asked for, and another figure given: the count.
            &|s| c::with_count(catalog, dialect, question, s),
            // A threshold on a number of orders written on a column: off the rows, onto the count.
            &|s| c::unplace_threshold(catalog, dialect, question, s),
            // Actual figures against targets at the grain the question asks, with what it asks.
            &|s| c::regrain_target(catalog, dialect, question, s),
            // The rows short of (or beyond) their target, where the question asks for those.
            &|s| c::past_target(catalog, dialect, question, s),
        ];
        for rewrite in rewrites {
            if let Some(sql) = rewrite(&guarded) {
                guarded = sql;
            }
        }
    }
    // A series per value of the column the question splits its figures over time by; then per
    // value of a list the question names, beside the query's own groups (where the first left
    // it unselected).
    let mut reply_chart = reply.chart;
    for split in [crate::compose::add_series, crate::compose::split_in_list] {
        if let Some((sql, series)) = split(&db.catalog, db.conn.dialect(), question, &guarded) {
            guarded = sql;
            if let Some(c) = reply_chart.as_mut() {
                c.series = Some(series);
            }
        }
    }
    let mut rows = match exec::run(&mut db.conn, &guarded, opts.timeout).await {
        Ok(r) => r,
        Err(e) => return failed_run(db, question, output, guarded, e.to_string(), zh),
    };
    // A change between two periods, or groups past a threshold: the query around the model's.
    match crate::compose::plan(&db.catalog, question).map(|p| p.apply(db.conn.dialect(), &guarded, &rows)) {
        Some(crate::compose::Outcome::Composed(c)) => {
            guarded = match guard::check_in(db.conn.dialect(), &c.sql, &db.catalog.table_names(), opts.max_rows) {
                Ok(s) => s,
                Err(e) => return refused(question, output, e, zh),
            };
            rows = match exec::run(&mut db.conn, &guarded, opts.timeout).await {
                Ok(r) => r,
                Err(e) => return failed_run(db, question, output, guarded, e.to_string(), zh),
            };
            if let Some((kind, x, y)) = c.chart {
                // The series, where the composed query keeps its column (`fit` drops it otherwise).
                let (title, series) = reply_chart.map(|c| (c.title, c.series)).unwrap_or_default();
                reply_chart = Some(ChartSpec { kind, x, y, series, title });
            }
        }
        // The model's query covers the later period only: not an answer to a change.
        Some(crate::compose::Outcome::Failed) => {
            let msg = "the change between the two periods could not be composed from the model's query".to_string();
            let a = if zh {
                "没能把两个时期的数据放在一起对比,请换个问法(例如分别问两个时期)。".into()
            } else {
                "I could not compare the two periods from this query; try asking for each period separately.".into()
            };
            return Answer::failed(question, output, Some(guarded), msg, a);
        }
        Some(crate::compose::Outcome::Keep) | None => {}
    }
    let spec = reply_chart.unwrap_or(ChartSpec { kind: ChartType::Table, x: None, y: None, series: None, title: String::new() });
    let mut spec = spec.fit(&rows);
    if spec.title.is_empty() {
        spec.title = question.trim().chars().take(40).collect();
    }
    let sentence = sentence(&spec, &rows, zh);
    let echarts = chart::echarts(&spec, &rows);
    Answer { question: question.into(), sql: Some(guarded), chart: Some(spec), columns: rows.columns, rows: rows.rows, answer: sentence, error: None, echarts: Some(echarts), model_output: output }
}

/// The answer to a query the guard refused.
fn refused(question: &str, output: String, e: guard::GuardError, zh: bool) -> Answer {
    let a = if zh { format!("这个查询不能执行:{e}") } else { format!("That query may not run: {e}") };
    Answer::failed(question, output, None, e.to_string(), a)
}

/// The answer to a query that failed to run with `msg`.
fn failed_run(db: &Database, question: &str, output: String, sql: String, msg: String, zh: bool) -> Answer {
    let missing = msg.contains("no such column") || msg.contains("no such table");
    let a = match (missing, zh) {
        (true, true) => format!("数据库里没有问题所说的内容({msg})。可用的表:{}", db.catalog.schema_text().trim()),
        (true, false) => format!("The database has nothing by that name ({msg}). Available: {}", db.catalog.schema_text().trim()),
        (false, true) => format!("查询执行失败:{msg}"),
        (false, false) => format!("The query failed: {msg}"),
    };
    Answer::failed(question, output, Some(sql), msg, a)
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Whether values of the column named `y` add up to a meaningful total: not a rate, share or
/// average (growth, margin, completion, pct, avg_amount, 利润率, 平均...).
fn summable(y: &str) -> bool {
    let l = y.to_lowercase();
    !["growth", "margin", "pct", "percent", "rate", "ratio", "share", "completion", "avg", "average", "mean", "率", "均", "占比"].iter().any(|w| l.contains(w))
}

/// One sentence summing the result up.
fn sentence(spec: &ChartSpec, rows: &Rows, zh: bool) -> String {
    if rows.rows.is_empty() {
        return if zh { "没有符合条件的数据。".into() } else { "No rows match.".into() };
    }
    let col = |n: &Option<String>| n.as_ref().and_then(|n| rows.columns.iter().position(|c| c == n));
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.as_f64().map(fmt_num).unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    };
    match (spec.kind, col(&spec.x), col(&spec.y)) {
        (ChartType::Number, ..) | (_, None, _) | (_, _, None) if rows.rows.len() == 1 => {
            let parts: Vec<String> = rows.columns.iter().zip(&rows.rows[0]).map(|(c, v)| format!("{c} {}", text(v))).collect();
            if zh {
                format!("结果:{}。", parts.join(","))
            } else {
                format!("Result: {}.", parts.join(", "))
            }
        }
        (ChartType::Line | ChartType::Bar | ChartType::Pie, Some(xi), Some(yi)) if spec.series.is_none() => {
            let vals: Vec<(String, f64)> = rows.rows.iter().map(|r| (text(&r[xi]), r[yi].as_f64().unwrap_or(0.0))).collect();
            let total: f64 = vals.iter().map(|v| v.1).sum();
            let max = vals.iter().cloned().fold(None::<(String, f64)>, |m, v| if m.as_ref().map_or(true, |m| v.1 > m.1) { Some(v) } else { m }).unwrap_or_default();
            let min = vals.iter().cloned().fold(None::<(String, f64)>, |m, v| if m.as_ref().map_or(true, |m| v.1 < m.1) { Some(v) } else { m }).unwrap_or_default();
            let y = spec.y.clone().unwrap_or_default();
            if spec.kind == ChartType::Pie && total > 0.0 {
                let pct = max.1 / total * 100.0;
                return if zh { format!("{}占比最大,{y} {},占 {pct:.1}%。", max.0, fmt_num(max.1)) } else { format!("{} has the largest share: {y} {} ({pct:.1}%).", max.0, fmt_num(max.1)) };
            }
            // Rates, shares and averages do not add up to anything.
            let (n, hi, lo) = (vals.len(), format!("{}({})", max.0, fmt_num(max.1)), format!("{}({})", min.0, fmt_num(min.1)));
            match (zh, summable(&y)) {
                (true, true) => format!("共 {n} 项,{y} 合计 {};最高 {hi},最低 {lo}。", fmt_num(total)),
                (true, false) => format!("共 {n} 项 {y};最高 {hi},最低 {lo}。"),
                (false, true) => format!("{n} values of {y}, {} in total; highest {} ({}), lowest {} ({}).", fmt_num(total), max.0, fmt_num(max.1), min.0, fmt_num(min.1)),
                (false, false) => format!("{n} values of {y}; highest {} ({}), lowest {} ({}).", max.0, fmt_num(max.1), min.0, fmt_num(min.1)),
            }
        }
        _ => {
            if zh {
                format!("共 {} 行结果。", rows.rows.len())
            } else {
                format!("{} rows.", rows.rows.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_averages_are_not_summed_in_the_sentence() {
        let rows = Rows { columns: vec!["region".into(), "growth".into()], rows: vec![vec!["华北".into(), 5.5.into()], vec!["华东".into(), (-2.0).into()]] };
        let spec = |y: &str| ChartSpec { kind: ChartType::Bar, x: Some("region".into()), y: Some(y.into()), series: None, title: String::new() };
        assert_eq!(sentence(&spec("growth"), &rows, true), "共 2 项 growth;最高 华北(5.50),最低 华东(-2)。");
        assert_eq!(sentence(&spec("growth"), &rows, false), "2 values of growth; highest 华北 (5.50), lowest 华东 (-2).");
        let amounts = Rows { columns: vec!["region".into(), "amount".into()], rows: rows.rows.clone() };
        assert_eq!(sentence(&spec("amount"), &amounts, false), "2 values of amount, 3.50 in total; highest 华北 (5.50), lowest 华东 (-2).");
    }

    fn tops(v: &[(&str, f32)]) -> Vec<shovel_core::TopLogprob> {
        v.iter().map(|(t, l)| shovel_core::TopLogprob { token: t.to_string(), logprob: *l, bytes: t.as_bytes().to_vec() }).collect()
    }

    #[test]
    fn the_decline_margin_sums_each_branch_and_waits_for_the_choice() {
        let b = ["{\"sql\"", "{\"error\""];
        // Both branches still open: no choice yet.
        assert_eq!(branch_margin("", &tops(&[("{\"", -0.01), ("{", -5.0)]), b), None);
        // The choice: "error" and "e" decline, "sql" answers.
        let m = branch_margin("{\"", &tops(&[("sql", -0.1), ("error", -2.5), ("e", -3.0)]), b).unwrap();
        let decline = (-2.5f32).exp() + (-3.0f32).exp();
        assert!((m - (decline.ln() + 0.1)).abs() < 1e-5, "{m}");
        // A branch outside the top list counts at the lowest listed probability.
        assert_eq!(branch_margin("{\"", &tops(&[("sql", -0.2), ("s", -4.0)]), b), Some(-4.0 - ((-0.2f32).exp() + (-4.0f32).exp()).ln()));
    }

    #[test]
    fn the_first_object_is_found_closing_across_tokens() {
        let mut s = ObjectEnd::default();
        assert!(!s.feed("Here: {\"sql\":\"SELECT '}'"));
        assert!(!s.feed(" AS \\\"x\", \"chart\":{\"type\":\"bar\"}"));
        assert!(s.feed("} and more"));
        let mut s = ObjectEnd::default();
        assert!(!s.feed("no braces } here"));
    }

    #[test]
    fn replies_parse_from_the_first_object_and_serialize_compactly() {
        let r = Reply::parse("Sure: {\"sql\":\"SELECT 1\",\"chart\":{\"type\":\"number\"}} trailing").unwrap();
        assert_eq!(r.sql.as_deref(), Some("SELECT 1"));
        assert_eq!(r.chart.unwrap().kind, ChartType::Number);
        assert!(Reply::parse("no json here").is_none());
        assert!(Reply::parse("{\"chart\":{\"type\":\"line\"}}").is_none());
        let ex: Example = serde_json::from_str(r#"{"question":"q","sql":"SELECT 1","chart":{"type":"bar","x":"a","y":"b"}}"#).unwrap();
        assert_eq!(serde_json::to_string(&ex.reply).unwrap(), r#"{"sql":"SELECT 1","chart":{"type":"bar","x":"a","y":"b"}}"#);
    }
}

#[cfg(test)]
mod refusal_tests {
    #[tokio::test]
    async fn a_refusal_naming_what_the_catalogue_holds_is_refuted() {
        let (_d, cat) = crate::catalog::demo_catalog().await;
        for why in ["no sales data", "no sale data", "没有订单数据", "no profit data", "no electronics data", "no amount data", "no city or order data", "no product data"] {
            assert!(super::refutes(&cat, why), "{why}");
        }
        for why in [
            "数据库中没有客户信息",
            "no debt or equity data",
            "no tickets or no support data",
            "没有工作旅游报销的数据",
            "the database has no salesperson or employee data",
            "no weather data",
            "没有客服工单年的长度或没有客服的数据",
            "the sales table has no customer column",
            "no weather data by region",
            "no rainfall data for 北京",
            "no churn target defined",
        ] {
            assert!(!super::refutes(&cat, why), "{why}");
        }
    }
}
