//! wanrt-nn
