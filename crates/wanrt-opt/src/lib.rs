//! wanrt-opt
