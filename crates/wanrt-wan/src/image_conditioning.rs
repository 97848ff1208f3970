//! What an image-conditioned Wan2.1 model (I2V, first-last-frame) is given besides the text, as
//! diffusers 0.42.1 `WanImageToVideoPipeline` (pipelines/wan/pipeline_wan_i2v.py) makes it:
//! - `encode_image`: the CLIP image processor's pixels of the first (and last) image through the
//!   CLIP vision tower, its penultimate hidden states;
//! - `prepare_latents`: the video `[image, 0, …, 0(, last image)]` encoded by the VAE (posterior
//!   mean), normalised `(z − mean) · (1/std)`, behind a mask of `temporal_factor` channels that
//!   marks the given frames (the first pixel frame repeated `temporal_factor` times so the mask
//!   folds into latent frames);
//! - with `expand_timesteps` (Wan2.2 TI2V): the image alone encoded and normalised, a latent frame
//!   that replaces the first one of the latents (`first_frame_mask`), no mask channels, no CLIP.

use crate::clip::{ClipTowerConfig, ClipVisionModel};
use crate::image::{ClipImageProcessor, RgbImage};
use crate::model::WanModel;
use crate::pipeline::ResolvedSettings;
use crate::{Error, Result};
use std::path::Path;
use wanrt_nn::{BackendRef, HostTensor, Tensor};

/// `image_encoder/` (CLIPVisionModel) and `image_processor/` (CLIPImageProcessor) of a diffusers
/// image-to-video folder.
pub struct ImageEncoder {
    pub clip: ClipVisionModel,
    pub processor: ClipImageProcessor,
}

impl ImageEncoder {
    pub fn load(dir: &Path, backend: BackendRef) -> Result<Self> {
        let enc = dir.join("image_encoder");
        if !enc.join("config.json").is_file() {
            return Err(Error::file(
                &enc,
                "an image-conditioned transformer needs the CLIP image encoder (image_encoder/config.json)",
            ));
        }
        let (config, ws) = crate::model::diffusers::component::<ClipTowerConfig>(dir, "image_encoder", "model")?;
        let image_size = config.image_size;
        let clip = ClipVisionModel::load(&ws, config, ClipVisionModel::prefix_of(&ws), backend)?;
        let processor = ClipImageProcessor::load(&dir.join("image_processor"), image_size)?;
        Ok(ImageEncoder { clip, processor })
    }

    /// `hidden_states[-2]` of the images, `[n, tokens, hidden]`.
    pub fn encode(&self, images: &[&RgbImage]) -> Result<Tensor> {
        let be = &**self.clip.backend();
        let pixels = images.iter().map(|im| self.processor.pixels(im)).collect::<Result<Vec<_>>>()?;
        let uploaded = pixels.iter().map(|p| be.upload(p)).collect::<wanrt_nn::Result<Vec<_>>>()?;
        let batch =
            if uploaded.len() == 1 { uploaded[0].clone() } else { be.cat(&uploaded.iter().collect::<Vec<_>>(), 0)? };
        self.clip.image_embeds(&batch)
    }
}

/// Which given frames the mask marks: the first, and the last for first-last-frame models.
/// `[1, temporal_factor, T', h, w]`, 1 where a latent slot holds a given frame.
pub fn frame_mask(
    num_frames: usize,
    temporal_factor: usize,
    latent_hw: (usize, usize),
    last: bool,
) -> Result<HostTensor> {
    let latent_frames = (num_frames - 1) / temporal_factor + 1;
    let (h, w) = latent_hw;
    let plane = h * w;
    let mut data = vec![0f32; temporal_factor * latent_frames * plane];
    for t in 0..latent_frames {
        for j in 0..temporal_factor {
            // The mask over pixel frames, its first entry repeated `temporal_factor` times,
            // viewed as [T', temporal_factor] and transposed.
            let entry = t * temporal_factor + j;
            let pixel_frame = if entry < temporal_factor { 0 } else { entry - temporal_factor + 1 };
            if pixel_frame == 0 || (last && pixel_frame == num_frames - 1) {
                let at = (j * latent_frames + t) * plane;
                data[at..at + plane].fill(1.0);
            }
        }
    }
    Ok(HostTensor::new([1, temporal_factor, latent_frames, h, w], data)?)
}

/// `[1, 3, F, H, W]` in [-1, 1] at `height`×`width`: the first image, zeros, and the last image
/// when given, each resized to that size first as diffusers' `VideoProcessor.preprocess` does.
fn video_condition(
    first: &RgbImage,
    last: Option<&RgbImage>,
    frames: usize,
    (h, w): (usize, usize),
) -> Result<HostTensor> {
    let plane = h * w;
    let mut data = vec![0f32; 3 * frames * plane];
    let mut put = |image: &RgbImage, frame: usize| -> Result<()> {
        let src = image.resized(h, w)?.vae_planes();
        for c in 0..3 {
            let at = (c * frames + frame) * plane;
            data[at..at + plane].copy_from_slice(&src[c * plane..(c + 1) * plane]);
        }
        Ok(())
    };
    put(first, 0)?;
    if let Some(last) = last {
        put(last, frames - 1)?;
    }
    Ok(HostTensor::new([1, 3, frames, h, w], data)?)
}

impl WanModel {
    /// The image encoder's states of each image a video is conditioned on, `[n, tokens, hidden]`.
    pub fn encode_images(&self, first: &RgbImage, last: Option<&RgbImage>) -> Result<Tensor> {
        let encoder = self.image_encoder.as_ref().ok_or_else(|| {
            Error::Config("this is a text-to-video model: it takes no --image (use an image-to-video model)".into())
        })?;
        let images: Vec<&RgbImage> = std::iter::once(first).chain(last).collect();
        encoder.encode(&images)
    }

    /// The mask and normalised image latent `[1, temporal_factor + z, T', H', W']`, in the
    /// transformer's backend: concatenated to the noisy latents at every step.
    pub fn image_latent(&self, s: &ResolvedSettings, first: &RgbImage, last: Option<&RgbImage>) -> Result<Tensor> {
        let (tf, sf) = (self.vae.config.temporal_factor(), self.vae.config.spatial_factor());
        let latent = self.encode_condition(&video_condition(first, last, s.num_frames, (s.height, s.width))?)?;
        let be = &**self.transformer.backend();
        let mask = be.upload(&frame_mask(s.num_frames, tf, (s.height / sf, s.width / sf), last.is_some())?)?;
        Ok(be.cat(&[&mask, &latent], 1)?)
    }

    /// Wan2.2 TI2V: the image's normalised latent `[1, z, 1, H', W']`, which stands in for the
    /// first latent frame at every step and in the result.
    pub fn first_frame_latent(&self, s: &ResolvedSettings, first: &RgbImage) -> Result<Tensor> {
        self.encode_condition(&video_condition(first, None, 1, (s.height, s.width))?)
    }

    /// The VAE's posterior mean of `video`, normalised `(z − mean) · (1/std)`.
    fn encode_condition(&self, video: &HostTensor) -> Result<Tensor> {
        let vae_be = &**self.vae.backend();
        self.vae.normalize(&self.vae.encode_mean(&vae_be.upload(video)?)?)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // reads the host mask it checks
mod tests {
    use super::*;

    #[test]
    fn mask_marks_first_latent_frame_and_last_pixel_frame() {
        // 9 frames, factor 4: latent frames [0 0 0 0 | 1 2 3 4 | 5 6 7 8].
        let m = frame_mask(9, 4, (1, 1), false).unwrap();
        assert_eq!(m.shape(), &[1, 4, 3, 1, 1]);
        // [channel][latent frame]
        assert_eq!(m.data(), &[1., 0., 0., 1., 0., 0., 1., 0., 0., 1., 0., 0.]);
        let m = frame_mask(9, 4, (1, 1), true).unwrap();
        assert_eq!(m.data(), &[1., 0., 0., 1., 0., 0., 1., 0., 0., 1., 0., 1.]);
    }
}
