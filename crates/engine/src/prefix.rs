//! Prefix cache: the keys and values of finished sequences, kept (LRU, bounded by bytes) so a
//! new prompt that starts with the same tokens (a shared system prompt, Ask-Data's schema prompt)
//! shares their blocks instead of recomputing them: the new sequence's cache refers to the
//! entry's blocks by reference count, and copies only the partial block it writes into.
//! Evicting an entry frees the blocks no running sequence still refers to.

use crate::model::{KvCache, KV_BLOCK};

/// Shortest shared prefix worth copying.
const MIN_PREFIX: usize = 8;

struct Entry {
    /// Which weights computed the keys and values: 0 for the base, else the adapter's key.
    /// Entries only serve prompts run with the same weights.
    ns: u64,
    tokens: Vec<u32>,
    kv: KvCache,
    bytes: usize,
    last_used: u64,
}

/// The cache.
pub struct PrefixCache {
    entries: Vec<Entry>,
    capacity: usize,
    used: usize,
    clock: u64,
}

impl PrefixCache {
    /// A cache holding at most `capacity` bytes of keys and values (0 disables it).
    pub fn new(capacity: usize) -> Self {
        PrefixCache { entries: Vec::new(), capacity, used: 0, clock: 0 }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.used
    }

    /// The blocks the entries refer to, as addresses (with repeats where entries share).
    pub fn block_ids(&self) -> impl Iterator<Item = usize> + '_ {
        self.entries.iter().flat_map(|e| e.kv.block_ids())
    }

    /// A cache for `prompt` pre-filled with the longest cached prefix, leaving at least the last
    /// prompt token to compute (its logits start generation). `None` when nothing useful is cached.
    pub fn lookup(&mut self, ns: u64, prompt: &[u32]) -> Option<KvCache> {
        let limit = prompt.len().saturating_sub(1);
        let (best, n) =
            self.entries.iter().enumerate().filter(|(_, e)| e.ns == ns).map(|(i, e)| (i, e.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(limit))).max_by_key(|&(_, n)| n)?;
        if n < MIN_PREFIX {
            return None;
        }
        self.clock += 1;
        let e = &mut self.entries[best];
        e.last_used = self.clock;
        Some(e.kv.prefix(n))
    }

    /// Drops the least recently used entry; false when there is none. Its blocks are freed
    /// unless a running sequence or another entry still refers to them.
    pub fn evict_lru(&mut self) -> bool {
        let Some(lru) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.last_used).map(|(i, _)| i) else {
            return false;
        };
        self.used -= self.entries[lru].bytes;
        self.entries.swap_remove(lru);
        true
    }

    /// Keeps a finished sequence's cache; `tokens` are the tokens whose positions it holds.
    pub fn insert(&mut self, ns: u64, mut tokens: Vec<u32>, mut kv: KvCache) {
        tokens.truncate(kv.len());
        if self.capacity == 0 || tokens.len() < MIN_PREFIX || kv.bytes() > self.capacity {
            return;
        }
        // Whole blocks of a prefix an entry already holds are shared with it: sequences that
        // ran at the same time with the same system prompt each computed their own copy.
        let common = |e: &Entry| e.tokens.iter().zip(&tokens).take_while(|(a, b)| a == b).count();
        if let Some((e, n)) = self.entries.iter().filter(|e| e.ns == ns).map(|e| (e, common(e))).max_by_key(|&(_, n)| n) {
            kv.share_blocks_of(&e.kv, n / KV_BLOCK);
        }
        let bytes = kv.bytes();
        // An entry that this one extends (or repeats) is redundant.
        let mut i = 0;
        while i < self.entries.len() {
            let e = &self.entries[i];
            if e.ns == ns && e.tokens.len() <= tokens.len() && tokens.starts_with(&e.tokens) {
                self.used -= e.bytes;
                self.entries.swap_remove(i);
            } else {
                i += 1;
            }
        }
        self.clock += 1;
        self.used += bytes;
        self.entries.push(Entry { ns, tokens, kv, bytes, last_used: self.clock });
        while self.used > self.capacity && self.evict_lru() {}
    }
}
