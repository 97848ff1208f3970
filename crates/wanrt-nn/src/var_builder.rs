//! Parameter paths built from the module tree (candle's `VarBuilder::pp`): a module constructor
//! gets a builder rooted at its own path and asks for its tensors by their local names, so the
//! Rust field tree mirrors the checkpoint's state-dict names. Layers come back described by their
//! stored format and already prepared by the backend the builder carries.

use crate::backend::{AttentionPrecision, Backend};
use crate::{Conv3d, Embedding, HostTensor, Linear, Result, Tensor, WeightStore};

/// The full name of `name` under the module path `prefix` (either may be empty): what a module
/// that kept its builder's [`VarBuilder::prefix`] calls its parameters in [`crate::ParamMut`].
pub fn param_path(prefix: &str, name: &str) -> String {
    match (prefix.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}.{name}"),
    }
}

#[derive(Clone)]
pub struct VarBuilder<'a> {
    store: &'a WeightStore,
    backend: &'a dyn Backend,
    prefix: String,
}

impl<'a> VarBuilder<'a> {
    /// A builder at the root of `store`, preparing layers for `backend`.
    pub fn root(store: &'a WeightStore, backend: &'a dyn Backend) -> Self {
        VarBuilder { store, backend, prefix: String::new() }
    }

    /// The builder one level down: `vb.pp("blocks").pp(3)` is at `blocks.3`.
    pub fn pp(&self, name: impl std::fmt::Display) -> VarBuilder<'a> {
        VarBuilder { store: self.store, backend: self.backend, prefix: self.path(&name.to_string()) }
    }

    /// The full name of `name` under this builder's path.
    pub fn path(&self, name: &str) -> String {
        param_path(&self.prefix, name)
    }

    /// This builder's own path.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn backend(&self) -> &'a dyn Backend {
        self.backend
    }

    pub fn store(&self) -> &'a WeightStore {
        self.store
    }

    pub fn contains(&self, name: &str) -> bool {
        self.store.contains(&self.path(name))
    }

    /// `name` widened to f32 on the host, checked to `shape`.
    pub fn host(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        self.store.get_shaped(&self.path(name), shape)
    }

    /// `name` holding `len` values in any shape (`[C, 1, 1, 1]` norm gains), as `[len]`.
    pub fn host_flat(&self, name: &str, len: usize) -> Result<HostTensor> {
        let path = self.path(name);
        let t = self.store.get(&path)?;
        if t.numel() != len {
            return Err(crate::Error::TensorShape { name: path, expected: vec![len], found: t.shape().to_vec() });
        }
        t.reshape([len])
    }

    /// `name` as a parameter tensor of the backend (f32), checked to `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.backend.weight_tensor(self.host(name, shape)?)
    }

    /// The linear layer stored at this path (`weight`, optional `bias`), prepared.
    pub fn linear(&self, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        self.linear_fused("", &[""], in_dim, &[out_dim], bias)
    }

    /// The layer at this path whose stored weight is `[out, d₀, d₁, …]` (`in_dims` = the `dᵢ`),
    /// used as `[out, Π dᵢ]` with its bias if `bias`: a convolution whose kernel equals its stride,
    /// as a GEMM over flattened patches.
    pub fn linear_flattened(&self, in_dims: &[usize], out_dim: usize, bias: bool) -> Result<Linear> {
        let name = self.path("weight");
        let raw = self.store.raw(&name)?;
        let stored: Vec<usize> = std::iter::once(out_dim).chain(in_dims.iter().copied()).collect();
        if raw.shape != stored {
            return Err(crate::Error::TensorShape { name, expected: stored, found: raw.shape.clone() });
        }
        let in_dim = in_dims.iter().product();
        let weight = crate::LinearWeight::decodable(vec![raw.with_shape(vec![out_dim, in_dim])?], in_dim)?;
        let bias = if bias { Some(self.host("bias", &[out_dim])?.into_data()) } else { None };
        let mut layer = Linear::new(self.prefix.clone(), vec![(self.prefix.clone(), out_dim)], in_dim, weight, bias)?;
        layer.prepare(self.backend)?;
        Ok(layer)
    }

    /// Layers at `parts` (relative names) that read one input, fused into one GEMM named `name`.
    pub fn linear_fused(
        &self,
        name: &str,
        parts: &[&str],
        in_dim: usize,
        out_dims: &[usize],
        bias: bool,
    ) -> Result<Linear> {
        let prefixes: Vec<String> = parts.iter().map(|p| self.path(p)).collect();
        let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let mut layer = Linear::load_fused(self.store, &self.path(name), &refs, in_dim, out_dims, bias)?;
        layer.prepare(self.backend)?;
        Ok(layer)
    }

    /// The embedding table at this path, prepared.
    pub fn embedding(&self, vocab: usize, dim: usize) -> Result<Embedding> {
        let mut e = Embedding::load(self.store, &self.prefix, vocab, dim)?;
        e.prepare(self.backend)?;
        Ok(e)
    }

    /// The convolution at this path: `weight` of `shape` `[C_out, C_in, kt, kh, kw]` (a stored
    /// `[C_out, C_in, kh, kw]` 2D kernel is read as `kt = 1`), `bias`, prepared.
    pub fn conv3d(&self, shape: [usize; 5], stride: (usize, usize, usize)) -> Result<Conv3d> {
        let name = self.path("weight");
        let raw = self.store.raw(&name)?;
        let stored_2d = [shape[0], shape[1], shape[3], shape[4]];
        if raw.shape != shape && !(shape[2] == 1 && raw.shape == stored_2d) {
            return Err(crate::Error::TensorShape { name, expected: shape.to_vec(), found: raw.shape.clone() });
        }
        let bias = self.host("bias", &[shape[0]])?.into_data();
        let mut conv = Conv3d::new(self.prefix.clone(), raw.with_shape(shape.to_vec())?, Some(bias), stride)?;
        conv.prepare(self.backend)?;
        Ok(conv)
    }

    /// The precision the attention module at this path runs in (an artifact's plan).
    pub fn attention_precision(&self) -> AttentionPrecision {
        self.store.attention_precision(&self.prefix)
    }
}
