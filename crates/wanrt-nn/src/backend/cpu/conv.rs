//! The CPU backend's form of a convolution's weights: transformed once for Winograd F(2,3) when
//! the kernel is a stride-1 3×3 spatial one, else kept for the implicit-GEMM kernel.

use super::CpuOptions;
use crate::backend::PreparedWeight;
use crate::dtype::DType;
use crate::ops::{conv3d, PaddingFull, WinogradConv3d};
use crate::{Conv3d, HostTensor, Result};
use std::any::Any;

enum Kernel {
    Direct(HostTensor),
    Winograd(WinogradConv3d),
}

pub(crate) struct CpuConv {
    kernel: Kernel,
    bias: Option<Vec<f32>>,
    stride: (usize, usize, usize),
    params: usize,
}

impl std::fmt::Debug for CpuConv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kernel {
            Kernel::Direct(_) => "direct",
            Kernel::Winograd(_) => "winograd",
        };
        write!(f, "CpuConv({kind}, {} params)", self.params)
    }
}

impl PreparedWeight for CpuConv {
    fn backend(&self) -> &'static str {
        "cpu"
    }
    fn bytes(&self) -> usize {
        match &self.kernel {
            Kernel::Direct(w) => w.numel() * 4,
            Kernel::Winograd(w) => w.bytes(),
        }
    }
    fn format(&self) -> &'static str {
        "f32"
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl CpuConv {
    pub(crate) fn prepare(layer: &Conv3d, opts: &CpuOptions) -> Result<Self> {
        let mut values = layer.weight.to_f32()?;
        if let half @ (DType::BF16 | DType::F16) = opts.dtype {
            // A half-precision backend computes with the weights rounded to its dtype.
            let round = super::round_through(half);
            values.iter_mut().for_each(|v| *v = round(*v));
        }
        // The backend holds its own copy: the mapped file pages need not stay resident.
        layer.weight.release_pages();
        let weight = HostTensor::new(layer.weight_shape().to_vec(), values)?;
        let params = weight.numel();
        let kernel = if layer.winograd_eligible() {
            Kernel::Winograd(WinogradConv3d::new(&weight)?)
        } else {
            Kernel::Direct(weight)
        };
        Ok(CpuConv { kernel, bias: layer.bias.clone(), stride: layer.stride(), params })
    }

    /// `conv(cat([history, x], time))` with zero padding `pad`; the Winograd path reads the
    /// history in place.
    pub(crate) fn forward(&self, x: &HostTensor, history: Option<&HostTensor>, pad: PaddingFull) -> Result<HostTensor> {
        let bias = self.bias.as_deref();
        match (&self.kernel, history) {
            (Kernel::Winograd(w), _) => w.forward_with_history(history, x, bias, pad),
            (Kernel::Direct(w), Some(h)) => conv3d(&HostTensor::cat(&[h, x], 2)?, w, bias, self.stride, pad),
            (Kernel::Direct(w), None) => conv3d(x, w, bias, self.stride, pad),
        }
    }
}
