//! Structured output: grammars (JSON Schema, any JSON object, Lark) enforced token by token with
//! llguidance. Each constrained sequence carries a [`Grammar`] matcher; before sampling, every
//! token that would leave the grammar gets a logit of minus infinity, so the output is valid by
//! construction and generation ends as soon as the grammar is complete.
//!
//! Masks are computed ahead of need on a thread of the compiler's own: as soon as a token is fed
//! to a grammar, the mask for the next position is queued there, so it is computed while the
//! model's forward pass for that position runs instead of after it (see [`Grammar::advance`]).
//!
//! llguidance is used rather than our own code: its Earley parser with a lexer over a token trie
//! computes a mask for a 49k vocabulary in tens of microseconds per token (measured in
//! docs/BENCHMARKS.md against free decoding), which no hand-written JSON-schema matcher of ours
//! would beat, and it handles the parts of JSON Schema users actually send.

use crate::tokenizer::Tokenizer;
use llguidance::api::{GrammarInit, TopLevelGrammar};
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Logger, Matcher, ParserFactory};
use shovel_core::OutputConstraint;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Our tokenizer seen through llguidance's interface: a trie of every token's bytes (control
/// tokens as `0xFF` + their text, llguidance's convention, so no text can produce them).
struct Env {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        self.trie.tokenize_with_greedy_fallback(s, |text| self.tokenizer.encode(text, false, false).unwrap_or_default())
    }
}

/// Compiles grammars for one model's vocabulary. Built once per loaded model, on the first
/// constrained request (the trie and llguidance's precomputed slices take some milliseconds).
pub struct GrammarCompiler {
    factory: ParserFactory,
    /// Queue of the mask thread, which computes each grammar's next mask ahead of need.
    ahead: Sender<Arc<Slot>>,
}

impl GrammarCompiler {
    /// A compiler for `tokenizer`'s vocabulary; its end-of-generation tokens end a grammar.
    pub fn new(tokenizer: Arc<Tokenizer>) -> Result<Self, String> {
        let n = tokenizer.vocab_size();
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                let b = tokenizer.token_bytes(id);
                if b.is_empty() {
                    // Control tokens have no output bytes; llguidance names them after a 0xFF marker.
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(tokenizer.piece(id).as_bytes());
                    w
                } else {
                    b.to_vec()
                }
            })
            .collect();
        let eos = tokenizer.eog.first().copied().ok_or("the model has no end-of-generation token, so a grammar could not end")?;
        let mut info = TokRxInfo::new(n as u32, eos);
        info.tok_bos = tokenizer.bos;
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&tokenizer.eog);
        let env: TokEnv = Arc::new(Env { trie, tokenizer });
        let factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        let (tx, rx) = channel::<Arc<Slot>>();
        // The thread ends when the compiler and every grammar it made (each holds a sender) are gone.
        std::thread::Builder::new()
            .name("shovel-grammar".into())
            .spawn(move || {
                while let Ok(slot) = rx.recv() {
                    // Nobody left to use the mask: the grammar was dropped while its job waited.
                    let wanted = Arc::strong_count(&slot) > 1;
                    let mut st = slot.lock();
                    if wanted && st.mask.is_none() {
                        // A panic inside the parser must not leave the job marked queued (the
                        // scheduler would wait for it forever) nor end the thread.
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compute_mask(&mut st.matcher)));
                        st.mask = Some(r.unwrap_or_else(|_| Err("the grammar's mask computation panicked".into())));
                    }
                    st.queued = false;
                    drop(st);
                    slot.done.notify_all();
                }
            })
            .map_err(|e| format!("starting the grammar thread: {e}"))?;
        Ok(GrammarCompiler { factory, ahead: tx })
    }

    /// Compiles a constraint into a fresh matcher, or says what is wrong with it.
    pub fn compile(&self, c: &OutputConstraint) -> Result<Grammar, String> {
        let grammar = match c {
            OutputConstraint::JsonObject => TopLevelGrammar::from_json_schema(bounded_whitespace(serde_json::json!({"type": "object"}))),
            OutputConstraint::JsonSchema(schema) => {
                if !schema.is_object() {
                    return Err("the JSON schema must be an object".into());
                }
                TopLevelGrammar::from_json_schema(bounded_whitespace(schema.clone()))
            }
            OutputConstraint::Lark(src) => TopLevelGrammar::from_lark(src.clone()),
        };
        // llguidance stops a mask whose lexer work passes a fuel limit (default 200k, about 14
        // ms). A Lark terminal that intersects several large regular expressions (Ask-Data's
        // query shape over a catalogue's values with the question's cues) needs more on the
        // steps that open a new clause; later steps reuse the states built then. All 163 shipped
        // Ask-Data questions decode at 1M (200k failed on most). Lark grammars are written by
        // Shovel itself (Ask-Data, tool calls); a client's JSON schema keeps the default, so its
        // worst mask stays ~14 ms on the scheduler thread rather than ~70.
        let mut limits = self.factory.limits().clone();
        if matches!(c, OutputConstraint::Lark(_)) {
            limits.step_lexer_fuel = LARK_STEP_LEXER_FUEL;
        }
        // A silent logger (errors come back as values) and the factory's own default capabilities.
        let caps = llguidance::toktrie::InferenceCapabilities::default();
        let parser = self.factory.create_parser_from_init_ext(GrammarInit::Serialized(grammar), Logger::new(0, 0), caps, limits).map_err(|e| e.to_string())?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(e);
        }
        let g = Grammar { slot: Arc::new(Slot { state: Mutex::new(SlotState { matcher, mask: None, queued: false }), done: Condvar::new() }), ahead: self.ahead.clone() };
        // The first mask is computed while the prompt is prefilled.
        g.queue(g.slot.lock());
        Ok(g)
    }
}

/// Whitespace between JSON tokens: at most this many characters per gap. llguidance allows any
/// run by default, and a small model can loop on newlines until `max_tokens`; a bound still
/// lets it pretty-print (a newline and 20 spaces of indentation fit). A schema carrying its own
/// `x-guidance` options keeps them.
const JSON_WHITESPACE: &str = r"[\x20\x0A\x0D\x09]{1,24}";

fn bounded_whitespace(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(o) = schema.as_object_mut() {
        o.entry("x-guidance").or_insert_with(|| serde_json::json!({"whitespace_pattern": JSON_WHITESPACE}));
    }
    schema
}

/// Lexer work allowed for one token mask of a Lark grammar (see [`GrammarCompiler::compile`]).
const LARK_STEP_LEXER_FUEL: u64 = 1_000_000;

/// One sequence's position in its grammar.
pub struct Grammar {
    slot: Arc<Slot>,
    ahead: Sender<Arc<Slot>>,
}

/// A grammar's matcher and the mask for its current state, shared with the mask thread.
struct Slot {
    state: Mutex<SlotState>,
    /// Signalled when the mask thread has finished a job for this slot.
    done: Condvar,
}

struct SlotState {
    matcher: Matcher,
    /// The mask at the matcher's current state, once computed.
    mask: Option<Result<SimpleVob, String>>,
    /// A job for this slot is queued on (or running in) the mask thread.
    queued: bool,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn compute_mask(m: &mut Matcher) -> Result<SimpleVob, String> {
    m.compute_mask_or_eos().map_err(|e| e.to_string())
}

/// What a sampled token did to the grammar.
#[derive(Debug, PartialEq, Eq)]
pub enum Advance {
    /// More tokens may follow.
    Open,
    /// The grammar is complete; nothing more may follow.
    Complete,
}

impl Grammar {
    /// Sets the logit of every token the grammar forbids here to minus infinity (including
    /// positions past the tokenizer's vocabulary in a padded output layer).
    /// The mask is usually ready, computed by the mask thread during the forward pass; if its job
    /// is still running this waits for it, and if none was queued it is computed here.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), String> {
        let mut st = self.settled();
        let mask = match st.mask.take() {
            Some(m) => m,
            None => compute_mask(&mut st.matcher),
        }?;
        drop(st);
        apply_mask(mask.as_slice(), mask.len(), logits);
        Ok(())
    }

    /// Feeds the token the sampler chose (an end-of-generation token is not fed: it ends the
    /// sequence, and the mask only allowed it where the grammar could end), then queues the next
    /// position's mask on the mask thread. The next mask depends only on this token, so it is
    /// computed while the forward pass that makes the next logits runs. That pass uses every
    /// engine thread, so on a machine with no spare core the mask thread takes its ~0.13 ms
    /// (SmolLM2, JSON) from a compute thread instead; the pool's dynamic task claiming lets the
    /// other thread pick up the work meanwhile. Ask-Data's Lark masks take up to ~14 ms on the
    /// steps that open a clause, and computed here they no longer stall the other sequences of
    /// the batch for all of that time.
    pub fn advance(&mut self, token: u32) -> Result<Advance, String> {
        let mut st = self.settled();
        st.mask = None;
        st.matcher.consume_token(token).map_err(|e| e.to_string())?;
        if st.matcher.is_stopped() {
            return Ok(Advance::Complete);
        }
        self.queue(st);
        Ok(Advance::Open)
    }

    /// The state once no mask job for it is pending.
    fn settled(&self) -> MutexGuard<'_, SlotState> {
        let mut st = self.slot.lock();
        while st.queued {
            st = self.slot.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st
    }

    /// Queues the mask at the current state on the mask thread (computed on demand instead if
    /// the thread is gone).
    fn queue(&self, mut st: MutexGuard<'_, SlotState>) {
        st.queued = true;
        drop(st);
        if self.ahead.send(self.slot.clone()).is_err() {
            self.slot.lock().queued = false;
        }
    }
}

/// Sets the logits of tokens the bitset (`words`, bit `i % 32` of word `i / 32`, `len` bits)
/// does not allow to -inf, one 32-bit word at a time: a word of all-allowed tokens (most of the
/// vocabulary inside a free JSON string) is skipped whole. Testing each of SmolLM2's 49,152 bits
/// on its own took about a fifth of the ~160 us a mask costs.
fn apply_mask(words: &[u32], len: usize, logits: &mut [f32]) {
    for (w, chunk) in logits.chunks_mut(32).enumerate() {
        let base = w * 32;
        let mut bits = if base >= len { 0 } else { words.get(w).copied().unwrap_or(0) };
        if base + 32 > len && base < len {
            bits &= (1u32 << (len - base)) - 1;
        }
        if bits == u32::MAX && chunk.len() == 32 {
            continue;
        }
        for (j, l) in chunk.iter_mut().enumerate() {
            if bits & (1 << j) == 0 {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_mask_matches_testing_each_bit() {
        // Lengths that end inside a word or on a word's end; logits longer and shorter than the mask.
        for (len, n) in [(70usize, 70usize), (64, 64), (70, 100), (5, 40), (0, 33), (70, 40), (64, 20)] {
            let mut x = 0x9e37_79b9u32;
            let words: Vec<u32> = (0..len.div_ceil(32))
                .map(|w| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    if w == 0 {
                        u32::MAX
                    } else {
                        x
                    }
                })
                .collect();
            let mut fast: Vec<f32> = (0..n).map(|i| i as f32).collect();
            apply_mask(&words, len, &mut fast);
            for (i, &l) in fast.iter().enumerate() {
                let allowed = i < len && words[i / 32] & (1 << (i % 32)) != 0;
                assert_eq!(l, if allowed { i as f32 } else { f32::NEG_INFINITY }, "len {len} n {n} token {i}");
            }
        }
    }

    /// A byte-level tokenizer (one token per byte, no merges) with ChatML's two control tokens.
    fn byte_level_tokenizer() -> Tokenizer {
        use tokenizers::models::bpe::BPE;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
        alphabet.sort();
        let vocab: tokenizers::models::bpe::Vocab = alphabet.iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
        let mut tk = tokenizers::Tokenizer::new(BPE::builder().vocab_and_merges(vocab, vec![]).build().unwrap());
        tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        tk.with_decoder(Some(ByteLevel::default()));
        tk.add_special_tokens(&[tokenizers::AddedToken::from("<|im_start|>", true), tokenizers::AddedToken::from("<|im_end|>", true)]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tk.save(&path, false).unwrap();
        Tokenizer::from_hf_file(&path, Some(&serde_json::json!({"eos_token": "<|im_end|>"}))).unwrap()
    }

    fn run(g: &mut Grammar, tk: &Tokenizer, text: &str) -> Result<Advance, String> {
        let mut last = Advance::Open;
        for t in tk.encode(text, false, false).unwrap() {
            let mut logits = vec![0.0; tk.vocab_size()];
            g.mask(&mut logits)?;
            if logits[t as usize] == f32::NEG_INFINITY {
                return Err(format!("token {t} ({:?}) masked", tk.piece(t)));
            }
            last = g.advance(t)?;
        }
        Ok(last)
    }

    #[test]
    fn a_schema_allows_its_documents_and_masks_everything_else() {
        let tk = Arc::new(byte_level_tokenizer());
        let c = GrammarCompiler::new(tk.clone()).unwrap();
        let schema = serde_json::json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false});
        let mut g = c.compile(&OutputConstraint::JsonSchema(schema.clone())).unwrap();
        assert_eq!(run(&mut g, &tk, r#"{"n":12}"#), Ok(Advance::Complete));
        let mut g = c.compile(&OutputConstraint::JsonSchema(schema)).unwrap();
        assert!(run(&mut g, &tk, r#"{"m":1}"#).is_err(), "an unknown key must be masked");
        // At the start only `{` (and whitespace) may come: letters are masked.
        let mut g = c.compile(&OutputConstraint::JsonObject).unwrap();
        let mut logits = vec![0.0; tk.vocab_size() + 3];
        g.mask(&mut logits).unwrap();
        let a = tk.encode("a", false, false).unwrap()[0];
        let brace = tk.encode("{", false, false).unwrap()[0];
        assert_eq!(logits[a as usize], f32::NEG_INFINITY);
        assert_eq!(logits[brace as usize], 0.0);
        assert!(logits[tk.vocab_size()..].iter().all(|&l| l == f32::NEG_INFINITY), "padding rows are never sampled");
    }

    #[test]
    fn masks_computed_ahead_equal_masks_computed_on_demand() {
        let tk = Arc::new(byte_level_tokenizer());
        let c = GrammarCompiler::new(tk.clone()).unwrap();
        let schema = serde_json::json!({"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"}}, "required": ["name", "n"]});
        let mut ahead = c.compile(&OutputConstraint::JsonSchema(schema.clone())).unwrap();
        let mut here = c.compile(&OutputConstraint::JsonSchema(schema)).unwrap();
        // A grammar whose mask thread is gone computes every mask itself.
        here.ahead = channel().0;
        for t in tk.encode(r#"{"name": "a b", "n": -12}"#, false, false).unwrap() {
            let (mut a, mut h) = (vec![0.0; tk.vocab_size()], vec![0.0; tk.vocab_size()]);
            ahead.mask(&mut a).unwrap();
            here.mask(&mut h).unwrap();
            assert_eq!(a, h, "mask before token {t}");
            assert_eq!(ahead.advance(t), here.advance(t));
        }
        // Dropped with a job queued (mid-document): the thread skips it and serves the next grammar.
        let mut open = c.compile(&OutputConstraint::JsonObject).unwrap();
        assert_eq!(open.advance(tk.encode("{", false, false).unwrap()[0]), Ok(Advance::Open));
        drop(open);
        drop(ahead);
        let mut g = c.compile(&OutputConstraint::JsonObject).unwrap();
        assert_eq!(run(&mut g, &tk, "{}"), Ok(Advance::Complete));
    }

    #[test]
    fn bad_schemas_and_grammars_say_what_is_wrong() {
        let tk = Arc::new(byte_level_tokenizer());
        let c = GrammarCompiler::new(tk.clone()).unwrap();
        let e = c.compile(&OutputConstraint::JsonSchema(serde_json::json!({"type": "strnig"}))).err().unwrap();
        assert!(e.contains("strnig"), "{e}");
        let e = c.compile(&OutputConstraint::JsonSchema(serde_json::json!([1]))).err().unwrap();
        assert!(e.contains("object"), "{e}");
        assert!(c.compile(&OutputConstraint::Lark("start: (".into())).is_err());
        let mut g = c.compile(&OutputConstraint::Lark(r#"start: "yes" | "no""#.into())).unwrap();
        assert_eq!(run(&mut g, &tk, "no"), Ok(Advance::Complete));
    }

    #[test]
    fn lark_text_or_an_embedded_json_schema() {
        // The shape of a chat reply with tools on `auto`: free text, or a call held to a schema.
        let tk = Arc::new(byte_level_tokenizer());
        let c = GrammarCompiler::new(tk.clone()).unwrap();
        let lark = r#"start: text | call
text: TEXT
TEXT: /\s*[^{\s](.|\n)*/
call: LEAD? %json {"type": "object", "properties": {"name": {"const": "f"}, "arguments": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}, "required": ["name", "arguments"], "additionalProperties": false, "x-guidance": {"whitespace_flexible": false}}
LEAD: /\s+/"#;
        let mut g = c.compile(&OutputConstraint::Lark(lark.into())).unwrap();
        assert_eq!(run(&mut g, &tk, "It is {sunny} today."), Ok(Advance::Open), "text may go on until end of turn");
        let mut eos = vec![0.0; tk.vocab_size()];
        g.mask(&mut eos).unwrap();
        assert_eq!(eos[tk.eog[0] as usize], 0.0, "and may end at any point");
        let mut g = c.compile(&OutputConstraint::Lark(lark.into())).unwrap();
        assert_eq!(run(&mut g, &tk, "\n{\"name\":\"f\",\"arguments\":{\"n\":3}}"), Ok(Advance::Complete));
        let mut g = c.compile(&OutputConstraint::Lark(lark.into())).unwrap();
        assert!(run(&mut g, &tk, r#"{"name":"g""#).is_err(), "a call of an unknown tool is masked");
    }
}
