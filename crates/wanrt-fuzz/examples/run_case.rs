//! Runs one input through the harness's reader for its format, to reproduce a failure:
//! `cargo run --release -p wanrt-fuzz --example run_case -- mp4 FILE`.

use std::path::PathBuf;

use wanrt_fuzz::targets::Ctx;
use wanrt_fuzz::Format;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(file)) = (args.get(1), args.get(2)) else {
        eprintln!(
            "usage: run_case FORMAT FILE [SEED_NAME]   (formats: safetensors pth npy npz gif png mp4 tokenizer spiece config)"
        );
        std::process::exit(2);
    };
    let Some(format) = Format::ALL.into_iter().find(|f| f.name() == name) else {
        eprintln!("error: unknown format '{name}'");
        std::process::exit(2);
    };
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let ctx = Ctx::new(&fixtures.join("wan/a"), &fixtures.join("fuzz/spiece/config")).expect("scratch folder");
    let seed_name = args.get(3).map(String::as_str).unwrap_or("model_index.json");
    let path = ctx.case_path(format, seed_name);
    std::fs::copy(file, &path).expect("copy the input");
    match ctx.run(format, &path) {
        Ok(()) => println!("ok"),
        Err(e) => println!("error: {e}"),
    }
}
