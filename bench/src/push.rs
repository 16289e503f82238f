//! Push pipeline: the pushes of one run per push tenant, created by the real `aggregate_run` (into a
//! collecting queue, untimed), then timed from enqueueing them on Redis until every push is final,
//! run by `worker` processes against the fake answering each request after 5 ms. Baseline: a bare
//! concurrent HTTP client doing the same GET + PATCH per addition at the same concurrency.
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fake_connectwise::FakeConnectWise;
use futures::{StreamExt, future::BoxFuture};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sync_core::jobs::{Job, JobQueue, QueueError};

use crate::infra::{Child, Cpu, Infra, Result, fail};
use crate::report::{Row, Series, Target};
use crate::{Extras, Sizes};

/// A queue that keeps the jobs `aggregate_run` enqueues, so their enqueueing can be timed separately.
#[derive(Default)]
struct Collect(Mutex<Vec<Job>>);

impl Collect {
    fn take(&self) -> Vec<Job> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl JobQueue for Collect {
    fn enqueue(&self, job: Job) -> BoxFuture<'_, Result<(), QueueError>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(job);
        Box::pin(async { Ok(()) })
    }
    fn enqueue_after(&self, job: Job, _delay: std::time::Duration) -> BoxFuture<'_, Result<(), QueueError>> {
        self.enqueue(job)
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The push tenants as seeded.
pub struct PushTenants {
    pub tenant_ids: Vec<i64>,
    pub period: domain::Period,
    pub pushes_per_tenant: usize,
}

fn id_list(ids: &[i64]) -> String {
    ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// Recompute (new quantities: every sample grows by one unit) and create one run per tenant with its
/// pushes, in this process. Returns the run ids and the push jobs.
async fn prepare(
    infra: &Infra,
    deps: &sync_core::engine::EngineDeps,
    collect: &Collect,
    p: &PushTenants,
    tenants: &[i64],
) -> Result<(Vec<i64>, Vec<Job>)> {
    infra
        .exec(&format!("UPDATE consumption_samples SET value_micros = value_micros + 1000000 WHERE tenant_id IN ({})", id_list(tenants)))
        .await?;
    let mut runs = Vec::new();
    for &tenant_id in tenants {
        let row = infra
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO sync_runs (tenant_id, period, trigger, dry_run, status, requested_by, started_at) \
                 VALUES ($1, $2, 'MANUAL', FALSE, 'RUNNING', 'bench', now()) RETURNING id",
                [tenant_id.into(), p.period.to_string().into()],
            ))
            .await?
            .ok_or("no run id")?;
        let run_id: i64 = row.try_get("", "id")?;
        sync_core::engine::aggregate::aggregate_run(deps, run_id).await.map_err(|e| format!("aggregate_run: {e}"))?;
        runs.push(run_id);
    }
    let jobs = collect.take();
    let expected = tenants.len() * p.pushes_per_tenant;
    if jobs.len() != expected {
        return fail(format!("aggregation created {} push jobs, expected {expected}", jobs.len()));
    }
    Ok((runs, jobs))
}

/// Enqueue `jobs` on Redis and wait until every run is finished. Returns the seconds taken.
async fn drive(infra: &Infra, queue: &worker::RedisQueue, runs: &[i64], jobs: Vec<Job>, workers: &mut [Child]) -> Result<f64> {
    let started = Instant::now();
    // As `aggregate_run` enqueues them: 32 at a time.
    let enqueued: Vec<Result<(), QueueError>> =
        futures::stream::iter(jobs).map(|job| queue.enqueue(job)).buffer_unordered(32).collect().await;
    for e in enqueued {
        e?;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    // Done = every run finished (its last push's worker finishes it right after that push).
    let pending_sql = format!("SELECT COUNT(*) FROM sync_runs WHERE id IN ({}) AND status = 'RUNNING'", id_list(runs));
    loop {
        if infra.scalar(&pending_sql).await? == 0 {
            break;
        }
        if Instant::now() > deadline {
            return fail("the pushes did not finish within 5 minutes");
        }
        for w in workers.iter_mut() {
            w.check_alive()?;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// After a run of ours: every push succeeded, every run finished, the fake saw exactly one PATCH each.
async fn check(infra: &Infra, fake: &FakeConnectWise, runs: &[i64], expected: usize) -> Result<()> {
    let succeeded =
        infra.scalar(&format!("SELECT COUNT(*) FROM pushes WHERE sync_run_id IN ({}) AND status = 'SUCCEEDED'", id_list(runs))).await?;
    let finished =
        infra.scalar(&format!("SELECT COUNT(*) FROM sync_runs WHERE id IN ({}) AND status = 'SUCCEEDED'", id_list(runs))).await?;
    let patches = fake.patch_count();
    if succeeded as usize != expected || finished as usize != runs.len() || patches != expected {
        return fail(format!(
            "{succeeded} of {expected} pushes succeeded, {finished} of {} runs finished, the fake saw {patches} PATCHes (expected {expected})",
            runs.len()
        ));
    }
    Ok(())
}

/// The baseline: GET + PATCH of every addition with `concurrency` requests in flight.
async fn bare_client(fake: &FakeConnectWise, additions: &[(i64, i64)], concurrency: usize) -> Result<f64> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).tcp_nodelay(true).build()?;
    let base = fake.api_base_url();
    let auth = fake.expected_authorization();
    let client_id = fake.config().client_id.clone();
    let (http, base, auth, client_id) = (&http, &base, &auth, &client_id);
    fake.clear_requests();
    let started = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(additions.iter().copied())
        .map(|(agreement, addition)| async move {
            let url = format!("{base}/finance/agreements/{agreement}/additions/{addition}");
            let got = http
                .get(&url)
                .header("authorization", auth)
                .header("clientId", client_id)
                .header("accept", "application/json")
                .send()
                .await?;
            let status = got.status();
            got.bytes().await?;
            if !status.is_success() {
                return fail(format!("GET {url}: {status}"));
            }
            let patched = http
                .patch(&url)
                .header("authorization", auth)
                .header("clientId", client_id)
                .header("accept", "application/json")
                .header("content-type", "application/json")
                .body(r#"[{"op":"replace","path":"quantity","value":7}]"#)
                .send()
                .await?;
            let status = patched.status();
            patched.bytes().await?;
            if !status.is_success() {
                return fail(format!("PATCH {url}: {status}"));
            }
            Ok(())
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    for r in results {
        r?;
    }
    if fake.patch_count() != additions.len() {
        return fail(format!("the fake saw {} PATCHes from the bare client, expected {}", fake.patch_count(), additions.len()));
    }
    Ok(elapsed)
}

pub async fn run(
    infra: &Infra,
    sizes: &Sizes,
    fake: &FakeConnectWise,
    p: &PushTenants,
    queue: &worker::RedisQueue,
    workers: &mut [Child],
    extras: &mut Extras,
) -> Result<Row> {
    let total = p.tenant_ids.len() * p.pushes_per_tenant;
    let concurrency = sizes.push_workers * sizes.push_concurrency;
    let mut row = Row::new(
        &format!(
            "push pipeline: {} pushes, {} tenants, fake at 5 ms ({} worker × PUSH_CONCURRENCY {}) vs bare client ({concurrency} in flight)",
            crate::report::thousands(total as f64),
            p.tenant_ids.len(),
            sizes.push_workers,
            sizes.push_concurrency
        ),
        Target::Time { max_ratio: Some(2.0), min_rate: Some(1000.0), units: total as f64, unit: "pushes" },
    );
    let collect = Arc::new(Collect::default());
    let settings = Arc::new(sync_core::Settings::from_vars(&Default::default()).map_err(|e| e.to_string())?);
    let deps = sync_core::engine::EngineDeps {
        db: infra.db.clone(),
        queue: collect.clone(),
        settings,
        secrets: Some(infra.secrets.clone()),
        http: connectwise::CwHttp::new(connectwise::AddressPolicy::AllowPrivate)?,
        rate: Arc::new(sync_core::engine::LocalRateLimiter::new(1_000_000)),
        clock: Arc::new(sync_core::engine::SystemClock),
    };
    let additions: Vec<(i64, i64)> = infra
        .db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT cw_agreement_id, cw_addition_id FROM product_mappings WHERE tenant_id IN ({}) ORDER BY id",
                id_list(&p.tenant_ids)
            ),
        ))
        .await?
        .iter()
        .map(|r| Ok((r.try_get::<i64>("", "cw_agreement_id")?, r.try_get::<i64>("", "cw_addition_id")?)))
        .collect::<Result<_>>()?;
    if additions.len() != total {
        return fail(format!("{} mappings for {total} pushes", additions.len()));
    }

    fake.set_latency(Duration::from_millis(5));
    // Warm-up (not measured): the workers' connections, the first tenant only.
    let (runs, jobs) = prepare(infra, &deps, &collect, p, &p.tenant_ids[..1]).await?;
    fake.clear_requests();
    drive(infra, queue, &runs, jobs, workers).await?;
    check(infra, fake, &runs, p.pushes_per_tenant).await?;

    let mut baseline = Series::default();
    for i in 0..sizes.iterations {
        let pids: Vec<u32> = workers.iter().map(|w| w.pid()).collect();
        let cpu0 = Cpu::now(&pids);
        let b = bare_client(fake, &additions, concurrency).await?;
        let cpu1 = Cpu::now(&pids);
        baseline.push(b);
        // The baseline left 7 on every addition, and a push reads the addition first (a quantity
        // ConnectWise already holds is not sent again). Give every addition back a quantity no
        // mapping targets (every value is at least 1), so each of our pushes has its PATCH to make.
        for &(_, addition) in &additions {
            fake.set_addition_quantity(addition, 0);
        }
        let (runs, jobs) = prepare(infra, &deps, &collect, p, &p.tenant_ids).await?;
        fake.clear_requests();
        let cpu2 = Cpu::now(&pids);
        let o = drive(infra, queue, &runs, jobs, workers).await?;
        let cpu3 = Cpu::now(&pids);
        println!("  push #{}: CPU per push — bare client: {}", i + 1, cpu1.per_unit_since(&cpu0, total as f64, "worker"));
        println!("  push #{}: CPU per push — pipeline:    {}", i + 1, cpu3.per_unit_since(&cpu2, total as f64, "worker"));
        row.ours.push(o);
        let checked = check(infra, fake, &runs, total).await;
        println!(
            "  push #{}: bare client {:.2} s ({:.0}/s), pipeline {:.2} s ({:.0} pushes/s){}",
            i + 1,
            b,
            total as f64 / b,
            o,
            total as f64 / o,
            if checked.is_ok() { format!(", the fake saw exactly {total} PATCHes") } else { String::new() }
        );
        if let Err(e) = checked {
            row.error = Some(e.to_string());
        }
        fake.clear_requests();
    }
    fake.set_latency(Duration::ZERO);
    row.baseline = Some(baseline);
    extras.push_rate = Some(total as f64 / row.ours.median());
    extras.bare_rate = row.baseline.as_ref().map(|b| total as f64 / b.median());
    extras.worker_rss_after_push_mib = workers.iter().filter_map(|w| w.peak_rss_kib()).max().map(|k| k as f64 / 1024.0);
    Ok(row)
}
