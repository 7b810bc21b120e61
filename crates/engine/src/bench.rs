//! In-process throughput measurements of the model code, shaped like llama.cpp's `llama-bench`
//! (pp: one prompt of N tokens in one step; tg: N tokens decoded one at a time from an empty
//! context) and `llama-batched-bench` (P sequences of a prompt each, then G decode steps over
//! all of them together), so the two can be compared side by side. Not tests: nothing here
//! asserts a time.

use crate::model::{BatchItem, KvCache, Model};
use crate::sampler::argmax;
use std::time::Instant;

/// Tokens per second for each measure, or `None` where not run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    /// Prompt-processing throughput (pp), tokens/s.
    pub prefill_tok_s: Option<f64>,
    /// Single-sequence decode throughput (tg), tokens/s.
    pub decode_tok_s: Option<f64>,
    /// Aggregate decode throughput with `parallel` sequences, tokens/s.
    pub batched_decode_tok_s: Option<f64>,
    /// Time to first token of a prompt with a fresh 500-token prefix, ms.
    pub prefix_cold_ttft_ms: Option<f64>,
    /// The same with that prefix in the prefix cache, ms.
    pub prefix_warm_ttft_ms: Option<f64>,
    /// Single-sequence decode held to a JSON schema (token mask every step), tokens/s.
    pub json_decode_tok_s: Option<f64>,
    /// Of that, the time the grammar holds decoding up, microseconds per token: waiting for the
    /// mask (computed ahead on the grammar thread during the forward pass), applying it, picking
    /// the token and feeding it to the grammar.
    pub json_mask_us_per_token: Option<f64>,
    /// Free decode measured back to back with each held run, tokens/s (the pairs' baseline).
    pub json_free_decode_tok_s: Option<f64>,
    /// Held over free decode, the median over pairs measured back to back.
    pub json_ratio: Option<f64>,
}

/// A schema the decode measure cannot finish within its tokens: an array of records with free
/// strings (the costliest masks: most of the vocabulary can continue a string), numbers and enums.
pub fn json_bench_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "array",
        "minItems": 1000,
        "items": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "city": {"type": "string"}, "age": {"type": "integer"}, "plan": {"enum": ["free", "pro", "team"]}},
            "required": ["name", "city", "age", "plan"],
            "additionalProperties": false
        }
    })
}

/// `n` greedy decode steps of one sequence held to [`json_bench_schema`], as the scheduler runs
/// it (mask before sampling, advance after); (tokens/s, grammar microseconds per token on the
/// critical path).
pub fn json_decode(model: &Model, compiler: &crate::constrain::GrammarCompiler, n: usize) -> Result<(f64, f64), String> {
    let mut g = compiler.compile(&shovel_core::OutputConstraint::JsonSchema(json_bench_schema()))?;
    let mut kv = KvCache::new(model.config.n_layers);
    let mut tok = tokens(1, model.config.vocab, 2)[0];
    let mut mask_s = 0.0;
    let t = Instant::now();
    for _ in 0..n {
        let mut l = model.forward(&mut [BatchItem { tokens: std::slice::from_ref(&tok), kv: &mut kv, want_logits: true, adapter: None }]);
        let logits = l[0].as_mut().ok_or("no logits")?;
        let m = Instant::now();
        g.mask(logits)?;
        tok = argmax(logits);
        g.advance(tok)?;
        mask_s += m.elapsed().as_secs_f64();
    }
    Ok((n as f64 / t.elapsed().as_secs_f64(), mask_s * 1e6 / n as f64))
}

/// Pairs of free and held decodes run back to back by [`json_vs_free`]. Single 128-token runs
/// (about half a second each) moved by ±15% on a shared machine, so a ratio of two separate runs
/// read anywhere from 0.81x to 1.10x; the median of pair ratios is steadier.
pub const JSON_PAIRS: usize = 5;

/// The JSON measure as pairs: free decode of `n` tokens and `n` held to the schema, back to back
/// (alternating which goes first), [`JSON_PAIRS`] times; medians of (free tokens/s, held
/// tokens/s, mask µs per token, held/free per pair).
pub fn json_vs_free(model: &Model, tokenizer: std::sync::Arc<crate::tokenizer::Tokenizer>, n: usize) -> Result<(f64, f64, f64, f64), String> {
    let compiler = crate::constrain::GrammarCompiler::new(tokenizer)?;
    let (mut free, mut held, mut mask, mut ratio) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..JSON_PAIRS {
        // Alternate which of the two runs first, so neither always follows the other.
        let (f, (h, m)) = if i % 2 == 0 {
            let f = decode(model, n);
            (f, json_decode(model, &compiler, n)?)
        } else {
            let h = json_decode(model, &compiler, n)?;
            (decode(model, n), h)
        };
        free.push(f);
        held.push(h);
        mask.push(m);
        ratio.push(h / f);
    }
    Ok((median(free), median(held), median(mask), median(ratio)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Time to first token (prefill to logits) of `prefix + suffix` tokens, without and then with
/// the prefix's keys and values in a [`PrefixCache`], as the scheduler runs it; (cold, warm) ms.
pub fn prefix_ttft(model: &Model, prefix: usize, suffix: usize) -> (f64, f64) {
    let shared = tokens(prefix, model.config.vocab, 20);
    let prompt = |seed: u64| [shared.clone(), tokens(suffix, model.config.vocab, seed)].concat();
    let mut cache = crate::prefix::PrefixCache::new(1 << 30);
    let first = prompt(21);
    let t = Instant::now();
    let mut kv = KvCache::new(model.config.n_layers);
    let _ = model.forward(&mut [BatchItem { tokens: &first, kv: &mut kv, want_logits: true, adapter: None }]);
    let cold = t.elapsed().as_secs_f64() * 1e3;
    cache.insert(0, first, kv);
    let second = prompt(22);
    let t = Instant::now();
    let mut kv = cache.lookup(0, &second).unwrap_or_else(|| KvCache::new(model.config.n_layers));
    let start = kv.len();
    let _ = model.forward(&mut [BatchItem { tokens: &second[start..], kv: &mut kv, want_logits: true, adapter: None }]);
    (cold, t.elapsed().as_secs_f64() * 1e3)
}

/// Deterministic pseudo-random token ids (llama-bench also feeds random tokens).
fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) as usize % vocab.max(1)) as u32
        })
        .collect()
}

/// Prefill of one `n`-token prompt in a single step; tokens/s.
pub fn prefill(model: &Model, n: usize) -> f64 {
    let toks = tokens(n, model.config.vocab, 1);
    let mut kv = KvCache::new(model.config.n_layers);
    let t = Instant::now();
    let _ = model.forward(&mut [BatchItem { tokens: &toks, kv: &mut kv, want_logits: true, adapter: None }]);
    n as f64 / t.elapsed().as_secs_f64()
}

/// `n` greedy decode steps of one sequence from an empty context; tokens/s.
pub fn decode(model: &Model, n: usize) -> f64 {
    let mut kv = KvCache::new(model.config.n_layers);
    let mut tok = tokens(1, model.config.vocab, 2)[0];
    let t = Instant::now();
    for _ in 0..n {
        let l = model.forward(&mut [BatchItem { tokens: std::slice::from_ref(&tok), kv: &mut kv, want_logits: true, adapter: None }]);
        tok = argmax(l[0].as_deref().unwrap_or(&[0.0]));
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// `parallel` sequences each prefilled with `prompt` tokens, then `gen` decode steps over all of
/// them in one batch; aggregate decode tokens/s (the prefill is not timed).
pub fn batched_decode(model: &Model, parallel: usize, prompt: usize, gen: usize) -> f64 {
    let mut kvs: Vec<KvCache> = (0..parallel).map(|_| KvCache::new(model.config.n_layers)).collect();
    let prompts: Vec<Vec<u32>> = (0..parallel).map(|i| tokens(prompt, model.config.vocab, 10 + i as u64)).collect();
    let mut last: Vec<u32> = Vec::with_capacity(parallel);
    {
        let mut items: Vec<BatchItem> = kvs.iter_mut().zip(&prompts).map(|(kv, p)| BatchItem { tokens: p, kv, want_logits: true, adapter: None }).collect();
        for l in model.forward(&mut items) {
            last.push(argmax(l.as_deref().unwrap_or(&[0.0])));
        }
    }
    let t = Instant::now();
    for _ in 0..gen {
        let cur = last.clone();
        let mut items: Vec<BatchItem> = kvs.iter_mut().zip(&cur).map(|(kv, tok)| BatchItem { tokens: std::slice::from_ref(tok), kv, want_logits: true, adapter: None }).collect();
        for (i, l) in model.forward(&mut items).into_iter().enumerate() {
            last[i] = argmax(l.as_deref().unwrap_or(&[0.0]));
        }
    }
    (parallel * gen) as f64 / t.elapsed().as_secs_f64()
}

/// Embedding throughput: `texts` inputs of `len` tokens each (random ids wrapped in the model's
/// special tokens), encoded in batches of `batch`; texts/s.
pub fn embed(enc: &crate::bert::Encoder, texts: usize, len: usize, batch: usize) -> f64 {
    let seqs: Vec<Vec<u32>> = (0..texts).map(|i| enc.wrap(&tokens(len.saturating_sub(2).max(1), enc.vocab(), 100 + i as u64))).collect();
    enc.embed(&seqs[..batch.min(texts)]);
    let t0 = Instant::now();
    for chunk in seqs.chunks(batch.max(1)) {
        enc.embed(chunk);
    }
    texts as f64 / t0.elapsed().as_secs_f64()
}
