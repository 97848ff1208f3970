//! Image-to-video and first-last-frame models against diffusers' `WanImageToVideoPipeline`, stage
//! by stage (image encoder, image latent + mask, one transformer pass, final frames), and the
//! refusals of images a model cannot take. Fixtures: `tools/fixtures/make_wan_i2v_fixtures.py`.
// Tests read values to compare them; the lint forbids it in model code only.
#![allow(clippy::disallowed_methods)]

mod common;
use common::{assert_close, fixture, fixture_in, host, Reference};
use wanrt_wan::image::RgbImage;
use wanrt_wan::model::WanModel;
use wanrt_wan::pipeline::GenerateParams;

fn read_png(path: &std::path::Path) -> RgbImage {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_rgb8();
    RgbImage::new(img.height() as usize, img.width() as usize, img.into_raw()).unwrap()
}

struct Case {
    model: WanModel,
    r: Reference,
    params: GenerateParams,
}

fn load(case: &str) -> Case {
    let dir = fixture_in("wan_i2v", case);
    let r = Reference::load_dir(&dir);
    let model = WanModel::load(&dir, |_| {}).unwrap();
    let images: Vec<RgbImage> =
        r.meta["images"].as_array().unwrap().iter().map(|f| read_png(&dir.join(f.as_str().unwrap()))).collect();
    let mut params = r.generate_params();
    params.image = images.first().cloned();
    params.last_image = images.get(1).cloned();
    params.height = Some(r.meta["height"].as_u64().unwrap() as usize);
    params.width = Some(r.meta["width"].as_u64().unwrap() as usize);
    params.num_frames = Some(r.meta["num_frames"].as_u64().unwrap() as usize);
    Case { model, r, params }
}

fn check_stages(case: &str) {
    let Case { model, r, params } = load(case);
    let image_be = &**model.image_encoder.as_ref().unwrap().clip.backend();
    let states = model.encode_images(params.image.as_ref().unwrap(), params.last_image.as_ref()).unwrap();
    assert_close(&format!("{case} image encoder"), &host(image_be, &states), &r.get("clip.image_embeds"), 1e-5, 1e-10);

    let s = model.resolve(&params).unwrap();
    let be = &**model.transformer.backend();
    let condition = model.image_latent(&s, params.image.as_ref().unwrap(), params.last_image.as_ref()).unwrap();
    assert_close(&format!("{case} mask + image latent"), &host(be, &condition), &r.get("condition"), 1e-5, 1e-10);

    // One transformer pass from the reference's own inputs: the conditional prediction of step 0.
    let text = be.upload(&r.get("text.prompt_embeds")).unwrap();
    let context = model.transformer.prepare_context(&text, Some(&be.upload(&r.get("image_embeds")).unwrap())).unwrap();
    let condition = be.upload(&r.get("condition")).unwrap();
    let latents = be.upload(&r.get("step0.latent_in")).unwrap();
    let input = be.cat(&[&latents, &condition], 1).unwrap();
    let t = r.get("step0.timestep").data()[0];
    let pred = model.transformer.forward_prepared(&input, &[t], &context).unwrap();
    assert_close(&format!("{case} transformer"), &host(be, &pred), &r.get("step0.noise_pred_cond"), 1e-5, 1e-10);
}

fn check_pipeline(case: &str) {
    let Case { model, r, params } = load(case);
    let out = model.generate(&params, &mut ()).unwrap();
    let last = r.steps_recorded() - 1;
    let latents = host(&**model.transformer.backend(), &out.latents);
    assert_close(&format!("{case} final latents"), &latents, &r.get(&format!("step{last}.latent_out")), 1e-4, 1e-9);
    assert_close(&format!("{case} video"), &out.video, &r.get("video"), 1e-4, 1e-9);
}

#[test]
fn i2v_stages() {
    check_stages("i2v_a");
}

#[test]
fn i2v_pipeline() {
    check_pipeline("i2v_a");
}

#[test]
fn flf2v_stages() {
    check_stages("flf2v_a");
}

#[test]
fn flf2v_pipeline() {
    check_pipeline("flf2v_a");
}

#[test]
fn i2v_held_out() {
    check_pipeline("i2v_b");
}

#[test]
fn flf2v_held_out() {
    check_pipeline("flf2v_b");
}

fn error_of(model: &WanModel, p: &GenerateParams) -> String {
    match model.resolve(p) {
        Ok(_) => panic!("resolve accepted {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn images_a_model_cannot_take_are_refused_up_front() {
    let Case { model, params, .. } = load("i2v_a");
    let mut p = params.clone();
    p.image = None;
    assert!(error_of(&model, &p).contains("needs --image"));
    let mut p = params.clone();
    p.last_image = p.image.clone();
    assert!(error_of(&model, &p).contains("takes no --last-image"));
    let mut p = params.clone();
    let im = p.image.as_ref().unwrap();
    p.image = Some(RgbImage::new(im.height * 2, im.width, [im.data.clone(), im.data.clone()].concat()).unwrap());
    // Another size than the video's is resized as diffusers does (tests/image_resize.rs), said once.
    let s = model.resolve(&p).unwrap();
    assert_eq!((s.height, s.width), (32, 48));
    assert!(s.warnings.iter().any(|w| w.contains("--image is 64×48 (height×width): resized")), "{:?}", s.warnings);

    let flf = load("flf2v_a");
    let mut p = flf.params.clone();
    p.last_image = None;
    assert!(error_of(&flf.model, &p).contains("needs --last-image"));

    let t2v = WanModel::load(&fixture("a"), |_| {}).unwrap();
    let mut p = Reference::load("a").generate_params();
    p.image = params.image.clone();
    assert!(error_of(&t2v, &p).contains("text-to-video model"));
}

/// Without --height/--width an image-to-video run takes its size from the image.
#[test]
fn size_defaults_to_the_image() {
    let Case { model, params, .. } = load("i2v_a");
    let im = params.image.clone().unwrap();
    let p = GenerateParams { height: None, width: None, noise: None, ..params };
    let s = model.resolve(&p).unwrap();
    assert_eq!((s.height, s.width), (im.height, im.width));
}
