//! The parameter tree of a model, walked without knowing the model: what reports count, what a
//! backend prepares, what `wanrt optimize` replaces. Each model component lists its own layers
//! once in [`Module::visit`] / [`Module::visit_mut`]; everything else is written here, generically.

use crate::backend::{AttentionPrecision, Backend};
use crate::{Conv3d, Embedding, Linear, Result, Tensor};

/// A parameter (or per-module setting) seen by [`Module::visit`].
pub enum Param<'a> {
    Linear(&'a Linear),
    Conv3d(&'a Conv3d),
    Embedding(&'a Embedding),
    /// A small parameter tensor (norm gains, modulation tables).
    Tensor(&'a Tensor),
    /// The precision of the attention module at `path`.
    Attention {
        path: &'a str,
        precision: AttentionPrecision,
    },
}

/// A parameter (or per-module setting) seen by [`Module::visit_mut`].
pub enum ParamMut<'a> {
    Linear(&'a mut Linear),
    Conv3d(&'a mut Conv3d),
    Embedding(&'a mut Embedding),
    /// A small parameter tensor by its store name (`blocks.0.attn1.norm_q.weight`), for the
    /// modules that know their path: replacing it gives the module its own copy (per-request
    /// norm deltas) while the tensor it held stays with whoever shares it.
    Tensor {
        name: &'a str,
        tensor: &'a mut Tensor,
    },
    Attention {
        path: &'a str,
        precision: &'a mut AttentionPrecision,
    },
}

pub trait Module {
    /// Calls `f` with every parameter, in a fixed order.
    fn visit(&self, f: &mut dyn FnMut(Param<'_>));

    /// Calls `f` with every layer and setting that can be replaced or changed.
    fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>));

    /// Number of parameters.
    fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit(&mut |p| {
            n += match p {
                Param::Linear(l) => l.num_params(),
                Param::Conv3d(c) => c.num_params(),
                Param::Embedding(e) => e.table.num_params(),
                Param::Tensor(t) => t.numel(),
                Param::Attention { .. } => 0,
            }
        });
        n
    }

    /// Bytes held by the parameters as the backend keeps them (quantized layers count their
    /// codes and scales).
    fn weight_bytes(&self) -> usize {
        let mut n = 0;
        self.visit(&mut |p| {
            n += match p {
                Param::Linear(l) => l.bytes(),
                Param::Conv3d(c) => c.bytes(),
                Param::Embedding(e) => e.bytes(),
                Param::Tensor(t) => t.bytes(),
                Param::Attention { .. } => 0,
            }
        });
        n
    }

    /// Hands the checkpoint pages that streamed linear weights were read from back to the OS
    /// (a two-expert model's expert once the other has taken over). The mapping stays: a later
    /// read faults them in again from the file; weights a backend copied are not affected.
    fn release_weight_pages(&self) {
        self.visit(&mut |p| {
            if let Param::Linear(l) = p {
                l.weight.parts().iter().for_each(|t| t.release_pages());
            }
        });
    }

    /// Has `backend` prepare every layer again (after layers were replaced, or for another
    /// backend of the same device).
    fn prepare(&mut self, backend: &dyn Backend) -> Result<()> {
        let mut result = Ok(());
        self.visit_mut(&mut |p| {
            if result.is_ok() {
                result = match p {
                    ParamMut::Linear(l) => l.prepare(backend),
                    ParamMut::Conv3d(c) => c.prepare(backend),
                    ParamMut::Embedding(e) => e.prepare(backend),
                    // Small tensors are the backend's f32 from the start: nothing to prepare.
                    ParamMut::Tensor { .. } | ParamMut::Attention { .. } => Ok(()),
                };
            }
        });
        result
    }
}
