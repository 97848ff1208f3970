//! One conformance battery for both queues (SQLite always; PostgreSQL when
//! WANRT_TEST_POSTGRES is set, as in CI): batching by key, claim fencing, cancels that
//! beat completion, re-queues, lease expiry, listing.

use std::sync::Arc;

use wanrt_serve::job::{new_id, now, JobParams, Status};
use wanrt_serve::queue::{Ack, Finished, NewJob, Outcome, Queue, Submitted};

fn job(prompt: &str, steps: usize) -> NewJob {
    NewJob {
        id: new_id(),
        owner: None,
        params: JobParams {
            model: "demo".into(),
            prompt: prompt.into(),
            negative_prompt: String::new(),
            width: 32,
            height: 32,
            num_frames: 17,
            num_inference_steps: steps,
            guidance_scale: 4.0,
            seed: 1,
            fps: 8.0,
            warnings: vec![],
            loras: vec![],
            image: None,
            last_image: None,
        },
        created_at: now(),
    }
}

fn submit(q: &dyn Queue, j: &NewJob) -> String {
    match q.submit(j, None).unwrap() {
        Submitted::Queued(r) => r.id,
        Submitted::QueueFull(_) => panic!("queue full"),
    }
}

fn battery(q: Arc<dyn Queue>, lease_expiry: bool) {
    let models = vec!["demo".to_string()];
    // Batching: the oldest job, then only jobs with its key (same steps here), oldest first.
    let a = submit(&*q, &job("a", 4));
    let b = submit(&*q, &job("b", 8));
    let c = submit(&*q, &job("c", 4));
    let d = submit(&*q, &job("d", 4));
    assert!(q.claim("w", &["other".to_string()], 4, 30.0).unwrap().is_empty(), "only the worker's models");
    let batch = q.claim("w", &models, 2, 30.0).unwrap();
    let ids: Vec<&str> = batch.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [a.as_str(), c.as_str()]);
    assert!(batch.iter().all(|c| c.attempts == 1));
    assert_eq!(q.get(&a).unwrap().unwrap().status, Status::InProgress);
    // A second worker gets what is left: b (oldest), alone (d has another key).
    let next = q.claim("w2", &models, 4, 30.0).unwrap();
    assert_eq!(next.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [b.as_str()]);

    // Progress and completion, fenced by the claim token.
    assert_eq!(q.progress(&batch[0], 40, "denoising", 30.0).unwrap(), Ack::Continue);
    let r = q.get(&a).unwrap().unwrap();
    assert_eq!((r.progress, r.stage.as_deref()), (40, Some("denoising")));
    let mut stale = batch[0].clone();
    stale.token = "claim_not-mine".into();
    assert_eq!(q.progress(&stale, 50, "x", 30.0).unwrap(), Ack::Lost);
    assert_eq!(q.finish(&stale, &Outcome::Failed { error: "x".into() }).unwrap(), Finished::Lost);
    let done = Outcome::Completed { timings: serde_json::Map::new() };
    assert_eq!(q.finish(&batch[0], &done).unwrap(), Finished::Recorded);
    assert_eq!(q.finish(&batch[0], &done).unwrap(), Finished::Lost, "completes once");
    let r = q.get(&a).unwrap().unwrap();
    assert_eq!((r.status, r.progress), (Status::Completed, 100));

    // A cancel while running: the worker hears it, and a completion becomes a cancel.
    let cancelled = q.cancel(&c, false).unwrap().unwrap();
    assert_eq!(cancelled.status, Status::InProgress);
    assert_eq!(q.progress(&batch[1], 10, "denoising", 30.0).unwrap(), Ack::Cancel);
    assert_eq!(q.finish(&batch[1], &done).unwrap(), Finished::Cancelled);
    assert_eq!(q.get(&c).unwrap().unwrap().status, Status::Cancelled);

    // Re-queue on shutdown does not count the attempt; a queued job cancels at once.
    assert_eq!(q.finish(&next[0], &Outcome::Requeue).unwrap(), Finished::Recorded);
    let r = q.get(&b).unwrap().unwrap();
    assert_eq!((r.status, r.attempts), (Status::Queued, 0));
    assert_eq!(q.cancel(&d, true).unwrap().unwrap().status, Status::Cancelled);
    assert!(q.get(&d).unwrap().is_none(), "deleted");
    assert!(q.cancel(&d, true).unwrap().is_none());

    // Listing: newest first, deleted ones left out, paged by id.
    let page = q.list(None, None, 2).unwrap();
    assert_eq!(page.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [c.as_str(), b.as_str()]);
    assert!(page.has_more);
    let page = q.list(None, Some(&b), 2).unwrap();
    assert_eq!(page.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [a.as_str()]);
    assert!(!page.has_more);
    let counts = q.counts().unwrap();
    let n = |s: Status| counts.iter().find(|c| c.0 == s).unwrap().1;
    assert_eq!((n(Status::Queued), n(Status::Completed), n(Status::Cancelled)), (1, 1, 2));

    if lease_expiry {
        // A claim whose lease runs out goes back to the queue once; its holder lost it.
        let held = q.claim("dead", &models, 1, 0.2).unwrap();
        assert_eq!(held[0].id, b);
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert_eq!(q.requeue_expired().unwrap(), std::slice::from_ref(&b));
        assert_eq!(q.progress(&held[0], 50, "denoising", 30.0).unwrap(), Ack::Lost);
        let again = q.claim("alive", &models, 1, 30.0).unwrap();
        assert_eq!((again[0].id.as_str(), again[0].attempts), (b.as_str(), 2));
        assert_eq!(q.finish(&held[0], &done).unwrap(), Finished::Lost, "the dead worker cannot complete it");
        assert_eq!(q.finish(&again[0], &done).unwrap(), Finished::Recorded);
    }
}

#[test]
fn sqlite_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let q = Arc::new(wanrt_serve::queue::sqlite::SqliteQueue::open(&tmp.path().join("q.sqlite")).unwrap());
    battery(q, false);
}

#[test]
fn sqlite_recovers_jobs_of_a_dead_process() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("q.sqlite");
    let id = {
        let q = wanrt_serve::queue::sqlite::SqliteQueue::open(&path).unwrap();
        let id = submit(&q, &job("x", 4));
        q.claim("w", &["demo".to_string()], 1, 30.0).unwrap();
        id
    };
    let q = wanrt_serve::queue::sqlite::SqliteQueue::open(&path).unwrap();
    let r = q.get(&id).unwrap().unwrap();
    assert_eq!((r.status, r.attempts), (Status::Queued, 1));
    assert_eq!(q.claim("w", &["demo".to_string()], 1, 30.0).unwrap()[0].attempts, 2);
}

#[test]
fn postgres_queue() {
    let Ok(admin) = std::env::var("WANRT_TEST_POSTGRES") else {
        assert!(std::env::var_os("CI").is_none(), "WANRT_TEST_POSTGRES is not set (.ci/run sets it)");
        eprintln!("skipped: WANRT_TEST_POSTGRES is not set");
        return;
    };
    let name = format!("wanrt_queue_{}_{}", std::process::id(), rand::random::<u32>());
    let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    {
        let q = Arc::new(wanrt_serve::queue::postgres::PgQueue::open(&url, 2).unwrap());
        battery(q, true);
    }
    c.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).unwrap();
}
