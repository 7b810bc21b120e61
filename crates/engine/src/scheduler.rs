//! The scheduler: one thread per loaded model owns the weights and every running sequence, and
//! runs continuous batching. Each step it admits new requests, lets every sequence contribute a
//! prompt chunk (prefill, under a token budget) or its one new token (decode) to a single forward
//! pass, samples, streams text out, and retires finished or abandoned sequences. A client that
//! hangs up (its receiver dropped) is retired at the next step.
//!
//! Key/value memory is one budget ([`SchedulerConfig::kv_cache_bytes`]) for running sequences
//! and the prefix cache together, so memory stays bounded however many clients come: the cache
//! lives in what running sequences leave free and gives way (least recently used first) when
//! they need it; a request is admitted only when its prompt fits beside the running sequences'
//! prompts; and when decoding sequences outgrow the budget, the newest is preempted (its blocks
//! freed) and later recomputed from its prompt and the tokens it had made, as vLLM does, so
//! its client sees only a pause.

use crate::constrain::{Advance, Grammar};
use crate::lora::Adapter;
use crate::model::{BatchItem, KvCache, Model};
use crate::prefix::PrefixCache;
use crate::sampler::{top_logprobs, Sampler};
use crate::tokenizer::Tokenizer;
use shovel_core::{Event, FinishReason, TokenLogprob, TopLogprob, Usage};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// Scheduler limits.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Most tokens one forward step processes (prefill chunks plus decode tokens). Bounds the
    /// latency a long prompt adds to everyone else's next token.
    pub max_batch_tokens: usize,
    /// Most sequences running at once; more wait in the queue.
    pub max_running: usize,
    /// Bytes of finished sequences' keys and values kept for prompts that share their prefix.
    pub prefix_cache_bytes: usize,
    /// Bytes of keys and values this model may hold in all: running sequences' and the prefix
    /// cache's (0: no bound). Also bounds one sequence's length.
    pub kv_cache_bytes: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig { max_batch_tokens: 512, max_running: 16, prefix_cache_bytes: 256 << 20, kv_cache_bytes: 1 << 30 }
    }
}

impl SchedulerConfig {
    /// Blocks of `block_bytes` the budget allows (`usize::MAX` when unbounded).
    pub fn kv_blocks(&self, block_bytes: usize) -> usize {
        if self.kv_cache_bytes == 0 {
            usize::MAX
        } else {
            self.kv_cache_bytes / block_bytes.max(1)
        }
    }
}

/// A request the engine handle has validated and tokenized.
pub struct SeqRequest {
    /// Prompt tokens.
    pub prompt: Vec<u32>,
    /// Generated tokens allowed.
    pub max_tokens: usize,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Alternatives to report per token, if logprobs were asked for.
    pub top_logprobs: Option<usize>,
    /// Sampler for this sequence.
    pub sampler: Sampler,
    /// Where events go.
    pub tx: UnboundedSender<Event>,
    /// Counts this request as in flight until it is dropped (finished, cancelled or refused).
    pub inflight: InflightGuard,
    /// The LoRA adapter to run with, and a key naming it (for the prefix cache).
    pub adapter: Option<(u64, Arc<Adapter>)>,
    /// The grammar the output must follow (structured output), if any.
    pub grammar: Option<Grammar>,
}

/// Decrements a model's in-flight count when dropped.
pub struct InflightGuard(pub std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl InflightGuard {
    /// Takes one of `limit` places in `count`, or `None` when all are taken (the caller refuses
    /// the request as overloaded).
    pub fn admit(count: &std::sync::Arc<std::sync::atomic::AtomicUsize>, limit: usize) -> Option<Self> {
        use std::sync::atomic::Ordering;
        if count.fetch_add(1, Ordering::AcqRel) >= limit {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InflightGuard(count.clone()))
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// What the scheduler thread publishes for metrics, updated every step.
#[derive(Debug, Default)]
pub struct SchedStats {
    /// Sequences running.
    pub running: AtomicUsize,
    /// Requests waiting to start.
    pub waiting: AtomicUsize,
    /// Bytes of keys and values held by running sequences.
    pub kv_bytes: AtomicUsize,
    /// Bytes held by the prefix cache.
    pub prefix_cache_bytes: AtomicUsize,
    /// Key/value blocks running sequences refer to, each counted once however many share it.
    pub kv_blocks: AtomicUsize,
    /// Key/value blocks alive for this model: running sequences' and the prefix cache's.
    pub kv_blocks_held: AtomicUsize,
    /// Sequences preempted so far for want of key/value memory (each recomputed later).
    pub preemptions: AtomicUsize,
    /// The most key/value blocks held at once (running sequences' and the prefix cache's).
    pub kv_blocks_peak: AtomicUsize,
}

/// Messages to the scheduler thread.
pub enum Command {
    /// Start a sequence.
    Add(Box<SeqRequest>),
}

struct Sequence {
    req: SeqRequest,
    /// First admission's order, to preempt the newest first (kept when recomputed, so a
    /// sequence preempted once is not the first victim again).
    admitted: u64,
    cached: usize,
    tokens: Vec<u32>,
    kv: KvCache,
    generated: usize,
    pending: Vec<u8>,
    text: String,
    emitted: usize,
}

enum Step {
    Continue,
    Finished(FinishReason),
    Failed(String),
}

impl Sequence {
    fn prefilling(&self) -> bool {
        self.kv.len() < self.tokens.len()
    }

    /// Appends a sampled token's bytes; returns the text now safe to release and whether a stop
    /// string was hit.
    fn push_text(&mut self, bytes: &[u8]) -> (String, bool) {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // Bytes that can never become valid are replaced; an incomplete tail waits.
            Err(e) if e.error_len().is_some() => self.pending.len(),
            Err(e) => e.valid_up_to(),
        };
        let chunk: Vec<u8> = self.pending.drain(..valid).collect();
        self.text.push_str(&String::from_utf8_lossy(&chunk));
        let max_stop = self.req.stop.iter().map(String::len).max().unwrap_or(0);
        let mut search_from = self.emitted.saturating_sub(max_stop);
        while !self.text.is_char_boundary(search_from) {
            search_from -= 1;
        }
        let hit = self.req.stop.iter().filter_map(|s| self.text[search_from..].find(s.as_str()).map(|i| search_from + i)).min();
        if let Some(cut) = hit {
            let out = self.text[self.emitted.min(cut)..cut].to_string();
            // The stop string and anything after it are never part of the output.
            self.text.truncate(cut);
            self.emitted = cut;
            return (out, true);
        }
        // Hold back a tail that could still grow into a stop string.
        let hold = self.req.stop.iter().map(|s| (1..s.len()).rev().find(|&k| s.is_char_boundary(k) && self.text.ends_with(&s[..k])).unwrap_or(0)).max().unwrap_or(0);
        let end = self.text.len() - hold;
        let out = if end > self.emitted { self.text[self.emitted..end].to_string() } else { String::new() };
        self.emitted = self.emitted.max(end);
        (out, false)
    }

    fn flush(&mut self) -> String {
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }
}

/// Runs the scheduler until every command sender is gone.
pub fn run(model: Model, tokenizer: Arc<Tokenizer>, rx: Receiver<Command>, cfg: SchedulerConfig, context_length: usize, stats: Arc<SchedStats>) {
    let mut running: Vec<Sequence> = Vec::new();
    let mut waiting: std::collections::VecDeque<SeqRequest> = Default::default();
    // Sequences preempted for memory: started, and first in line to run again.
    let mut preempted: std::collections::VecDeque<Sequence> = Default::default();
    let n_layers = model.config.n_layers;
    let budget = cfg.kv_blocks(model.config.kv_block_bytes());
    let mut prefixes = PrefixCache::new(cfg.prefix_cache_bytes);
    let mut admissions = 0u64;
    loop {
        if running.is_empty() && waiting.is_empty() && preempted.is_empty() {
            match rx.recv() {
                Ok(Command::Add(r)) => waiting.push_back(*r),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(Command::Add(r)) => waiting.push_back(*r),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if running.is_empty() && waiting.is_empty() && preempted.is_empty() {
                        return;
                    }
                    break;
                }
            }
        }
        waiting.retain(|r| !r.tx.is_closed());
        preempted.retain(|s| !s.req.tx.is_closed());
        // Cancellation: a dropped receiver frees the sequence (and its KV cache) now.
        running.retain(|s| !s.req.tx.is_closed());
        // Admission: preempted sequences first, then new requests in arrival order, each only
        // if its prompt's blocks fit the budget beside what running sequences hold and still
        // need for their prompts, with a block of headroom per sequence for decoding (so a
        // sequence just admitted is not preempted at once); the prefix cache gives way.
        while running.len() < cfg.max_running {
            let (tokens, ns) = match (preempted.front(), waiting.front()) {
                (Some(s), _) => (&s.tokens, s.req.adapter.as_ref().map_or(0, |a| a.0)),
                (None, Some(r)) => (&r.prompt, r.adapter.as_ref().map_or(0, |a| a.0)),
                (None, None) => break,
            };
            let kv = prefixes.lookup(ns, tokens).unwrap_or_else(|| KvCache::new(n_layers));
            let need = kv.blocks_to_grow(tokens.len() - kv.len()) + running.iter().map(|s| s.kv.blocks_to_grow(s.tokens.len() - s.kv.len())).sum::<usize>() + running.len() + 1;
            if !make_room(need, budget, &running, &mut prefixes, Some(&kv)) {
                if running.is_empty() {
                    // Nothing will free memory: a prompt longer than the whole budget is refused
                    // before it gets here (the budget bounds the context), so this is a sequence
                    // whose own blocks are shared with nothing left to evict. Run it anyway.
                    tracing::warn!(need, budget, "admitting a sequence over the key/value budget");
                } else {
                    break;
                }
            }
            admissions += 1;
            let cached = kv.len();
            match preempted.pop_front() {
                Some(mut s) => {
                    s.kv = kv;
                    running.push(s);
                }
                None => {
                    let req = waiting.pop_front().expect("checked above");
                    let _ = req.tx.send(Event::Started { prompt_tokens: req.prompt.len() });
                    let tokens = req.prompt.clone();
                    running.push(Sequence { req, admitted: admissions, cached, tokens, kv, generated: 0, pending: Vec::new(), text: String::new(), emitted: 0 });
                }
            }
        }
        publish(&stats, &running, waiting.len() + preempted.len(), &prefixes);
        if running.is_empty() {
            continue;
        }
        // Decode tokens first (one each), then prompt chunks in arrival order under the token
        // budget; when the step's new blocks do not fit the memory budget, the newest sequence
        // is preempted and the plan made again.
        let take = loop {
            let take = plan(&running, cfg.max_batch_tokens);
            let need = running.iter().zip(&take).map(|(s, &n)| s.kv.blocks_to_grow(n)).sum();
            if make_room(need, budget, &running, &mut prefixes, None) || running.len() == 1 {
                break take;
            }
            // The newest sequence that frees something: one whose blocks are all shared (with
            // sequences that share its prompt) would free nothing.
            let victim = running.iter().enumerate().filter(|(_, s)| s.kv.private_blocks() > 0).max_by_key(|(_, s)| s.admitted).or_else(|| running.iter().enumerate().max_by_key(|(_, s)| s.admitted));
            let mut s = running.swap_remove(victim.map(|(i, _)| i).expect("running is not empty"));
            // Only its keys and values go: its tokens, text, sampler and grammar stay as they
            // are, and re-running the tokens rebuilds the cache.
            s.kv = KvCache::new(n_layers);
            stats.preemptions.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(tokens = s.tokens.len(), "preempted a sequence for key/value memory");
            preempted.push_front(s);
        };
        // Sequences with nothing new to feed (decode waits on its sampled token) are skipped.
        let mut items: Vec<BatchItem<'_>> = Vec::new();
        let mut idx = Vec::new();
        for (i, s) in running.iter_mut().enumerate() {
            if take[i] == 0 {
                continue;
            }
            let start = s.kv.len();
            let tokens = &s.tokens[start..start + take[i]];
            let want_logits = start + take[i] == s.tokens.len();
            let adapter = s.req.adapter.as_ref().map(|a| &*a.1);
            items.push(BatchItem { tokens, kv: &mut s.kv, want_logits, adapter });
            idx.push(i);
        }
        let logits = model.forward(&mut items);
        drop(items);
        let mut finished: Vec<usize> = Vec::new();
        for (i, l) in idx.into_iter().zip(logits) {
            let Some(mut l) = l else { continue };
            let s = &mut running[i];
            match sample_one(s, &mut l, &tokenizer, context_length) {
                Step::Continue => {}
                Step::Failed(why) => {
                    tracing::error!(error = %why, "constrained decoding failed");
                    let _ = s.req.tx.send(Event::Error(shovel_core::BackendError::ConstraintFailed(why)));
                    finished.push(i);
                }
                Step::Finished(reason) => {
                    // Text held back as a possible stop-string prefix is released at the end.
                    let tail = s.flush();
                    if !tail.is_empty() {
                        let id = s.tokens.last().copied().unwrap_or_default();
                        let _ = s.req.tx.send(Event::Token { text: tail, id, logprob: None });
                    }
                    let usage = Usage { prompt_tokens: s.req.prompt.len(), completion_tokens: s.generated, cached_tokens: s.cached };
                    let _ = s.req.tx.send(Event::Done { finish_reason: reason, usage });
                    finished.push(i);
                }
            }
        }
        for i in finished.into_iter().rev() {
            let s = running.swap_remove(i);
            let ns = s.req.adapter.as_ref().map_or(0, |a| a.0);
            prefixes.insert(ns, s.tokens, s.kv);
        }
        // Also here, so the gauges are right while the thread sleeps waiting for work.
        publish(&stats, &running, waiting.len() + preempted.len(), &prefixes);
    }
}

/// Tokens each running sequence feeds this step: decode tokens first (one each), then prompt
/// chunks in order under `max_batch_tokens`.
fn plan(running: &[Sequence], max_batch_tokens: usize) -> Vec<usize> {
    let mut budget = max_batch_tokens.max(1);
    let mut take = vec![0usize; running.len()];
    for (i, s) in running.iter().enumerate() {
        if !s.prefilling() && budget > 0 {
            take[i] = 1;
            budget -= 1;
        }
    }
    for (i, s) in running.iter().enumerate() {
        if s.prefilling() && budget > 0 {
            let n = (s.tokens.len() - s.kv.len()).min(budget);
            take[i] = n;
            budget -= n;
        }
    }
    take
}

/// Whether `need` more blocks fit the budget, evicting prefix cache entries (least recently
/// used first) until they do. Nothing is evicted when even an empty cache would not make room
/// (a request waiting for memory must not wipe the cache every step). `extra` is a cache about
/// to run (its shared blocks are held).
fn make_room(need: usize, budget: usize, running: &[Sequence], prefixes: &mut PrefixCache, extra: Option<&KvCache>) -> bool {
    if budget == usize::MAX {
        return true;
    }
    let mut without_cache: std::collections::HashSet<usize> = running.iter().flat_map(|s| s.kv.block_ids()).collect();
    without_cache.extend(extra.into_iter().flat_map(|k| k.block_ids()));
    if without_cache.len() + need > budget {
        return false;
    }
    // The running and about-to-run blocks are counted once; each round adds the cache's others.
    loop {
        let cache_only: std::collections::HashSet<usize> = prefixes.block_ids().filter(|b| !without_cache.contains(b)).collect();
        if without_cache.len() + cache_only.len() + need <= budget {
            return true;
        }
        if !prefixes.evict_lru() {
            return false;
        }
    }
}

fn publish(stats: &SchedStats, running: &[Sequence], waiting: usize, prefixes: &PrefixCache) {
    stats.running.store(running.len(), Ordering::Relaxed);
    stats.waiting.store(waiting, Ordering::Relaxed);
    stats.kv_bytes.store(running.iter().map(|s| s.kv.bytes()).sum(), Ordering::Relaxed);
    stats.prefix_cache_bytes.store(prefixes.bytes(), Ordering::Relaxed);
    let mut ids: std::collections::HashSet<usize> = running.iter().flat_map(|s| s.kv.block_ids()).collect();
    stats.kv_blocks.store(ids.len(), Ordering::Relaxed);
    ids.extend(prefixes.block_ids());
    stats.kv_blocks_held.store(ids.len(), Ordering::Relaxed);
    stats.kv_blocks_peak.fetch_max(ids.len(), Ordering::Relaxed);
}

fn sample_one(s: &mut Sequence, logits: &mut [f32], tk: &Tokenizer, context_length: usize) -> Step {
    // Log probabilities are the model's own, before the grammar's mask (as before sampling filters).
    let lp = s.req.top_logprobs.map(|k| (logits.to_vec(), k));
    if let Some(g) = &mut s.req.grammar {
        if let Err(e) = g.mask(logits) {
            return Step::Failed(e);
        }
    }
    let tok = s.req.sampler.sample(logits, &s.tokens);
    s.generated += 1;
    if tk.eog.contains(&tok) {
        return Step::Finished(FinishReason::Stop);
    }
    let complete = match &mut s.req.grammar {
        Some(g) => match g.advance(tok) {
            Ok(a) => a == Advance::Complete,
            Err(e) => return Step::Failed(e),
        },
        None => false,
    };
    s.tokens.push(tok);
    let logprob = lp.map(|(raw, k)| {
        let (chosen, top) = top_logprobs(&raw, tok, k);
        let entry = |id: u32, lp: f32| {
            let bytes = tk.token_bytes(id).to_vec();
            TopLogprob { token: String::from_utf8_lossy(&bytes).into_owned(), logprob: lp, bytes }
        };
        TokenLogprob { chosen: entry(tok, chosen), top: top.into_iter().map(|(i, l)| entry(i, l)).collect() }
    });
    let (text, stopped) = s.push_text(tk.token_bytes(tok));
    if (!text.is_empty() || logprob.is_some()) && s.req.tx.send(Event::Token { text, id: tok, logprob }).is_err() {
        return Step::Continue; // the receiver is gone; retired at the next step
    }
    if stopped || complete {
        return Step::Finished(FinishReason::Stop);
    }
    if s.generated >= s.req.max_tokens || s.tokens.len() >= context_length {
        return Step::Finished(FinishReason::Length);
    }
    Step::Continue
}

#[cfg(test)]
mod tests {
    use super::*;
    use shovel_core::SamplingParams;

    fn seq(stop: &[&str]) -> Sequence {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let req = SeqRequest {
            prompt: vec![],
            max_tokens: 10,
            stop: stop.iter().map(|s| s.to_string()).collect(),
            top_logprobs: None,
            sampler: Sampler::new(SamplingParams::default()),
            tx,
            inflight: InflightGuard(std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1))),
            adapter: None,
            grammar: None,
        };
        Sequence { req, admitted: 0, cached: 0, tokens: vec![], kv: KvCache::new(1), generated: 0, pending: vec![], text: String::new(), emitted: 0 }
    }

    #[test]
    fn stop_string_split_across_tokens_is_withheld_and_cut() {
        let mut s = seq(&["END"]);
        assert_eq!(s.push_text(b"abc E"), ("abc ".to_string(), false));
        assert_eq!(s.push_text(b"N"), (String::new(), false));
        assert_eq!(s.push_text(b"D tail"), (String::new(), true));
        assert_eq!(s.flush(), "");
    }

    #[test]
    fn held_text_is_released_when_it_diverges() {
        let mut s = seq(&["END"]);
        assert_eq!(s.push_text(b"E"), (String::new(), false));
        assert_eq!(s.push_text(b"x"), ("Ex".to_string(), false));
        assert_eq!(s.flush(), "");
    }

    #[test]
    fn partial_utf8_waits_for_its_last_byte() {
        let mut s = seq(&[]);
        let bytes = "华".as_bytes();
        assert_eq!(s.push_text(&bytes[..2]), (String::new(), false));
        assert_eq!(s.push_text(&bytes[2..]), ("华".to_string(), false));
    }
}
