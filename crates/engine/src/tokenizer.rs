//! Tokenizers built from a model's own metadata: byte-level BPE (`gpt2` GGUF vocabularies: the
//! `tokenizers` crate's pre-tokenizer regexes and our own merge loop; Hugging Face
//! `tokenizer.json`: the `tokenizers` crate whole) and SentencePiece-style BPE over scores
//! (`llama` GGUF vocabularies such as Gemma's, our own code, following llama.cpp).
//!
//! Why our own merge loop for GGUF vocabularies: memory. The tokenizer as it was (the crate's
//! BPE, which keeps the vocabulary twice, `String` -> id and back, beside its merges and a word
//! cache, plus our own `Vec<String>` of pieces and `Vec<Vec<u8>>` of token bytes) held 11.2 MB
//! in 212k allocations for SmolLM2's 49,152 tokens (heaptrack; ~13 MB with the allocator's
//! overhead), 7% of the server's whole peak while it serves the built-in model. Now the merges
//! are pairs of ids and the pieces and token bytes two [`ByteTable`]s: ~2.5 MB in all. The
//! result is the crate's token for token (`byte_bpe_matches_the_tokenizers_crate`).
//!
//! Why not candle's `TokenizerFromGguf`: it maps SmolLM2's `smollm` pre-tokenizer to ByteLevel
//! with a prefix space, so "What" becomes "ĠWhat" (shared/FINDINGS.md). Here each GGUF `pre` type
//! maps to llama.cpp's list of split regexes, applied in order, then byte-level mapping.
//!
//! Special tokens (control and user-defined) are split out of the text first, longest first, the
//! way llama.cpp does; control tokens only when the caller asks to parse them.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, SplitDelimiterBehavior};

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

/// Byte strings stored end to end: one allocation for a whole vocabulary instead of one per
/// token (a `Vec<String>` of 49k tokens costs ~2.3 MB, mostly per-string overhead).
#[derive(Default)]
struct ByteTable {
    data: Vec<u8>,
    ends: Vec<u32>,
}

impl ByteTable {
    fn new<T: AsRef<[u8]>>(items: impl IntoIterator<Item = T>) -> Self {
        let mut t = ByteTable::default();
        for it in items {
            t.data.extend_from_slice(it.as_ref());
            t.ends.push(t.data.len() as u32);
        }
        t.data.shrink_to_fit();
        t.ends.shrink_to_fit();
        t
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.data[start..end])
    }

    fn get_str(&self, i: usize) -> &str {
        self.get(i).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
    }
}

/// Byte-level BPE (GPT-2 style) over a GGUF vocabulary: the pre-tokenizer's pieces start as
/// one token per byte, then the adjacent pair of lowest merge rank is merged (leftmost first)
/// until no pair has a merge, exactly as the `tokenizers` crate's BPE does.
struct ByteBpe {
    pre: Sequence,
    /// The token of each byte's single-character piece (none: the byte is dropped, as the
    /// crate does without an unknown token).
    byte_ids: [Option<u32>; 256],
    /// (left, right) as `left << 32 | right` -> (rank, merged token).
    merges: HashMap<u64, (u32, u32)>,
}

/// One pre-tokenizer per split regex (matches isolated), applied in order.
fn splits(regexes: &[&str]) -> Result<Vec<PreTokenizerWrapper>> {
    regexes
        .iter()
        .map(|re| {
            let split = Split::new(SplitPattern::Regex(re.to_string()), SplitDelimiterBehavior::Isolated, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
            Ok(split.into())
        })
        .collect()
}

fn pair(a: u32, b: u32) -> u64 {
    (a as u64) << 32 | b as u64
}

impl ByteBpe {
    fn new(tokens: &[String], merges: &[String], regexes: &[&str]) -> Result<Self> {
        // Later duplicates win, as in the crate's vocabulary map.
        let ids: HashMap<&str, u32> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i as u32)).collect();
        let (table, _) = byte_unicode_table();
        let mut byte_ids = [None; 256];
        for (b, c) in table.iter().enumerate() {
            byte_ids[b] = ids.get(c.encode_utf8(&mut [0; 4]) as &str).copied();
        }
        let mut map = HashMap::with_capacity(merges.len());
        let mut joined = String::new();
        for (rank, m) in merges.iter().enumerate() {
            let (a, b) = m.split_once(' ').ok_or_else(|| Error::Tokenizer(format!("malformed merge `{m}`")))?;
            let id = |t: &str| ids.get(t).copied().ok_or_else(|| Error::Tokenizer(format!("merge `{m}`: `{t}` is not in the vocabulary")));
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            map.insert(pair(id(a)?, id(b)?), (rank as u32, id(&joined)?));
        }
        map.shrink_to_fit();
        Ok(ByteBpe { pre: Sequence::new(splits(regexes)?), byte_ids, merges: map })
    }

    fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut pts = PreTokenizedString::from(text);
        self.pre.pre_tokenize(&mut pts).map_err(|e| Error::Tokenizer(e.to_string()))?;
        for (piece, _, _) in pts.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            self.encode_piece(piece.as_bytes(), out);
        }
        Ok(())
    }

    fn encode_piece(&self, bytes: &[u8], out: &mut Vec<u32>) {
        // Symbols as a linked list over a vector; a merged-away symbol is marked dead.
        struct Sym {
            id: u32,
            prev: usize,
            next: usize,
            dead: bool,
        }
        const NONE: usize = usize::MAX;
        let mut syms: Vec<Sym> =
            bytes.iter().filter_map(|&b| self.byte_ids[b as usize]).enumerate().map(|(i, id)| Sym { id, prev: i.checked_sub(1).unwrap_or(NONE), next: i + 1, dead: false }).collect();
        if let Some(last) = syms.last_mut() {
            last.next = NONE;
        }
        // Lowest rank first, then leftmost; an entry whose pair has changed since is skipped.
        let mut heap: BinaryHeap<Reverse<(u32, usize, u32)>> = BinaryHeap::with_capacity(syms.len());
        for (i, w) in syms.windows(2).enumerate() {
            if let Some(&(rank, id)) = self.merges.get(&pair(w[0].id, w[1].id)) {
                heap.push(Reverse((rank, i, id)));
            }
        }
        while let Some(Reverse((_, at, new_id))) = heap.pop() {
            let next = syms[at].next;
            if syms[at].dead || next == NONE || self.merges.get(&pair(syms[at].id, syms[next].id)).is_none_or(|&(_, id)| id != new_id) {
                continue;
            }
            syms[at].id = new_id;
            syms[next].dead = true;
            let after = syms[next].next;
            syms[at].next = after;
            if after != NONE {
                syms[after].prev = at;
            }
            let prev = syms[at].prev;
            if prev != NONE {
                if let Some(&(rank, id)) = self.merges.get(&pair(syms[prev].id, new_id)) {
                    heap.push(Reverse((rank, prev, id)));
                }
            }
            if after != NONE {
                if let Some(&(rank, id)) = self.merges.get(&pair(new_id, syms[after].id)) {
                    heap.push(Reverse((rank, at, id)));
                }
            }
        }
        out.extend(syms.iter().filter(|s| !s.dead).map(|s| s.id));
    }
}

enum Inner {
    /// Byte-level BPE from a GGUF vocabulary; special tokens are split out by us.
    GgufBpe(ByteBpe),
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
    token_bytes: ByteTable,
    pieces: ByteTable,
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
                let bpe = ByteBpe::new(&tokens, &merges, &regexes)?;
                let (_, inv) = byte_unicode_table();
                let bytes = ByteTable::new(tokens.iter().zip(&types).map(|(t, &ty)| if ty == TT_CONTROL { Vec::new() } else { byte_level_bytes(t, &inv) }));
                (Inner::GgufBpe(bpe), bytes)
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
                let bytes = ByteTable::new(tokens.iter().zip(&types).map(|(t, &ty)| if ty == TT_CONTROL { Vec::new() } else { spm_bytes(t) }));
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
        Ok(Tokenizer { inner, specials, token_bytes, pieces: ByteTable::new(&tokens), bos, add_bos, eog })
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
        let token_bytes = ByteTable::new(pieces.iter().enumerate().map(|(i, p)| match added.get(&(i as u32)) {
            Some(a) if a.special => Vec::new(),
            Some(a) => a.content.as_bytes().to_vec(),
            None if byte_level => byte_level_bytes(p, &inv),
            None => spm_bytes(p),
        }));
        let pieces = ByteTable::new(&pieces);
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
        self.token_bytes.get(id as usize).unwrap_or(&[])
    }

    /// The token's vocabulary string (as stored, e.g. `Ġthe`).
    pub fn piece(&self, id: u32) -> &str {
        self.pieces.get_str(id as usize)
    }

    /// Looks up a token by its vocabulary string.
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        (0..self.pieces.len()).find(|&i| self.pieces.get(i) == Some(piece.as_bytes())).map(|i| i as u32)
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
                    Inner::GgufBpe(bpe) => bpe.encode(s, &mut out)?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;

    /// The `tokenizers` crate's own byte-level BPE over the same vocabulary: the oracle.
    fn crate_bpe(tokens: &[String], merges: &[String], regexes: &[&str]) -> Result<tokenizers::Tokenizer> {
        let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let merges = merges
            .iter()
            .map(|m| {
                let (a, b) = m.split_once(' ').ok_or_else(|| Error::Tokenizer(format!("malformed merge `{m}`")))?;
                Ok((a.to_string(), b.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut pre = splits(regexes)?;
        pre.push(ByteLevel::new(false, false, false).into());
        let mut tk = tokenizers::Tokenizer::new(bpe);
        tk.with_pre_tokenizer(Some(Sequence::new(pre)));
        Ok(tk)
    }

    fn ours(tokens: &[String], merges: &[String], regexes: &[&str], text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        ByteBpe::new(tokens, merges, regexes).unwrap().encode(text, &mut out).unwrap();
        out
    }

    /// Texts with English, Chinese, code, digits, whitespace runs and emoji, plus random strings.
    fn corpus() -> Vec<String> {
        let mut texts: Vec<String> = include_str!("tokenizer.rs").lines().map(str::to_string).collect();
        texts.extend(include_str!("../../askdata/data/train.jsonl").lines().map(str::to_string));
        texts.push(include_str!("tokenizer.rs").chars().take(4000).collect());
        let pool: Vec<char> = "abcdefgXYZ 0123456789 ,.;'\"!?-_()\n\t   华北地区销售额折线图 éüßñ 😀👍🏽 \u{2581}\u{0}".chars().collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..2000 {
            let n = rng.gen_range(1..40);
            texts.push((0..n).map(|_| pool[rng.gen_range(0..pool.len())]).collect());
        }
        texts
    }

    /// A byte-level vocabulary trained here: the 256 byte characters, then merges of the most
    /// frequent adjacent pair over the corpus' GPT-2 pieces, 600 times.
    fn trained_vocab() -> (Vec<String>, Vec<String>) {
        let (table, _) = byte_unicode_table();
        let mut tokens: Vec<String> = table.iter().map(|c| c.to_string()).collect();
        let mut pts = PreTokenizedString::from(include_str!("../../askdata/data/train.jsonl"));
        Sequence::new(splits(&[GPT2_PATTERN]).unwrap()).pre_tokenize(&mut pts).unwrap();
        let mut words: Vec<Vec<String>> = pts.get_splits(OffsetReferential::Original, OffsetType::Byte).iter().map(|(w, _, _)| w.bytes().map(|b| table[b as usize].to_string()).collect()).collect();
        let mut merges = Vec::new();
        for _ in 0..600 {
            let mut counts: HashMap<(String, String), usize> = HashMap::new();
            for w in &words {
                for p in w.windows(2) {
                    *counts.entry((p[0].clone(), p[1].clone())).or_default() += 1;
                }
            }
            let Some(((a, b), _)) = counts.into_iter().max_by(|x, y| x.1.cmp(&y.1).then_with(|| y.0.cmp(&x.0))) else { break };
            let ab = format!("{a}{b}");
            for w in &mut words {
                let mut i = 0;
                while i + 1 < w.len() {
                    if w[i] == a && w[i + 1] == b {
                        w[i] = ab.clone();
                        w.remove(i + 1);
                    }
                    i += 1;
                }
            }
            merges.push(format!("{a} {b}"));
            if !tokens.contains(&ab) {
                tokens.push(ab);
            }
        }
        (tokens, merges)
    }

    fn compare(tokens: &[String], merges: &[String], regexes: &[&str]) {
        let oracle = crate_bpe(tokens, merges, regexes).unwrap();
        let ours_bpe = ByteBpe::new(tokens, merges, regexes).unwrap();
        let mut merged = 0;
        for text in corpus() {
            let want = oracle.encode(text.as_str(), false).unwrap().get_ids().to_vec();
            let mut got = Vec::new();
            ours_bpe.encode(&text, &mut got).unwrap();
            assert_eq!(got, want, "{text:?}");
            merged += text.len() - got.len();
        }
        assert!(merged > 10_000, "the corpus exercises merges ({merged} bytes merged away)");
    }

    #[test]
    fn byte_bpe_matches_the_tokenizers_crate() {
        let (tokens, merges) = trained_vocab();
        assert!(merges.len() > 500);
        compare(&tokens, &merges, &pre_regexes("smollm").unwrap());
        compare(&tokens, &merges, &pre_regexes("qwen2").unwrap());
        // A token listed twice (the later id wins) and a merge listed twice (the later rank wins).
        let (table, _) = byte_unicode_table();
        let mut dup_tokens = tokens.clone();
        dup_tokens.extend([tokens[300].clone(), table[b'e' as usize].to_string()]);
        compare(&dup_tokens, &merges, &pre_regexes("smollm").unwrap());
        let mut dup_merges = merges.clone();
        dup_merges.extend([merges[10].clone(), merges[0].clone()]);
        compare(&tokens, &dup_merges, &pre_regexes("smollm").unwrap());
        // Bytes without a token are dropped, as the crate drops them, and their neighbours merge
        // across the gap: the tokens with `q` or `z` are gone, and the merges that use them.
        let gone = |t: &str| t.chars().any(|c| c == 'q' || c == 'z');
        let few: Vec<String> = tokens.iter().map(|t| if gone(t) { format!("\u{0}{t}") } else { t.clone() }).collect();
        let few_merges: Vec<String> = merges.iter().filter(|m| !gone(m)).cloned().collect();
        compare(&few, &few_merges, &[GPT2_PATTERN]);
        let the = ours(&few, &few_merges, &[GPT2_PATTERN], "the ");
        assert!(the.len() < 4, "`the ` merges: {the:?}");
        assert_eq!(ours(&few, &few_merges, &[GPT2_PATTERN], "thqe zqq"), the);
    }

    #[test]
    fn byte_bpe_matches_the_tokenizers_crate_on_the_built_in_vocabulary() {
        let home = std::env::var_os("SHOVEL_HOME").map(std::path::PathBuf::from).unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".shovel"));
        let path = home.join("models/smollm2-135m-instruct/model.gguf");
        if !path.exists() {
            assert!(std::env::var_os("CI").is_none(), "{} is missing (scripts/test.sh pulls it)", path.display());
            eprintln!("skipped: {} is missing", path.display());
            return;
        }
        let g = GgufFile::open(&path).unwrap();
        let tokens = g.get_str_array("tokenizer.ggml.tokens").unwrap();
        let merges = g.get_str_array("tokenizer.ggml.merges").unwrap();
        compare(&tokens, &merges, &pre_regexes("smollm").unwrap());
    }

    #[test]
    fn bad_merges_are_errors() {
        let tokens: Vec<String> = ["a", "b"].map(String::from).to_vec();
        assert!(ByteBpe::new(&tokens, &["a b".into()], &[GPT2_PATTERN]).is_err(), "`ab` is not in the vocabulary");
        assert!(ByteBpe::new(&tokens, &["ab".into()], &[GPT2_PATTERN]).is_err(), "no space");
    }

    #[test]
    fn byte_table_round_trips() {
        let t = ByteTable::new(["", "ab", "", "ĠHello"]);
        assert_eq!((t.len(), t.get(0), t.get(1), t.get(2), t.get_str(3), t.get(4)), (4, Some(&b""[..]), Some(&b"ab"[..]), Some(&b""[..]), "ĠHello", None));
    }
}
