//! DESIGN.md's eval item contract.

mod common;

use common::pattern;
use wanrt_media::{collect_items, write_mp4, write_npy_video, write_png, ItemSet, Mp4Options};

#[test]
fn folder_items_keys_and_frames() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let v = pattern(9, 16, 16);
    // Two images, an mp4, an npy, an image sub-folder, a hidden file, a json file.
    write_png(root.join("0_1.png"), v.frame(1), 16, 16).unwrap();
    write_png(root.join("0_0.png"), v.frame(0), 16, 16).unwrap();
    write_mp4(root.join("clip3.mp4"), &v, &Mp4Options::default()).unwrap();
    write_npy_video(root.join("b.npy"), &v).unwrap();
    std::fs::create_dir(root.join("clip4")).unwrap();
    for i in [2, 0, 1] {
        write_png(root.join(format!("clip4/f{i}.png")), v.frame(i), 16, 16).unwrap();
    }
    std::fs::write(root.join("prompts.json"), "{}").unwrap();
    std::fs::write(root.join(".DS_Store"), "x").unwrap();

    let set = ItemSet::open(root, None).unwrap();
    let keys: Vec<&str> = set.keys().collect();
    assert_eq!(keys, ["0_0.png", "0_1.png", "b.npy", "clip3.mp4", "clip4/"]);

    let items = collect_items(root, None).unwrap();
    assert_eq!(items[0].video.frames(), 1);
    assert_eq!(items[0].video.data(), v.frame(0));
    assert_eq!(items[2].video, v);
    assert_eq!(items[3].video.frames(), 9);
    let clip4 = &items[4].video;
    assert_eq!(clip4.frames(), 3);
    for i in 0..3 {
        assert_eq!(clip4.frame(i), v.frame(i), "frames in name order");
    }

    // --frames-per-video 3 over 9 frames: 0, 4, 8; images keep one frame.
    let items = collect_items(root, Some(3)).unwrap();
    assert_eq!(items[0].video.frames(), 1);
    assert_eq!(items[2].video, v.select(&[0, 4, 8]).unwrap());
    assert_eq!(items[4].video.frames(), 3);

    // A single file is one item keyed by its name.
    let one = collect_items(root.join("b.npy"), Some(2)).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].key, "b.npy");
    assert_eq!(one[0].video.frames(), 2);
}

#[test]
fn clear_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let e = collect_items(root, None).unwrap_err().to_string();
    assert!(e.contains(&root.display().to_string()) && e.contains("no images"), "{e}");

    std::fs::create_dir(root.join("empty_clip")).unwrap();
    let e = ItemSet::open(root, None).unwrap_err().to_string();
    assert!(e.contains("empty_clip"), "{e}");
    std::fs::remove_dir(root.join("empty_clip")).unwrap();

    std::fs::write(root.join("broken.mp4"), b"nope").unwrap();
    let set = ItemSet::open(root, None).unwrap();
    let e = set.load(0).unwrap_err().to_string();
    assert!(e.contains("broken.mp4"), "{e}");

    let e = collect_items(root.join("missing.mp4"), None).unwrap_err().to_string();
    assert!(e.contains("missing.mp4"), "{e}");
    let e = ItemSet::open(root, Some(0)).unwrap_err().to_string();
    assert!(e.contains("at least 1"), "{e}");

    // Mismatched frame sizes in an image folder.
    std::fs::remove_file(root.join("broken.mp4")).unwrap();
    std::fs::create_dir(root.join("c")).unwrap();
    let v = pattern(1, 4, 4);
    write_png(root.join("c/a.png"), v.frame(0), 4, 4).unwrap();
    let w = pattern(1, 2, 2);
    write_png(root.join("c/b.png"), w.frame(0), 2, 2).unwrap();
    let e = collect_items(root, None).unwrap_err().to_string();
    assert!(e.contains("b.png"), "{e}");
}
