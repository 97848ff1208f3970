//! `WanImageEmbedding` (diffusers 0.42.1 models/transformers/transformer_wan.py): the image
//! encoder's hidden states → the tokens the image-conditioned cross-attention attends to.
//!
//! `FP32LayerNorm` (`norm1`), `FeedForward(mult=1, activation_fn="gelu")` — exact-erf GELU on
//! `ff.net.0.proj`, then `ff.net.2` — and `FP32LayerNorm` (`norm2`), both norms with diffusers'
//! default eps 1e-5 and affine parameters. First-last-frame models add a learned position
//! embedding over the two images' tokens laid side by side (`pos_embed_seq_len` = 2 × tokens).

use crate::{Error, Result};
use wanrt_nn::backend::{Activation, Backend, BinaryOp};
use wanrt_nn::{param_path, LayerNorm, Linear, Param, ParamMut, Tensor, VarBuilder};

/// diffusers' `FP32LayerNorm` keeps `nn.LayerNorm`'s default eps.
const LAYER_NORM_EPS: f32 = 1e-5;

#[derive(Clone)]
pub struct WanImageEmbedding {
    /// Module path (`condition_embedder.image_embedder`), naming `pos_embed` in `visit_mut`.
    path: String,
    image_dim: usize,
    norm1: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
    norm2: LayerNorm,
    /// `[1, pos_embed_seq_len, image_dim]` (first-last-frame models only).
    pos_embed: Option<Tensor>,
}

impl WanImageEmbedding {
    pub fn new(vb: &VarBuilder, image_dim: usize, dim: usize, pos_embed_seq_len: Option<usize>) -> Result<Self> {
        Ok(WanImageEmbedding {
            path: vb.prefix().to_string(),
            image_dim,
            norm1: LayerNorm::load(&vb.pp("norm1"), image_dim, LAYER_NORM_EPS)?,
            ff_in: vb.pp("ff.net.0.proj").linear(image_dim, image_dim, true)?,
            ff_out: vb.pp("ff.net.2").linear(image_dim, dim, true)?,
            norm2: LayerNorm::load(&vb.pp("norm2"), dim, LAYER_NORM_EPS)?,
            pos_embed: pos_embed_seq_len.map(|n| vb.tensor("pos_embed", &[1, n, image_dim])).transpose()?,
        })
    }

    /// How many images one video's tokens are made of (two for first-last-frame models).
    pub fn images_per_video(&self) -> usize {
        if self.pos_embed.is_some() {
            2
        } else {
            1
        }
    }

    /// `[N, L, image_dim]` image encoder states → `[N / images_per_video, images_per_video·L, dim]`.
    pub fn forward(&self, be: &dyn Backend, image: &Tensor) -> Result<Tensor> {
        let &[n, l, d] = image.shape() else {
            return Err(Error::Shape(format!(
                "image embeddings must be [N, L, {}], found {:?}",
                self.image_dim,
                image.shape()
            )));
        };
        if d != self.image_dim {
            return Err(Error::Shape(format!(
                "image embeddings have width {d}, the transformer's image_dim is {}",
                self.image_dim
            )));
        }
        let x = match &self.pos_embed {
            Some(pos_embed) => {
                let per = self.images_per_video();
                if !n.is_multiple_of(per) || pos_embed.dim(1) != per * l {
                    return Err(Error::Shape(format!(
                        "first-last-frame image embeddings must be {per} images of {} tokens each, found {n} of {l}",
                        pos_embed.dim(1) / per
                    )));
                }
                be.binary(BinaryOp::Add, &image.clone().reshape([n / per, per * l, d])?, pos_embed)?
            }
            None => image.clone(),
        };
        let hidden = self.norm1.forward(be, x)?;
        let hidden = self.ff_in.forward_activation(be, &hidden, Activation::GeluErf)?;
        let hidden = self.ff_out.forward(be, &hidden)?;
        Ok(self.norm2.forward(be, hidden)?)
    }

    pub fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        self.norm1.tensors().into_iter().for_each(|t| f(Param::Tensor(t)));
        f(Param::Linear(&self.ff_in));
        f(Param::Linear(&self.ff_out));
        self.norm2.tensors().into_iter().for_each(|t| f(Param::Tensor(t)));
        if let Some(p) = &self.pos_embed {
            f(Param::Tensor(p));
        }
    }

    pub fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        self.norm1.visit_mut(f);
        f(ParamMut::Linear(&mut self.ff_in));
        f(ParamMut::Linear(&mut self.ff_out));
        self.norm2.visit_mut(f);
        if let Some(p) = &mut self.pos_embed {
            f(ParamMut::Tensor { name: &param_path(&self.path, "pos_embed"), tensor: p });
        }
    }
}
