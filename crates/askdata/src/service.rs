//! Ask-Data as a service for the HTTP API: one configured database (clients never name files on
//! the server), questions answered by any served model, and feedback appended to a chat JSONL
//! dataset that `shovel tune` or the fine-tuning API takes as it is.

use crate::ask::{self, Answer, AskError, AskOptions, Database, Example, Reply};
use crate::chart::{ChartSpec, ChartType};
use crate::{exec, guard};
use serde::{Deserialize, Serialize};
use shovel_core::{InferenceBackend, ModelId};
use std::io::Write;
use std::path::PathBuf;
use tokio::sync::Mutex;

/// Feedback on an answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Feedback {
    /// The question.
    pub question: String,
    /// The SQL that was shown.
    #[serde(default)]
    pub sql: Option<String>,
    /// `correct` or `wrong`.
    pub verdict: String,
    /// For `wrong`: the SQL that answers the question.
    #[serde(default)]
    pub corrected_sql: Option<String>,
    /// The chart the answer should have (default: the chart type `table`).
    #[serde(default)]
    pub chart: Option<ChartSpec>,
}

/// What feedback did.
#[derive(Debug, Clone, Serialize)]
pub struct FeedbackReceipt {
    /// The dataset file (chat JSONL).
    pub dataset: String,
    /// Examples in it now.
    pub examples: usize,
}

/// Why feedback was refused: the field at fault and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct FeedbackError {
    /// The request field.
    pub param: &'static str,
    /// Why.
    pub message: String,
}

fn bad(param: &'static str, message: impl Into<String>) -> FeedbackError {
    FeedbackError { param, message: message.into() }
}

/// The Ask-Data service.
pub struct AskData {
    db: Mutex<Database>,
    /// The model used when a request names none.
    pub default_model: ModelId,
    /// Where feedback examples go.
    pub feedback_path: PathBuf,
    opts: AskOptions,
}

impl AskData {
    /// A service over an opened database.
    pub fn new(db: Database, default_model: ModelId, feedback_path: PathBuf) -> Self {
        AskData { db: Mutex::new(db), default_model, feedback_path, opts: AskOptions::default() }
    }

    /// Answers a question. Generation runs without holding the database; only the query does.
    pub async fn ask(&self, backend: &dyn InferenceBackend, model: Option<ModelId>, question: &str) -> Result<Answer, AskError> {
        let model = model.unwrap_or_else(|| self.default_model.clone());
        let catalog = self.db.lock().await.catalog.clone();
        let output = ask::generate(backend, &model, &catalog, question, &self.opts).await?;
        let mut db = self.db.lock().await;
        Ok(ask::answer_reply(&mut db, question, output, &self.opts).await)
    }

    /// Checks feedback (the SQL must pass the guard and run) and appends it as one training
    /// example, with the prompt the question would get, in a single append.
    pub async fn feedback(&self, f: Feedback) -> Result<FeedbackReceipt, FeedbackError> {
        if f.question.trim().is_empty() {
            return Err(bad("question", "`question` must not be empty"));
        }
        let sql = match f.verdict.as_str() {
            "correct" => f.sql.clone().filter(|s| !s.trim().is_empty()).ok_or_else(|| bad("sql", "`sql` is required when the verdict is correct"))?,
            "wrong" => f.corrected_sql.clone().filter(|s| !s.trim().is_empty()).ok_or_else(|| bad("corrected_sql", "`corrected_sql` is required when the verdict is wrong"))?,
            v => return Err(bad("verdict", format!("`verdict` must be correct or wrong, got `{v}`"))),
        };
        let param = if f.verdict == "correct" { "sql" } else { "corrected_sql" };
        let mut db = self.db.lock().await;
        let guarded = guard::check_in(db.conn.dialect(), &sql, &db.catalog.table_names(), self.opts.max_rows).map_err(|e| bad(param, e.to_string()))?;
        exec::run(&mut db.conn, &guarded, self.opts.timeout).await.map_err(|e| bad(param, format!("the SQL does not run: {e}")))?;
        let chart = f.chart.clone().unwrap_or(ChartSpec { kind: ChartType::Table, x: None, y: None, series: None, title: String::new() });
        let ex = Example { question: f.question.trim().to_string(), reply: Reply { sql: Some(sql), chart: Some(ChartSpec { title: String::new(), ..chart }), error: None } };
        let line = ask::chat_example(&db.catalog, &ex).to_string() + "\n";
        drop(db);
        let path = self.feedback_path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            // One write of a whole line: a crash leaves the file without it, never half of it.
            f.write_all(line.as_bytes())?;
            f.sync_data()?;
            Ok(std::fs::read_to_string(&path)?.lines().filter(|l| !l.trim().is_empty()).count())
        })
        .await
        .map_err(|e| bad("", e.to_string()))?
        .map(|n| FeedbackReceipt { dataset: self.feedback_path.display().to_string(), examples: n })
        .map_err(|e| bad("", format!("{}: {e}", self.feedback_path.display())))
    }
}
