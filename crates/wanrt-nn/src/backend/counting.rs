//! A backend that counts the ops it is asked for and hands each to the backend it wraps.
//!
//! `wanrt bench` wraps the transformer's backend in one to report ops per step (the case
//! study's "kernels per step", 212 → 31 under TensorRT's fusion): a fused op (`linear_activation`,
//! `layer_norm_modulate`, `add_gated`) counts once, as the single kernel launch it is on the CUDA
//! backend. Transfers and weight preparation are not ops; the wrapped backend still counts those.
//!
//! It also sums the host time spent inside each op: on the CPU backend, whose ops return when
//! their result is computed, that is where a step's time goes (`wanrt bench --op-times`); on an
//! asynchronous backend it is the time to enqueue.

use super::{
    Activation, AttentionBias, AttentionPrecision, Backend, BackendRef, BinaryOp, CapturedStep, DeviceMemory,
    PreparedWeight, RelativeBuckets, StepFn, Transfers,
};
use crate::host::HostTensor;
use crate::ops::PaddingFull;
use crate::{Conv3d, DType, Embedding, Linear, Result, Tensor};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Op name → times called.
pub type OpCounts = BTreeMap<&'static str, u64>;
/// Op name → host time spent inside its calls.
pub type OpTimes = BTreeMap<&'static str, Duration>;

#[derive(Debug, Default)]
struct Tally {
    counts: OpCounts,
    times: OpTimes,
}

#[derive(Debug)]
pub struct CountingBackend {
    inner: BackendRef,
    tally: Mutex<Tally>,
}

impl CountingBackend {
    pub fn new(inner: BackendRef) -> Arc<CountingBackend> {
        Arc::new(CountingBackend { inner, tally: Mutex::new(Tally::default()) })
    }

    /// Calls per op so far.
    pub fn counts(&self) -> OpCounts {
        self.tally().counts.clone()
    }

    /// Host time inside each op so far.
    pub fn times(&self) -> OpTimes {
        self.tally().times.clone()
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, op: &'static str, spent: Duration) {
        let mut t = self.tally();
        *t.counts.entry(op).or_default() += 1;
        *t.times.entry(op).or_default() += spent;
    }
}

/// The calls made between two snapshots of [`CountingBackend::counts`] (ops not called are left out).
pub fn ops_between(before: &OpCounts, after: &OpCounts) -> OpCounts {
    after.iter().map(|(op, &n)| (*op, n - before.get(op).copied().unwrap_or(0))).filter(|&(_, n)| n > 0).collect()
}

/// The time spent between two snapshots of [`CountingBackend::times`] (ops not called are left out).
pub fn times_between(before: &OpTimes, after: &OpTimes) -> OpTimes {
    after
        .iter()
        .map(|(op, &t)| (*op, t.saturating_sub(before.get(op).copied().unwrap_or_default())))
        .filter(|&(_, t)| !t.is_zero())
        .collect()
}

/// Each listed method runs on the wrapped backend, counted and timed under its own name.
macro_rules! counted {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(fn $name(&self $(, $arg: $ty)*) -> $ret {
            let start = Instant::now();
            let out = self.inner.$name($($arg),*);
            self.record(stringify!($name), start.elapsed());
            out
        })*
    };
}

/// Each listed method runs on the wrapped backend uncounted (transfers, weight preparation).
macro_rules! passed {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(fn $name(&self $(, $arg: $ty)*) -> $ret {
            self.inner.$name($($arg),*)
        })*
    };
}

impl Backend for CountingBackend {
    // The step's ops run (and are counted) through this wrapper while the inner backend captures.
    fn capture<'a>(&'a self, inputs: &[&Tensor], step: StepFn<'_>) -> Result<Box<dyn CapturedStep + 'a>> {
        self.inner.capture(inputs, step)
    }

    passed! {
        fn name(&self) -> &'static str;
        fn dtype(&self) -> DType;
        fn transfers(&self) -> Transfers;
        fn synchronize(&self) -> Result<()>;
        fn device_memory(&self) -> Result<Option<DeviceMemory>>;
        fn upload(&self, t: &HostTensor) -> Result<Tensor>;
        fn upload_ids(&self, shape: &[usize], ids: &[u32]) -> Result<Tensor>;
        fn to_host(&self, t: &Tensor) -> Result<HostTensor>;
        fn prepare_linear(&self, layer: &Linear) -> Result<Arc<dyn PreparedWeight>>;
        fn prepare_table(&self, layer: &Linear) -> Result<Arc<dyn PreparedWeight>>;
        fn prepare_conv3d(&self, layer: &Conv3d) -> Result<Arc<dyn PreparedWeight>>;
        fn weight_tensor(&self, t: HostTensor) -> Result<Tensor>;
    }
    counted! {
        fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor>;
        fn narrow(&self, x: &Tensor, dim: usize, start: usize, len: usize) -> Result<Tensor>;
        fn cat(&self, xs: &[&Tensor], dim: usize) -> Result<Tensor>;
        fn permute(&self, x: &Tensor, perm: &[usize]) -> Result<Tensor>;
        fn chunk(&self, x: &Tensor, chunks: usize, dim: usize) -> Result<Vec<Tensor>>;
        fn to_dtype(&self, x: &Tensor, dtype: DType) -> Result<Tensor>;
        fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor>;
        fn scalar(&self, op: BinaryOp, x: &Tensor, s: f32) -> Result<Tensor>;
        fn add_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()>;
        fn lincomb(&self, terms: &[(f32, &Tensor)]) -> Result<Tensor>;
        fn cfg_combine(&self, pair: &Tensor, guidance: f32) -> Result<Tensor>;
        fn activation(&self, x: Tensor, act: Activation) -> Result<Tensor>;
        fn affine_clamp(&self, x: &mut Tensor, mul: f32, add: f32, lo: f32, hi: f32) -> Result<()>;
        fn mask_rows(&self, x: &mut Tensor, lengths: &[usize]) -> Result<()>;
        fn relative_l1(&self, a: &Tensor, b: &Tensor) -> Result<f64>;
        fn all_finite(&self, x: &Tensor) -> Result<bool>;
        fn linear(&self, layer: &Linear, x: &Tensor) -> Result<Tensor>;
        fn linear_activation(&self, layer: &Linear, x: &Tensor, act: Activation) -> Result<Tensor>;
        fn embedding(&self, table: &Embedding, ids: &Tensor) -> Result<Tensor>;
        fn conv3d(&self, layer: &Conv3d, x: &Tensor, history: Option<&Tensor>, pad: PaddingFull) -> Result<Tensor>;
        fn rms_norm(&self, x: Tensor, eps: f32, weight: Option<&Tensor>) -> Result<Tensor>;
        fn layer_norm(&self, x: Tensor, eps: f32, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Result<Tensor>;
        fn layer_norm_modulate(&self, x: &Tensor, eps: f32, scale: &Tensor, shift: &Tensor) -> Result<Tensor>;
        fn channel_rms_norm(&self, x: &Tensor, gamma: &Tensor, silu: bool) -> Result<Tensor>;
        fn add_gated(&self, x: &mut Tensor, y: &Tensor, gate: &Tensor) -> Result<()>;
        fn attention(
            &self,
            q: &Tensor,
            k: &Tensor,
            v: &Tensor,
            scale: f32,
            bias: AttentionBias,
            precision: AttentionPrecision
        ) -> Result<Tensor>;
        fn upsample_nearest2x(&self, x: &Tensor) -> Result<Tensor>;
        fn timestep_embedding(&self, timesteps: &[f32], dim: usize, flip_sin_to_cos: bool, shift: f32) -> Result<Tensor>;
        fn rope_tables(&self, grid: [usize; 3], dims: [usize; 3], theta: f64) -> Result<(Tensor, Tensor)>;
        fn rope_interleaved(&self, x: &mut Tensor, cos: &Tensor, sin: &Tensor) -> Result<()>;
        fn relative_position_bias(&self, table: &Tensor, len: usize, buckets: RelativeBuckets) -> Result<Tensor>;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu;

    #[test]
    fn counts_each_op_and_computes_as_the_wrapped_backend() {
        let counting = CountingBackend::new(cpu());
        let be: BackendRef = counting.clone();
        let x = be.upload(&HostTensor::new(vec![2, 3], vec![1.0, -2.0, 3.0, -4.0, 5.0, -6.0]).unwrap()).unwrap();
        let (before, before_times) = (counting.counts(), counting.times());
        let y = be.scalar(BinaryOp::Mul, &x, 2.0).unwrap();
        let z = be.binary(BinaryOp::Add, &y, &x).unwrap();
        let z = be.activation(z, Activation::Relu).unwrap();
        let _ = be.narrow(&z, 1, 0, 2).unwrap();
        let ops = ops_between(&before, &counting.counts());
        assert_eq!(ops.values().sum::<u64>(), 4);
        assert_eq!(ops.get("scalar"), Some(&1));
        assert_eq!(ops.get("upload"), None, "transfers are not ops");
        let times = times_between(&before_times, &counting.times());
        assert!(times.keys().all(|op| ops.contains_key(op)), "{times:?}");
        assert!(!counting.times().contains_key("upload"));
        assert_eq!(be.to_host(&z).unwrap().data(), &[3.0, 0.0, 9.0, 0.0, 15.0, 0.0]);
        assert_eq!(be.name(), "cpu");
    }
}
