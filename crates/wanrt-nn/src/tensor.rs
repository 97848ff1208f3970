//! A tensor: a shape, and a buffer owned by a backend.
//!
//! Model code sees shapes and dtypes only. The values live in the backend's memory ([`Storage`]:
//! host vectors for the CPU backend, device allocations for a GPU one) and are reached in two
//! ways: through [`crate::Backend`] ops, which compute on them where they are, and through the
//! backend's named, counted transfers (`upload`, `to_host`, `relative_l1`'s scalar). There is no
//! accessor here that hands out the values.
//!
//! Tensors are dense and row-major. `reshape` is a view (the buffer is shared, not copied);
//! `narrow`, `cat` and `permute` are backend copy ops. Cloning a tensor shares its buffer: a
//! backend op that writes in place (`add_assign`, `rope_interleaved`, …) copies a shared buffer
//! first, so a tensor never changes under another holder.

use crate::dtype::DType;
use crate::error::{Error, Result};
use half::{bf16, f16};
use std::any::Any;
use std::sync::Arc;

/// Values held by the CPU backend (one vector per element type).
#[derive(Clone)]
pub(crate) enum CpuStorage {
    F32(Arc<Vec<f32>>),
    BF16(Arc<Vec<bf16>>),
    F16(Arc<Vec<f16>>),
    U32(Arc<Vec<u32>>),
}

impl CpuStorage {
    pub(crate) fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::U32(_) => DType::U32,
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::U32(v) => v.len(),
        }
    }
}

/// A buffer of a device backend (a GPU allocation). The backend that made it downcasts it
/// through [`DeviceStorage::as_any`]; other code only asks for its dtype and length.
pub trait DeviceStorage: Send + Sync + std::fmt::Debug {
    /// Name of the backend owning the buffer ("cuda").
    fn backend(&self) -> &'static str;
    fn dtype(&self) -> DType;
    /// Number of elements.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn as_any(&self) -> &dyn Any;
}

/// Where a tensor's values live.
#[derive(Clone)]
pub enum Storage {
    /// Host memory of the CPU backend.
    #[allow(private_interfaces)]
    Cpu(CpuStorage),
    /// A device backend's buffer.
    Device(Arc<dyn DeviceStorage>),
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Device(d) => d.dtype(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            Storage::Device(d) => d.len(),
        }
    }

    /// Name of the backend holding the values.
    pub fn backend(&self) -> &'static str {
        match self {
            Storage::Cpu(_) => "cpu",
            Storage::Device(d) => d.backend(),
        }
    }
}

#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {:?} on {})", self.dtype(), self.shape, self.storage.backend())
    }
}

impl Tensor {
    /// A tensor over a backend's buffer; its length must match the shape.
    pub fn from_storage(shape: impl Into<Vec<usize>>, storage: Storage) -> Result<Self> {
        let shape = shape.into();
        if crate::host::numel(&shape) != storage.len() {
            return Err(Error::shape("Tensor::from_storage", crate::host::numel(&shape), storage.len()));
        }
        Ok(Tensor { shape, storage })
    }

    /// The buffer, for the backend that owns it.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The device buffer, for device backends (`None` for host tensors).
    pub fn device_storage(&self) -> Option<&Arc<dyn DeviceStorage>> {
        match &self.storage {
            Storage::Device(d) => Some(d),
            Storage::Cpu(_) => None,
        }
    }

    pub(crate) fn cpu_storage(&self) -> Option<&CpuStorage> {
        match &self.storage {
            Storage::Cpu(s) => Some(s),
            Storage::Device(_) => None,
        }
    }

    pub(crate) fn into_parts(self) -> (Vec<usize>, Storage) {
        (self.shape, self.storage)
    }

    /// An empty stand-in, for ops that move a tensor out of a `&mut` and put the result back.
    pub(crate) fn placeholder() -> Self {
        Tensor { shape: vec![0], storage: Storage::Cpu(CpuStorage::F32(Arc::new(Vec::new()))) }
    }

    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    crate::shape_accessors!();

    /// Bytes of the buffer.
    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype().size_in_bytes()
    }

    /// The same buffer seen with another shape of as many elements (no copy).
    pub fn reshape(self, shape: impl Into<Vec<usize>>) -> Result<Self> {
        let shape = shape.into();
        if crate::host::numel(&shape) != self.numel() {
            return Err(Error::shape("reshape", &self.shape, shape));
        }
        Ok(Tensor { shape, storage: self.storage })
    }
}
