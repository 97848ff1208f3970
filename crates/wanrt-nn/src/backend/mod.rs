//! The seam between model code and the hardware.
//!
//! A [`Backend`] owns the values of every [`Tensor`] it makes and performs every computation the
//! models need on them: GEMMs, convolutions, norms, attention, layout copies, elementwise and
//! scheduler arithmetic, the position encodings. Model code (`wanrt-wan`) holds a [`BackendRef`]
//! and never sees a value: host data crosses the seam only through the named transfers below,
//! which the backend counts ([`Transfers`]).
//!
//! Weights are described by their layer types ([`Linear`], [`Conv3d`], [`Embedding`]: the format
//! as stored, f32/bf16/f16, int8 codes + scales, E4M3 + scales) and prepared once by the backend
//! (`prepare_*`): the CPU backend packs its int8 panels and transforms Winograd-eligible
//! convolutions there, a device backend uploads.
//!
//! The CPU backend ([`CpuBackend`]) is the reference; [`conformance`] checks any backend against
//! it op by op.

pub mod arena;
pub mod conformance;
mod counting;
mod cpu;
pub mod cuda;

pub use counting::{ops_between, times_between, CountingBackend, OpCounts, OpTimes};
pub use cpu::{CpuBackend, CpuOptions, Prepack};

use crate::host::HostTensor;
use crate::ops::PaddingFull;
use crate::{Conv3d, DType, Embedding, Error, Linear, Result, Tensor};
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A shared handle to the backend models run on.
pub type BackendRef = Arc<dyn Backend>;

/// The default backend: the CPU kernels in f32.
pub fn cpu() -> BackendRef {
    Arc::new(CpuBackend::new(CpuOptions::default()))
}

/// Pointwise nonlinearities the models use (Wan's, and the evaluation networks' of wanrt-eval).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// GELU with the tanh approximation (PyTorch `approximate="tanh"`).
    GeluTanh,
    /// Exact GELU `x·Φ(x)` through erf (PyTorch's default `nn.GELU()`, transformers' `gelu`).
    GeluErf,
    /// CLIP's `quick_gelu`: `x·σ(1.702·x)`.
    QuickGelu,
    Silu,
    Relu,
}

impl Activation {
    /// Every activation (what the conformance battery and the layer tests run).
    pub const ALL: [Activation; 5] =
        [Activation::GeluTanh, Activation::GeluErf, Activation::QuickGelu, Activation::Silu, Activation::Relu];
}

/// How `softmax(q·kᵀ)·v` is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionPrecision {
    /// Full-precision scores and products (the reference).
    #[default]
    Full,
    /// SageAttention-style int8 `Q·Kᵀ` with smoothed K (see [`crate::ops::attention_quant`]).
    Int8,
}

/// Elementwise binary ops with NumPy broadcasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// Additive terms applied to attention scores before the softmax.
#[derive(Default, Clone, Copy)]
pub struct AttentionBias<'a> {
    /// `[H, Lq, Lk]`, shared across the batch (T5 relative position bias).
    pub per_head: Option<&'a Tensor>,
    /// Valid keys per batch row: keys at positions `≥ key_lengths[b]` are masked out (padded
    /// text). Computed on the host from the tokenizer's output, passed as kernel arguments.
    pub key_lengths: Option<&'a [usize]>,
}

impl AttentionBias<'_> {
    pub fn is_none(&self) -> bool {
        self.per_head.is_none() && self.key_lengths.is_none()
    }
}

/// T5's relative-position bucketing (`_relative_position_bucket`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelativeBuckets {
    pub num_buckets: usize,
    pub max_distance: usize,
    /// Encoder attention looks both ways: half the buckets for keys after the query.
    pub bidirectional: bool,
}

/// What crossed the seam between host and backend memory, counted since the backend was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Transfers {
    /// Host tensors given to the backend (`upload`, `upload_ids`).
    pub uploads: u64,
    pub upload_bytes: u64,
    /// Tensors read back to the host (`to_host`).
    pub downloads: u64,
    pub download_bytes: u64,
    /// Scalars read back (reductions such as `relative_l1`).
    pub scalar_reads: u64,
}

impl std::ops::Sub for Transfers {
    type Output = Transfers;
    fn sub(self, earlier: Transfers) -> Transfers {
        Transfers {
            uploads: self.uploads - earlier.uploads,
            upload_bytes: self.upload_bytes - earlier.upload_bytes,
            downloads: self.downloads - earlier.downloads,
            download_bytes: self.download_bytes - earlier.download_bytes,
            scalar_reads: self.scalar_reads - earlier.scalar_reads,
        }
    }
}

/// Transfer counters a backend keeps (shared by the variants of one device, e.g. its f32 and bf16
/// backends).
#[derive(Debug, Default)]
pub struct TransferCounter {
    uploads: AtomicU64,
    upload_bytes: AtomicU64,
    downloads: AtomicU64,
    download_bytes: AtomicU64,
    scalar_reads: AtomicU64,
}

impl TransferCounter {
    pub fn upload(&self, bytes: usize) {
        self.uploads.fetch_add(1, Ordering::Relaxed);
        self.upload_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub fn download(&self, bytes: usize) {
        self.downloads.fetch_add(1, Ordering::Relaxed);
        self.download_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub fn scalar_read(&self) {
        self.scalar_reads.fetch_add(1, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> Transfers {
        Transfers {
            uploads: self.uploads.load(Ordering::Relaxed),
            upload_bytes: self.upload_bytes.load(Ordering::Relaxed),
            downloads: self.downloads.load(Ordering::Relaxed),
            download_bytes: self.download_bytes.load(Ordering::Relaxed),
            scalar_reads: self.scalar_reads.load(Ordering::Relaxed),
        }
    }
}

/// A layer's weights in the form one backend computes with (packed panels, Winograd tiles, a
/// device allocation). Made once by `prepare_*`; the backend that made it downcasts it.
pub trait PreparedWeight: Send + Sync + std::fmt::Debug {
    /// Name of the backend that prepared it.
    fn backend(&self) -> &'static str;
    /// Bytes it holds (codes, scales, transformed weights).
    fn bytes(&self) -> usize;
    /// Storage format name for reports ("f32", "bf16", "int8", …).
    fn format(&self) -> &'static str;
    fn as_any(&self) -> &dyn Any;
}

/// A computation captured once and replayed (a CUDA graph over a planned arena): the same
/// kernels on the same addresses every time, launched by one call.
pub trait CapturedStep {
    /// Copies `inputs` into the captured input buffers, replays, and returns the output (a
    /// buffer of its own: it outlives the next replay). Inputs must have the captured shapes
    /// and dtypes.
    fn replay(&self, inputs: &[&Tensor]) -> Result<Tensor>;
    /// What the capture planned and recorded.
    fn report(&self) -> CaptureReport;
}

/// The planned arena and the graph of a [`CapturedStep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CaptureReport {
    /// Buffers the step allocates (each a slice of the arena in the replays).
    pub allocations: usize,
    /// Their bytes summed: what a run without reuse would hold at once.
    pub allocated_bytes: usize,
    /// The most bytes alive at one time in the recorded run (no arena can be smaller).
    pub peak_live_bytes: usize,
    /// The arena's bytes.
    pub arena_bytes: usize,
    /// Nodes of the captured graph (kernels, memsets, copies).
    pub graph_nodes: usize,
}

/// What a device backend's allocator holds (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeviceMemory {
    /// Allocated now.
    pub in_use: u64,
    /// The most allocated at once since the backend opened (the allocator's high-water mark),
    /// where the allocator keeps one.
    pub peak: Option<u64>,
}

/// Backends that can capture a step: [`Backend::capture`].
pub type StepFn<'a> = &'a dyn Fn(&[Tensor]) -> Result<Tensor>;

/// Every computation the Wan models perform. Shapes are given per op; errors name the op and the
/// shapes involved. Ops produce tensors in the backend's activation dtype ([`Backend::dtype`])
/// unless stated: layout copies keep their input's dtype, scheduler arithmetic
/// ([`Backend::lincomb`]) is f32 (the latents stay f32, as in diffusers' pipelines).
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Short name for logs and reports ("cpu", "cuda").
    fn name(&self) -> &'static str;

    /// The activation dtype ops produce (f32 on the reference backend; bf16 like a GPU's).
    fn dtype(&self) -> DType;

    /// Host ↔ backend traffic so far.
    fn transfers(&self) -> Transfers;

    /// Device memory held by the backend's allocator (`None`: host memory, reported as the
    /// process's RSS instead).
    fn device_memory(&self) -> Result<Option<DeviceMemory>> {
        Ok(None)
    }

    /// Waits until every op enqueued so far has finished (timings of asynchronous backends; the
    /// CPU's ops finish before they return).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Captures `step(inputs')` for replay, where `inputs'` are buffers of the capture holding
    /// copies of `inputs` ([`CapturedStep::replay`] refills them). `step` must run the same ops
    /// on the same shapes every time, with no transfer or host read inside. Backends without
    /// graphs refuse (the CPU's ops already run without launch costs).
    fn capture<'a>(&'a self, inputs: &[&Tensor], step: StepFn<'_>) -> Result<Box<dyn CapturedStep + 'a>> {
        let _ = (inputs, step);
        Err(Error::Msg(format!("the {} backend cannot capture a step (CUDA graphs need --backend cuda)", self.name())))
    }

    // ---- transfers (counted) ----

    /// A host f32 tensor into the backend's memory, kept in f32.
    fn upload(&self, t: &HostTensor) -> Result<Tensor>;

    /// Token ids `[..]` of `shape` as a u32 tensor.
    fn upload_ids(&self, shape: &[usize], ids: &[u32]) -> Result<Tensor>;

    /// The values back in host memory, widened to f32.
    fn to_host(&self, t: &Tensor) -> Result<HostTensor>;

    // ---- weights (prepared once at load; not counted as transfers) ----

    /// The backend's form of a linear layer's stored weights, for products.
    fn prepare_linear(&self, layer: &Linear) -> Result<Arc<dyn PreparedWeight>>;

    /// The backend's form of an embedding table, for row lookups ([`Backend::embedding`]); a
    /// backend whose product form is also addressable by row needs nothing else.
    fn prepare_table(&self, table: &Linear) -> Result<Arc<dyn PreparedWeight>> {
        self.prepare_linear(table)
    }

    /// The backend's form of a convolution's weights.
    fn prepare_conv3d(&self, layer: &Conv3d) -> Result<Arc<dyn PreparedWeight>>;

    /// A small parameter tensor (norm weights, modulation tables), kept in f32.
    fn weight_tensor(&self, t: HostTensor) -> Result<Tensor>;

    // ---- creation and layout ----

    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor>;

    /// Copy of the slice `start..start + len` of dimension `dim`.
    fn narrow(&self, x: &Tensor, dim: usize, start: usize, len: usize) -> Result<Tensor>;

    /// Concatenation along `dim` (all other dims equal, one dtype).
    fn cat(&self, xs: &[&Tensor], dim: usize) -> Result<Tensor>;

    /// Copy with dims reordered: `out.dim(i) = x.dim(perm[i])`.
    fn permute(&self, x: &Tensor, perm: &[usize]) -> Result<Tensor>;

    /// `chunks` equal slices of dimension `dim` (`torch.chunk`), each a copy.
    fn chunk(&self, x: &Tensor, chunks: usize, dim: usize) -> Result<Vec<Tensor>> {
        let size = x.shape().get(dim).copied().unwrap_or(0);
        if chunks == 0 || !size.is_multiple_of(chunks) {
            return Err(crate::Error::shape("chunk", format!("dim {dim} divisible by {chunks}"), x.shape()));
        }
        let len = size / chunks;
        (0..chunks).map(|i| self.narrow(x, dim, i * len, len)).collect()
    }

    /// The values converted to `dtype` (a float dtype).
    fn to_dtype(&self, x: &Tensor, dtype: DType) -> Result<Tensor>;

    // ---- elementwise ----

    /// `a op b` with NumPy broadcasting.
    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor>;

    /// `x op s` elementwise with a host scalar (x keeps its dtype).
    fn scalar(&self, op: BinaryOp, x: &Tensor, s: f32) -> Result<Tensor>;

    /// `x += y`, equal shapes (x keeps its dtype).
    fn add_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()>;

    /// `Σᵢ cᵢ·tᵢ` over equal shapes, accumulated left to right in f32; f32 out (the schedulers'
    /// latent updates; the coefficients are per-step scalars computed on the host).
    fn lincomb(&self, terms: &[(f32, &Tensor)]) -> Result<Tensor>;

    /// Classifier-free guidance on a `[2, …]` batch `[cond; uncond]`: `u + g·(c − u)`, `[1, …]`.
    fn cfg_combine(&self, pair: &Tensor, guidance: f32) -> Result<Tensor>;

    fn activation(&self, x: Tensor, act: Activation) -> Result<Tensor>;

    /// `clamp(x · mul + add, lo, hi)` in place (VAE output clamp, [-1, 1] → [0, 1] frames).
    fn affine_clamp(&self, x: &mut Tensor, mul: f32, add: f32, lo: f32, hi: f32) -> Result<()>;

    /// Zeroes the rows of `x: [B, L, …]` at positions `≥ lengths[b]` (padded text tokens).
    fn mask_rows(&self, x: &mut Tensor, lengths: &[usize]) -> Result<()>;

    // ---- reductions to one scalar (counted) ----

    /// `mean|a − b| / mean|b|` (0 when both are zero, ∞ when only `b` is).
    fn relative_l1(&self, a: &Tensor, b: &Tensor) -> Result<f64>;

    /// Whether every value is finite (no NaN or ±∞): the pipeline's check after each stage.
    fn all_finite(&self, x: &Tensor) -> Result<bool>;

    // ---- layers ----

    /// `x: [.., in]` → `[.., out]` with the layer's prepared weights.
    fn linear(&self, layer: &Linear, x: &Tensor) -> Result<Tensor>;

    /// `act(linear(x))`. Backends fuse the activation into the product where the weight format
    /// allows (the CPU's W8A8 GEMM applies it in its output pass); the result must equal the
    /// two ops in sequence.
    fn linear_activation(&self, layer: &Linear, x: &Tensor, act: Activation) -> Result<Tensor> {
        self.activation(self.linear(layer, x)?, act)
    }

    /// Rows `ids` (a u32 tensor `[..]`) of the table → `[.., D]`; ids must be `< V`.
    fn embedding(&self, table: &Embedding, ids: &Tensor) -> Result<Tensor>;

    /// `x: [N, C_in, T, H, W]` → `[N, C_out, T', H', W']`; `history` frames (`[N, C_in, t, H, W]`)
    /// precede `x` in time and replace that much of the front padding `pad.t.0`.
    fn conv3d(&self, layer: &Conv3d, x: &Tensor, history: Option<&Tensor>, pad: PaddingFull) -> Result<Tensor>;

    /// RMSNorm over the last dim, optionally scaled by `weight: [C]`.
    fn rms_norm(&self, x: Tensor, eps: f32, weight: Option<&Tensor>) -> Result<Tensor>;

    /// LayerNorm over the last dim with optional affine parameters `[C]`.
    fn layer_norm(&self, x: Tensor, eps: f32, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Result<Tensor>;

    /// `layer_norm(x) · (1 + scale) + shift` for `x: [B, L, C]`, `scale, shift: [B, 1, C]`, fused.
    fn layer_norm_modulate(&self, x: &Tensor, eps: f32, scale: &Tensor, shift: &Tensor) -> Result<Tensor>;

    /// Wan VAE's `RMS_norm` over the channels of `[N, C, ...]` (L2-normalize · √C · gamma),
    /// followed by SiLU when `silu` (fused).
    fn channel_rms_norm(&self, x: &Tensor, gamma: &Tensor, silu: bool) -> Result<Tensor>;

    /// `x += y · gate` for `x, y: [B, L, C]`, `gate: [B, 1, C]`.
    fn add_gated(&self, x: &mut Tensor, y: &Tensor, gate: &Tensor) -> Result<()>;

    /// `softmax(q·kᵀ·scale + bias)·v` for `q: [B, Lq, H, D]`, `k, v: [B, Lk, H, D]`.
    /// [`AttentionPrecision::Int8`] takes no bias.
    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f32,
        bias: AttentionBias,
        precision: AttentionPrecision,
    ) -> Result<Tensor>;

    /// Nearest-neighbour 2× spatial upsampling of `[N, C, H, W]`.
    fn upsample_nearest2x(&self, x: &Tensor) -> Result<Tensor>;

    // ---- position encodings ----

    /// Sinusoidal timestep features `[B, dim]` of diffusers' `Timesteps` (f32 arithmetic):
    /// `exponent = −ln(10000)·i / (dim/2 − shift)`, `[sin, cos]` or, flipped, `[cos, sin]`.
    fn timestep_embedding(&self, timesteps: &[f32], dim: usize, flip_sin_to_cos: bool, shift: f32) -> Result<Tensor>;

    /// Rotary tables `cos, sin: [L, Σdims/2]` (f32) for a token grid whose head dimension is
    /// split into one part per axis (Wan's 3D RoPE: time, height, width); angles in f64,
    /// `pos / theta^(2i/dim)`, rounded to f32.
    fn rope_tables(&self, grid: [usize; 3], dims: [usize; 3], theta: f64) -> Result<(Tensor, Tensor)>;

    /// Rotary embedding on interleaved pairs of `x: [B, L, H, D]` with tables `[L, D/2]`.
    fn rope_interleaved(&self, x: &mut Tensor, cos: &Tensor, sin: &Tensor) -> Result<()>;

    /// T5's relative position bias `[H, L, L]` from its table `[buckets, H]`
    /// (bias[h, q, k] = table[bucket(k − q), h]).
    fn relative_position_bias(&self, table: &Tensor, len: usize, buckets: RelativeBuckets) -> Result<Tensor>;
}
