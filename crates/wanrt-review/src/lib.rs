//! wanrt-review
