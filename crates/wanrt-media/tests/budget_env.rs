//! `WANRT_DECODE_BUDGET` replaces the computed budget. One test in its own binary: the variable
//! is process-wide.

mod common;

use common::{pattern, tiny_gif};
use wanrt_media::{read_gif, read_mp4, write_mp4, Mp4Options};

#[test]
fn the_budget_variable_bounds_every_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.mp4");
    write_mp4(&big, &pattern(1, 512, 512), &Mp4Options::default()).unwrap();
    let long = dir.path().join("long.mp4");
    write_mp4(&long, &pattern(40, 128, 128), &Mp4Options::default()).unwrap();
    let gif = dir.path().join("g.gif");
    std::fs::write(&gif, tiny_gif(256, 256, 40)).unwrap();
    // Within the default budget all three decode.
    assert_eq!(read_mp4(&big).unwrap().frames(), 1);
    assert_eq!(read_mp4(&long).unwrap().frames(), 40);
    assert_eq!(read_gif(&gif).unwrap().frames(), 40);

    std::env::set_var("WANRT_DECODE_BUDGET", "1M");
    // The SPS's frame size is refused before the decoder allocates for it.
    let e = read_mp4(&big).unwrap_err().to_string();
    assert!(e.contains("512×512 frames needs") && e.contains("1.0 MiB") && e.contains("WANRT_DECODE_BUDGET"), "{e}");
    // Frames stop when their total passes the budget.
    let e = read_mp4(&long).expect_err("over the budget").to_string();
    assert!(e.contains("frames of 128×128 decode to"), "{e}");
    let e = read_gif(&gif).unwrap_err().to_string();
    assert!(e.contains("frames of 256×256 decode to"), "{e}");
    std::env::remove_var("WANRT_DECODE_BUDGET");
}
