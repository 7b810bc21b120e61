//! Tokenizers built from a model's own metadata: byte-level BPE (`gpt2` GGUF vocabularies and
//! Hugging Face `tokenizer.json`, through the `tokenizers` crate) and SentencePiece-style BPE over
//! scores (`llama` GGUF vocabularies such as Gemma's, our own code, following llama.cpp).
//!
//! Why not candle's `TokenizerFromGguf`: it maps SmolLM2's `smollm` pre-tokenizer to ByteLevel
//! with a prefix space, so "What" becomes "ĠWhat" (shared/FINDINGS.md). Here each GGUF `pre` type
//! maps to llama.cpp's list of split regexes, applied in order, then byte-level mapping.
//!
//! Special tokens (control and user-defined) are split out of the text first, longest first, the
//! way llama.cpp does; control tokens only when the caller asks to parse them.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

/// GGUF token types (llama.cpp's `llama_token_type`).
const TT_UNKNOWN: i64 = 2;
const TT_CONTROL: i64 = 3;
const TT_USER_DEFINED: i64 = 4;
const TT_BYTE: i64 = 6;

/// The GPT-2 pattern shared by many byte-level tokenizers.
const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Qwen 2's: llama 3's with single digits.
const QWEN2_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's split regexes for a GGUF `tokenizer.ggml.pre` value.
fn pre_regexes(pre: &str) -> Option<Vec<&'static str>> {
    Some(match pre {
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            vec![r"\p{N}", GPT2_PATTERN]
        }
        "gpt-2" | "gpt2" | "phi-2" | "jina-es" | "jina-de" | "roberta-bpe" | "default" => {
            vec![GPT2_PATTERN]
        }
        "llama-bpe" | "llama3" | "falcon3" | "pixtral" => vec![LLAMA3_PATTERN],
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "megrez" | "stablelm2" | "hunyuan" => vec![QWEN2_PATTERN],
        _ => return None,
    })
}

/// GPT-2's byte <-> printable-character table.
fn byte_unicode_table() -> ([char; 256], HashMap<char, u8>) {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
    }
    let inv = table.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
    (table, inv)
}

fn byte_level_bytes(piece: &str, inv: &HashMap<char, u8>) -> Vec<u8> {
    let mapped: Option<Vec<u8>> = piece.chars().map(|c| inv.get(&c).copied()).collect();
    mapped.unwrap_or_else(|| piece.as_bytes().to_vec())
}

fn spm_bytes(piece: &str) -> Vec<u8> {
    if piece.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>') {
        if let Ok(b) = u8::from_str_radix(&piece[3..5], 16) {
            return vec![b];
        }
    }
    piece.replace('\u{2581}', " ").into_bytes()
}

/// SentencePiece-style BPE: greedy merges of the highest-scoring adjacent pair, with byte
/// fallback (llama.cpp's `llm_tokenizer_spm`).
struct Spm {
    ids: HashMap<String, u32>,
    scores: Vec<f32>,
    byte_ids: [Option<u32>; 256],
    unk: Option<u32>,
}

#[derive(PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    // Highest score first; on ties, the leftmost pair.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.score.total_cmp(&o.score).then(o.left.cmp(&self.left))
    }
}

struct Sym {
    start: usize,
    n: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    fn encode(&self, text: &str, out: &mut Vec<u32>) {
        let text = text.replace(' ', "\u{2581}");
        let mut syms: Vec<Sym> = Vec::new();
        for (i, (off, ch)) in text.char_indices().enumerate() {
            syms.push(Sym { start: off, n: ch.len_utf8(), prev: i.checked_sub(1), next: Some(i + 1) });
        }
        if let Some(last) = syms.last_mut() {
            last.next = None;
        }
        let mut heap = BinaryHeap::new();
        let try_add = |l: Option<usize>, r: Option<usize>, syms: &[Sym], heap: &mut BinaryHeap<Bigram>| {
            let (Some(l), Some(r)) = (l, r) else { return };
            let s = &text[syms[l].start..syms[l].start + syms[l].n + syms[r].n];
            if let Some(&id) = self.ids.get(s) {
                heap.push(Bigram { score: self.scores[id as usize], left: l, right: r, size: s.len() });
            }
        };
        for i in 1..syms.len() {
            try_add(Some(i - 1), Some(i), &syms, &mut heap);
        }
        while let Some(bg) = heap.pop() {
            let (ln, rn) = (syms[bg.left].n, syms[bg.right].n);
            if ln == 0 || rn == 0 || ln + rn != bg.size {
                continue;
            }
            syms[bg.left].n += rn;
            syms[bg.right].n = 0;
            let next = syms[bg.right].next;
            syms[bg.left].next = next;
            if let Some(nx) = next {
                syms[nx].prev = Some(bg.left);
            }
            let prev = syms[bg.left].prev;
            try_add(prev, Some(bg.left), &syms, &mut heap);
            try_add(Some(bg.left), next, &syms, &mut heap);
        }
        // Every merged symbol is a vocabulary token by construction; a single character that is
        // not falls back to its bytes.
        let mut i = if syms.is_empty() { None } else { Some(0) };
        while let Some(ix) = i {
            let s = &text[syms[ix].start..syms[ix].start + syms[ix].n];
            match self.ids.get(s) {
                Some(&id) => out.push(id),
                None => out.extend(s.bytes().filter_map(|b| self.byte_ids[b as usize].or(self.unk))),
            }
            i = syms[ix].next;
        }
    }
}

enum Inner {
    /// Byte-level BPE from a GGUF vocabulary; special tokens are split out by us.
    GgufBpe(Box<tokenizers::Tokenizer>),
    /// SentencePiece-style BPE from a GGUF vocabulary.
    Spm(Spm),
    /// A Hugging Face tokenizer.json, which handles its own added tokens.
    HfJson(Box<tokenizers::Tokenizer>),
}

/// A model's tokenizer.
pub struct Tokenizer {
    inner: Inner,
    /// Special token texts (control, user-defined), longest first, with id and whether control.
    specials: Vec<(String, u32, bool)>,
    token_bytes: Vec<Vec<u8>>,
    pieces: Vec<String>,
    /// Beginning-of-sequence token.
    pub bos: Option<u32>,
    /// Whether raw prompts get BOS prepended.
    pub add_bos: bool,
    /// End-of-generation tokens: sampling one ends the turn.
    pub eog: Vec<u32>,
}

/// Texts of tokens that end a turn in common chat formats.
const EOG_TEXTS: &[&str] = &["<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "<|end|>", "<eos>", "</s>"];

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let model = g.get_str("tokenizer.ggml.model")?;
        let tokens = g.get_str_array("tokenizer.ggml.tokens")?;
        let types: Vec<i64> = match g.opt("tokenizer.ggml.token_type") {
            Some(crate::gguf::Value::Array(v)) => v.iter().map(|x| x.as_f64().unwrap_or(1.0) as i64).collect(),
            _ => vec![1; tokens.len()],
        };
        let bos = g.opt("tokenizer.ggml.bos_token_id").and_then(|v| v.as_u64()).map(|v| v as u32);
        let eos = g.opt("tokenizer.ggml.eos_token_id").and_then(|v| v.as_u64()).map(|v| v as u32);
        let eot = g.opt("tokenizer.ggml.eot_token_id").and_then(|v| v.as_u64()).map(|v| v as u32);
        let unk = g.opt("tokenizer.ggml.unknown_token_id").and_then(|v| v.as_u64()).map(|v| v as u32);
        let (inner, token_bytes) = match model {
            "gpt2" => {
                let merges = g.get_str_array("tokenizer.ggml.merges")?;
                let pre = g.opt("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
                let regexes = pre_regexes(pre).ok_or_else(|| Error::Tokenizer(format!("{}: pre-tokenizer `{pre}` is not supported yet", g.path.display())))?;
                let tk = build_byte_level_bpe(&tokens, &merges, &regexes)?;
                let (_, inv) = byte_unicode_table();
                let bytes = tokens.iter().zip(&types).map(|(t, &ty)| if ty == TT_CONTROL { Vec::new() } else { byte_level_bytes(t, &inv) }).collect();
                (Inner::GgufBpe(Box::new(tk)), bytes)
            }
            "llama" => {
                let scores = g.opt_f32_array("tokenizer.ggml.scores")?.unwrap_or_else(|| vec![0.0; tokens.len()]);
                let mut byte_ids = [None; 256];
                for (i, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
                    if ty == TT_BYTE {
                        if let [b] = spm_bytes(t)[..] {
                            byte_ids[b as usize] = Some(i as u32);
                        }
                    }
                }
                let ids = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
                let bytes = tokens.iter().zip(&types).map(|(t, &ty)| if ty == TT_CONTROL { Vec::new() } else { spm_bytes(t) }).collect();
                (Inner::Spm(Spm { ids, scores, byte_ids, unk }), bytes)
            }
            other => return Err(Error::Tokenizer(format!("{}: tokenizer model `{other}` is not supported (supported: gpt2, llama)", g.path.display()))),
        };
        let mut specials: Vec<(String, u32, bool)> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (t, &ty))| !t.is_empty() && matches!(ty, TT_CONTROL | TT_USER_DEFINED | TT_UNKNOWN))
            .map(|(i, (t, &ty))| (t.clone(), i as u32, ty != TT_USER_DEFINED))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut eog: Vec<u32> = eos.into_iter().chain(eot).collect();
        for (t, id, control) in &specials {
            if *control && EOG_TEXTS.contains(&t.as_str()) && !eog.contains(id) {
                eog.push(*id);
            }
        }
        let default_add_bos = model == "llama";
        let add_bos = g.opt("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()).unwrap_or(default_add_bos);
        Ok(Tokenizer { inner, specials, token_bytes, pieces: tokens, bos, add_bos, eog })
    }

    /// Loads a Hugging Face `tokenizer.json`; `config` is the parsed `tokenizer_config.json`, if any.
    pub fn from_hf_file(path: &Path, config: Option<&serde_json::Value>) -> Result<Self> {
        let tk = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let vocab = tk.get_vocab(true);
        let n = vocab.values().copied().max().map_or(0, |m| m as usize + 1);
        let mut pieces = vec![String::new(); n];
        for (s, &i) in &vocab {
            pieces[i as usize] = s.clone();
        }
        let byte_level = serde_json::to_string(&tk.get_decoder()).unwrap_or_default().contains("ByteLevel");
        let added = tk.get_added_tokens_decoder();
        let (_, inv) = byte_unicode_table();
        let token_bytes = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| match added.get(&(i as u32)) {
                Some(a) if a.special => Vec::new(),
                Some(a) => a.content.as_bytes().to_vec(),
                None if byte_level => byte_level_bytes(p, &inv),
                None => spm_bytes(p),
            })
            .collect();
        let tok_id = |key: &str| -> Option<u32> {
            let v = config?.get(key)?;
            let s = v.as_str().or_else(|| v.get("content")?.as_str())?;
            tk.token_to_id(s)
        };
        let bos = tok_id("bos_token");
        let eos = tok_id("eos_token");
        let add_bos = config.and_then(|c| c.get("add_bos_token")?.as_bool()).unwrap_or(false);
        let mut eog: Vec<u32> = eos.into_iter().collect();
        for t in EOG_TEXTS {
            if let Some(id) = tk.token_to_id(t) {
                if added.get(&id).is_some_and(|a| a.special) && !eog.contains(&id) {
                    eog.push(id);
                }
            }
        }
        Ok(Tokenizer { inner: Inner::HfJson(Box::new(tk)), specials: Vec::new(), token_bytes, pieces, bos, add_bos, eog })
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// The bytes a token stands for in output (empty for control tokens).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize).map_or(&[], |v| v.as_slice())
    }

    /// The token's vocabulary string (as stored, e.g. `Ġthe`).
    pub fn piece(&self, id: u32) -> &str {
        self.pieces.get(id as usize).map_or("", |s| s.as_str())
    }

    /// Looks up a token by its vocabulary string.
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.pieces.iter().position(|p| p == piece).map(|i| i as u32)
    }

    /// Decodes ids to text (invalid UTF-8 replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&i| self.token_bytes(i).iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Encodes text. `add_bos` prepends BOS when the model has one; `parse_special` lets control
    /// token texts in `text` (e.g. `<|im_start|>`) become their tokens.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        if add_bos {
            out.extend(self.bos);
        }
        if let Inner::HfJson(tk) = &self.inner {
            let enc = tk.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
            out.extend_from_slice(enc.get_ids());
            return Ok(out);
        }
        for frag in self.partition(text, parse_special) {
            match frag {
                Frag::Token(id) => out.push(id),
                Frag::Text(s) => match &self.inner {
                    Inner::GgufBpe(tk) => {
                        let enc = tk.encode(s, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
                        out.extend_from_slice(enc.get_ids());
                    }
                    Inner::Spm(spm) => spm.encode(s, &mut out),
                    Inner::HfJson(_) => unreachable!("handled above"),
                },
            }
        }
        Ok(out)
    }

    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Frag<'t>> {
        let mut frags = vec![Frag::Text(text)];
        for (sp, id, control) in &self.specials {
            if *control && !parse_special {
                continue;
            }
            if !frags.iter().any(|f| matches!(f, Frag::Text(s) if s.contains(sp.as_str()))) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                match f {
                    Frag::Text(mut s) => {
                        while let Some(i) = s.find(sp.as_str()) {
                            if i > 0 {
                                next.push(Frag::Text(&s[..i]));
                            }
                            next.push(Frag::Token(*id));
                            s = &s[i + sp.len()..];
                        }
                        if !s.is_empty() {
                            next.push(Frag::Text(s));
                        }
                    }
                    tok => next.push(tok),
                }
            }
            frags = next;
        }
        frags
    }
}

enum Frag<'t> {
    Text(&'t str),
    Token(u32),
}

fn build_byte_level_bpe(tokens: &[String], merges: &[String], regexes: &[&str]) -> Result<tokenizers::Tokenizer> {
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges = merges
        .iter()
        .map(|m| {
            let (a, b) = m.split_once(' ').ok_or_else(|| Error::Tokenizer(format!("malformed merge `{m}`")))?;
            Ok((a.to_string(), b.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut pre: Vec<PreTokenizerWrapper> = Vec::new();
    for re in regexes {
        let split = Split::new(SplitPattern::Regex(re.to_string()), SplitDelimiterBehavior::Isolated, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        pre.push(split.into());
    }
    pre.push(ByteLevel::new(false, false, false).into());
    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(Sequence::new(pre)));
    Ok(tk)
}
