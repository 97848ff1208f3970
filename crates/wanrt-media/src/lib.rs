//! wanrt-media
