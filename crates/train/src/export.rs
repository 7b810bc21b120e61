//! `shovel export`: merges an adapter into its GGUF base and writes a GGUF llama.cpp loads.
//!
//! Every adapted matrix becomes `W + (alpha / r) B A`, stored as Q8_0 or F16; every other tensor
//! and all metadata are copied unchanged (same names, order and alignment). The adapter is held
//! in the base's layout (the engine permutes q/k rows for llama GGUF files on load), so the
//! merge needs no permutation here.

use crate::mm::{mm, View};
use crate::{Error, Result};
use shovel_engine::gguf::GgufFile;
use shovel_engine::lora::{write_atomic, Adapter, Target};
use shovel_engine::quant::{quantize_row_q8_0, GgmlType};
use shovel_engine::tensor::{Storage, Weight};
use std::path::Path;

/// Storage type of the merged matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportQuant {
    /// 8-bit blocks of 32 with an f16 scale.
    Q8_0,
    /// IEEE half.
    F16,
}

fn gguf_name(t: Target) -> &'static str {
    match t {
        Target::QProj => "attn_q",
        Target::KProj => "attn_k",
        Target::VProj => "attn_v",
        Target::OProj => "attn_output",
        Target::GateProj => "ffn_gate",
        Target::UpProj => "ffn_up",
        Target::DownProj => "ffn_down",
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Writes `base` with `adapter` merged into `out` (through a temporary file, renamed).
pub fn export_gguf(base: &Path, adapter: &Adapter, quant: ExportQuant, out: &Path) -> Result<()> {
    let g = GgufFile::open(base)?;
    let bytes: &[u8] = &g.mmap;
    let s = adapter.config.scale();
    let r = adapter.config.r;
    // (name, dims, type, data)
    let mut tensors: Vec<(String, Vec<usize>, GgmlType, Vec<u8>)> = Vec::with_capacity(g.tensor_order.len());
    for name in &g.tensor_order {
        let info = &g.tensors[name];
        let adapted = name.strip_prefix("blk.").and_then(|rest| {
            let (l, tail) = rest.split_once('.')?;
            let l: usize = l.parse().ok()?;
            let t = Target::ALL.into_iter().find(|t| tail == format!("{}.weight", gguf_name(*t)))?;
            adapter.pair(l, t).map(|p| (l, t, p))
        });
        let Some((_, _, p)) = adapted else {
            tensors.push((name.clone(), info.dims.clone(), info.dtype, bytes[info.offset..info.offset + info.len].to_vec()));
            continue;
        };
        let (cols, rows) = (info.dims[0], info.dims.get(1).copied().unwrap_or(1));
        if (rows, cols) != (p.out, p.inp) {
            return Err(Error::Data(format!("{name}: the base has {rows} x {cols}, the adapter {} x {}", p.out, p.inp)));
        }
        let w = Weight::new(info.dtype, rows, cols, Storage::Mapped(g.mmap.clone()), info.offset);
        let mut merged = w.to_f32_vec();
        let sb: Vec<f32> = p.b.iter().map(|v| v * s).collect();
        mm(rows, cols, r, &mut merged, cols, true, View::rm(&sb, r), View::rm(&p.a, cols));
        let (ty, data) = match quant {
            ExportQuant::F16 => (GgmlType::F16, merged.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect()),
            ExportQuant::Q8_0 => {
                if cols % 32 != 0 {
                    return Err(Error::Data(format!("{name}: {cols} columns is not a multiple of 32; export with --quant f16")));
                }
                let mut d = Vec::with_capacity(rows * cols / 32 * 34);
                for row in merged.chunks_exact(cols) {
                    quantize_row_q8_0(row, &mut d);
                }
                (GgmlType::Q8_0, d)
            }
        };
        tensors.push((name.clone(), info.dims.clone(), ty, data));
    }
    let align = g.alignment;
    let mut file = Vec::new();
    file.extend_from_slice(b"GGUF");
    file.extend_from_slice(&3u32.to_le_bytes());
    file.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    file.extend_from_slice(&(g.n_kv as u64).to_le_bytes());
    file.extend_from_slice(&bytes[g.metadata_bytes.clone()]);
    let mut offset = 0usize;
    for (name, dims, ty, data) in &tensors {
        put_str(&mut file, name);
        file.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            file.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        file.extend_from_slice(&ty.to_u32().to_le_bytes());
        file.extend_from_slice(&(offset as u64).to_le_bytes());
        offset = (offset + data.len()).div_ceil(align) * align;
    }
    file.resize(file.len().div_ceil(align) * align, 0);
    for (_, _, _, data) in &tensors {
        file.extend_from_slice(data);
        file.resize(file.len().div_ceil(align) * align, 0);
    }
    write_atomic(out, &file)?;
    Ok(())
}
