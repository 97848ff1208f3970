//! wanrt-io
