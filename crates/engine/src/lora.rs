//! LoRA adapters: low-rank updates `W + (alpha / r) * B A` on a frozen base's linear layers.
//!
//! One type serves training (the `train` crate updates `a` and `b`) and inference (the model's
//! forward pass adds each sequence's own adapter to its rows of the batch). On disk an adapter is
//! in PEFT's layout (`adapter_config.json` + `adapter_model.safetensors`, PEFT's tensor names), so
//! it also loads in PEFT and vLLM. In memory its matrices are in the base's layout: for llama
//! weights as GGUF stores them (query/key rows permuted for interleaved rope by llama.cpp's
//! converter) the rows of `B` for `q_proj` and `k_proj` are permuted the same way on load and
//! back on save.

use crate::error::{Error, Result};
use crate::model::{Arch, ModelConfig};
use crate::ops::RopeStyle;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The linear layers an adapter can target, in PEFT's module names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Query projection.
    QProj,
    /// Key projection.
    KProj,
    /// Value projection.
    VProj,
    /// Attention output projection.
    OProj,
    /// MLP gate projection.
    GateProj,
    /// MLP up projection.
    UpProj,
    /// MLP down projection.
    DownProj,
}

impl Target {
    /// All seven, in the order a block applies them.
    pub const ALL: [Target; 7] = [Target::QProj, Target::KProj, Target::VProj, Target::OProj, Target::GateProj, Target::UpProj, Target::DownProj];

    /// PEFT's module name.
    pub fn name(self) -> &'static str {
        match self {
            Target::QProj => "q_proj",
            Target::KProj => "k_proj",
            Target::VProj => "v_proj",
            Target::OProj => "o_proj",
            Target::GateProj => "gate_proj",
            Target::UpProj => "up_proj",
            Target::DownProj => "down_proj",
        }
    }

    /// Parses a PEFT module name.
    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Index into [`Target::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    fn module_path(self) -> &'static str {
        match self {
            Target::QProj | Target::KProj | Target::VProj | Target::OProj => "self_attn",
            _ => "mlp",
        }
    }

    /// `(out, in)` widths of the layer this target adapts.
    pub fn shape(self, c: &ModelConfig, ffn: usize) -> (usize, usize) {
        match self {
            Target::QProj => (c.q_dim(), c.hidden),
            Target::KProj | Target::VProj => (c.kv_dim(), c.hidden),
            Target::OProj => (c.hidden, c.q_dim()),
            Target::GateProj | Target::UpProj => (ffn, c.hidden),
            Target::DownProj => (c.hidden, ffn),
        }
    }
}

/// An adapter's shape and scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank.
    pub r: usize,
    /// Scale numerator: updates are multiplied by `alpha / r`.
    pub alpha: f32,
    /// Dropout on the adapter's input during training.
    pub dropout: f32,
    /// Layers adapted.
    pub targets: Vec<Target>,
}

impl LoraConfig {
    /// `alpha / r`.
    pub fn scale(&self) -> f32 {
        self.alpha / self.r as f32
    }
}

/// One adapted layer: `a` is `r x in`, `b` is `out x r`, both row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    /// Down-projection, `r x in`.
    pub a: Vec<f32>,
    /// Up-projection, `out x r`.
    pub b: Vec<f32>,
    /// Output width.
    pub out: usize,
    /// Input width.
    pub inp: usize,
    /// For serving: `(alpha / r) B^T`, `r x out`, so the update is a sum of contiguous rows
    /// (see [`Adapter::prepare`]); empty while training.
    pub bt: Vec<f32>,
}

/// A whole adapter over one base.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    /// Shape and scaling.
    pub config: LoraConfig,
    /// Per layer, per [`Target::ALL`] index: the pair, when that target is adapted.
    pub layers: Vec<[Option<LoraPair>; 7]>,
}

#[derive(Serialize, Deserialize)]
struct PeftConfig {
    #[serde(default)]
    base_model_name_or_path: Option<String>,
    peft_type: String,
    #[serde(default)]
    task_type: Option<String>,
    r: usize,
    lora_alpha: f32,
    #[serde(default)]
    lora_dropout: f32,
    target_modules: serde_json::Value,
    #[serde(default)]
    bias: Option<String>,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    inference_mode: bool,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
}

/// Whether q/k rows are stored permuted (llama GGUF) and so need converting to and from PEFT.
fn permuted(c: &ModelConfig) -> bool {
    c.arch == Arch::Llama && c.rope_style == RopeStyle::Interleaved
}

/// Reorders the rows of `b` (`heads * hd` rows of `r`) from Hugging Face order to llama.cpp's
/// permuted order (`to_gguf`) or back. llama.cpp's converter maps row `h*hd + i*hd/2 + j` to
/// `h*hd + 2j + i`.
fn permute_rows(b: &[f32], heads: usize, r: usize, to_gguf: bool) -> Vec<f32> {
    let rows = b.len() / r;
    let hd = rows / heads;
    let mut out = vec![0f32; b.len()];
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..hd / 2 {
                let hf = h * hd + i * hd / 2 + j;
                let gg = h * hd + 2 * j + i;
                let (src, dst) = if to_gguf { (hf, gg) } else { (gg, hf) };
                out[dst * r..(dst + 1) * r].copy_from_slice(&b[src * r..(src + 1) * r]);
            }
        }
    }
    out
}

fn dir_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::ModelDir { path: path.to_path_buf(), reason: reason.into() }
}

impl Adapter {
    /// A fresh adapter as PEFT initialises one: `A` Kaiming-uniform (a = sqrt 5, so bound
    /// `1/sqrt(in)`), `B` zero, so training starts from the base model exactly.
    pub fn init(c: &ModelConfig, ffn: usize, config: LoraConfig, seed: u64) -> Adapter {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let layers = (0..c.n_layers)
            .map(|_| {
                let mut pairs: [Option<LoraPair>; 7] = Default::default();
                for t in Target::ALL {
                    if !config.targets.contains(&t) {
                        continue;
                    }
                    let (out, inp) = t.shape(c, ffn);
                    let bound = 1.0 / (inp as f32).sqrt();
                    let a = (0..config.r * inp).map(|_| rng.gen_range(-bound..bound)).collect();
                    pairs[t.index()] = Some(LoraPair { a, b: vec![0.0; out * config.r], out, inp, bt: Vec::new() });
                }
                pairs
            })
            .collect();
        Adapter { config, layers }
    }

    /// The pair for `target` in layer `l`, if adapted.
    pub fn pair(&self, l: usize, target: Target) -> Option<&LoraPair> {
        self.layers.get(l).and_then(|p| p[target.index()].as_ref())
    }

    /// Readies the adapter for serving: keeps `(alpha / r) B^T` beside `B`, so applying it is
    /// `r` dot products and `r` contiguous scaled row additions per token.
    pub fn prepare(&mut self) {
        let (r, s) = (self.config.r, self.config.scale());
        for p in self.layers.iter_mut().flatten().flatten() {
            let mut bt = vec![0f32; r * p.out];
            for (o, brow) in p.b.chunks_exact(r).enumerate() {
                for (k, v) in brow.iter().enumerate() {
                    bt[k * p.out + o] = s * v;
                }
            }
            p.bt = bt;
        }
    }

    /// Adds this adapter's update for rows `x` (`n x inp`) to `out` (`n x out`).
    pub fn apply(&self, l: usize, target: Target, x: &[f32], out: &mut [f32]) {
        let Some(p) = self.pair(l, target) else {
            return;
        };
        let r = self.config.r;
        let s = self.config.scale();
        let mut t = vec![0f32; r];
        for (xr, or) in x.chunks_exact(p.inp).zip(out.chunks_exact_mut(p.out)) {
            for (k, tk) in t.iter_mut().enumerate() {
                *tk = crate::ops::dot(&p.a[k * p.inp..(k + 1) * p.inp], xr);
            }
            if p.bt.is_empty() {
                for (o, brow) in or.iter_mut().zip(p.b.chunks_exact(r)) {
                    *o += s * brow.iter().zip(&t).map(|(a, b)| a * b).sum::<f32>();
                }
            } else {
                for (tk, btr) in t.iter().zip(p.bt.chunks_exact(p.out)) {
                    crate::ops::axpy(*tk, btr, or);
                }
            }
        }
    }

    /// Writes the adapter in PEFT's layout into `dir` (created; files written to temporary names
    /// and renamed, so a reader never sees half a file).
    pub fn save_peft(&self, dir: &Path, c: &ModelConfig, base_name: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
        let r = self.config.r;
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (l, pairs) in self.layers.iter().enumerate() {
            for t in Target::ALL {
                let Some(p) = &pairs[t.index()] else { continue };
                let b = match t {
                    Target::QProj if permuted(c) => permute_rows(&p.b, c.n_heads, r, false),
                    Target::KProj if permuted(c) => permute_rows(&p.b, c.n_kv_heads, r, false),
                    _ => p.b.clone(),
                };
                let stem = format!("base_model.model.model.layers.{l}.{}.{}", t.module_path(), t.name());
                tensors.push((format!("{stem}.lora_A.weight"), vec![r, p.inp], to_bytes(&p.a)));
                tensors.push((format!("{stem}.lora_B.weight"), vec![p.out, r], to_bytes(&b)));
            }
        }
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> =
            tensors.iter().map(|(n, shape, bytes)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).expect("shape matches bytes"))).collect();
        let data = safetensors::serialize(views, &None).map_err(|e| dir_err(dir, e.to_string()))?;
        write_atomic(&dir.join("adapter_model.safetensors"), &data)?;
        let cfg = PeftConfig {
            base_model_name_or_path: Some(base_name.to_string()),
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            r,
            lora_alpha: self.config.alpha,
            lora_dropout: self.config.dropout,
            target_modules: serde_json::Value::from(self.config.targets.iter().map(|t| t.name()).collect::<Vec<_>>()),
            bias: Some("none".into()),
            fan_in_fan_out: false,
            inference_mode: true,
            use_rslora: false,
            use_dora: false,
        };
        let json = serde_json::to_vec_pretty(&cfg).expect("config serializes");
        write_atomic(&dir.join("adapter_config.json"), &json)
    }

    /// Reads a PEFT LoRA adapter for a base with hyperparameters `c` and MLP width `ffn`,
    /// checking every tensor's shape against the base.
    pub fn load_peft(dir: &Path, c: &ModelConfig, ffn: usize) -> Result<Adapter> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read(&cfg_path).map_err(|e| Error::Io { path: cfg_path.clone(), source: e })?;
        let pc: PeftConfig = serde_json::from_slice(&text).map_err(|e| dir_err(&cfg_path, e.to_string()))?;
        if pc.peft_type != "LORA" {
            return Err(dir_err(&cfg_path, format!("peft_type `{}` is not supported (only LORA)", pc.peft_type)));
        }
        if pc.use_dora || pc.use_rslora || pc.fan_in_fan_out {
            return Err(dir_err(&cfg_path, "DoRA, rsLoRA and fan_in_fan_out adapters are not supported"));
        }
        let st_path = dir.join("adapter_model.safetensors");
        let bytes = std::fs::read(&st_path).map_err(|e| Error::Io { path: st_path.clone(), source: e })?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| dir_err(&st_path, e.to_string()))?;
        let r = pc.r;
        let mut found: HashMap<(usize, Target), (Option<Vec<f32>>, Option<Vec<f32>>)> = HashMap::new();
        for (name, view) in st.tensors() {
            // base_model.model.model.layers.{l}.{self_attn|mlp}.{target}.lora_{A|B}[.default].weight
            let parts: Vec<&str> = name.split('.').collect();
            let Some(li) = parts.iter().position(|p| *p == "layers") else {
                return Err(dir_err(&st_path, format!("unexpected tensor `{name}`")));
            };
            let l: usize = parts.get(li + 1).and_then(|s| s.parse().ok()).ok_or_else(|| dir_err(&st_path, format!("bad layer in `{name}`")))?;
            let t = parts.get(li + 3).and_then(|s| Target::parse(s)).ok_or_else(|| dir_err(&st_path, format!("unsupported module in `{name}`")))?;
            let which = parts.get(li + 4).copied().unwrap_or("");
            if l >= c.n_layers {
                return Err(dir_err(&st_path, format!("`{name}`: layer {l} but the base has {}", c.n_layers)));
            }
            let (out, inp) = t.shape(c, ffn);
            let want = match which {
                "lora_A" => vec![r, inp],
                "lora_B" => vec![out, r],
                _ => return Err(dir_err(&st_path, format!("unexpected tensor `{name}`"))),
            };
            if view.shape() != want.as_slice() {
                return Err(dir_err(&st_path, format!("`{name}` has shape {:?}, the base needs {want:?}", view.shape())));
            }
            let vals = to_f32(view.dtype(), view.data()).ok_or_else(|| dir_err(&st_path, format!("`{name}`: dtype {:?} not supported", view.dtype())))?;
            let e = found.entry((l, t)).or_default();
            if which == "lora_A" {
                e.0 = Some(vals);
            } else {
                e.1 = Some(vals);
            }
        }
        let mut targets: Vec<Target> = Vec::new();
        let mut layers: Vec<[Option<LoraPair>; 7]> = (0..c.n_layers).map(|_| Default::default()).collect();
        for ((l, t), (a, b)) in found {
            let (Some(a), Some(b)) = (a, b) else {
                return Err(dir_err(&st_path, format!("layer {l} {} has only one of lora_A and lora_B", t.name())));
            };
            let b = match t {
                Target::QProj if permuted(c) => permute_rows(&b, c.n_heads, r, true),
                Target::KProj if permuted(c) => permute_rows(&b, c.n_kv_heads, r, true),
                _ => b,
            };
            let (out, inp) = t.shape(c, ffn);
            layers[l][t.index()] = Some(LoraPair { a, b, out, inp, bt: Vec::new() });
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        if targets.is_empty() {
            return Err(dir_err(&st_path, "no LoRA tensors"));
        }
        targets.sort_by_key(|t| t.index());
        Ok(Adapter { config: LoraConfig { r, alpha: pc.lora_alpha, dropout: pc.lora_dropout, targets }, layers })
    }

    /// Bytes held by the matrices.
    pub fn bytes(&self) -> usize {
        self.layers.iter().flatten().flatten().map(|p| (p.a.len() + p.b.len()) * 4).sum()
    }
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn to_f32(dtype: safetensors::Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        safetensors::Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        safetensors::Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        safetensors::Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => return None,
    })
}

/// Writes `data` to `path` through a temporary file in the same directory, fsynced, then renamed.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let io = |e| Error::Io { path: path.to_path_buf(), source: e };
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(arch: Arch, style: RopeStyle) -> ModelConfig {
        ModelConfig {
            arch,
            n_layers: 2,
            hidden: 8,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 4,
            vocab: 10,
            context_length: 16,
            rms_eps: 1e-5,
            rope_base: 10000.0,
            rope_base_local: 10000.0,
            rope_style: style,
            sliding_window: None,
            swa_pattern: 0,
            attn_scale: 0.5,
            embed_scale: 1.0,
        }
    }

    #[test]
    fn permutation_round_trips_and_matches_llama_cpp() {
        // One head of width 4, r = 1: HF rows [0,1,2,3] become [0,2,1,3] in GGUF order.
        let b = vec![0.0, 1.0, 2.0, 3.0];
        let g = permute_rows(&b, 1, 1, true);
        assert_eq!(g, vec![0.0, 2.0, 1.0, 3.0]);
        assert_eq!(permute_rows(&g, 1, 1, false), b);
    }

    #[test]
    fn peft_save_load_round_trip() {
        for style in [RopeStyle::Interleaved, RopeStyle::Neox] {
            let c = cfg(Arch::Llama, style);
            let lc = LoraConfig { r: 2, alpha: 4.0, dropout: 0.0, targets: Target::ALL.to_vec() };
            let mut a = Adapter::init(&c, 12, lc, 7);
            for (i, p) in a.layers.iter_mut().flatten().flatten().enumerate() {
                p.b.iter_mut().enumerate().for_each(|(j, v)| *v = (i * 100 + j) as f32);
            }
            let dir = tempfile::tempdir().unwrap();
            a.save_peft(dir.path(), &c, "base").unwrap();
            let back = Adapter::load_peft(dir.path(), &c, 12).unwrap();
            assert_eq!(back, a);
            let text = std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap();
            assert!(text.contains("\"peft_type\": \"LORA\"") && text.contains("q_proj"), "{text}");
        }
    }

    #[test]
    fn wrong_shapes_are_refused_with_the_tensor_name() {
        let c = cfg(Arch::Llama, RopeStyle::Neox);
        let lc = LoraConfig { r: 2, alpha: 4.0, dropout: 0.0, targets: vec![Target::QProj] };
        let a = Adapter::init(&c, 12, lc, 1);
        let dir = tempfile::tempdir().unwrap();
        a.save_peft(dir.path(), &c, "base").unwrap();
        let mut other = c.clone();
        other.hidden = 16;
        let e = Adapter::load_peft(dir.path(), &other, 12).unwrap_err().to_string();
        assert!(e.contains("q_proj.lora_A") && e.contains("shape"), "{e}");
    }

    #[test]
    fn apply_adds_scaled_low_rank_update() {
        let c = cfg(Arch::Llama, RopeStyle::Neox);
        let lc = LoraConfig { r: 1, alpha: 2.0, dropout: 0.0, targets: vec![Target::VProj] };
        let mut a = Adapter::init(&c, 12, lc, 1);
        let p = a.layers[0][Target::VProj.index()].as_mut().unwrap();
        p.a = vec![1.0; 8];
        p.b = vec![1.0, 2.0, 3.0, 4.0];
        let x = vec![0.5f32; 8];
        let mut out = vec![0f32; 4];
        a.apply(0, Target::VProj, &x, &mut out);
        // t = 2 * 4 = 8 (scale 2, A.x = 4); out = B * t.
        assert_eq!(out, vec![8.0, 16.0, 24.0, 32.0]);
        // The serving layout gives the same.
        a.prepare();
        let mut out2 = vec![0f32; 4];
        a.apply(0, Target::VProj, &x, &mut out2);
        assert_eq!(out2, out);
    }
}
