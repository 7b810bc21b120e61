//! Configuration: `config/default.toml` compiled in, layered with a user file, environment
//! variables and flags, then validated into [`Config`] (raw strings become paths and numbers
//! with their ranges checked once).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The commented default configuration, compiled in.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    home: RawHome,
    server: RawServer,
    engine: RawEngine,
    train: RawTrain,
    askdata: RawAskdata,
    pull: RawPull,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAskdata {
    db: String,
    model: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrain {
    checkpoint_every: usize,
    precision: String,
    amx: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHome {
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    host: String,
    port: u16,
    max_body_bytes: usize,
    max_file_bytes: usize,
    models: Vec<String>,
    pull_builtin: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    max_context: usize,
    max_batch_tokens: usize,
    max_running: usize,
    max_waiting: usize,
    prefix_cache_bytes: usize,
    kv_cache_bytes: usize,
    max_adapters: usize,
    threads: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPull {
    python: String,
    index_url: String,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `SHOVEL_HOME`.
    pub home: PathBuf,
    /// Listen host.
    pub host: String,
    /// Listen port.
    pub port: u16,
    /// Request body limit.
    pub max_body_bytes: usize,
    /// File upload limit.
    pub max_file_bytes: usize,
    /// Models to serve (empty: all registered).
    pub models: Vec<String>,
    /// Pull the built-in model when nothing is registered.
    pub pull_builtin: bool,
    /// Engine settings.
    pub engine: shovel_engine::EngineConfig,
    /// Compute threads (0: all cores).
    pub threads: usize,
    /// Fine-tuning: checkpoint every this many steps.
    pub checkpoint_every: usize,
    /// Fine-tuning: how the frozen base is multiplied.
    pub train_precision: shovel_train::Precision,
    /// Fine-tuning: bf16 products may run on Intel AMX tiles.
    pub train_amx: bool,
    /// Ask-Data's database for the HTTP API (`demo`, a SQLite file, CSV files); `None`: off.
    pub askdata_db: Option<String>,
    /// Ask-Data's default model; `None`: askdata-smollm2 when registered, else the built-in one.
    pub askdata_model: Option<String>,
    /// Python for pip.
    pub python: String,
    /// pip index URL.
    pub index_url: Option<String>,
}

impl Config {
    /// The SQLite database path.
    pub fn db_path(&self) -> PathBuf {
        self.home.join("shovel.db")
    }
    /// Where uploaded files live.
    pub fn files_dir(&self) -> PathBuf {
        self.home.join("files")
    }
    /// Where pulled models live.
    pub fn models_dir(&self) -> PathBuf {
        self.home.join("models")
    }
    /// Where fine-tuned adapters live.
    pub fn adapters_dir(&self) -> PathBuf {
        self.home.join("models").join("ft")
    }
    /// Fine-tuning jobs' working directories (checkpoints).
    pub fn jobs_dir(&self) -> PathBuf {
        self.home.join("jobs")
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(bv) => merge(bv, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn env_value(raw: &str) -> toml::Value {
    // Numbers, booleans and arrays parse as TOML; anything else is a string.
    toml::from_str::<toml::Table>(&format!("v = {raw}")).ok().and_then(|mut t| t.remove("v")).unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn expand_home(p: &str) -> PathBuf {
    match p.strip_prefix("~") {
        Some(rest) => {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
            home.join(rest.trim_start_matches('/'))
        }
        None => PathBuf::from(p),
    }
}

/// Loads the layered configuration. `file` is `--config`; without it `$SHOVEL_HOME/config.toml`
/// is read when present.
pub fn load(file: Option<&Path>) -> Result<Config> {
    load_from(file, std::env::vars())
}

fn load_from(file: Option<&Path>, env: impl Iterator<Item = (String, String)>) -> Result<Config> {
    let mut v: toml::Value = toml::from_str(DEFAULT_TOML).context("compiled-in default config")?;
    let env: Vec<(String, String)> = env.collect();
    let home_env = env.iter().find(|(k, _)| k == "SHOVEL_HOME").map(|(_, v)| v.clone());
    let home_guess = home_env.clone().map(PathBuf::from).unwrap_or_else(|| expand_home("~/.shovel"));
    let user_file = file.map(Path::to_path_buf).or_else(|| Some(home_guess.join("config.toml")).filter(|p| p.exists()));
    if let Some(f) = &user_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading config file {}", f.display()))?;
        let over: toml::Value = toml::from_str(&text).with_context(|| format!("parsing config file {}", f.display()))?;
        merge(&mut v, over);
    }
    for (k, val) in &env {
        let Some(rest) = k.strip_prefix("SHOVEL__") else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        if path.len() != 2 {
            bail!("environment variable {k}: expected SHOVEL__<SECTION>__<KEY>");
        }
        let mut over = toml::Table::new();
        let mut inner = toml::Table::new();
        inner.insert(path[1].clone(), env_value(val));
        over.insert(path[0].clone(), toml::Value::Table(inner));
        merge(&mut v, toml::Value::Table(over));
    }
    let raw: RawConfig = v.try_into().context("invalid configuration (see config/default.toml for every key)")?;
    validate(raw, home_env)
}

fn validate(raw: RawConfig, home_env: Option<String>) -> Result<Config> {
    let home = home_env.map(PathBuf::from).unwrap_or_else(|| expand_home(&raw.home.path));
    if raw.engine.max_context < 16 {
        bail!("engine.max_context must be at least 16, got {}", raw.engine.max_context);
    }
    if raw.engine.kv_cache_bytes != 0 && raw.engine.kv_cache_bytes < 16 << 20 {
        bail!("engine.kv_cache_bytes must be 0 (no bound) or at least 16 MiB, got {}", raw.engine.kv_cache_bytes);
    }
    if raw.engine.max_batch_tokens == 0 || raw.engine.max_running == 0 {
        bail!("engine.max_batch_tokens and engine.max_running must be at least 1");
    }
    if raw.server.max_body_bytes < 1024 {
        bail!("server.max_body_bytes must be at least 1024, got {}", raw.server.max_body_bytes);
    }
    Ok(Config {
        home,
        host: raw.server.host,
        port: raw.server.port,
        max_body_bytes: raw.server.max_body_bytes,
        max_file_bytes: raw.server.max_file_bytes,
        models: raw.server.models,
        pull_builtin: raw.server.pull_builtin,
        engine: shovel_engine::EngineConfig {
            max_context: raw.engine.max_context,
            scheduler: shovel_engine::scheduler::SchedulerConfig {
                max_batch_tokens: raw.engine.max_batch_tokens,
                max_running: raw.engine.max_running,
                prefix_cache_bytes: raw.engine.prefix_cache_bytes,
                kv_cache_bytes: raw.engine.kv_cache_bytes,
            },
            max_waiting: raw.engine.max_waiting,
            max_adapters: raw.engine.max_adapters,
        },
        threads: raw.engine.threads,
        checkpoint_every: raw.train.checkpoint_every,
        askdata_db: Some(raw.askdata.db.trim().to_string()).filter(|s| !s.is_empty()),
        askdata_model: Some(raw.askdata.model.trim().to_string()).filter(|s| !s.is_empty()),
        train_precision: match raw.train.precision.as_str() {
            "auto" => shovel_train::Precision::auto(),
            "bf16" if shovel_train::bf16::available() => shovel_train::Precision::Bf16,
            "bf16" => bail!("train.precision = \"bf16\" needs a CPU with AVX512-BF16; this one has none (use \"auto\" or \"f32\")"),
            "f32" => shovel_train::Precision::F32,
            other => bail!("train.precision must be \"auto\", \"bf16\" or \"f32\", got \"{other}\""),
        },
        train_amx: raw.train.amx,
        python: raw.pull.python,
        index_url: Some(raw.pull.index_url).filter(|s| !s.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn defaults_parse() {
        let c = load_from(None, env(&[("SHOVEL_HOME", "/tmp/nowhere-shovel")])).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.home, PathBuf::from("/tmp/nowhere-shovel"));
        assert_eq!(c.engine.max_context, 8192);
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[server]\nport = 9000\nhost = \"0.0.0.0\"\n").unwrap();
        let c = load_from(Some(&f), env(&[("SHOVEL__SERVER__PORT", "9100"), ("SHOVEL_HOME", "/x")])).unwrap();
        assert_eq!(c.port, 9100);
        assert_eq!(c.host, "0.0.0.0");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[server]\nprot = 1\n").unwrap();
        assert!(load_from(Some(&f), env(&[])).is_err());
        assert!(load_from(None, env(&[("SHOVEL__ENGINE__MAX_CONTEXT", "3")])).is_err());
    }
}
