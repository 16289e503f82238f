//! Queue and rate-limiter tests against the local Redis (127.0.0.1:6379 only), each under its own
//! key prefix; they remove their own keys and never flush the database (other tests share it).
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use apalis::prelude::*;
use chrono::Utc;
use redis::AsyncCommands;
use sync_core::jobs::{AggregateRunJob, Job, JobQueue, PushJob, TicketJob};
use worker::{RedisQueue, RedisRateLimiter, connect_redis};

const REDIS_URL: &str = "redis://127.0.0.1:6379";

fn unique_prefix(test: &str) -> String {
    format!("test-worker-{test}-{}", uuid::Uuid::new_v4().simple())
}

/// Removes every key under the prefix when dropped (SCAN + DEL; no FLUSHDB).
struct Cleanup {
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.prefix);
        let Ok(client) = redis::Client::open(REDIS_URL) else { return };
        let Ok(mut conn) = client.get_connection() else { return };
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut conn).unwrap_or_default();
        for chunk in keys.chunks(100) {
            let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
        // apalis registers every queue's worker set in a global sorted set.
        let queues: Vec<String> = redis::cmd("ZRANGE").arg("core:apalis:queues:list").arg(0).arg(-1).query(&mut conn).unwrap_or_default();
        let ours: Vec<&String> = queues.iter().filter(|q| q.starts_with(&format!("{}:", self.prefix))).collect();
        if !ours.is_empty() {
            let _: Result<(), _> = redis::cmd("ZREM").arg("core:apalis:queues:list").arg(ours).query(&mut conn);
        }
    }
}

async fn queue(test: &str) -> (RedisQueue, Cleanup) {
    let prefix = unique_prefix(test);
    let conn = connect_redis(REDIS_URL).await.expect("Redis at 127.0.0.1:6379");
    (RedisQueue::from_connection(conn, &prefix), Cleanup { prefix })
}

fn depth_of(depth: &[(String, u64)], name: &str) -> u64 {
    depth.iter().find(|(q, _)| q == name).map(|(_, n)| *n).unwrap_or_else(|| panic!("no queue {name} in {depth:?}"))
}

#[tokio::test]
async fn enqueued_jobs_wait_in_their_own_prefixed_queues() {
    let (q, _cleanup) = queue("depth").await;
    q.ping().await.expect("ping");
    for push_id in 1..=3 {
        q.enqueue(Job::Push(PushJob { push_id })).await.expect("enqueue push");
    }
    q.enqueue(Job::AggregateRun(AggregateRunJob { run_id: 7 })).await.expect("enqueue aggregate");

    let depth = q.depth().await.expect("depth");
    assert_eq!(depth_of(&depth, "push"), 3, "{depth:?}");
    assert_eq!(depth_of(&depth, "aggregate"), 1, "{depth:?}");
    assert_eq!(depth_of(&depth, "ticket"), 0, "{depth:?}");
    assert_eq!(depth_of(&depth, "catalog"), 0, "{depth:?}");

    // The keys live under the prefix; immediate jobs are on the ready list at once.
    let mut conn = q.connection();
    let ready: u64 = conn.llen(format!("{}:push:active", q.prefix())).await.expect("llen");
    let waiting: u64 = conn.zcard(format!("{}:push:scheduled", q.prefix())).await.expect("zcard");
    assert_eq!((ready, waiting), (3, 0));

    // Another prefix on the same Redis sees nothing.
    let (other, _cleanup_other) = queue("depth-other").await;
    let depth = other.depth().await.expect("depth");
    assert!(depth.iter().all(|(_, n)| *n == 0), "{depth:?}");
}

#[tokio::test]
async fn a_worker_receives_enqueued_jobs() {
    let (q, _cleanup) = queue("deliver").await;
    let seen = Arc::new(Mutex::new(Vec::<i64>::new()));

    async fn handle(job: TicketJob, seen: Data<Arc<Mutex<Vec<i64>>>>) -> Result<(), BoxDynError> {
        seen.lock().unwrap().push(job.push_id);
        Ok(())
    }
    let worker = WorkerBuilder::new(format!("{}-deliver", worker::worker_name()))
        .backend(q.ticket_storage().poll_with_interval(Duration::from_millis(100)))
        .data(seen.clone())
        .build(handle);
    let running = tokio::spawn(async move { worker.run().await });

    for push_id in [11, 12, 13] {
        q.enqueue(Job::Ticket(TicketJob { push_id })).await.expect("enqueue");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut got = seen.lock().unwrap().clone();
        got.sort_unstable();
        if got == [11, 12, 13] {
            break;
        }
        assert!(Instant::now() < deadline, "jobs not delivered: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let depth = q.depth().await.expect("depth");
    assert_eq!(depth_of(&depth, "ticket"), 0, "{depth:?}");
    running.abort();
}

#[tokio::test]
async fn enqueue_at_is_not_delivered_early() {
    let (q, _cleanup) = queue("delayed").await;
    let at = Utc::now() + chrono::Duration::milliseconds(2_500);
    q.enqueue_after(Job::Push(PushJob { push_id: 99 }), Duration::from_millis(2_500)).await.expect("enqueue_after");
    // A job due now goes straight to the ready list.
    q.enqueue(Job::Push(PushJob { push_id: 1 })).await.expect("now");

    let stats = q.stats().await.expect("stats");
    let push = stats.iter().find(|s| s.queue == "push").expect("push stats");
    assert_eq!((push.ready, push.scheduled), (1, 1), "{stats:?}");

    type Handled = Arc<Mutex<Vec<(i64, chrono::DateTime<Utc>)>>>;
    let handled: Handled = Arc::default();
    async fn handle(job: PushJob, handled: Data<Handled>) -> Result<(), BoxDynError> {
        handled.lock().unwrap().push((job.push_id, Utc::now()));
        Ok(())
    }
    let worker = WorkerBuilder::new(format!("{}-delayed", worker::worker_name()))
        .backend(q.push_storage().poll_with_interval(Duration::from_millis(50)))
        .data(handled.clone())
        .build(handle);
    let running = tokio::spawn(async move { worker.run().await });

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = handled.lock().unwrap().clone();
        if let Some((_, when)) = got.iter().find(|(id, _)| *id == 99) {
            assert!(*when >= at, "delivered at {when}, before its time {at}");
            assert!(got.iter().any(|(id, _)| *id == 1), "the due job ran too: {got:?}");
            break;
        }
        if let Some((_, first)) = got.iter().find(|(id, _)| *id == 1) {
            // The due job ran promptly while the delayed one still waited.
            assert!(*first < at, "the job due now waited for the delayed one");
        }
        assert!(Instant::now() < deadline, "delayed job never delivered: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.abort();
}

#[tokio::test]
async fn two_rate_limiters_share_one_budget_per_tenant() {
    let (q, _cleanup) = queue("rate").await;
    const PER_SECOND: u32 = 5;
    let a = Arc::new(RedisRateLimiter::for_queue(&q, PER_SECOND));
    let b = Arc::new(RedisRateLimiter::new(connect_redis(REDIS_URL).await.expect("redis"), q.prefix(), PER_SECOND));
    use sync_core::engine::TenantRateLimiter;

    let start = Instant::now();
    let admitted = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
        let admitted = admitted.clone();
        tasks.push(tokio::spawn(async move {
            limiter.acquire(42).await;
            admitted.lock().unwrap().push(start.elapsed());
        }));
    }
    // Another tenant is not slowed down by tenant 42's queue.
    let other = Instant::now();
    a.acquire(43).await;
    assert!(other.elapsed() < Duration::from_millis(500), "tenant 43 waited {:?}", other.elapsed());

    for t in tasks {
        t.await.expect("task");
    }
    let mut times = admitted.lock().unwrap().clone();
    times.sort();
    assert_eq!(times.len(), 16);
    // At most PER_SECOND admissions in any one-second window (a little slack for the round trip
    // between Redis's clock and ours).
    let n = PER_SECOND as usize;
    for w in times.windows(n + 1) {
        let span = w[n] - w[0];
        assert!(span >= Duration::from_millis(900), "{} admissions within {span:?}: {times:?}", n + 1);
    }
    // 16 requests at 5/s need at least three full windows after the first burst.
    assert!(times[15] >= Duration::from_millis(2_900), "{times:?}");
}

#[tokio::test]
async fn the_rate_limiter_fails_open_when_redis_is_unreachable() {
    use sync_core::engine::TenantRateLimiter;
    let client = redis::Client::open("redis://127.0.0.1:1").expect("url");
    let config =
        redis::aio::ConnectionManagerConfig::new().set_connection_timeout(Some(Duration::from_millis(200))).set_number_of_retries(0);
    let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, config).expect("lazy manager");
    let limiter = RedisRateLimiter::new(conn, "unreachable", 100);
    let started = Instant::now();
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), limiter.acquire(1)).await.expect("acquire returns without Redis");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_error() {
    let started = Instant::now();
    let err = connect_redis("redis://127.0.0.1:1").await.expect_err("nothing listens on port 1");
    let text = format!("{err:?}");
    assert!(text.contains("cannot connect to Redis at redis://127.0.0.1:1"), "{text}");
    assert!(text.contains("caused by"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());

    let err = connect_redis("redis://:hunter2@127.0.0.1:1").await.expect_err("unreachable");
    assert!(!format!("{err:?}").contains("hunter2"), "password leaked: {err:?}");
}

#[tokio::test]
async fn release_workers_requeues_in_flight_jobs_and_deregisters_only_ours() {
    let (q, _cleanup) = queue("release").await;
    let p = q.prefix().to_string();
    let mut conn = q.connection();
    let now = Utc::now().timestamp();
    for name in ["host-1-aaaa:push", "host-1-aaaa:push:r1", "host-2-bbbb:push"] {
        let _: () = conn.zadd(format!("{p}:push:workers"), name, now).await.expect("zadd");
        let _: () = conn.hset(format!("{p}:push:workers:metadata:{name}"), "service", "x").await.expect("hset");
    }
    let _: () = conn.sadd(format!("{p}:push:inflight:host-1-aaaa:push:r1"), "TASK-1").await.expect("sadd");
    let _: () = conn.sadd(format!("{p}:push:inflight:host-2-bbbb:push"), "TASK-2").await.expect("sadd");

    assert_eq!(q.release_workers("host-1-aaaa").await.expect("release"), 1);

    let active: Vec<String> = conn.lrange(format!("{p}:push:active"), 0, -1).await.expect("lrange");
    assert_eq!(active, ["TASK-1"]);
    let workers: Vec<String> = conn.zrange(format!("{p}:push:workers"), 0, -1).await.expect("zrange");
    assert_eq!(workers, ["host-2-bbbb:push"]);
    let left: bool = conn.exists(format!("{p}:push:workers:metadata:host-1-aaaa:push")).await.expect("exists");
    assert!(!left);
    let other: u64 = conn.scard(format!("{p}:push:inflight:host-2-bbbb:push")).await.expect("scard");
    assert_eq!(other, 1, "another process's in-flight jobs are not touched");
}

/// apalis-redis's own fetch moves every due job to the ready list with one Lua `unpack`, which fails
/// beyond ~8,000 ids (a run enqueueing 20,000 pushes wedged its queue). Immediate jobs therefore go
/// straight to the ready list, and due delayed jobs are moved by `promote_due` in bounded batches.
#[tokio::test]
async fn thousands_of_due_jobs_reach_the_ready_list_in_bounded_batches() {
    use futures::StreamExt;
    let (q, cleanup) = queue("promote").await;
    let n: i64 = 9_000;
    let results: Vec<_> =
        futures::stream::iter(1..=n).map(|push_id| q.enqueue(Job::Push(PushJob { push_id }))).buffer_unordered(64).collect().await;
    assert!(results.iter().all(Result::is_ok));
    let due = Utc::now() - chrono::Duration::seconds(5);
    let results: Vec<_> = futures::stream::iter(n + 1..=2 * n)
        .map(|push_id| q.push_job(Job::Push(PushJob { push_id }), Some(due)))
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(results.iter().all(Result::is_ok));

    let mut conn = connect_redis(REDIS_URL).await.expect("redis");
    let active = format!("{}:push:active", cleanup.prefix);
    let scheduled = format!("{}:push:scheduled", cleanup.prefix);
    let ready: u64 = conn.llen(&active).await.expect("llen");
    let waiting: u64 = conn.zcard(&scheduled).await.expect("zcard");
    assert_eq!((ready, waiting), (n as u64, n as u64), "immediate jobs are ready at once, delayed ones wait");

    assert_eq!(q.promote_due().await.expect("promote"), n as u64);
    let ready: u64 = conn.llen(&active).await.expect("llen");
    let waiting: u64 = conn.zcard(&scheduled).await.expect("zcard");
    assert_eq!((ready, waiting), (2 * n as u64, 0));
}
