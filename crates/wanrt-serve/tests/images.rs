//! Image inputs through the HTTP API: an image-to-video job uploaded as a multipart file, and a
//! first-last-frame job sent as JSON (data: URL and plain base64), make the MP4s that
//! `wanrt generate --image [--last-image]` writes, byte for byte; every refusal is one 400 naming
//! the field, with nothing queued; a job's stored images go when it ends or is deleted.

mod common;

use std::path::Path;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};
use wanrt_wan::pipeline::GenerateParams;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A PNG of `w`×`h` pixels (a diagonal ramp, which compresses well), as bytes.
fn png(dir: &Path, w: usize, h: usize) -> Vec<u8> {
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| ((i / 3) % w + (i / 3) / w) as u8).collect();
    let p = dir.join(format!("gradient-{w}x{h}.png"));
    wanrt_media::write_png(&p, &rgb, w, h).unwrap();
    std::fs::read(p).unwrap()
}

/// Input images left in the outputs folder.
fn stored_inputs(out: &Path) -> Vec<String> {
    let (_, other) = outputs(out);
    other.into_iter().filter(|n| n.ends_with(".input_reference") || n.ends_with(".last_image")).collect()
}

/// A request refused: (model, files uploaded, more JSON fields, the param named, words the message has).
type Refusal<'a> = (&'a str, Vec<(&'a str, &'a [u8])>, Value, &'a str, &'a [&'a str]);

async fn count_jobs(s: &TestServer) -> usize {
    let (st, v) = s.get("/v1/videos?limit=100").await;
    assert_eq!(st, 200, "{v}");
    v["data"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_image_jobs_are_generate_image_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let (i2v, flf) = (fixture("wan_i2v/i2v_a"), fixture("wan_i2v/flf2v_a"));
    let mut a = args(tmp.path());
    a.models.extend([i2v.clone(), flf.clone()]);
    let s = start(&a).await;

    // I2V, the image uploaded as OpenAI's input_reference; no size: the video takes the image's.
    let image = std::fs::read(i2v.join("image.png")).unwrap();
    let fields = [
        ("prompt", "a small red fox runs through the snowy forest"),
        ("model", "i2v_a"),
        ("num_frames", "9"),
        ("num_inference_steps", "3"),
        ("guidance_scale", "5"),
        ("seed", "7"),
    ];
    let (ct, body) = multipart(&fields, &[("input_reference", &image)]);
    let (st, v) = s.post_raw("/v1/videos", &ct, body).await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["size"], "48x32", "the image's size: {v}");
    assert_eq!(
        (v["parameters"]["input_reference"]["width"].as_u64(), v["parameters"]["last_image"].is_null()),
        (Some(48), true)
    );
    let i2v_id = v["id"].as_str().unwrap().to_string();

    // FLF2V in JSON: the first frame as a data: URL, the last as plain base64.
    let (first, last) =
        (std::fs::read(flf.join("image.png")).unwrap(), std::fs::read(flf.join("last_image.png")).unwrap());
    let flf_id = s
        .submit(json!({
            "prompt": "a blue bird flying over the ocean", "model": "flf2v_a", "num_frames": 13,
            "num_inference_steps": 3, "guidance_scale": 4, "seed": 11,
            "input_reference": format!("data:image/png;base64,{}", b64(&first)), "last_image": b64(&last),
        }))
        .await;

    for id in [&i2v_id, &flf_id] {
        let v = s.wait_done(id).await;
        assert_eq!(v["status"], "completed", "{v}");
    }
    let (_, _, served_i2v) = s.get_bytes(&format!("/v1/videos/{i2v_id}/content")).await;
    let (_, _, served_flf) = s.get_bytes(&format!("/v1/videos/{flf_id}/content")).await;
    // The finished jobs' images are gone; only the videos remain.
    assert!(stored_inputs(&a.outputs).is_empty(), "{:?}", outputs(&a.outputs));
    s.shutdown().await;

    // `wanrt generate --model i2v_a --image image.png --frames 9 --steps 3 --guidance 5 --seed 7`
    let gp = GenerateParams {
        num_frames: Some(9),
        steps: Some(3),
        guidance: Some(5.0),
        seed: 7,
        image: Some(read_rgb(&i2v.join("image.png"))),
        ..GenerateParams::new("a small red fox runs through the snowy forest")
    };
    assert!(served_i2v == generate_mp4(&i2v, &gp, tmp.path()), "served I2V MP4 differs from generate's");
    let gp = GenerateParams {
        num_frames: Some(13),
        steps: Some(3),
        guidance: Some(4.0),
        seed: 11,
        image: Some(read_rgb(&flf.join("image.png"))),
        last_image: Some(read_rgb(&flf.join("last_image.png"))),
        ..GenerateParams::new("a blue bird flying over the ocean")
    };
    assert!(served_flf == generate_mp4(&flf, &gp, tmp.path()), "served FLF2V MP4 differs from generate's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_refusals_name_the_field_and_queue_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (i2v, flf) = (fixture("wan_i2v/i2v_a"), fixture("wan_i2v/flf2v_a"));
    let mut a = args(tmp.path());
    a.models.extend([i2v.clone(), flf.clone()]);
    a.workers = 0;
    a.max_image_bytes = 6000;
    let s = start(&a).await;
    let (small, wide, odd) = (png(tmp.path(), 48, 32), png(tmp.path(), 5000, 1), png(tmp.path(), 47, 33));
    assert!([&small, &wide, &odd].iter().all(|p| p.len() < 6000), "{} {} {}", small.len(), wide.len(), odd.len());
    // Over --max-image-bytes, refused on its length whatever it holds.
    let big = vec![0u8; 7000];
    let (small_b64, wide_b64, odd_b64) = (b64(&small), b64(&wide), b64(&odd));

    let cases: Vec<Refusal> = vec![
        ("demo", vec![("input_reference", &small)], json!({}), "input_reference", &["text-to-video"]),
        ("demo", vec![], json!({"image": small_b64}), "image", &["text-to-video", "takes no image"]),
        ("i2v_a", vec![], json!({}), "input_reference", &["needs input_reference"]),
        ("i2v_a", vec![("input_reference", b"not an image")], json!({}), "input_reference", &["PNG/JPEG"]),
        ("i2v_a", vec![("input_reference", &big)], json!({}), "input_reference", &["6000 bytes"]),
        ("i2v_a", vec![], json!({"input_reference": b64(&big)}), "input_reference", &["6000 bytes"]),
        ("i2v_a", vec![("input_reference", &wide)], json!({}), "input_reference", &["5000×1", "4096"]),
        ("i2v_a", vec![], json!({"input_reference": wide_b64}), "input_reference", &["4096"]),
        ("i2v_a", vec![], json!({"input_reference": odd_b64}), "input_reference", &["multiples of 16", "give size"]),
        (
            "i2v_a",
            vec![("input_reference", &small), ("last_image", &small)],
            json!({}),
            "last_image",
            &["takes no last_image"],
        ),
        ("flf2v_a", vec![("input_reference", &small)], json!({}), "last_image", &["needs last_image"]),
        ("flf2v_a", vec![("last_image", &small)], json!({}), "last_image", &["needs input_reference"]),
        ("i2v_a", vec![], json!({"input_reference": "https://example.com/a.png"}), "input_reference", &["not fetched"]),
        ("i2v_a", vec![], json!({"input_reference": "data:image/png,AAAA"}), "input_reference", &["base64"]),
        ("i2v_a", vec![], json!({"input_reference": 5}), "input_reference", &["must be a file"]),
        ("i2v_a", vec![("prompt", &small)], json!({}), "prompt", &["not a file upload"]),
        ("i2v_a", vec![("image", &small)], json!({"input_reference": small_b64}), "image", &["not both"]),
    ];
    for (model, files, extra, param, words) in cases {
        let mut body = json!({"prompt": "a fox", "model": model});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (st, v) = if files.is_empty() {
            s.post("/v1/videos", &body).await
        } else {
            let fields: Vec<(String, String)> = body
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), String::from)))
                .collect();
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let (ct, form) = multipart(&fields, &files);
            s.post_raw("/v1/videos", &ct, form).await
        };
        assert_eq!(st, 400, "{model} {param}: {v}");
        assert_eq!(error_of(&v).1.as_deref(), Some(param), "{model}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        eprintln!("{model}, {param}: {msg}");
        for w in words {
            assert!(msg.contains(w), "{model} {param}: '{w}' not in: {msg}");
        }
        assert!(!msg.contains("--image") && !msg.contains("--last-image"), "API words, not flags: {msg}");
    }
    assert_eq!(count_jobs(&s).await, 0);
    assert!(stored_inputs(&a.outputs).is_empty(), "{:?}", outputs(&a.outputs));

    // An image of another size than the one asked for is accepted (resized as generate does, said).
    let (st, v) =
        s.post("/v1/videos", &json!({"prompt": "a fox", "model": "i2v_a", "size": "48x32", "image": b64(&odd)})).await;
    assert_eq!(st, 202, "{v}");
    assert!(v["warnings"].to_string().contains("image is 33×47"), "{v}");
    // Deleting the queued job deletes its stored image.
    let id = v["id"].as_str().unwrap();
    assert_eq!(stored_inputs(&a.outputs), [format!("{id}.input_reference")]);
    let (st, v) = s.delete(&format!("/v1/videos/{id}")).await;
    assert_eq!(st, 200, "{v}");
    assert!(stored_inputs(&a.outputs).is_empty(), "{:?}", outputs(&a.outputs));
    s.shutdown().await;
}

/// A queued image job survives a restart: its image was stored with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_image_job_runs_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let i2v = fixture("wan_i2v/i2v_a");
    let mut a = args(tmp.path());
    a.models.push(i2v.clone());
    a.workers = 0;
    let s = start(&a).await;
    let image = std::fs::read(i2v.join("image.png")).unwrap();
    let body = json!({"prompt": "a fox", "model": "i2v_a", "num_frames": 5, "num_inference_steps": 2, "seed": 3,
                      "input_reference": b64(&image)});
    let id = s.submit(body).await;
    s.shutdown().await;

    a.workers = 1;
    let s = start(&a).await;
    let v = s.wait_done(&id).await;
    assert_eq!(v["status"], "completed", "{v}");
    let (_, _, served) = s.get_bytes(&format!("/v1/videos/{id}/content")).await;
    s.shutdown().await;
    let gp = GenerateParams {
        num_frames: Some(5),
        steps: Some(2),
        seed: 3,
        image: Some(read_rgb(&i2v.join("image.png"))),
        ..GenerateParams::new("a fox")
    };
    assert!(served == generate_mp4(&i2v, &gp, tmp.path()), "the re-started job's video is generate's");
    assert!(stored_inputs(&a.outputs).is_empty(), "{:?}", outputs(&a.outputs));
}
