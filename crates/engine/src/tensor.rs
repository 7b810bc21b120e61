//! Weights as the engine holds them: typed byte ranges borrowed from a memory map (GGUF,
//! safetensors) or owned, never dequantized up front.

use crate::quant::{dequantize_row, GgmlType};
use memmap2::Mmap;
use std::sync::Arc;

/// The bytes behind a weight.
#[derive(Clone)]
pub enum Storage {
    /// A mapped file shared by all of its tensors.
    Mapped(Arc<Mmap>),
    /// Bytes owned in memory (tiny test models, converted tensors).
    Owned(Arc<Vec<u8>>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A 2-D weight matrix (`rows` outputs x `cols` inputs, row-major) or a vector (`rows` = 1).
#[derive(Clone)]
pub struct Weight {
    /// Storage type.
    pub ty: GgmlType,
    /// Number of rows (output features).
    pub rows: usize,
    /// Number of columns (input features).
    pub cols: usize,
    storage: Storage,
    offset: usize,
    row_bytes: usize,
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Weight({:?}, {}x{})", self.ty, self.rows, self.cols)
    }
}

impl Weight {
    /// A weight over `storage[offset..]`. The caller has checked that the range is in bounds and
    /// that `cols` is a whole number of blocks.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, storage: Storage, offset: usize) -> Self {
        let row_bytes = ty.row_bytes(cols).expect("cols checked by the loader");
        debug_assert!(offset + rows * row_bytes <= storage.bytes().len());
        Weight { ty, rows, cols, storage, offset, row_bytes }
    }

    /// Whether `other` reads the very same bytes (a tied output head and embedding).
    pub fn same_bytes(&self, other: &Weight) -> bool {
        self.ty == other.ty && self.rows == other.rows && self.cols == other.cols && std::ptr::eq(self.row_bytes(0).as_ptr(), other.row_bytes(0).as_ptr())
    }

    /// An owned f32 matrix.
    pub fn from_f32(rows: usize, cols: usize, data: &[f32]) -> Self {
        assert_eq!(data.len(), rows * cols);
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Weight::new(GgmlType::F32, rows, cols, Storage::Owned(Arc::new(bytes)), 0)
    }

    /// The raw bytes of row `i`.
    #[inline]
    pub fn row_bytes(&self, i: usize) -> &[u8] {
        let start = self.offset + i * self.row_bytes;
        &self.storage.bytes()[start..start + self.row_bytes]
    }

    /// Row `i` dequantized into `out` (length `cols`).
    pub fn dequantize_row_into(&self, i: usize, out: &mut [f32]) {
        dequantize_row(self.ty, self.row_bytes(i), out);
    }

    /// The whole tensor as f32 (for norms and other small vectors).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (i, chunk) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row_into(i, chunk);
        }
        out
    }
}
