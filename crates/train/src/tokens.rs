//! Examples to token sequences with per-token loss weights, through the same chat template and
//! tokenizer the server uses, so a tuned model is prompted at serving time exactly as it was
//! trained.
//!
//! For each assistant turn `i`, the text up to it is rendered with the generation prompt (what
//! the server renders for a request ending at turn `i - 1`), then the text including it. The
//! difference is the assistant's answer (with its end-of-turn marker): those tokens carry the
//! turn's `weight`; everything else carries 0. The first prompt is tokenized whole, exactly as
//! the server tokenizes it.

use crate::{Error, Result};
use shovel_core::ChatMessage;
use shovel_data::Example;
use shovel_engine::template::ChatTemplate;
use shovel_engine::tokenizer::Tokenizer;

/// One training sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct TokSeq {
    /// Tokens.
    pub tokens: Vec<u32>,
    /// `weights[i]`: loss weight on predicting `tokens[i]` from the tokens before it (0 for
    /// prompt tokens and for `i = 0`).
    pub weights: Vec<f32>,
    /// Whether the example was cut at the maximum length.
    pub truncated: bool,
}

impl TokSeq {
    /// Sum of loss weights.
    pub fn weight(&self) -> f32 {
        self.weights.iter().sum()
    }
}

fn render(t: &ChatTemplate, msgs: &[ChatMessage], gen: bool) -> Result<String> {
    t.render(msgs, gen).map_err(|e| Error::Data(e.to_string()))
}

/// Tokenizes one example, cutting at `max_len` tokens.
pub fn encode(tk: &Tokenizer, tmpl: &ChatTemplate, ex: &Example, max_len: usize) -> Result<TokSeq> {
    let msgs: Vec<ChatMessage> = ex.messages.iter().map(|m| ChatMessage::new(m.role.clone(), m.content.clone())).collect();
    let mut tokens: Vec<u32> = Vec::new();
    let mut weights: Vec<f32> = Vec::new();
    let mut prev = String::new();
    let bos_text = tk.bos.map(|b| tk.piece(b).to_string()).filter(|b| !b.is_empty());
    let enc = |text: &str, first: bool| -> Result<Vec<u32>> {
        let add_bos = first && tk.add_bos && !bos_text.as_ref().is_some_and(|b| text.starts_with(b.as_str()));
        tk.encode(text, add_bos, true).map_err(|e| Error::Data(e.to_string()))
    };
    for (i, m) in ex.messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let prompt = render(tmpl, &msgs[..i], true)?;
        let full = render(tmpl, &msgs[..=i], false)?;
        let (Some(p_new), Some(answer)) = (prompt.strip_prefix(prev.as_str()), full.strip_prefix(prompt.as_str())) else {
            return Err(Error::Data(format!(
                "line {}: the chat template does not render this conversation turn by turn (a later turn changes earlier text), so assistant tokens cannot be located",
                ex.line
            )));
        };
        let p = enc(p_new, tokens.is_empty())?;
        weights.extend(std::iter::repeat_n(0.0, p.len()));
        tokens.extend(p);
        let a = enc(answer, tokens.is_empty())?;
        weights.extend(std::iter::repeat_n(m.weight, a.len()));
        tokens.extend(a);
        prev = full;
    }
    let truncated = tokens.len() > max_len;
    tokens.truncate(max_len);
    weights.truncate(max_len);
    if let Some(w) = weights.first_mut() {
        *w = 0.0;
    }
    Ok(TokSeq { tokens, weights, truncated })
}

/// Tokenizes a dataset. Examples left with nothing to learn (every answer cut off by
/// `max_len`, or all weights 0) are dropped; their lines are returned.
pub fn encode_all(tk: &Tokenizer, tmpl: &ChatTemplate, examples: &[Example], max_len: usize) -> Result<(Vec<TokSeq>, Vec<usize>)> {
    let mut out = Vec::with_capacity(examples.len());
    let mut dropped = Vec::new();
    for ex in examples {
        let s = encode(tk, tmpl, ex, max_len)?;
        if s.weight() > 0.0 {
            out.push(s);
        } else {
            dropped.push(ex.line);
        }
    }
    Ok((out, dropped))
}
