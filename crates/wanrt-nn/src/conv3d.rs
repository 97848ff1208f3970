//! A 3D convolution layer (PyTorch `nn.Conv3d` layout), described by its stored weights and
//! prepared once by a backend: the CPU backend transforms stride-1 3×3 spatial kernels for
//! Winograd there ([`Conv3d::winograd_eligible`]), a device backend uploads.

use crate::backend::{Backend, PreparedWeight};
use crate::ops::{PaddingFull, WinogradConv3d};
use crate::weights::RawTensor;
use crate::{Error, Result, Tensor};
use std::sync::Arc;

/// `weight: [C_out, C_in, kt, kh, kw]`, optional bias, fixed stride. Padding is given per call:
/// Wan's causal convolutions replace part of the front padding with cached frames.
#[derive(Debug, Clone)]
pub struct Conv3d {
    /// Module path (`decoder.conv_in`).
    pub name: String,
    /// As stored (any float dtype).
    pub weight: RawTensor,
    pub bias: Option<Vec<f32>>,
    stride: (usize, usize, usize),
    prepared: Option<Arc<dyn PreparedWeight>>,
}

impl Conv3d {
    pub fn new(
        name: impl Into<String>,
        weight: RawTensor,
        bias: Option<Vec<f32>>,
        stride: (usize, usize, usize),
    ) -> Result<Self> {
        let name = name.into();
        let &[cout, _, _, _, _] = weight.shape.as_slice() else {
            return Err(Error::shape("conv3d weight", "[C_out, C_in, kt, kh, kw]", &weight.shape));
        };
        if !weight.dtype.is_float() {
            return Err(Error::UnsupportedDType { name: format!("{name}.weight"), dtype: weight.dtype.to_string() });
        }
        if let Some(b) = &bias {
            if b.len() != cout {
                return Err(Error::shape("conv3d bias", cout, b.len()));
            }
        }
        if stride.0 == 0 || stride.1 == 0 || stride.2 == 0 {
            return Err(Error::Msg(format!("{name}: stride must be positive, got {stride:?}")));
        }
        Ok(Conv3d { name, weight, bias, stride, prepared: None })
    }

    /// `[C_out, C_in, kt, kh, kw]`.
    pub fn weight_shape(&self) -> [usize; 5] {
        let s = &self.weight.shape;
        [s[0], s[1], s[2], s[3], s[4]]
    }

    pub fn stride(&self) -> (usize, usize, usize) {
        self.stride
    }

    /// Whether the kernel is a stride-1 3×3 spatial one (Winograd F(2,3) applies).
    pub fn winograd_eligible(&self) -> bool {
        WinogradConv3d::supports(&self.weight.shape, self.stride)
    }

    pub fn prepare(&mut self, backend: &dyn Backend) -> Result<()> {
        self.prepared = Some(backend.prepare_conv3d(self)?);
        Ok(())
    }

    pub fn prepared(&self) -> Result<&dyn PreparedWeight> {
        self.prepared
            .as_deref()
            .ok_or_else(|| Error::Msg(format!("layer {} was not prepared for a backend", self.name)))
    }

    /// Bytes held (the prepared form when prepared).
    pub fn bytes(&self) -> usize {
        let bias = self.bias.as_ref().map_or(0, |b| b.len() * 4);
        bias + self.prepared.as_ref().map_or_else(|| self.weight.shape.iter().product::<usize>() * 4, |p| p.bytes())
    }

    pub fn num_params(&self) -> usize {
        self.weight.shape.iter().product::<usize>() + self.bias.as_ref().map_or(0, Vec::len)
    }

    /// `conv(cat([history, x], time))` with zero padding `pad`, on `be`.
    pub fn forward(&self, be: &dyn Backend, x: &Tensor, history: Option<&Tensor>, pad: PaddingFull) -> Result<Tensor> {
        be.conv3d(self, x, history, pad)
    }
}
