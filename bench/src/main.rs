//! The benchmark harness (BENCHMARKS.md): `cargo run --release -p bench` sets up its own data on
//! PostgreSQL, Redis and a fake ConnectWise, starts release `api` and `worker` processes, runs every
//! scenario several times with its baseline in the same run (baseline and ours alternating), and
//! prints the table. `--smoke` runs tiny sizes once and checks correctness only (CI).
//!
//! Options: `--smoke`, `--only ingest,aggregation,push,reads`, `--iterations N`,
//! `--push-workers N`, `--push-concurrency N`, `--ingest-concurrency N`, `--read-seconds N`,
//! `--no-build` (use the `api`/`worker` binaries next to this one as they are), `--keep-db` (leave the
//! database for a look with EXPLAIN ANALYZE; Redis keys are removed anyway).
mod aggregation;
mod infra;
mod ingest;
mod push;
mod reads;
mod report;
mod seed;

use std::{process::ExitCode, time::Duration};

use fake_connectwise::{FakeConfig, FakeConnectWise};
use infra::{Child, Infra, Result, fail};
use report::{Row, Target};

/// Sizes of one harness run.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub iterations: usize,
    pub ingest_customers: usize,
    pub ingest_days: usize,
    pub ingest_batch: usize,
    pub ingest_concurrency: usize,
    pub agg_customers: usize,
    pub push_tenants: usize,
    pub push_customers: usize,
    pub push_workers: usize,
    pub push_concurrency: usize,
    pub read_connections: usize,
    pub read_duration: Duration,
    /// Judge the targets (full sizes) or only correctness (smoke).
    pub judge: bool,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            iterations: 3,
            ingest_customers: 1_000,
            ingest_days: 200,
            ingest_batch: 10_000,
            ingest_concurrency: 4,
            agg_customers: 10_000,
            push_tenants: 20,
            push_customers: 200,
            push_workers: 1,
            push_concurrency: 16,
            read_connections: 32,
            read_duration: Duration::from_secs(20),
            judge: true,
        }
    }

    fn smoke() -> Sizes {
        Sizes {
            iterations: 1,
            ingest_customers: 100,
            ingest_days: 40,
            ingest_batch: 10_000,
            ingest_concurrency: 2,
            agg_customers: 200,
            push_tenants: 2,
            push_customers: 10,
            push_workers: 1,
            push_concurrency: 8,
            read_connections: 4,
            read_duration: Duration::from_secs(2),
            judge: false,
        }
    }

    pub fn ingest_samples(&self) -> usize {
        self.ingest_customers * self.ingest_days * seed::SERIES.len()
    }
}

/// Figures reported beside the table.
#[derive(Debug, Default)]
pub struct Extras {
    pub ingest_rate: Option<f64>,
    pub copy_rate: Option<f64>,
    pub api_ingest_rss_mib: Option<f64>,
    pub aggregation_end_to_end: Option<f64>,
    pub worker_rss_after_aggregation_mib: Option<f64>,
    pub push_rate: Option<f64>,
    pub bare_rate: Option<f64>,
    pub worker_rss_after_push_mib: Option<f64>,
    pub read_p99_ms: Option<f64>,
    /// Reads of one tenant while another floods the API: (p99 idle, p99 under the flood, share of
    /// the flood answered 429).
    pub flood: Option<(f64, f64, f64)>,
    pub statements_per_request: Option<(f64, f64)>,
    pub api_reads_rss_mib: Option<f64>,
}

pub fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    Ingest,
    Aggregation,
    Push,
    Reads,
}

struct Opts {
    sizes: Sizes,
    only: Vec<Scenario>,
    /// Skip `cargo build` of `api` and `worker` (they must be up to date).
    no_build: bool,
    /// Keep the database afterwards (for EXPLAIN ANALYZE by hand).
    keep_db: bool,
}

fn parse_args() -> Result<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut sizes = if args.iter().any(|a| a == "--smoke") { Sizes::smoke() } else { Sizes::full() };
    let mut only = vec![Scenario::Ingest, Scenario::Aggregation, Scenario::Push, Scenario::Reads];
    let mut no_build = false;
    let mut keep_db = false;
    let mut it = args.iter();
    let num = |v: Option<&String>, name: &str| -> Result<usize> {
        v.and_then(|v| v.parse().ok()).filter(|n| *n > 0).ok_or_else(|| format!("{name} takes a positive number").into())
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => {}
            "--no-build" => no_build = true,
            "--keep-db" => keep_db = true,
            "--only" => {
                let list = it.next().ok_or("--only takes a list")?;
                only = list
                    .split(',')
                    .map(|s| match s.trim() {
                        "ingest" => Ok(Scenario::Ingest),
                        "aggregation" => Ok(Scenario::Aggregation),
                        "push" => Ok(Scenario::Push),
                        "reads" => Ok(Scenario::Reads),
                        other => Err(format!("unknown scenario {other:?}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--iterations" => sizes.iterations = num(it.next(), a)?,
            "--push-workers" => sizes.push_workers = num(it.next(), a)?,
            "--push-concurrency" => sizes.push_concurrency = num(it.next(), a)?,
            "--ingest-concurrency" => sizes.ingest_concurrency = num(it.next(), a)?,
            "--read-seconds" => sizes.read_duration = Duration::from_secs(num(it.next(), a)? as u64),
            "--help" | "-h" => {
                println!(
                    "usage: bench [--smoke] [--only ingest,aggregation,push,reads] [--iterations N] [--push-workers N] [--push-concurrency N] [--ingest-concurrency N] [--read-seconds N]"
                );
                std::process::exit(0);
            }
            other => return fail(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(Opts { sizes, only, no_build, keep_db })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
        })
        .flatten()
        .map(|k| format!("{:.0} GiB", k as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem}")
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // Children are spawned from this (main) thread only: their parent-death signal follows it.
    let code = runtime.block_on(run(opts));
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

async fn run(opts: Opts) -> ExitCode {
    let started = std::time::Instant::now();
    let workspace = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    println!("Consumption Sync benchmarks{} — {}", if opts.sizes.judge { "" } else { " (smoke)" }, machine());
    if !opts.no_build
        && let Err(e) = infra::build_binaries(&workspace)
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let bin_dir = match infra::bin_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let infra = match Infra::create(bin_dir).await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    println!("database {}, Redis prefix {}, logs in {}", infra.db_name, infra.redis_prefix, infra.log_dir.display());
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    let mut extras = Extras::default();
    let mut rows: Vec<Row> = Vec::new();
    let outcome = scenarios(&infra, &opts, &fake, &mut rows, &mut extras).await;
    drop(fake);
    let log_dir = infra.log_dir.clone();
    if opts.keep_db {
        println!("keeping the database {} (drop it by hand)", infra.db_name);
    }
    if let Err(e) = infra.destroy(opts.keep_db).await {
        eprintln!("warning: cleaning up the harness database/Redis keys failed: {e}");
    }
    if let Err(e) = &outcome {
        eprintln!("error: {e} (process logs in {})", log_dir.display());
    }

    println!();
    print!("{}", report::table(&rows, opts.sizes.judge));
    println!();
    print_extras(&extras);
    println!("\nwhole harness: {:.0} s", started.elapsed().as_secs_f64());
    let failed = outcome.is_err() || rows.iter().any(|r| r.verdict(opts.sizes.judge) == Some(false));
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn print_extras(x: &Extras) {
    let mib = |v: Option<f64>| v.map(|m| format!("{m:.0} MiB")).unwrap_or_else(|| "—".into());
    let rate = |v: Option<f64>| v.map(report::thousands).unwrap_or_else(|| "—".into());
    println!("- ingest: {} samples/s (COPY: {} rows/s)", rate(x.ingest_rate), rate(x.copy_rate));
    if let Some(s) = x.aggregation_end_to_end {
        println!("- aggregation, runMonthlySync → run finished (includes the worker's queue poll): {s:.2} s");
    }
    println!("- push pipeline: {} pushes/s (bare client: {} GET+PATCH/s)", rate(x.push_rate), rate(x.bare_rate));
    if let Some(p) = x.read_p99_ms {
        println!("- GraphQL reads: p99 {p:.1} ms (median of the runs)");
    }
    if let Some((idle, flooded, refused)) = x.flood {
        println!(
            "- GraphQL reads of one tenant while another floods (API_RATE_PER_TENANT 1000, burst 1000): p99 {idle:.1} ms alone, \
             {flooded:.1} ms under the flood ({:.2}×; target ≤ 2×), {:.0} % of the flood answered 429",
            flooded / idle,
            refused * 100.0
        );
    }
    if let Some((a, b)) = x.statements_per_request {
        println!("- SQL statements per GraphQL read: {a:.2} at first: 10, {b:.2} at first: 50 (pg_stat_database transactions ÷ requests)");
    }
    println!(
        "- peak RSS (VmHWM): worker {} after aggregation, {} after the push pipeline; api {} during the reads ({} during ingest)",
        mib(x.worker_rss_after_aggregation_mib),
        mib(x.worker_rss_after_push_mib),
        mib(x.api_reads_rss_mib),
        mib(x.api_ingest_rss_mib)
    );
}

/// Every selected scenario; a failing one is recorded in the table and the next one still runs.
async fn scenarios(infra: &Infra, opts: &Opts, fake: &FakeConnectWise, rows: &mut Vec<Row>, extras: &mut Extras) -> Result<()> {
    let sizes = &opts.sizes;
    let client_id = fake.config().client_id.clone();
    let mut first_error: Option<String> = None;
    let mut record = |rows: &mut Vec<Row>, name: &str, target: Target, r: Result<Row>| match r {
        Ok(row) => rows.push(row),
        Err(e) => {
            let mut row = Row::new(name, target);
            row.error = Some(e.to_string());
            eprintln!("{name}: {e}");
            first_error.get_or_insert_with(|| format!("{name}: {e}"));
            rows.push(row);
        }
    };

    // Ingest first: it empties consumption_samples between its runs.
    if opts.only.contains(&Scenario::Ingest) {
        println!("\n== ingest");
        let r = ingest::run(infra, sizes, &client_id, extras).await;
        record(rows, "ingest", Target::Time { max_ratio: Some(4.0), min_rate: Some(170_000.0), units: 1.0, unit: "samples" }, r);
    }

    let period = domain::Period::parse("2026-01").map_err(|e| e.to_string())?;
    let agg_tenant = if opts.only.iter().any(|s| matches!(s, Scenario::Aggregation | Scenario::Reads)) {
        println!("\n== seeding the aggregation tenant ({} customers)", sizes.agg_customers);
        let tenant_id = seed::tenant(infra, "bench-agg").await?;
        seed::aggregation_tenant(infra, tenant_id, sizes.agg_customers, period, &fake.site_url()).await?;
        let samples = infra.scalar(&format!("SELECT COUNT(*) FROM consumption_samples WHERE tenant_id = {tenant_id}")).await?;
        println!("  {} mappings, {} samples", sizes.agg_customers * 5, report::thousands(samples as f64));
        Some(aggregation::AggTenant { tenant_id, period, mappings: sizes.agg_customers * 5 })
    } else {
        None
    };

    let push_period = domain::Period::latest_closed(chrono::Utc::now().date_naive());
    let push_tenants = if opts.only.contains(&Scenario::Push) {
        println!("\n== seeding {} push tenants", sizes.push_tenants);
        let mut ids = Vec::new();
        for t in 0..sizes.push_tenants {
            ids.push(seed::push_tenant(infra, fake, t, sizes.push_customers, push_period).await?);
        }
        infra.exec("ANALYZE").await?;
        Some(push::PushTenants { tenant_ids: ids, period: push_period, pushes_per_tenant: sizes.push_customers * 5 })
    } else {
        None
    };

    if opts.only.iter().any(|s| matches!(s, Scenario::Aggregation | Scenario::Push)) {
        let queue = worker::RedisQueue::from_connection(infra.redis.clone(), &infra.redis_prefix);
        let mut env = infra.process_env(&client_id);
        env.insert("PUSH_CONCURRENCY".into(), sizes.push_concurrency.to_string());
        env.insert("CW_RATE_PER_TENANT".into(), "1000000".into());
        let mut workers: Vec<Child> = Vec::new();
        for w in 0..sizes.push_workers {
            workers.push(infra.spawn("worker", &format!("worker-{w}"), &env, &[])?);
        }
        if let Some(t) = &agg_tenant
            && opts.only.contains(&Scenario::Aggregation)
        {
            println!("\n== aggregation");
            let r = aggregation::run(infra, sizes, t, &queue, &mut workers, extras).await;
            record(rows, "aggregation", Target::Time { max_ratio: Some(2.0), min_rate: None, units: 1.0, unit: "mappings" }, r);
        }
        if let Some(p) = &push_tenants {
            println!("\n== push pipeline");
            let r = push::run(infra, sizes, fake, p, &queue, &mut workers, extras).await;
            record(rows, "push pipeline", Target::Time { max_ratio: Some(2.0), min_rate: Some(1000.0), units: 1.0, unit: "pushes" }, r);
        }
        let peak = workers.iter().filter_map(|w| w.peak_rss_kib()).max();
        for w in workers.iter_mut() {
            w.stop(Duration::from_secs(35));
        }
        if let Some(kib) = peak {
            let mut row = Row::new(
                &format!("memory: peak RSS of worker ({} process) during aggregation + push pipeline", sizes.push_workers),
                Target::Memory { max_mib: 256.0 },
            );
            row.ours.push(kib as f64 / 1024.0);
            rows.push(row);
        }
    }

    if opts.only.contains(&Scenario::Reads) && agg_tenant.is_some() {
        println!("\n== GraphQL reads");
        let r = reads::run(infra, sizes, &client_id, extras).await;
        record(rows, "GraphQL reads", Target::Rate { min_rate: 1000.0, max_p99_ms: 60.0 }, r);
        if let Some(m) = extras.api_reads_rss_mib {
            let mut row = Row::new("memory: peak RSS of api during the reads", Target::Memory { max_mib: 256.0 });
            row.ours.push(m);
            rows.push(row);
        }
    }
    match first_error {
        Some(e) => fail(e),
        None => Ok(()),
    }
}
