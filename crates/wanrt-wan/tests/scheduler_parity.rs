//! Scheduler steps against diffusers given the reference model outputs.
// Tests read values to compare them; the lint forbids it in model code only.
#![allow(clippy::disallowed_methods)]

mod common;
use common::{assert_close, cpu, fixture, host, Reference};
use wanrt_nn::HostTensor;
use wanrt_wan::scheduler::SchedulerConfig;

fn check_case(case: &str) {
    let r = Reference::load(case);
    let json = std::fs::read_to_string(fixture(case).join("scheduler/scheduler_config.json")).unwrap();
    let cfg = SchedulerConfig { json: serde_json::from_str(&json).unwrap() };
    let steps = r.steps();
    let mut sched = cfg.build(steps, None, None).unwrap();
    let ts = HostTensor::new([steps], sched.timesteps().to_vec()).unwrap();
    assert_close(&format!("{case} sched.timesteps"), &ts, &r.get("sched.timesteps"), 1e-3, 1e-12);
    let sig = HostTensor::new([steps + 1], sched.sigmas().to_vec()).unwrap();
    assert_close(&format!("{case} sched.sigmas"), &sig, &r.get("sched.sigmas"), 1e-6, 1e-12);
    let be = cpu();
    let mut latent = be.upload(&r.get("step0.latent_in")).unwrap();
    for i in 0..steps {
        let noise_pred = be.upload(&r.get(&format!("step{i}.noise_pred"))).unwrap();
        latent = sched.step(&*be, &noise_pred, &latent).unwrap();
        assert_close(
            &format!("{case} step{i}.latent_out"),
            &host(&*be, &latent),
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
