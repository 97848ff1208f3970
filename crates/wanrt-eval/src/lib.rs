//! wanrt-eval
