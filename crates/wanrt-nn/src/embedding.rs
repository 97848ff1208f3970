//! A token embedding table, stored in any weight format a [`Linear`] layer supports: read in place
//! from mapped f32 safetensors, half precision, or int8 codes with one scale per row (UMT5-XXL's
//! table is 256 384 × 4096: 4.2 GB in f32, 1.05 GB as int8). The backend prepares it as it
//! prepares a linear layer's weights and looks rows up with [`crate::Backend::embedding`].

use crate::backend::Backend;
use crate::linear::Linear;
use crate::{HostTensor, Result, Tensor, WeightStore};

#[derive(Debug, Clone)]
pub struct Embedding {
    /// The table `[vocab, dim]` as the weight of a bias-free layer.
    pub table: Linear,
}

impl Embedding {
    /// Loads `{prefix}.weight` `[vocab, dim]` (and `{prefix}.weight_scale` for int8 codes).
    pub fn load(ws: &WeightStore, prefix: &str, vocab: usize, dim: usize) -> Result<Self> {
        Ok(Embedding { table: Linear::load_fused(ws, prefix, &[prefix], dim, &[vocab], false)? })
    }

    pub fn from_f32(name: &str, table: &HostTensor) -> Result<Self> {
        Ok(Embedding { table: Linear::from_f32(name, table, None)? })
    }

    /// `[vocab, dim]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.table.out_dim(), self.table.in_dim()]
    }

    /// Bytes held by the table (codes and scales for int8).
    pub fn bytes(&self) -> usize {
        self.table.bytes()
    }

    /// Storage format name (reports).
    pub fn format(&self) -> &'static str {
        self.table.format()
    }

    pub fn prepare(&mut self, backend: &dyn Backend) -> Result<()> {
        self.table.prepare_table(backend)
    }

    /// `ids: [..]` (u32) → `[.., dim]` on `be`.
    pub fn forward(&self, be: &dyn Backend, ids: &Tensor) -> Result<Tensor> {
        be.embedding(self, ids)
    }
}
