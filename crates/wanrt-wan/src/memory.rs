//! An estimate of the working memory one generation needs beyond the model's weights (already
//! resident once loaded): the pipeline's largest live buffers, as an upper-bound sketch, not a
//! measurement. `wanrt generate` checks it against `--max-memory` before denoising starts and
//! `wanrt serve` against its `--memory-budget` before a job is queued, so a size that cannot fit
//! fails in a second instead of swapping for hours or being killed at the VAE decode.

use crate::model::WanModel;

const F32: u64 = 4;

impl WanModel {
    /// Bytes of working memory a `frames`×`height`×`width` generation needs at its peak;
    /// `cfg` when classifier-free guidance batches two transformer rows. Saturates instead of
    /// overflowing on absurd sizes.
    pub fn working_memory(&self, frames: usize, height: usize, width: usize, cfg: bool) -> u64 {
        let tc = &self.transformer.config;
        let vc = &self.vae.config;
        let (tf, sf) = (vc.temporal_factor().max(1) as u64, vc.spatial_factor().max(1) as u64);
        let (frames, h, w) = (frames as u64, height as u64, width as u64);
        let lat_t = frames.saturating_sub(1) / tf + 1;
        let [pt, ph, pw] = tc.patch_size.map(|x| x.max(1) as u64);
        let tokens = (lat_t / pt).max(1).saturating_mul((h / sf / ph).max(1)).saturating_mul((w / sf / pw).max(1));
        let batch = if cfg { 2 } else { 1 };
        let (dim, ffn, heads) = (tc.inner_dim() as u64, tc.ffn_dim as u64, tc.num_attention_heads as u64);
        let mul = |xs: &[u64]| xs.iter().fold(1u64, |a, &x| a.saturating_mul(x));
        // One block's live activations (hidden states, q/k/v/out, FFN hidden) …
        let block = mul(&[batch, tokens, (8 * dim).saturating_add(2 * ffn), F32]);
        // … plus attention scores for a tile of up to 1024 queries over every key.
        let attention = mul(&[batch, heads, tokens.min(1024), tokens, F32]);
        // VAE decode: one latent frame (tf video frames) at full size through the widest layer,
        // with its causal cache and temporaries.
        let widest =
            (vc.decoder_base_dim.unwrap_or(vc.base_dim) * vc.dim_mult.iter().copied().max().unwrap_or(1)) as u64;
        let vae = mul(&[widest, tf, h, w, F32, 6]);
        // The decoded video as f32 (decoder output + [F, H, W, 3] frames) and as u8.
        let video = mul(&[frames, h, w, 3, 2 * F32 + 1]);
        let latents = mul(&[batch, vc.z_dim as u64, lat_t, h / sf, w / sf, F32, 4]);
        block.saturating_add(attention).max(vae).saturating_add(video).saturating_add(latents)
    }
}

/// Memory the system can still give, from `/proc/meminfo` (`MemAvailable`); `None` elsewhere.
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
