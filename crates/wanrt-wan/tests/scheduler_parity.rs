//! Scheduler steps against diffusers given the reference model outputs.

mod common;
use common::{assert_close, fixture, Reference};
use wanrt_nn::Tensor;
use wanrt_wan::scheduler::SchedulerConfig;

fn check_case(case: &str) {
    let r = Reference::load(case);
    let json = std::fs::read_to_string(fixture(case).join("scheduler/scheduler_config.json")).unwrap();
    let cfg = SchedulerConfig { json: serde_json::from_str(&json).unwrap() };
    let steps = r.steps();
    let mut sched = cfg.build(steps, None, None).unwrap();
    let ts = Tensor::new([steps], sched.timesteps().to_vec()).unwrap();
    assert_close(&format!("{case} sched.timesteps"), &ts, &r.get("sched.timesteps"), 1e-3, 1e-12);
    let sig = Tensor::new([steps + 1], sched.sigmas().to_vec()).unwrap();
    assert_close(&format!("{case} sched.sigmas"), &sig, &r.get("sched.sigmas"), 1e-6, 1e-12);
    let mut latent = r.get("step0.latent_in");
    for i in 0..steps {
        latent = sched.step(&r.get(&format!("step{i}.noise_pred")), &latent).unwrap();
        assert_close(
            &format!("{case} step{i}.latent_out"),
            &latent,
            &r.get(&format!("step{i}.latent_out")),
            1e-5,
            1e-11,
        );
    }
}

#[test]
fn unipc_case_a() {
    check_case("a");
}

#[test]
fn euler_case_b() {
    check_case("b");
}

#[test]
fn unipc_case_c() {
    check_case("c");
}
