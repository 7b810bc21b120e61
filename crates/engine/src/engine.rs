//! The engine handle: a catalogue of servable models, each loaded on first use onto its own
//! scheduler thread, behind the [`InferenceBackend`] seam.
//!
//! Submitting a request tokenizes it here (on the caller's task), checks it against the model's
//! context, and hands it to the model's scheduler thread, which streams [`Event`]s back.

use crate::bert::Encoder;
use crate::constrain::{Grammar, GrammarCompiler};
use crate::loader;
use crate::lora::Adapter;
use crate::model::ModelConfig;
use crate::sampler::Sampler;
use crate::scheduler::{self, Command, InflightGuard, SchedStats, SchedulerConfig, SeqRequest};
use crate::template::ChatTemplate;
use crate::tokenizer::Tokenizer;
use shovel_core::{BackendError, EmbedInput, EmbedRequest, Embeddings, EventStream, Gauge, GenerateRequest, InferenceBackend, ModelId, ModelInfo, ModelKind, OutputConstraint, Prompt, ToolFormat};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::OnceCell;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Upper bound on the context served per sequence, in tokens (the model's own limit applies
    /// too). Bounds KV memory: each token costs `2 * layers * kv_dim * 4` bytes.
    pub max_context: usize,
    /// Scheduler limits.
    pub scheduler: SchedulerConfig,
    /// Requests allowed to wait per model beyond those running; more are refused as overloaded
    /// (HTTP 429 with Retry-After) rather than queued without bound.
    pub max_waiting: usize,
    /// LoRA adapters kept loaded at once (least recently used evicted); each costs
    /// `r * (in + out) * 4` bytes per adapted layer (about 9 MB for SmolLM2 at r 16 on all seven).
    pub max_adapters: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { max_context: 8192, scheduler: SchedulerConfig::default(), max_waiting: 64, max_adapters: 16 }
    }
}

/// A model the engine can serve: its public description and where its files are.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    /// How it is listed.
    pub info: ModelInfo,
    /// A `.gguf` file or a Hugging Face model directory; for an adapter, its PEFT directory.
    pub path: PathBuf,
    /// For a LoRA adapter: the base model it runs over (sharing the base's batch).
    pub base: Option<ModelId>,
}

/// A model loaded and running on its scheduler thread.
pub struct LoadedModel {
    /// Tokenizer, shared with the scheduler thread.
    pub tokenizer: Arc<Tokenizer>,
    /// Chat template.
    pub template: ChatTemplate,
    /// Hyperparameters.
    pub config: ModelConfig,
    /// MLP width.
    pub ffn: usize,
    /// Context served per sequence.
    pub context_length: usize,
    /// Requests admitted and not yet finished (running or waiting).
    inflight: Arc<AtomicUsize>,
    /// Most requests in flight before new ones are refused.
    max_inflight: usize,
    /// The scheduler's gauges.
    pub stats: Arc<SchedStats>,
    tx: Mutex<std::sync::mpsc::Sender<Command>>,
    /// Grammar compiler for structured output, built on the first constrained request.
    grammars: OnceCell<Result<Arc<GrammarCompiler>, String>>,
}

impl LoadedModel {
    /// Compiles an output constraint for this model's vocabulary (off the async runtime: a large
    /// schema can take milliseconds), or says what is wrong with it.
    pub async fn compile(&self, c: &OutputConstraint) -> Result<Grammar, BackendError> {
        let tk = self.tokenizer.clone();
        let compiler = self
            .grammars
            .get_or_init(|| async move { tokio::task::spawn_blocking(move || GrammarCompiler::new(tk).map(Arc::new)).await.unwrap_or_else(|e| Err(e.to_string())) })
            .await
            .clone()
            .map_err(|e| BackendError::Unsupported { message: format!("structured output is not available for this model: {e}"), param: Some("response_format".into()) })?;
        let c = c.clone();
        tokio::task::spawn_blocking(move || compiler.compile(&c))
            .await
            .map_err(|e| BackendError::Internal(e.to_string()))?
            .map_err(|e| BackendError::InvalidParam { message: format!("invalid response_format: {e}"), param: "response_format".into() })
    }

    /// Tokenizes a prompt as the engine would for generation.
    pub fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<u32>, crate::Error> {
        let text = match prompt {
            Prompt::Text(text) => return self.tokenizer.encode(text, self.tokenizer.add_bos, true),
            Prompt::Chat(messages) => self.template.render(messages, true)?,
            Prompt::ChatWithTools { messages, tools } => self.template.render_with_tools(messages, Some(tools), true)?,
        };
        // The template may spell BOS itself; never add a second one.
        let bos_text = self.tokenizer.bos.map(|b| self.tokenizer.piece(b).to_string());
        let has_bos = bos_text.is_some_and(|b| !b.is_empty() && text.starts_with(&b));
        self.tokenizer.encode(&text, self.tokenizer.add_bos && !has_bos, true)
    }
}

struct Slot {
    entry: CatalogEntry,
    loaded: OnceCell<Arc<LoadedModel>>,
    /// For an embedding model: its encoder, loaded on first use.
    encoder: OnceCell<Arc<Encoder>>,
}

/// Adapters loaded in memory, least recently used evicted past the limit.
#[derive(Default)]
struct AdapterCache {
    loaded: HashMap<ModelId, (u64, Arc<Adapter>, u64)>,
    clock: u64,
}

/// The engine: implements [`InferenceBackend`] over local models.
pub struct Engine {
    config: EngineConfig,
    slots: RwLock<HashMap<ModelId, Arc<Slot>>>,
    adapters: Mutex<AdapterCache>,
    /// Embedding requests admitted and not finished (bounded by `max_waiting`).
    embed_inflight: Arc<AtomicUsize>,
    /// One embedding batch computes at a time: the forward pass already uses every core.
    embed_gate: tokio::sync::Semaphore,
}

/// Keys adapter loads apart in the prefix cache (0 is the base).
static ADAPTER_KEYS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Engine {
    /// An engine serving `entries`; nothing is loaded until first used.
    pub fn new(config: EngineConfig, entries: Vec<CatalogEntry>) -> Self {
        let e = Engine {
            config,
            slots: RwLock::new(HashMap::new()),
            adapters: Mutex::new(AdapterCache::default()),
            embed_inflight: Arc::new(AtomicUsize::new(0)),
            embed_gate: tokio::sync::Semaphore::new(1),
        };
        for entry in entries {
            e.add(entry);
        }
        e
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Adds (or replaces) a model in the catalogue.
    pub fn add(&self, entry: CatalogEntry) {
        let id = entry.info.id.clone();
        self.slots.write().unwrap().insert(id, Arc::new(Slot { entry, loaded: OnceCell::new(), encoder: OnceCell::new() }));
    }

    /// Removes a model from the catalogue (a running load finishes; new requests get 404).
    pub fn remove(&self, id: &ModelId) -> bool {
        self.adapters.lock().unwrap().loaded.remove(id);
        self.slots.write().unwrap().remove(id).is_some()
    }

    fn slot(&self, model: &ModelId) -> Result<Arc<Slot>, BackendError> {
        self.slots.read().unwrap().get(model).cloned().ok_or_else(|| BackendError::ModelNotFound { model: model.clone() })
    }

    /// Resolves a model id to the loaded base it runs on and, for an adapter, the adapter
    /// (loaded on first use, kept in an LRU of `max_adapters`).
    pub async fn resolve(&self, model: &ModelId) -> Result<(Arc<LoadedModel>, Option<(u64, Arc<Adapter>)>), BackendError> {
        let slot = self.slot(model)?;
        let Some(base) = slot.entry.base.clone() else {
            return Ok((self.load_base(model, slot).await?, None));
        };
        let base_slot = self.slot(&base).map_err(|_| BackendError::LoadFailed { model: model.clone(), reason: format!("its base model `{base}` is not registered") })?;
        let m = self.load_base(&base, base_slot).await?;
        {
            let mut c = self.adapters.lock().unwrap();
            c.clock += 1;
            let now = c.clock;
            if let Some(e) = c.loaded.get_mut(model) {
                e.2 = now;
                return Ok((m, Some((e.0, e.1.clone()))));
            }
        }
        let (path, cfg, ffn) = (slot.entry.path.clone(), m.config.clone(), m.ffn);
        let adapter = tokio::task::spawn_blocking(move || Adapter::load_peft(&path, &cfg, ffn))
            .await
            .map_err(|e| BackendError::Internal(e.to_string()))?
            .map_err(|e| BackendError::LoadFailed { model: model.clone(), reason: e.to_string() })?;
        let mut adapter = adapter;
        adapter.prepare();
        let adapter = Arc::new(adapter);
        let key = ADAPTER_KEYS.fetch_add(1, Ordering::Relaxed);
        let mut c = self.adapters.lock().unwrap();
        c.clock += 1;
        let now = c.clock;
        c.loaded.insert(model.clone(), (key, adapter.clone(), now));
        while c.loaded.len() > self.config.max_adapters.max(1) {
            let lru = c.loaded.iter().min_by_key(|(_, e)| e.2).map(|(k, _)| k.clone()).expect("non-empty");
            c.loaded.remove(&lru);
            tracing::info!(adapter = %lru, "adapter evicted");
        }
        tracing::info!(adapter = %model, base = %base, bytes = adapter.bytes(), "adapter loaded");
        Ok((m, Some((key, adapter))))
    }

    /// Loads a model now (or returns it if already loaded).
    pub async fn load(&self, model: &ModelId) -> Result<Arc<LoadedModel>, BackendError> {
        Ok(self.resolve(model).await?.0)
    }

    async fn encoder(&self, model: &ModelId) -> Result<Arc<Encoder>, BackendError> {
        let slot = self.slot(model)?;
        if slot.entry.info.kind != ModelKind::Embedding {
            return Err(BackendError::Unsupported { message: format!("`{model}` is a chat model; embeddings need an embedding model such as all-minilm-l6-v2"), param: Some("model".into()) });
        }
        slot.encoder
            .get_or_try_init(|| async {
                let (path, id) = (slot.entry.path.clone(), model.clone());
                let t0 = std::time::Instant::now();
                let enc = tokio::task::spawn_blocking(move || {
                    let enc = Encoder::load(&path);
                    release_freed_heap();
                    enc
                })
                .await
                .map_err(|e| BackendError::Internal(e.to_string()))?
                .map_err(|e| BackendError::LoadFailed { model: id.clone(), reason: e.to_string() })?;
                tracing::info!(model = %id, dim = enc.dim(), ms = t0.elapsed().as_millis() as u64, "embedding model loaded");
                Ok(Arc::new(enc))
            })
            .await
            .cloned()
    }

    async fn load_base(&self, model: &ModelId, slot: Arc<Slot>) -> Result<Arc<LoadedModel>, BackendError> {
        if slot.entry.base.is_some() {
            return Err(BackendError::LoadFailed { model: model.clone(), reason: "an adapter cannot be the base of another adapter".into() });
        }
        if slot.entry.info.kind != ModelKind::Chat {
            return Err(BackendError::Unsupported { message: format!("`{model}` is an embedding model; it cannot generate text"), param: Some("model".into()) });
        }
        let cfg = self.config.clone();
        slot.loaded
            .get_or_try_init(|| async {
                let entry = slot.entry.clone();
                tokio::task::spawn_blocking(move || start(&entry, &cfg)).await.map_err(|e| BackendError::Internal(e.to_string()))?
            })
            .await
            .cloned()
    }
}

fn start(entry: &CatalogEntry, cfg: &EngineConfig) -> Result<Arc<LoadedModel>, BackendError> {
    let t0 = std::time::Instant::now();
    let parts = loader::load(&entry.path).map_err(|e| BackendError::LoadFailed { model: entry.info.id.clone(), reason: e.to_string() })?;
    let tokenizer = Arc::new(parts.tokenizer);
    let config = parts.model.config.clone();
    let ffn = parts.model.ffn();
    // A sequence cannot outgrow the key/value budget.
    let budget_tokens = cfg.scheduler.kv_blocks(config.kv_block_bytes()).saturating_mul(crate::model::KV_BLOCK);
    let context_length = config.context_length.min(cfg.max_context);
    if budget_tokens < context_length {
        tracing::warn!(model = %entry.info.id, context_length, budget_tokens, kv_cache_bytes = cfg.scheduler.kv_cache_bytes, "engine.kv_cache_bytes holds fewer tokens than the context: sequences are cut at the budget");
    }
    let context_length = context_length.min(budget_tokens);
    let (tx, rx) = std::sync::mpsc::channel();
    let tk = tokenizer.clone();
    let sched = cfg.scheduler.clone();
    let model = parts.model;
    let stats = Arc::new(SchedStats::default());
    let st = stats.clone();
    release_freed_heap();
    std::thread::Builder::new().name(format!("sched-{}", entry.info.id)).spawn(move || scheduler::run(model, tk, rx, sched, context_length, st)).map_err(|e| BackendError::Internal(e.to_string()))?;
    tracing::info!(model = %entry.info.id, arch = ?config.arch, layers = config.n_layers, ms = t0.elapsed().as_millis() as u64, "model loaded");
    let max_inflight = cfg.scheduler.max_running + cfg.max_waiting;
    Ok(Arc::new(LoadedModel {
        tokenizer,
        template: parts.template,
        config,
        ffn,
        context_length,
        inflight: Arc::new(AtomicUsize::new(0)),
        max_inflight,
        stats,
        tx: Mutex::new(tx),
        grammars: OnceCell::new(),
    }))
}

/// Hands the pages of memory freed since the process started back to the system.
///
/// Loading a GGUF parses its metadata into ~200,000 small strings (the vocabulary and merges,
/// copied twice more while the tokenizer is built) between the weights' large allocations (an
/// embedding model's vocabulary likewise); once freed, glibc keeps those pages resident inside
/// the heap, as it only shrinks a heap from the top.
/// `malloc_trim` releases whole free pages anywhere in every arena.
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only inspects glibc's own arenas; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Tokens per encoder forward pass: inputs are grouped up to this many, bounding the
/// activations (MiniLM: ~4 KB per token per layer, plus its 1536-wide MLP).
const EMBED_BATCH_TOKENS: usize = 4096;

/// Tokenizes and checks every input (each error names the input), then encodes them in batches.
fn embed_blocking(enc: &Encoder, inputs: &[EmbedInput]) -> Result<Embeddings, BackendError> {
    let invalid = |i: usize, message: String| BackendError::InvalidParam { message: format!("input[{i}]: {message}"), param: "input".into() };
    let mut seqs = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let ids = match input {
            EmbedInput::Text(t) => enc.tokenize(t).map_err(|e| invalid(i, e.to_string()))?,
            EmbedInput::Tokens(ids) => {
                if let Some(bad) = ids.iter().find(|&&t| t as usize >= enc.vocab()) {
                    return Err(invalid(i, format!("token id {bad} is outside the model's vocabulary of {}", enc.vocab())));
                }
                enc.wrap(ids)
            }
        };
        if ids.len() > enc.max_tokens {
            return Err(invalid(i, format!("{} tokens; this model reads at most {}", ids.len(), enc.max_tokens)));
        }
        if ids.is_empty() {
            return Err(invalid(i, "empty input".into()));
        }
        seqs.push(ids);
    }
    let prompt_tokens = seqs.iter().map(Vec::len).sum();
    let mut vectors = Vec::with_capacity(seqs.len());
    let mut start = 0;
    while start < seqs.len() {
        let mut end = start;
        let mut tokens = 0;
        while end < seqs.len() && (end == start || tokens + seqs[end].len() <= EMBED_BATCH_TOKENS) {
            tokens += seqs[end].len();
            end += 1;
        }
        vectors.extend(enc.embed(&seqs[start..end]));
        start = end;
    }
    Ok(Embeddings { vectors, prompt_tokens })
}

#[async_trait::async_trait]
impl InferenceBackend for Engine {
    async fn models(&self) -> Vec<ModelInfo> {
        let mut v: Vec<ModelInfo> = self.slots.read().unwrap().values().map(|s| s.entry.info.clone()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    async fn gauges(&self) -> Vec<Gauge> {
        let slots: Vec<Arc<Slot>> = self.slots.read().unwrap().values().cloned().collect();
        let mut out = Vec::new();
        for s in slots {
            let Some(m) = s.loaded.get() else { continue };
            let model = s.entry.info.id.clone();
            let g = |family, help, value: usize| Gauge { family, help, model: model.clone(), value: value as f64 };
            out.push(g("shovel_running_sequences", "Sequences generating now.", m.stats.running.load(Ordering::Relaxed)));
            out.push(g("shovel_waiting_requests", "Requests queued for a running slot.", m.stats.waiting.load(Ordering::Relaxed)));
            out.push(g("shovel_inflight_requests", "Requests admitted and not finished.", m.inflight.load(Ordering::Relaxed)));
            out.push(g("shovel_kv_cache_bytes", "Key/value cache held by running sequences.", m.stats.kv_bytes.load(Ordering::Relaxed)));
            out.push(g("shovel_prefix_cache_bytes", "Key/value cache kept for shared prefixes.", m.stats.prefix_cache_bytes.load(Ordering::Relaxed)));
            out.push(g("shovel_kv_preemptions", "Sequences preempted for key/value memory since the model loaded (each recomputed later).", m.stats.preemptions.load(Ordering::Relaxed)));
            out.push(g("shovel_kv_blocks_peak", "The most key/value cache blocks held at once since the model loaded.", m.stats.kv_blocks_peak.load(Ordering::Relaxed)));
            out.push(g("shovel_kv_blocks_in_use", "Key/value cache blocks running sequences refer to (shared blocks once).", m.stats.kv_blocks.load(Ordering::Relaxed)));
            out.push(g("shovel_kv_blocks_held", "Key/value cache blocks alive: running sequences' and the prefix cache's.", m.stats.kv_blocks_held.load(Ordering::Relaxed)));
        }
        out
    }

    async fn embed(&self, req: EmbedRequest) -> Result<Embeddings, BackendError> {
        let enc = self.encoder(&req.model).await?;
        if req.inputs.is_empty() {
            return Err(BackendError::InvalidParam { message: "input must not be empty".into(), param: "input".into() });
        }
        // One computing and `max_waiting` waiting.
        let _inflight = InflightGuard::admit(&self.embed_inflight, self.config.max_waiting + 1).ok_or(BackendError::Overloaded)?;
        let _gate = self.embed_gate.acquire().await.map_err(|e| BackendError::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || embed_blocking(&enc, &req.inputs)).await.map_err(|e| BackendError::Internal(e.to_string()))?
    }

    async fn tool_format(&self, model: &ModelId) -> Result<ToolFormat, BackendError> {
        let m = self.load(model).await?;
        Ok(m.template.tool_format(|t| m.tokenizer.token_id(t)))
    }

    async fn submit(&self, req: GenerateRequest) -> Result<EventStream, BackendError> {
        let (m, adapter) = self.resolve(&req.model).await?;
        let prompt = m.prompt_tokens(&req.prompt).map_err(|e| BackendError::Unsupported { message: e.to_string(), param: Some("messages".into()) })?;
        if prompt.is_empty() {
            return Err(BackendError::EmptyPrompt);
        }
        let ctx = m.context_length;
        let max_tokens = match req.max_tokens {
            Some(n) if prompt.len() + n > ctx => return Err(BackendError::ContextOverflow { prompt_tokens: prompt.len(), max_tokens: n, requested: prompt.len() + n, context_length: ctx }),
            Some(n) => n,
            None if prompt.len() >= ctx => return Err(BackendError::ContextOverflow { prompt_tokens: prompt.len(), max_tokens: 1, requested: prompt.len() + 1, context_length: ctx }),
            None => ctx - prompt.len(),
        };
        let mut stop = req.stop.clone();
        if matches!(req.prompt, Prompt::Chat(_) | Prompt::ChatWithTools { .. }) {
            stop.extend(m.template.stops.iter().cloned());
        }
        // Admission: a bounded queue. The guard travels with the request and frees its place
        // however it ends.
        let inflight = InflightGuard::admit(&m.inflight, m.max_inflight).ok_or(BackendError::Overloaded)?;
        // Compiled after admission, so a refused request costs no compile (the guard frees the
        // place if the grammar is refused).
        let grammar = match &req.constraint {
            Some(c) => Some(m.compile(c).await?),
            None => None,
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let seq = SeqRequest { prompt, max_tokens, stop, top_logprobs: req.top_logprobs, sampler: Sampler::new(req.sampling.clone()), tx, inflight, adapter, grammar };
        m.tx.lock().unwrap().send(Command::Add(Box::new(seq))).map_err(|_| BackendError::Internal("scheduler thread stopped".into()))?;
        Ok(rx)
    }
}
