//! Evaluation items, per DESIGN.md's eval contract.
//!
//! PATH is a file or a folder. A file is one item. In a folder, each image file
//! (`png`, `jpg`, `jpeg`) is a one-frame item, each video file (`mp4`, `gif`, `npy`) is
//! one item, and each sub-folder of images is one video item whose frames are its
//! images in name order. Keys are paths relative to the folder (`0_0.png`, `clip3.mp4`,
//! `clip4/`); a single file's key is its file name. Keys and frame names are sorted by
//! byte order (Python's `sorted`). Extensions match case-insensitively; names starting
//! with `.` and files of other types (`prompts.json`, …) are skipped.
//!
//! `frames_per_video = Some(K)` keeps frames `round(i·(F−1)/(K−1))`, i = 0…K−1, of each
//! video item ([`pick_frames`]; half to even); one-frame image items are left as they are. A
//! video item with fewer than K frames is an error naming it.
//!
//! [`ItemSet`] lists the items without decoding anything; [`ItemSet::iter`] then decodes
//! them one at a time, so a large set never has to sit in memory at once.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image_dir::{read_image, IMAGE_EXTENSIONS};
use crate::video::{pick_frames, Video};

/// Extensions read as video items (lower case).
pub const VIDEO_EXTENSIONS: &[&str] = &["mp4", "gif", "npy"];

/// One evaluation item: its key and its frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    pub video: Video,
}

/// What an item is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// One file: an image or a video.
    File(PathBuf),
    /// A folder of images, in this order.
    ImageFolder(PathBuf, Vec<PathBuf>),
}

/// An item not yet decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemSource {
    pub key: String,
    pub source: Source,
}

fn ext_of(p: &Path) -> Option<String> {
    p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase())
}

fn is_image(p: &Path) -> bool {
    ext_of(p).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

fn is_video(p: &Path) -> bool {
    ext_of(p).is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.as_str()))
}

/// Reads any supported file (image or video) by its extension.
pub fn read_video(path: impl AsRef<Path>) -> Result<Video> {
    let path = path.as_ref();
    match ext_of(path).as_deref() {
        Some("mp4") => crate::mp4::read_mp4(path),
        Some("gif") => crate::gif::read_gif(path),
        Some("npy") => crate::npy_video::read_npy_video(path),
        Some("png" | "jpg" | "jpeg") => read_image(path),
        _ => Err(Error::invalid(path, "unknown file type: expected .mp4, .gif, .npy, .png, .jpg or .jpeg")),
    }
}

/// Sorted, non-hidden entries of a folder.
fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        out.push((name, e.path()));
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

/// The listed items of a file or folder, decoded on demand.
#[derive(Clone, Debug)]
pub struct ItemSet {
    root: PathBuf,
    items: Vec<ItemSource>,
    frames_per_video: Option<usize>,
}

impl ItemSet {
    /// Lists the items under `path` (see the module docs). Nothing is decoded yet; an
    /// empty folder, an image sub-folder without images or `frames_per_video = Some(0)`
    /// is an error naming the path.
    pub fn open(path: impl AsRef<Path>, frames_per_video: Option<usize>) -> Result<Self> {
        let root = path.as_ref().to_path_buf();
        if frames_per_video == Some(0) {
            return Err(Error::invalid(&root, "--frames-per-video must be at least 1"));
        }
        let meta = std::fs::metadata(&root).map_err(|e| Error::io(&root, e))?;
        let mut items = Vec::new();
        if meta.is_file() {
            if !is_image(&root) && !is_video(&root) {
                return Err(Error::invalid(&root, "unknown file type: expected .mp4, .gif, .npy, .png, .jpg or .jpeg"));
            }
            let key = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            items.push(ItemSource { key, source: Source::File(root.clone()) });
        } else {
            for (name, p) in list_dir(&root)? {
                if p.is_dir() {
                    let frames: Vec<PathBuf> =
                        list_dir(&p)?.into_iter().map(|(_, f)| f).filter(|f| f.is_file() && is_image(f)).collect();
                    if frames.is_empty() {
                        return Err(Error::invalid(
                            &p,
                            "sub-folder has no image files (a sub-folder is one video of .png/.jpg frames)",
                        ));
                    }
                    items.push(ItemSource { key: format!("{name}/"), source: Source::ImageFolder(p, frames) });
                } else if is_image(&p) || is_video(&p) {
                    items.push(ItemSource { key: name, source: Source::File(p) });
                }
            }
            if items.is_empty() {
                return Err(Error::invalid(
                    &root,
                    "folder has no images (.png/.jpg), videos (.mp4/.gif/.npy) or image sub-folders",
                ));
            }
            items.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        }
        Ok(ItemSet { root, items, frames_per_video })
    }

    /// The file or folder this set was listed from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The listed items, in key order.
    pub fn sources(&self) -> &[ItemSource] {
        &self.items
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.items.iter().map(|s| s.key.as_str())
    }

    /// Decodes item `i` (and applies `frames_per_video`). Panics if `i >= len()`.
    pub fn load(&self, i: usize) -> Result<Item> {
        let src = &self.items[i];
        let (video, is_video_item) = match &src.source {
            Source::File(p) => (read_video(p)?, is_video(p)),
            Source::ImageFolder(dir, frames) => (read_image_folder(dir, frames)?, true),
        };
        let video = match self.frames_per_video {
            // More frames than the clip has would only repeat frames (and grow memory with K,
            // not with the input): refused, naming the item.
            Some(k) if is_video_item && k > video.frames() => {
                let path = match &src.source {
                    Source::File(p) => p.as_path(),
                    Source::ImageFolder(d, _) => d.as_path(),
                };
                return Err(Error::invalid(
                    path,
                    format!("--frames-per-video {k} is more than the {} frames this clip has", video.frames()),
                ));
            }
            Some(k) if is_video_item => video.select(&pick_frames(video.frames(), k))?,
            _ => video,
        };
        Ok(Item { key: src.key.clone(), video })
    }

    /// Decodes the items one at a time, in key order.
    pub fn iter(&self) -> impl Iterator<Item = Result<Item>> + '_ {
        (0..self.items.len()).map(move |i| self.load(i))
    }
}

fn read_image_folder(dir: &Path, frames: &[PathBuf]) -> Result<Video> {
    let mut data = Vec::new();
    let mut size = None;
    for f in frames {
        let img = read_image(f)?;
        let s = (img.height(), img.width());
        match size {
            None => size = Some(s),
            Some(first) if first != s => {
                return Err(Error::invalid(
                    f,
                    format!(
                        "frame is {}×{} but earlier frames in {} are {}×{}",
                        s.1,
                        s.0,
                        dir.display(),
                        first.1,
                        first.0
                    ),
                ))
            }
            _ => {}
        }
        data.extend_from_slice(img.data());
    }
    let (h, w) = size.unwrap_or((0, 0));
    Video::new(frames.len(), h, w, data)
}

/// Lists and decodes every item under `path` (see [`ItemSet`] to stream them instead).
pub fn collect_items(path: impl AsRef<Path>, frames_per_video: Option<usize>) -> Result<Vec<Item>> {
    ItemSet::open(path, frames_per_video)?.iter().collect()
}
