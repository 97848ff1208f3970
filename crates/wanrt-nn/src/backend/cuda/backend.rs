//! [`CudaBackend`]: every [`Backend`] op on the GPU — NVRTC-compiled kernels (`kernels/*.cu`) for
//! elementwise, layout, norm, position and reduction ops, cuBLASLt for the GEMMs (linear layers
//! and conv3d as im2col + GEMM), a flash-attention kernel for attention.
//!
//! Tensors live in device buffers ([`CudaStorage`]: bytes + dtype) in f32, bf16, f16 or u32.
//! Kernels read any float dtype through a dtype code and compute in f32. Everything runs on one
//! stream, in order; event tracking is off (no cross-stream hazards to track, and graph capture
//! hangs with it on).
//!
//! W8A8 int8/fp8 layers run on cuBLASLt's 8-bit GEMMs between the quantization and
//! dequantization kernels of [`super::w8a8`]; weight-only int8/fp8 layers are dequantized to the
//! activation dtype at load; 8-bit attention runs [`super::attention_int8`]. Not on the GPU
//! (clear errors, never a silent CPU fallback): attention with head dims other than 16, 32, 64
//! and 128.

use super::attention_int8;
use super::gemm::{Epilogue, Gemm, GemmKey, WORKSPACE_BYTES};
use super::kernels::FAMILIES;
use super::launch::{self, BatchFloats, BatchInts, Launch, Terms};
use super::nvrtc;
use super::w8a8::{self, CudaQuantLinear};
use crate::backend::arena::{Allocator, Slot};
use crate::backend::{
    Activation, AttentionBias, AttentionPrecision, Backend, BinaryOp, CapturedStep, DeviceMemory, PreparedWeight,
    RelativeBuckets, StepFn, TransferCounter, Transfers,
};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::linear::LinearWeight;
use crate::ops::PaddingFull;
use crate::tensor::{DeviceStorage, Storage};
use crate::{Conv3d, Embedding, Linear, Tensor};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr};
use half::{bf16, f16};
use std::any::Any;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

fn driver_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Msg(format!("cuda {what}: {e}"))
}

/// A device buffer: `len` values of `dtype`.
pub struct CudaStorage {
    bytes: DeviceBytes,
    dtype: DType,
    len: usize,
    /// For u32 token ids uploaded from the host: the ids themselves, so `embedding` checks them
    /// against the table without a device round trip.
    host_ids: Option<Arc<Vec<u32>>>,
    recorded: Recorded,
}

/// Where a buffer's bytes are: an allocation of its own, or a slice of the planned arena (see
/// [`crate::backend::arena`]; the slice keeps the arena alive).
enum DeviceBytes {
    Own(CudaSlice<u8>),
    Arena { arena: Arc<CudaSlice<u8>>, offset: usize },
}

/// A buffer allocated while allocations are recorded: its release is reported when it drops.
#[derive(Default)]
struct Recorded(Option<(Arc<Mutex<Allocator>>, usize)>);

impl Drop for Recorded {
    fn drop(&mut self) {
        if let Some((allocator, id)) = self.0.take() {
            allocator.lock().unwrap_or_else(|e| e.into_inner()).free(id);
        }
    }
}

impl CudaStorage {
    fn own(buf: CudaSlice<u8>, dtype: DType, len: usize) -> CudaStorage {
        CudaStorage { bytes: DeviceBytes::Own(buf), dtype, len, host_ids: None, recorded: Recorded::default() }
    }

    /// The device address of the values.
    fn addr(&self, stream: &CudaStream) -> u64 {
        match &self.bytes {
            DeviceBytes::Own(b) => b.device_ptr(stream).0,
            DeviceBytes::Arena { arena, offset } => arena.device_ptr(stream).0 + *offset as u64,
        }
    }

    /// Bytes of the values (the allocation may be larger).
    fn value_bytes(&self) -> usize {
        self.len * self.dtype.size_in_bytes()
    }

    /// The buffer as an allocation of its own (weights: uploaded, never in an arena).
    pub(super) fn into_buf(self) -> Result<CudaSlice<u8>> {
        match self.bytes {
            DeviceBytes::Own(b) => Ok(b),
            DeviceBytes::Arena { .. } => Err(Error::Msg("cuda: a weight cannot live in the step arena".into())),
        }
    }
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaStorage({} × {})", self.len, self.dtype)
    }
}

impl DeviceStorage for CudaStorage {
    fn backend(&self) -> &'static str {
        "cuda"
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn len(&self) -> usize {
        self.len
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `(m, output shape)` of a linear layer `[n, k]` on `x: [.., k]` (`m` rows of `k` features).
pub(super) fn linear_shape(name: &str, x: &Tensor, k: usize, n: usize) -> Result<(usize, Vec<usize>)> {
    let features = *x.shape().last().unwrap_or(&0);
    if features != k {
        return Err(Error::Msg(format!("{name}: input has {features} features, the layer takes {k}")));
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank ≥ 1") = n;
    Ok((x.numel() / k.max(1), shape))
}

/// A kernel argument passed by value (`cuLaunchKernel` takes a pointer to each).
pub(super) trait KernelArg {
    fn ptr(&self) -> *mut c_void {
        self as *const Self as *mut c_void
    }
}
impl KernelArg for u64 {}
impl KernelArg for i64 {}
impl KernelArg for i32 {}
impl KernelArg for f32 {}
impl KernelArg for launch::Dims {}
impl KernelArg for launch::ConvArgs {}
impl KernelArg for BatchInts {}
impl KernelArg for BatchFloats {}
impl KernelArg for Terms {}

/// A linear layer's (or embedding table's) weights on the device.
#[derive(Debug)]
pub struct CudaLinear {
    /// `[N, K]` in the backend's activation dtype.
    weight: CudaSlice<u8>,
    /// `[N]` in the activation dtype (cuBLASLt's bias epilogue reads the output's dtype).
    bias: Option<CudaSlice<u8>>,
    n: usize,
    k: usize,
    dtype: DType,
    format: &'static str,
}

impl PreparedWeight for CudaLinear {
    fn backend(&self) -> &'static str {
        "cuda"
    }
    fn bytes(&self) -> usize {
        (self.n * self.k + self.bias.as_ref().map_or(0, |_| self.n)) * self.dtype.size_in_bytes()
    }
    fn format(&self) -> &'static str {
        self.format
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A convolution's weights as the GEMM matrix `[C_out, C_in·kt·kh·kw]`, bias in f32.
#[derive(Debug)]
pub struct CudaConv {
    weight: CudaSlice<u8>,
    bias: Option<CudaSlice<u8>>,
    shape: [usize; 5],
    stride: (usize, usize, usize),
    dtype: DType,
}

impl PreparedWeight for CudaConv {
    fn backend(&self) -> &'static str {
        "cuda"
    }
    fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size_in_bytes()
    }
    fn format(&self) -> &'static str {
        if self.dtype == DType::BF16 {
            "bf16"
        } else {
            "f32"
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Columns of one im2col chunk are kept under this many bytes (the VAE's full-resolution convs
/// would need gigabytes in one piece).
const IM2COL_BYTES: usize = 256 << 20;

pub struct CudaBackend {
    dtype: DType,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    gemm: Gemm,
    /// cuBLASLt's workspace (its address is in `gemm`; kept alive here).
    _workspace: CudaSlice<u8>,
    arch: String,
    counter: Arc<TransferCounter>,
    /// Where activations come from: plain allocations, recorded ones, or the planned arena.
    allocator: Arc<Mutex<Allocator>>,
    /// The planned arena while the allocator replays into it.
    arena: Mutex<Option<Arc<CudaSlice<u8>>>>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBackend({}, {}, {:?})", self.arch, self.dtype, self.gemm)
    }
}

impl CudaBackend {
    /// The backend on GPU `ordinal`, computing in `dtype` (f32 or bf16). Compiles (or reads from
    /// the disk cache) every kernel family for the GPU's architecture.
    pub fn new(ordinal: usize, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::Msg(format!("cuda backend: activations in {dtype}? (f32, bf16 or f16)")));
        }
        let ctx = CudaContext::new(ordinal).map_err(driver_err("cannot open GPU 0"))?;
        // SAFETY: called before the first allocation, as cudarc requires for graph capture
        // (cudarc PR #555); the backend orders all work on its one stream itself.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver_err("stream"))?;
        let (major, minor) = ctx.compute_capability().map_err(driver_err("compute capability"))?;
        if major < 8 {
            // bf16 tensor-core GEMMs (cuBLASLt) and the bf16 paths need Ampere or newer.
            return Err(Error::Msg(format!(
                "--backend cuda: {} has compute capability {major}.{minor}; wanrt needs 8.0 (Ampere) or newer",
                ctx.name().unwrap_or_else(|_| "this GPU".into())
            )));
        }
        let arch = nvrtc::arch_for(major, minor);
        let mut functions = HashMap::new();
        for family in FAMILIES {
            let cubin = nvrtc::cubin(family, &arch)?;
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
                .map_err(|e| Error::Msg(format!("cuda: cannot load {}.cu for {arch}: {e}", family.name)))?;
            for &entry in family.entries {
                let f = module.load_function(entry).map_err(driver_err(entry))?;
                functions.insert(entry, f);
            }
        }
        let workspace = stream.alloc_zeros::<u8>(WORKSPACE_BYTES).map_err(driver_err("workspace"))?;
        let gemm = Gemm::new(workspace.device_ptr(&stream).0)?;
        Ok(CudaBackend {
            dtype,
            ctx,
            stream,
            functions,
            gemm,
            _workspace: workspace,
            arch,
            counter: Arc::default(),
            allocator: Arc::default(),
            arena: Mutex::default(),
        })
    }

    /// The same GPU, stream and kernels computing in `dtype` (transfers counted together): the
    /// pipeline's f32 VAE beside a bf16 transformer.
    pub fn with_dtype(&self, dtype: DType) -> Result<Self> {
        let workspace = self.stream.alloc_zeros::<u8>(WORKSPACE_BYTES).map_err(driver_err("workspace"))?;
        let gemm = Gemm::new(workspace.device_ptr(&self.stream).0)?;
        Ok(CudaBackend {
            dtype,
            ctx: self.ctx.clone(),
            stream: self.stream.clone(),
            functions: self.functions.clone(),
            gemm,
            _workspace: workspace,
            arch: self.arch.clone(),
            counter: self.counter.clone(),
            allocator: Arc::default(),
            arena: Mutex::default(),
        })
    }

    /// The architecture the kernels were compiled for (`sm_90a` on an H100).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// GEMM shapes planned so far (one cuBLASLt plan each).
    pub fn gemm_shapes(&self) -> Vec<GemmKey> {
        self.gemm.planned()
    }

    /// Waits for every queued kernel (timings, and before reading device memory directly).
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver_err("synchronize"))
    }

    /// The device's name (reports).
    pub fn device_name(&self) -> String {
        self.ctx.name().unwrap_or_else(|_| "unknown GPU".into())
    }

    // ---- buffers ----

    pub(super) fn alloc(&self, dtype: DType, len: usize) -> Result<CudaStorage> {
        // cuMemAlloc refuses 0 bytes: empty tensors hold a small buffer nobody reads.
        let bytes = (len * dtype.size_in_bytes()).max(4);
        let slot = self.allocator().alloc(bytes)?;
        match slot {
            Slot::Own { record } => {
                let buf = self.stream.alloc_zeros::<u8>(bytes).map_err(driver_err("alloc"))?;
                let mut s = CudaStorage::own(buf, dtype, len);
                s.recorded = Recorded(record.map(|id| (self.allocator.clone(), id)));
                Ok(s)
            }
            Slot::Arena { offset } => {
                let arena = self.arena.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let arena = arena.ok_or_else(|| Error::Msg("cuda: the planned arena was released".into()))?;
                let s = CudaStorage {
                    bytes: DeviceBytes::Arena { arena, offset },
                    dtype,
                    len,
                    host_ids: None,
                    recorded: Recorded::default(),
                };
                // Zeroed as every allocation is (reductions accumulate into theirs).
                // SAFETY: `offset + bytes` lies inside the arena (the plan's total), on this stream.
                unsafe { cudarc::driver::result::memset_d8_async(s.addr(&self.stream), 0, bytes, self.cu_stream()) }
                    .map_err(driver_err("arena memset"))?;
                Ok(s)
            }
        }
    }

    fn cu_stream(&self) -> cudarc::driver::sys::CUstream {
        self.stream.cu_stream()
    }

    pub(super) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub(super) fn allocator(&self) -> std::sync::MutexGuard<'_, Allocator> {
        self.allocator.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Allocates a fresh arena of `bytes` for the allocator to replay into (the previous one lives
    /// on while buffers in it do).
    pub(super) fn set_arena(&self, bytes: usize) -> Result<()> {
        let arena = Arc::new(self.stream.alloc_zeros::<u8>(bytes).map_err(driver_err("arena"))?);
        *self.arena.lock().unwrap_or_else(|e| e.into_inner()) = Some(arena);
        Ok(())
    }

    /// Copies `src`'s values into `dst` (same shape and dtype), on the stream.
    pub(super) fn copy_into(&self, src: &Tensor, dst: &Tensor) -> Result<()> {
        let (s, d) = (self.storage(src)?, self.storage(dst)?);
        if src.shape() != dst.shape() || s.dtype != d.dtype {
            return Err(Error::shape("cuda copy", dst.shape(), src.shape()));
        }
        self.copy_values(s, d)
    }

    /// `src`'s values into `dst`, which holds at least as many bytes.
    fn copy_values(&self, src: &CudaStorage, dst: &CudaStorage) -> Result<()> {
        debug_assert!(dst.value_bytes() >= src.value_bytes());
        // SAFETY: both buffers hold at least the source values' bytes, on this stream.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(
                dst.addr(&self.stream),
                src.addr(&self.stream),
                src.value_bytes(),
                self.cu_stream(),
            )
        }
        .map_err(driver_err("copy"))
    }

    /// `[B, Lq, Lk, H, D]` of `q: [B, Lq, H, D]`, `k, v: [B, Lk, H, D]`.
    pub(super) fn attention_shape(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<[usize; 5]> {
        let (&[b, lq, h, d], &[bk, lk, hk, dk]) = (q.shape(), k.shape()) else {
            return Err(Error::shape("attention q/k", "[B, L, H, D]", q.shape()));
        };
        if (b, h, d) != (bk, hk, dk) || v.shape() != k.shape() {
            return Err(Error::shape("attention k/v", [b, lk, h, d], v.shape()));
        }
        Ok([b, lq, lk, h, d])
    }

    /// The device address of a buffer's values.
    pub(super) fn addr_of(&self, s: &CudaStorage) -> u64 {
        s.addr(&self.stream)
    }

    pub(super) fn upload_bytes(&self, dtype: DType, len: usize, bytes: &[u8]) -> Result<CudaStorage> {
        if bytes.is_empty() {
            return self.alloc(dtype, len);
        }
        let buf = self.stream.clone_htod(bytes).map_err(driver_err("upload"))?;
        Ok(CudaStorage::own(buf, dtype, len))
    }

    pub(super) fn upload_f32(&self, values: &[f32], as_dtype: DType) -> Result<CudaStorage> {
        let bytes: Vec<u8> = match as_dtype {
            DType::F32 => bytemuck::cast_slice(values).to_vec(),
            DType::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
            DType::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
            other => return Err(Error::Msg(format!("cuda: cannot store values as {other}"))),
        };
        self.upload_bytes(as_dtype, values.len(), &bytes)
    }

    fn tensor(&self, shape: impl Into<Vec<usize>>, s: CudaStorage) -> Result<Tensor> {
        Tensor::from_storage(shape, Storage::Device(Arc::new(s)))
    }

    pub(super) fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.tensor(shape, self.alloc(dtype, crate::host::numel(shape))?)
    }

    fn storage<'a>(&self, t: &'a Tensor) -> Result<&'a CudaStorage> {
        t.device_storage().and_then(|d| d.as_any().downcast_ref::<CudaStorage>()).ok_or_else(|| {
            Error::Msg(format!("the cuda backend was given a tensor held by the {} backend", t.storage().backend()))
        })
    }

    /// The device address of `t`'s values.
    pub(super) fn ptr(&self, t: &Tensor) -> Result<u64> {
        Ok(self.storage(t)?.addr(&self.stream))
    }

    pub(super) fn slice_ptr(&self, s: &CudaSlice<u8>) -> u64 {
        s.device_ptr(&self.stream).0
    }

    pub(super) fn code(&self, t: &Tensor) -> Result<i32> {
        launch::dtype_code(t.dtype())
    }

    /// Before an in-place op: a buffer another tensor shares is copied first, so no other holder
    /// sees the write.
    fn make_unique(&self, x: &mut Tensor) -> Result<()> {
        let shared = matches!(x.storage(), Storage::Device(d) if Arc::strong_count(d) > 1);
        if shared {
            *x = self.copy(x)?;
        }
        Ok(())
    }

    /// A copy of `x` in a new buffer (its own allocation unless the allocator replays an arena).
    pub(super) fn copy(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.storage(x)?;
        let mut out = self.alloc(s.dtype, s.len)?;
        out.host_ids = s.host_ids.clone();
        self.copy_values(s, &out)?;
        self.tensor(x.shape(), out)
    }

    /// `x` in the backend's activation dtype (a copy only when it differs).
    fn as_act(&self, x: &Tensor) -> Result<Tensor> {
        self.to_dtype(x, self.dtype)
    }

    pub(super) fn launch(&self, entry: &'static str, l: Launch, args: &[&dyn KernelArg]) -> Result<()> {
        let f = self.functions.get(entry).ok_or_else(|| Error::Msg(format!("cuda: kernel {entry} not loaded")))?;
        // The raw launch below does not make the context current itself (cudarc's safe calls
        // do): a pipeline may call from another thread than the one that opened the backend.
        self.ctx.bind_to_thread().map_err(driver_err("bind context"))?;
        let mut params: Vec<*mut c_void> = args.iter().map(|a| a.ptr()).collect();
        // SAFETY: `f` was loaded from the cubin compiled from kernels/*.cu; `args` match its
        // parameter list (types and order, as `launch` and the .cu files define them, checked on
        // the device by the conformance battery) and outlive the call, which copies them.
        unsafe {
            cudarc::driver::result::launch_kernel(
                f.cu_function(),
                l.grid,
                l.block,
                0,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| Error::Msg(format!("cuda {entry} ({l:?}): {e}")))
    }

    /// `y = x · wᵀ (+ bias)` for device buffers this backend allocated with the sizes `key`
    /// describes (every caller derives the key from the tensors' shapes).
    pub(super) fn gemm(&self, key: GemmKey, x: u64, w: u64, bias: u64, y: u64) -> Result<()> {
        self.ctx.bind_to_thread().map_err(driver_err("bind context"))?;
        // SAFETY: the addresses are live allocations of this backend of at least m·k, n·k, n and
        // m·n elements of key.dtype (the callers build the key from those buffers' shapes), on
        // this backend's stream.
        unsafe { self.gemm.run(key, x, w, bias, y, self.stream.cu_stream() as _) }
    }

    fn prepared<'a, T: 'static>(&self, w: &'a dyn PreparedWeight, name: &str) -> Result<&'a T> {
        w.as_any().downcast_ref::<T>().ok_or_else(|| {
            Error::Msg(format!("layer {name} was prepared by the {} backend, not the cuda backend", w.backend()))
        })
    }

    /// Downloads `t`'s raw bytes (not counted: callers count what they read).
    fn download(&self, s: &CudaStorage) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; s.value_bytes()];
        self.ctx.bind_to_thread().map_err(driver_err("bind context"))?;
        // SAFETY: the buffer holds at least the values' bytes; `bytes` outlives the copy, which
        // the synchronization below waits for (a copy into pageable memory completes before the
        // call returns by CUDA's rule, but nothing here relies on it).
        unsafe { cudarc::driver::result::memcpy_dtoh_async(&mut bytes, s.addr(&self.stream), self.cu_stream()) }
            .map_err(driver_err("download"))?;
        self.synchronize()?;
        Ok(bytes)
    }

    fn norm_rows(&self, x: &Tensor, op: &'static str) -> Result<(usize, usize)> {
        let c = *x.shape().last().ok_or_else(|| Error::shape(op, "rank ≥ 1", x.shape()))?;
        Ok((x.numel() / c.max(1), c))
    }

    fn check_param(&self, op: &'static str, p: Option<&Tensor>, c: usize) -> Result<u64> {
        match p {
            None => Ok(0),
            Some(t) if t.numel() == c && t.dtype() == DType::F32 => self.ptr(t),
            Some(t) => Err(Error::shape(op, format!("[{c}] f32"), t.shape())),
        }
    }

    fn linear_into(&self, layer: &Linear, x: &Tensor, gelu: bool) -> Result<Tensor> {
        let w: &CudaLinear = self.prepared(layer.prepared()?, &layer.name)?;
        let (m, shape) = linear_shape(&layer.name, x, w.k, w.n)?;
        let k = w.k;
        let x = self.as_act(x)?;
        let y = self.empty(&shape, self.dtype)?;
        let key = GemmKey { m, n: w.n, k, dtype: self.dtype, epilogue: Epilogue::new(w.bias.is_some(), gelu) };
        let bias = w.bias.as_ref().map_or(0, |b| self.slice_ptr(b));
        self.gemm(key, self.ptr(&x)?, self.slice_ptr(&w.weight), bias, self.ptr(&y)?)?;
        Ok(y)
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn capture<'a>(&'a self, inputs: &[&Tensor], step: StepFn<'_>) -> Result<Box<dyn CapturedStep + 'a>> {
        Ok(Box::new(self.capture_step(inputs, step)?))
    }

    fn synchronize(&self) -> Result<()> {
        CudaBackend::synchronize(self)
    }

    fn device_memory(&self) -> Result<Option<DeviceMemory>> {
        use cudarc::driver::sys;
        self.ctx.bind_to_thread().map_err(driver_err("bind context"))?;
        if !self.ctx.has_async_alloc() {
            // Plain cuMemAlloc keeps no high-water mark: what the device has in use now.
            let (free, total) = cudarc::driver::result::mem_get_info().map_err(driver_err("memory info"))?;
            return Ok(Some(DeviceMemory { in_use: (total - free) as u64, peak: None }));
        }
        // The stream-ordered allocator's pool (every buffer of this backend comes from it).
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        let attr = |pool, a, what| -> Result<u64> {
            let mut v = 0u64;
            // SAFETY: a valid pool; these attributes are cuuint64_t.
            unsafe { sys::cuMemPoolGetAttribute(pool, a, (&mut v as *mut u64).cast()) }
                .result()
                .map_err(driver_err(what))?;
            Ok(v)
        };
        // SAFETY: the context's device; `pool` receives its default pool.
        unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, self.ctx.cu_device()) }
            .result()
            .map_err(driver_err("memory pool"))?;
        Ok(Some(DeviceMemory {
            in_use: attr(pool, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT, "pool in use")?,
            peak: Some(attr(pool, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH, "pool high-water mark")?),
        }))
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn transfers(&self) -> Transfers {
        self.counter.snapshot()
    }

    fn upload(&self, t: &HostTensor) -> Result<Tensor> {
        self.counter.upload(t.numel() * 4);
        self.tensor(t.shape(), self.upload_f32(t.data(), DType::F32)?)
    }

    fn upload_ids(&self, shape: &[usize], ids: &[u32]) -> Result<Tensor> {
        self.counter.upload(ids.len() * 4);
        let mut s = self.upload_bytes(DType::U32, ids.len(), bytemuck::cast_slice(ids))?;
        s.host_ids = Some(Arc::new(ids.to_vec()));
        self.tensor(shape, s)
    }

    fn to_host(&self, t: &Tensor) -> Result<HostTensor> {
        let s = self.storage(t)?;
        let bytes = self.download(s)?;
        self.counter.download(t.bytes());
        let values = crate::dtype::bytes_to_f32(&bytes, s.dtype)
            .ok_or_else(|| Error::Msg(format!("cuda: cannot read {} values back", s.dtype)))?;
        HostTensor::new(t.shape().to_vec(), values)
    }

    fn prepare_linear(&self, layer: &Linear) -> Result<Arc<dyn PreparedWeight>> {
        if let Some(quantized) = w8a8::prepare(self, layer)? {
            return Ok(Arc::new(quantized));
        }
        let format = match &layer.weight {
            LinearWeight::Int8 { .. } => "int8 (dequantized on the cuda backend)",
            LinearWeight::Fp8 { .. } => "fp8 (dequantized on the cuda backend)",
            LinearWeight::Ggml(_) => "gguf (dequantized on the cuda backend)",
            LinearWeight::Float(_) => layer.format(),
        };
        // Weight-only formats compute in the activation dtype, as the CPU backend's W8A16 path.
        let w = layer.to_f32()?;
        let weight = self.upload_f32(w.data(), self.dtype)?.into_buf()?;
        let bias =
            layer.bias.as_ref().map(|b| self.upload_f32(b, self.dtype).and_then(|s| s.into_buf())).transpose()?;
        Ok(Arc::new(CudaLinear { weight, bias, n: layer.out_dim(), k: layer.in_dim(), dtype: self.dtype, format }))
    }

    fn prepare_conv3d(&self, layer: &Conv3d) -> Result<Arc<dyn PreparedWeight>> {
        let values = layer.weight.to_f32()?;
        let weight = self.upload_f32(&values, self.dtype)?.into_buf()?;
        let bias =
            layer.bias.as_ref().map(|b| self.upload_f32(b, DType::F32).and_then(|s| s.into_buf())).transpose()?;
        Ok(Arc::new(CudaConv { weight, bias, shape: layer.weight_shape(), stride: layer.stride(), dtype: self.dtype }))
    }

    fn weight_tensor(&self, t: HostTensor) -> Result<Tensor> {
        self.tensor(t.shape(), self.upload_f32(t.data(), DType::F32)?)
    }

    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        launch::dtype_code(dtype)?;
        self.empty(shape, dtype)
    }

    fn narrow(&self, x: &Tensor, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        let (shape, c) = launch::narrow_plan(x.shape(), dim, start, len)?;
        let out = self.empty(&shape, x.dtype())?;
        self.copy_block(x, &out, &c)?;
        Ok(out)
    }

    fn cat(&self, xs: &[&Tensor], dim: usize) -> Result<Tensor> {
        let first = xs.first().ok_or_else(|| Error::Msg("cat of no tensors".into()))?;
        if let Some(t) = xs.iter().find(|t| t.dtype() != first.dtype()) {
            return Err(Error::Msg(format!("cat of {} and {} tensors", first.dtype(), t.dtype())));
        }
        let shapes: Vec<&[usize]> = xs.iter().map(|t| t.shape()).collect();
        let (shape, copies) = launch::cat_plan(&shapes, dim)?;
        let out = self.empty(&shape, first.dtype())?;
        for (x, c) in xs.iter().zip(&copies) {
            self.copy_block(x, &out, c)?;
        }
        Ok(out)
    }

    fn permute(&self, x: &Tensor, perm: &[usize]) -> Result<Tensor> {
        let (shape, dims) = launch::permute_dims(x.shape(), perm)?;
        let out = self.empty(&shape, x.dtype())?;
        let n = x.numel() as i64;
        let elem = x.dtype().size_in_bytes() as i32;
        self.launch("permute", launch::elementwise(x.numel()), &[&self.ptr(x)?, &self.ptr(&out)?, &elem, &n, &dims])?;
        Ok(out)
    }

    fn to_dtype(&self, x: &Tensor, dtype: DType) -> Result<Tensor> {
        if x.dtype() == dtype {
            return Ok(x.clone());
        }
        if !dtype.is_float() || x.dtype() == DType::U32 {
            return Err(Error::Msg(format!("cuda to_dtype: {} → {dtype}", x.dtype())));
        }
        let out = self.empty(x.shape(), dtype)?;
        let n = x.numel() as i64;
        let (a, b) = (self.code(x)?, launch::dtype_code(dtype)?);
        self.launch("convert", launch::elementwise(x.numel()), &[&self.ptr(x)?, &a, &self.ptr(&out)?, &b, &n])?;
        Ok(out)
    }

    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (shape, dims) = launch::broadcast_dims(a.shape(), b.shape())?;
        let out = self.empty(&shape, self.dtype)?;
        let n = out.numel() as i64;
        let (pa, pb, po) = (self.ptr(a)?, self.ptr(b)?, self.ptr(&out)?);
        let (da, db, dout, op) = (self.code(a)?, self.code(b)?, launch::dtype_code(self.dtype)?, op as i32);
        let l = launch::elementwise(out.numel());
        if a.shape() == b.shape() {
            self.launch("binary_same", l, &[&pa, &da, &pb, &db, &po, &dout, &op, &n])?;
        } else {
            self.launch("binary_broadcast", l, &[&pa, &da, &pb, &db, &po, &dout, &op, &n, &dims])?;
        }
        Ok(out)
    }

    fn scalar(&self, op: BinaryOp, x: &Tensor, s: f32) -> Result<Tensor> {
        let out = self.empty(x.shape(), x.dtype())?;
        let (n, dt, op) = (x.numel() as i64, self.code(x)?, op as i32);
        self.launch("scalar_op", launch::elementwise(x.numel()), &[&self.ptr(x)?, &self.ptr(&out)?, &dt, &op, &s, &n])?;
        Ok(out)
    }

    fn add_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        if x.shape() != y.shape() {
            return Err(Error::shape("add_assign", x.shape(), y.shape()));
        }
        self.make_unique(x)?;
        let (n, dx, dy) = (x.numel() as i64, self.code(x)?, self.code(y)?);
        self.launch("add_assign", launch::elementwise(x.numel()), &[&self.ptr(x)?, &dx, &self.ptr(y)?, &dy, &n])
    }

    fn lincomb(&self, terms: &[(f32, &Tensor)]) -> Result<Tensor> {
        let (_, first) = terms.first().ok_or_else(|| Error::Msg("lincomb of no terms".into()))?;
        if let Some((_, t)) = terms.iter().find(|(_, t)| t.shape() != first.shape()) {
            return Err(Error::shape("lincomb", first.shape(), t.shape()));
        }
        let out = self.empty(first.shape(), DType::F32)?;
        let (po, n) = (self.ptr(&out)?, first.numel() as i64);
        for (i, range) in launch::lincomb_launches(terms.len()).into_iter().enumerate() {
            let mut t = Terms { ptr: [0; 8], dt: [0; 8], coef: [0.0; 8], count: 0 };
            if i > 0 {
                // The running sum so far, as the first term (the kernel reads before it writes).
                (t.ptr[0], t.dt[0], t.coef[0], t.count) = (po, 0, 1.0, 1);
            }
            for &(c, x) in &terms[range] {
                let k = t.count as usize;
                (t.ptr[k], t.dt[k], t.coef[k]) = (self.ptr(x)?, self.code(x)?, c);
                t.count += 1;
            }
            self.launch("lincomb", launch::elementwise(first.numel()), &[&t, &po, &n])?;
        }
        Ok(out)
    }

    fn cfg_combine(&self, pair: &Tensor, guidance: f32) -> Result<Tensor> {
        if pair.rank() == 0 || pair.dim(0) != 2 {
            return Err(Error::shape("cfg_combine", "[2, ..]", pair.shape()));
        }
        let mut shape = pair.shape().to_vec();
        shape[0] = 1;
        let out = self.empty(&shape, self.dtype)?;
        let (half, dp, dout) = ((pair.numel() / 2) as i64, self.code(pair)?, launch::dtype_code(self.dtype)?);
        let l = launch::elementwise(half as usize);
        self.launch("cfg_combine", l, &[&self.ptr(pair)?, &dp, &self.ptr(&out)?, &dout, &guidance, &half])?;
        Ok(out)
    }

    fn activation(&self, x: Tensor, act: Activation) -> Result<Tensor> {
        let out = self.empty(x.shape(), self.dtype)?;
        let code = launch::activation_code(act);
        let (n, dx, dout) = (x.numel() as i64, self.code(&x)?, launch::dtype_code(self.dtype)?);
        let l = launch::elementwise(x.numel());
        self.launch("activation", l, &[&self.ptr(&x)?, &dx, &self.ptr(&out)?, &dout, &code, &n])?;
        Ok(out)
    }

    fn affine_clamp(&self, x: &mut Tensor, mul: f32, add: f32, lo: f32, hi: f32) -> Result<()> {
        self.make_unique(x)?;
        let (n, dt) = (x.numel() as i64, self.code(x)?);
        self.launch("affine_clamp", launch::elementwise(x.numel()), &[&self.ptr(x)?, &dt, &mul, &add, &lo, &hi, &n])
    }

    fn mask_rows(&self, x: &mut Tensor, lengths: &[usize]) -> Result<()> {
        if x.rank() < 2 || lengths.len() != x.dim(0) || lengths.iter().any(|&n| n > x.dim(1)) {
            return Err(Error::shape(
                "mask_rows",
                format!("[{}, ≥ lengths {lengths:?}, ..]", lengths.len()),
                x.shape(),
            ));
        }
        let lens = BatchInts::new("mask_rows", lengths)?;
        self.make_unique(x)?;
        let (l, row) = (x.dim(1) as i64, (x.numel() / (x.dim(0) * x.dim(1)).max(1)) as i64);
        let (n, dt) = (x.numel() as i64, self.code(x)?);
        self.launch("mask_rows", launch::elementwise(x.numel()), &[&self.ptr(x)?, &dt, &lens, &l, &row, &n])
    }

    fn relative_l1(&self, a: &Tensor, b: &Tensor) -> Result<f64> {
        if a.shape() != b.shape() {
            return Err(Error::shape("relative_l1", b.shape(), a.shape()));
        }
        let sums = self.alloc(DType::F32, 4)?; // two f64 accumulators
        let (n, da, db) = (a.numel() as i64, self.code(a)?, self.code(b)?);
        let ps = self.addr_of(&sums);
        self.launch("relative_l1", launch::reduction(a.numel()), &[&self.ptr(a)?, &da, &self.ptr(b)?, &db, &ps, &n])?;
        let bytes = self.download(&sums)?;
        self.counter.scalar_read();
        let num = f64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let den = f64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        Ok(if den > 0.0 {
            num / den
        } else if num == 0.0 {
            0.0
        } else {
            f64::INFINITY
        })
    }

    fn all_finite(&self, x: &Tensor) -> Result<bool> {
        let flag = self.alloc(DType::U32, 1)?;
        let (n, dt, pf) = (x.numel() as i64, self.code(x)?, self.addr_of(&flag));
        self.launch("all_finite", launch::reduction(x.numel()), &[&self.ptr(x)?, &dt, &pf, &n])?;
        let bytes = self.download(&flag)?;
        self.counter.scalar_read();
        Ok(bytes[..4] == [0, 0, 0, 0])
    }

    fn linear(&self, layer: &Linear, x: &Tensor) -> Result<Tensor> {
        if let Some(q) = layer.prepared()?.as_any().downcast_ref::<CudaQuantLinear>() {
            return w8a8::forward(self, &layer.name, q, x, None);
        }
        self.linear_into(layer, x, false)
    }

    fn linear_activation(&self, layer: &Linear, x: &Tensor, act: Activation) -> Result<Tensor> {
        if let Some(q) = layer.prepared()?.as_any().downcast_ref::<CudaQuantLinear>() {
            // The dequantization epilogue applies any activation.
            return w8a8::forward(self, &layer.name, q, x, Some(act));
        }
        match act {
            // cuBLASLt's GELU epilogue is the tanh approximation: fused.
            Activation::GeluTanh => self.linear_into(layer, x, true),
            _ => self.activation(self.linear_into(layer, x, false)?, act),
        }
    }

    fn embedding(&self, table: &Embedding, ids: &Tensor) -> Result<Tensor> {
        let w: &CudaLinear = self.prepared(table.table.prepared()?, &table.table.name)?;
        let s = self.storage(ids)?;
        if s.dtype != DType::U32 {
            return Err(Error::Msg(format!("embedding ids must be u32, found {}", s.dtype)));
        }
        let (vocab, dim) = (w.n, w.k);
        let host =
            s.host_ids.as_ref().ok_or_else(|| Error::Msg("embedding: ids not uploaded with upload_ids".into()))?;
        if let Some(&bad) = host.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::Msg(format!("embedding: id {bad} outside a table of {vocab} rows")));
        }
        let mut shape = ids.shape().to_vec();
        shape.push(dim);
        let out = self.empty(&shape, self.dtype)?;
        let (n, d, dtt, dto) =
            (out.numel() as i64, dim as i64, launch::dtype_code(w.dtype)?, launch::dtype_code(self.dtype)?);
        let pt = self.slice_ptr(&w.weight);
        self.launch(
            "embedding",
            launch::elementwise(out.numel()),
            &[&pt, &dtt, &self.ptr(ids)?, &self.ptr(&out)?, &dto, &d, &n],
        )?;
        Ok(out)
    }

    fn conv3d(&self, layer: &Conv3d, x: &Tensor, history: Option<&Tensor>, pad: PaddingFull) -> Result<Tensor> {
        let w: &CudaConv = self.prepared(layer.prepared()?, &layer.name)?;
        // As the CPU reference: the history frames in front in time, then the given padding.
        let joined;
        let x = match history {
            Some(h) => {
                joined = self.cat(&[&self.as_act(h)?, &self.as_act(x)?], 2)?;
                &joined
            }
            None => x,
        };
        let x = self.as_act(x)?;
        let &[nb, c, t, h, wd] = x.shape() else {
            return Err(Error::shape("conv3d input", "[N, C, T, H, W]", x.shape()));
        };
        let [cout, cin, kt, kh, kw] = w.shape;
        if c != cin {
            return Err(Error::shape("conv3d input channels", cin, c));
        }
        let args = launch::conv_args([c, t, h, wd], [kt, kh, kw], w.stride, [pad.t, pad.h, pad.w])?;
        let (p, k) = (args.positions(), args.k());
        let out = self.empty(&[nb, cout, args.ot as usize, args.oh as usize, args.ow as usize], self.dtype)?;
        let esize = self.dtype.size_in_bytes();
        let chunk = (IM2COL_BYTES / (k * esize).max(1)).clamp(1, p);
        let cols = self.alloc(self.dtype, chunk * k)?;
        let y = self.alloc(self.dtype, chunk * cout)?;
        let (pc, py) = (self.addr_of(&cols), self.addr_of(&y));
        let (px, po) = (self.ptr(&x)?, self.ptr(&out)?);
        let bias = w.bias.as_ref().map_or(0, |b| self.slice_ptr(b));
        let code = launch::dtype_code(self.dtype)?;
        for b in 0..nb {
            let xb = px + (b * c * t * h * wd * esize) as u64;
            let ob = po + (b * cout * p * esize) as u64;
            for p0 in (0..p).step_by(chunk) {
                let rows = chunk.min(p - p0);
                let (n, pos0) = ((rows * k) as i64, p0 as i64);
                self.launch("im2col3d", launch::elementwise(rows * k), &[&xb, &code, &pc, &code, &args, &pos0, &n])?;
                let key = GemmKey { m: rows, n: cout, k, dtype: self.dtype, epilogue: Epilogue::None };
                self.gemm(key, pc, self.slice_ptr(&w.weight), 0, py)?;
                let (pt, rows_i, cout_i, n) = (p as i64, rows as i64, cout as i64, (rows * cout) as i64);
                self.launch(
                    "conv_out",
                    launch::elementwise(rows * cout),
                    &[&py, &code, &bias, &ob, &code, &pt, &pos0, &rows_i, &cout_i, &n],
                )?;
            }
        }
        Ok(out)
    }

    fn rms_norm(&self, x: Tensor, eps: f32, weight: Option<&Tensor>) -> Result<Tensor> {
        let (rows, c) = self.norm_rows(&x, "rms_norm")?;
        let pw = self.check_param("rms_norm weight", weight, c)?;
        let out = self.empty(x.shape(), self.dtype)?;
        let (dx, dout, c) = (self.code(&x)?, launch::dtype_code(self.dtype)?, c as i64);
        self.launch(
            "rms_norm",
            launch::per_row(rows)?,
            &[&self.ptr(&x)?, &dx, &self.ptr(&out)?, &dout, &pw, &eps, &c],
        )?;
        Ok(out)
    }

    fn layer_norm(&self, x: Tensor, eps: f32, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Result<Tensor> {
        let (rows, c) = self.norm_rows(&x, "layer_norm")?;
        let (pw, pb) =
            (self.check_param("layer_norm weight", weight, c)?, self.check_param("layer_norm bias", bias, c)?);
        let out = self.empty(x.shape(), self.dtype)?;
        let (dx, dout, c, none, l) = (self.code(&x)?, launch::dtype_code(self.dtype)?, c as i64, 0u64, 1i64);
        self.launch(
            "layer_norm",
            launch::per_row(rows)?,
            &[&self.ptr(&x)?, &dx, &self.ptr(&out)?, &dout, &pw, &pb, &none, &none, &dx, &l, &eps, &c],
        )?;
        Ok(out)
    }

    fn layer_norm_modulate(&self, x: &Tensor, eps: f32, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
        let &[b, l, c] = x.shape() else {
            return Err(Error::shape("layer_norm_modulate", "[B, L, C]", x.shape()));
        };
        if scale.numel() != b * c || shift.numel() != b * c || scale.dtype() != shift.dtype() {
            return Err(Error::shape("layer_norm_modulate scale/shift", [b, 1, c], scale.shape()));
        }
        let out = self.empty(x.shape(), self.dtype)?;
        let (dx, dout, dm, none) = (self.code(x)?, launch::dtype_code(self.dtype)?, self.code(scale)?, 0u64);
        let (l, c) = (l as i64, c as i64);
        self.launch(
            "layer_norm",
            launch::per_row(x.numel() / (c as usize).max(1))?,
            &[
                &self.ptr(x)?,
                &dx,
                &self.ptr(&out)?,
                &dout,
                &none,
                &none,
                &self.ptr(scale)?,
                &self.ptr(shift)?,
                &dm,
                &l,
                &eps,
                &c,
            ],
        )?;
        Ok(out)
    }

    fn channel_rms_norm(&self, x: &Tensor, gamma: &Tensor, silu: bool) -> Result<Tensor> {
        if x.rank() < 2 {
            return Err(Error::shape("channel_rms_norm", "[B, C, …]", x.shape()));
        }
        let (b, c) = (x.dim(0), x.dim(1));
        let pg = self.check_param("channel_rms_norm gamma", Some(gamma), c)?;
        let s = x.numel() / (b * c).max(1);
        let out = self.empty(x.shape(), self.dtype)?;
        let (dx, dout, silu, ci, si, n) =
            (self.code(x)?, launch::dtype_code(self.dtype)?, silu as i32, c as i64, s as i64, (b * s) as i64);
        self.launch(
            "channel_rms_norm",
            launch::elementwise(b * s),
            &[&self.ptr(x)?, &dx, &self.ptr(&out)?, &dout, &pg, &silu, &ci, &si, &n],
        )?;
        Ok(out)
    }

    fn add_gated(&self, x: &mut Tensor, y: &Tensor, gate: &Tensor) -> Result<()> {
        let &[b, l, c] = x.shape() else {
            return Err(Error::shape("add_gated", "[B, L, C]", x.shape()));
        };
        if x.shape() != y.shape() || gate.numel() != b * c {
            return Err(Error::shape("add_gated", x.shape(), y.shape()));
        }
        self.make_unique(x)?;
        let (dx, dy, dg) = (self.code(x)?, self.code(y)?, self.code(gate)?);
        let (l, c, n) = (l as i64, c as i64, x.numel() as i64);
        self.launch(
            "add_gated",
            launch::elementwise(x.numel()),
            &[&self.ptr(x)?, &dx, &self.ptr(y)?, &dy, &self.ptr(gate)?, &dg, &l, &c, &n],
        )
    }

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f32,
        bias: AttentionBias,
        precision: AttentionPrecision,
    ) -> Result<Tensor> {
        if precision == AttentionPrecision::Int8 {
            if !bias.is_none() {
                return Err(Error::Msg("int8 attention takes no score bias".into()));
            }
            return attention_int8::attention_int8(self, q, k, v, scale);
        }
        let [b, lq, lk, h, d] = self.attention_shape(q, k, v)?;
        let entry = launch::attention_entry(d, false)?;
        let lens = match bias.key_lengths {
            Some(l) if l.len() != b || l.iter().any(|&n| n > lk) => {
                return Err(Error::shape("attention key lengths", format!("{b} lengths ≤ {lk}"), l));
            }
            Some(l) => BatchInts::new("attention", l)?,
            None => BatchInts::new("attention", &vec![lk; b])?,
        };
        let (pb, db) = match bias.per_head {
            Some(t) if t.shape() != [h, lq, lk] => return Err(Error::shape("attention bias", [h, lq, lk], t.shape())),
            Some(t) => (self.ptr(t)?, self.code(t)?),
            None => (0, 0),
        };
        let (q, k, v) = (self.as_act(q)?, self.as_act(k)?, self.as_act(v)?);
        let out = self.empty(q.shape(), self.dtype)?;
        let (dt, lq_i, lk_i, h_i) = (launch::dtype_code(self.dtype)?, lq as i32, lk as i32, h as i32);
        self.launch(
            entry,
            launch::attention(b, lq, h)?,
            &[
                &self.ptr(&q)?,
                &self.ptr(&k)?,
                &self.ptr(&v)?,
                &self.ptr(&out)?,
                &dt,
                &pb,
                &db,
                &lens,
                &scale,
                &lq_i,
                &lk_i,
                &h_i,
            ],
        )?;
        Ok(out)
    }

    fn upsample_nearest2x(&self, x: &Tensor) -> Result<Tensor> {
        let &[n, c, h, w] = x.shape() else {
            return Err(Error::shape("upsample_nearest2x", "[N, C, H, W]", x.shape()));
        };
        let x = self.as_act(x)?;
        let out = self.empty(&[n, c, 2 * h, 2 * w], self.dtype)?;
        let (elem, hi, wi, total) = (self.dtype.size_in_bytes() as i32, h as i64, w as i64, out.numel() as i64);
        self.launch(
            "upsample_nearest2x",
            launch::elementwise(out.numel()),
            &[&self.ptr(&x)?, &self.ptr(&out)?, &elem, &hi, &wi, &total],
        )?;
        Ok(out)
    }

    fn timestep_embedding(&self, timesteps: &[f32], dim: usize, flip_sin_to_cos: bool, shift: f32) -> Result<Tensor> {
        let half = dim / 2;
        if half == 0 || half as f32 - shift <= 0.0 {
            return Err(Error::Msg(format!("timestep embedding: dim {dim} with shift {shift} has no frequencies")));
        }
        let out = self.empty(&[timesteps.len(), dim], self.dtype)?;
        let (dto, flip, d) = (launch::dtype_code(self.dtype)?, flip_sin_to_cos as i32, dim as i64);
        let esize = self.dtype.size_in_bytes() as u64;
        for (i, chunk) in timesteps.chunks(launch::MAX_BATCH_ARGS).enumerate() {
            let mut steps = BatchFloats { t: [0.0; launch::MAX_BATCH_ARGS] };
            steps.t[..chunk.len()].copy_from_slice(chunk);
            let at = self.ptr(&out)? + (i * launch::MAX_BATCH_ARGS * dim) as u64 * esize;
            let n = (chunk.len() * dim) as i64;
            self.launch(
                "timestep_embedding",
                launch::elementwise(n as usize),
                &[&steps, &at, &dto, &d, &flip, &shift, &n],
            )?;
        }
        Ok(out)
    }

    fn rope_tables(&self, grid: [usize; 3], dims: [usize; 3], theta: f64) -> Result<(Tensor, Tensor)> {
        // Angles in f64 on the host, as the reference computes them; made once per grid.
        let (cos, sin) = crate::backend::cpu::position::rope_tables(grid, dims, theta)?;
        Ok((self.weight_tensor(cos)?, self.weight_tensor(sin)?))
    }

    fn rope_interleaved(&self, x: &mut Tensor, cos: &Tensor, sin: &Tensor) -> Result<()> {
        let &[_, l, h, d] = x.shape() else {
            return Err(Error::shape("rope input", "[B, L, H, D]", x.shape()));
        };
        if d % 2 != 0 || cos.numel() != l * d / 2 || sin.numel() != cos.numel() || cos.dtype() != DType::F32 {
            return Err(Error::shape("rope tables", [l, d / 2], cos.shape()));
        }
        self.make_unique(x)?;
        let (dt, l, h, d, n) = (self.code(x)?, l as i64, h as i64, d as i64, (x.numel() / 2) as i64);
        self.launch(
            "rope_interleaved",
            launch::elementwise(n as usize),
            &[&self.ptr(x)?, &dt, &self.ptr(cos)?, &self.ptr(sin)?, &l, &h, &d, &n],
        )
    }

    fn relative_position_bias(&self, table: &Tensor, len: usize, buckets: RelativeBuckets) -> Result<Tensor> {
        let &[nb, h] = table.shape() else {
            return Err(Error::shape("relative position bias table", "[buckets, heads]", table.shape()));
        };
        if nb != buckets.num_buckets || nb < 4 || buckets.max_distance < 2 || table.dtype() != DType::F32 {
            return Err(Error::shape(
                "relative position bias table",
                format!("[{} buckets, H] f32", buckets.num_buckets),
                table.shape(),
            ));
        }
        // Bucket indices depend on positions only: computed on the host, as T5's reference does.
        let idx: Vec<u32> = (0..len * len)
            .map(|i| crate::backend::cpu::position::bucket((i % len) as i64 - (i / len) as i64, buckets) as u32)
            .collect();
        let idx = self.upload_bytes(DType::U32, idx.len(), bytemuck::cast_slice(&idx))?;
        let out = self.empty(&[h, len, len], self.dtype)?;
        let (dto, hi, ll, n) = (launch::dtype_code(self.dtype)?, h as i64, (len * len) as i64, out.numel() as i64);
        let pi = self.addr_of(&idx);
        self.launch(
            "relative_position_bias",
            launch::elementwise(out.numel()),
            &[&self.ptr(table)?, &pi, &self.ptr(&out)?, &dto, &hi, &ll, &n],
        )?;
        Ok(out)
    }
}

impl CudaBackend {
    fn copy_block(&self, src: &Tensor, dst: &Tensor, c: &launch::BlockCopy) -> Result<()> {
        if c.outer * c.len == 0 {
            return Ok(());
        }
        let elem = src.dtype().size_in_bytes() as i32;
        let [sr, so, dr, doff, len, outer] =
            [c.src_row, c.src_off, c.dst_row, c.dst_off, c.len, c.outer].map(|v| v as i64);
        self.launch(
            "copy_block",
            launch::elementwise(c.outer * c.len),
            &[&self.ptr(src)?, &sr, &so, &self.ptr(dst)?, &dr, &doff, &len, &outer, &elem],
        )
    }
}
