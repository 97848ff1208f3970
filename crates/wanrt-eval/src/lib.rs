//! wanrt-eval: the `wanrt eval` metrics, numerically matching the reference Python tools.
//!
//! | metric | reference | module |
//! |---|---|---|
//! | FID, stats npz | pytorch-fid 0.3.0 | [`inception`], [`stats`], [`frechet`], [`fid`] |
//! | KID | torchmetrics 1.9.0 `KernelInceptionDistance` | [`kid`] |
//! | PSNR / SSIM | scikit-image 0.26 `peak_signal_noise_ratio` / `structural_similarity` | [`psnr`], [`ssim`], [`compare`] |
//! | LPIPS | lpips 0.1.4 `LPIPS` (AlexNet / VGG16, v0.1 heads) | [`lpips`] |
//! | FVD | common_metrics_on_video_quality `fvd/videogpt` (VideoGPT I3D) | [`i3d`], [`fvd`] |
//! | domain accuracy / FD | tools/demo/evaluator.py (models/demo-evaluator) | [`domain`] |
//! | CLIPScore | torchmetrics 1.9.0 `CLIPScore` + transformers 5.24 `CLIPModel` | [`clip`], [`clipscore`] |
//!
//! The networks are built on wanrt-nn: weights from a `WeightStore` ([`weights`]) along
//! `VarBuilder` paths, its `Linear`/`Embedding`/`Conv3d` layers, and the backend's attention,
//! norms and activations, on the CPU backend; [`layers`] adds 2D convolutions, folded
//! BatchNorm and the host-side pooling/resizing.
//!
//! Inputs follow DESIGN.md's item rules ([`items`]); [`cli`] implements the CLI contract.

pub mod cli;
pub mod clip;
pub mod clipscore;
pub mod compare;
pub mod domain;
pub mod error;
pub mod fid;
pub mod frechet;
pub mod fvd;
pub mod i3d;
pub mod inception;
pub mod items;
pub mod kid;
pub mod layers;
pub mod lpips;
pub mod psnr;
pub mod ssim;
pub mod stats;
pub mod weights;

pub use error::{EvalError, Result};
