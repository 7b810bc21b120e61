//! Shovel's datasets for fine-tuning: reading the common formats into one shape (chat turns),
//! validating every line with its number and field, statistics and train/validation splits.
//!
//! Formats: OpenAI chat JSONL (`messages`, with `weight` on assistant turns), prompt/completion
//! JSONL, Alpaca (JSON array or JSONL of `instruction`/`input`/`output`), ShareGPT JSONL
//! (`conversations` of `from`/`value`), and CSV with `question`/`answer` columns. This crate knows
//! nothing of tensors or tokenizers: token counts come from a function the caller passes in, so
//! the same chat template and tokenizer the server uses do the counting.
#![warn(missing_docs)]

mod parse;

pub use parse::parse;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Errors reading a dataset as a whole (a bad line is a [`LineError`], not this).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file's format could not be recognised.
    #[error("cannot tell the dataset format: {0}")]
    UnknownFormat(String),
    /// The file is not UTF-8 text.
    #[error("the dataset is not UTF-8 text (byte {0})")]
    NotUtf8(usize),
}

/// A dataset format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// OpenAI chat JSONL: `{"messages": [{"role", "content", "weight"?}]}`.
    OpenaiChat,
    /// `{"prompt", "completion"}` JSONL.
    PromptCompletion,
    /// Alpaca: `{"instruction", "input"?, "output"}` as a JSON array or JSONL.
    Alpaca,
    /// ShareGPT JSONL: `{"conversations": [{"from": "human"|"gpt"|"system", "value"}]}`.
    Sharegpt,
    /// CSV with `question` and `answer` columns (and optional `system`).
    Csv,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
    /// For assistant turns: whether the loss is taken on it (OpenAI's `weight`, 0 or 1).
    pub weight: f32,
}

/// One training example: a conversation with at least one assistant turn to learn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// The turns, in order.
    pub messages: Vec<Turn>,
    /// The 1-based line (or record) it came from.
    pub line: usize,
}

/// A problem with one line, named by line number and field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineError {
    /// 1-based line (or, for a JSON array, record) number.
    pub line: usize,
    /// The field at fault, e.g. `messages[2].role`; empty for the whole line.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(f, "line {}: {} {}", self.line, self.field, self.message)
        }
    }
}

/// Most line errors kept; the total is still counted.
pub const MAX_ERRORS: usize = 100;
/// Fewest examples a fine-tune accepts.
pub const MIN_EXAMPLES: usize = 10;

/// What parsing found: the good examples and every bad line (up to [`MAX_ERRORS`]).
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The format read.
    pub format: Format,
    /// Examples from good lines.
    pub examples: Vec<Example>,
    /// Bad lines, first [`MAX_ERRORS`].
    pub errors: Vec<LineError>,
    /// How many bad lines in all.
    pub error_count: usize,
}

/// A dataset with no bad line and enough examples to train on.
#[derive(Debug, Clone)]
pub struct ValidatedDataset {
    /// The format it was read from.
    pub format: Format,
    /// Its examples.
    pub examples: Vec<Example>,
}

/// Why a dataset cannot be trained on.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// Some lines are bad; every error is listed (up to the cap).
    BadLines {
        /// The errors.
        errors: Vec<LineError>,
        /// Their total count.
        total: usize,
    },
    /// Fewer than [`MIN_EXAMPLES`] examples.
    TooFew {
        /// How many there are.
        count: usize,
    },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::BadLines { errors, total } => {
                write!(f, "{total} bad line(s)")?;
                for e in errors {
                    write!(f, "\n  {e}")?;
                }
                if *total > errors.len() {
                    write!(f, "\n  ... and {} more", total - errors.len())?;
                }
                Ok(())
            }
            Rejection::TooFew { count } => write!(f, "{count} example(s); a fine-tune needs at least {MIN_EXAMPLES}"),
        }
    }
}

impl Parsed {
    /// The dataset, if it has no bad line and at least [`MIN_EXAMPLES`] examples.
    pub fn validate(self) -> Result<ValidatedDataset, Rejection> {
        if self.error_count > 0 {
            return Err(Rejection::BadLines { errors: self.errors, total: self.error_count });
        }
        if self.examples.len() < MIN_EXAMPLES {
            return Err(Rejection::TooFew { count: self.examples.len() });
        }
        Ok(ValidatedDataset { format: self.format, examples: self.examples })
    }
}

/// Dataset statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Examples.
    pub examples: usize,
    /// Fewest tokens in an example.
    pub tokens_min: usize,
    /// Mean tokens per example.
    pub tokens_mean: f64,
    /// Most tokens in an example.
    pub tokens_max: usize,
    /// Tokens in all examples.
    pub tokens_total: usize,
    /// Examples longer than the training length, which would be truncated.
    pub truncated: usize,
    /// Examples identical to an earlier one.
    pub duplicates: usize,
    /// Estimated seconds to train `epochs` epochs at `tokens_per_second`.
    pub est_train_seconds: f64,
}

/// Computes statistics; `count_tokens` gives an example's length as the trainer will see it.
pub fn stats(examples: &[Example], count_tokens: &dyn Fn(&Example) -> usize, max_len: usize, epochs: usize, tokens_per_second: f64) -> Stats {
    let lens: Vec<usize> = examples.iter().map(count_tokens).collect();
    let total: usize = lens.iter().sum();
    let mut seen = HashSet::new();
    let duplicates = examples.iter().filter(|e| !seen.insert(e.messages.iter().map(|t| format!("{}\u{1}{}\u{1}{}", t.role, t.content, t.weight)).collect::<Vec<_>>().join("\u{2}"))).count();
    let trained: usize = lens.iter().map(|&l| l.min(max_len)).sum();
    Stats {
        examples: examples.len(),
        tokens_min: lens.iter().copied().min().unwrap_or(0),
        tokens_mean: if lens.is_empty() { 0.0 } else { total as f64 / lens.len() as f64 },
        tokens_max: lens.iter().copied().max().unwrap_or(0),
        tokens_total: total,
        truncated: lens.iter().filter(|&&l| l > max_len).count(),
        duplicates,
        est_train_seconds: if tokens_per_second > 0.0 { (trained * epochs) as f64 / tokens_per_second } else { 0.0 },
    }
}

/// Splits into (train, validation): `ratio` of the examples (at least one when there are two or
/// more) go to validation, chosen by a seeded shuffle so the split is reproducible.
pub fn split(examples: Vec<Example>, ratio: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let n = examples.len();
    let n_val = if n < 2 || ratio <= 0.0 { 0 } else { ((n as f64 * ratio).round() as usize).clamp(1, n - 1) };
    // SplitMix64: a small, well-known generator; the order depends only on the seed.
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    };
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    let val: HashSet<usize> = idx[..n_val].iter().copied().collect();
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for (i, e) in examples.into_iter().enumerate() {
        if val.contains(&i) {
            valid.push(e);
        } else {
            train.push(e);
        }
    }
    (train, valid)
}

#[cfg(test)]
mod tests;
