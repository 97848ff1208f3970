//! A Conv3d layer: weights stored in the form the CPU kernels run fastest on.

use crate::ops::{conv3d, PaddingFull, WinogradConv3d};
use crate::{Error, Result, Tensor};

/// Weights of a convolution: as loaded, or pre-transformed for Winograd (stride-1 3×3 spatial taps).
enum Kernel {
    Direct(Tensor),
    Winograd(WinogradConv3d),
}

/// `weight: [C_out, C_in, kt, kh, kw]`, optional bias, fixed stride. Padding is given per call:
/// Wan's causal convolutions replace part of the front padding with cached frames.
pub struct Conv3d {
    kernel: Kernel,
    bias: Option<Vec<f32>>,
    stride: (usize, usize, usize),
    shape: [usize; 5],
}

impl Conv3d {
    pub fn new(weight: Tensor, bias: Option<Vec<f32>>, stride: (usize, usize, usize)) -> Result<Self> {
        let &[cout, cin, kt, kh, kw] = weight.shape() else {
            return Err(Error::shape("conv3d weight", "[C_out, C_in, kt, kh, kw]", weight.shape()));
        };
        if let Some(b) = &bias {
            if b.len() != cout {
                return Err(Error::shape("conv3d bias", cout, b.len()));
            }
        }
        let kernel = if WinogradConv3d::supports(weight.shape(), stride) {
            Kernel::Winograd(WinogradConv3d::new(&weight)?)
        } else {
            Kernel::Direct(weight)
        };
        Ok(Conv3d { kernel, bias, stride, shape: [cout, cin, kt, kh, kw] })
    }

    /// `[C_out, C_in, kt, kh, kw]`.
    pub fn weight_shape(&self) -> [usize; 5] {
        self.shape
    }

    pub fn stride(&self) -> (usize, usize, usize) {
        self.stride
    }

    /// CPU kernel behind [`crate::backend::Backend::conv3d`]: `conv(cat([history, x], time))`
    /// with zero padding `pad`; the Winograd path reads the history in place.
    pub fn forward(&self, x: &Tensor, history: Option<&Tensor>, pad: PaddingFull) -> Result<Tensor> {
        let bias = self.bias.as_deref();
        match (&self.kernel, history) {
            (Kernel::Winograd(w), _) => w.forward_with_history(history, x, bias, pad),
            (Kernel::Direct(w), Some(h)) => conv3d(&Tensor::cat(&[h, x], 2)?, w, bias, self.stride, pad),
            (Kernel::Direct(w), None) => conv3d(x, w, bias, self.stride, pad),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(shape: [usize; 5], step: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::new(shape, (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) * step).collect()).unwrap()
    }

    #[test]
    fn history_equals_concatenated_input_on_both_kernels() {
        let pad = PaddingFull { t: (0, 0), h: (1, 1), w: (1, 1) };
        for (k, stride) in [([3, 3, 3], (1, 1, 1)), ([3, 3, 3], (1, 2, 2)), ([3, 1, 1], (1, 1, 1))] {
            let conv =
                Conv3d::new(ramp([4, 3, k[0], k[1], k[2]], 0.1), Some(vec![0.5, -0.5, 0.25, 0.0]), stride).unwrap();
            let (hist, x) = (ramp([1, 3, 2, 6, 6], 0.2), ramp([1, 3, 3, 6, 6], 0.3));
            let pad = if k[1] == 1 { PaddingFull::default() } else { pad };
            let split = conv.forward(&x, Some(&hist), pad).unwrap();
            let whole = conv.forward(&Tensor::cat(&[&hist, &x], 2).unwrap(), None, pad).unwrap();
            assert!(split.max_abs_diff(&whole).unwrap() < 1e-5, "kernel {k:?} stride {stride:?}");
        }
    }

    #[test]
    fn bad_bias_is_an_error() {
        assert!(Conv3d::new(ramp([4, 3, 1, 1, 1], 1.0), Some(vec![0.0; 3]), (1, 1, 1)).is_err());
        assert!(Conv3d::new(Tensor::zeros([4, 3, 3]), None, (1, 1, 1)).is_err());
    }
}
