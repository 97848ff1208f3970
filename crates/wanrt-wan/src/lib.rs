//! wanrt-wan
