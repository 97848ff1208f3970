//! Evaluation inputs: DESIGN.md's item rules, read through wanrt-media's [`ItemSet`]
//! (images, folders of frames, MP4, GIF, NPY; uint8 conversion `round(clip(x,0,1)·255)`;
//! `--frames-per-video K` picking `round(i·(F−1)/(K−1))`). Items are decoded one at a
//! time. Metrics here work on [`Frame`]s.

use std::path::Path;

pub use wanrt_media::{Item, ItemSet};

use crate::error::{EvalError, Result};

/// One RGB frame, row-major `[H, W, 3]` uint8.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

impl Frame {
    pub fn new(height: usize, width: usize, data: Vec<u8>) -> Result<Self> {
        if data.len() != height * width * 3 || height == 0 || width == 0 {
            return Err(EvalError::Msg(format!(
                "frame of {height}x{width}x3 needs {} bytes, found {}",
                height * width * 3,
                data.len()
            )));
        }
        Ok(Frame { height, width, data })
    }
}

/// Lists the items under PATH (nothing decoded yet).
pub fn open_items(path: &Path, frames_per_video: Option<usize>) -> Result<ItemSet> {
    Ok(ItemSet::open(path, frames_per_video)?)
}

/// The frames of a decoded item.
pub fn frames_of(item: &Item) -> Vec<Frame> {
    let v = &item.video;
    (0..v.frames()).map(|i| Frame { height: v.height(), width: v.width(), data: v.frame(i).to_vec() }).collect()
}
