//! GraphQL reads: the customers page of the issue, with licenses, product mappings and each
//! mapping's last push, on the 10,000-customer aggregation tenant; a Rust load generator keeps N
//! connections busy for a fixed time, walking every page of the tenant (`after` cursors).
use std::time::{Duration, Instant};

use serde_json::json;

use crate::infra::{Api, Infra, Result, fail, token};
use crate::report::{Row, Target};
use crate::{Extras, Sizes};

/// The issue's query, with the page cursor as a variable.
pub fn query(first: usize) -> String {
    format!(
        "query($after: String) {{ customers(first: {first}, after: $after) {{ edges {{ node {{ id accountName \
         licenses {{ productModule edition }} \
         productMappings {{ id usage interval cwAdditionId lastPush {{ status quantity }} }} }} }} \
         pageInfo {{ hasNextPage endCursor }} }} }}"
    )
}

/// Request bodies, one per page of the tenant.
async fn pages(api: &Api, tok: &str, first: usize) -> Result<Vec<Vec<u8>>> {
    let q = query(first);
    let mut after: Option<String> = None;
    let mut bodies = Vec::new();
    loop {
        let vars = json!({ "after": after });
        bodies.push(serde_json::to_vec(&json!({"query": q, "variables": vars}))?);
        let data = api.gql(tok, &q, vars).await?;
        let info = &data["customers"]["pageInfo"];
        let edges = data["customers"]["edges"].as_array().map(|e| e.len()).unwrap_or(0);
        if edges == 0 {
            return fail("an empty customers page");
        }
        if bodies.len() == 1 {
            let node = &data["customers"]["edges"][0]["node"];
            let mappings = node["productMappings"].as_array().map(|m| m.len()).unwrap_or(0);
            let with_push =
                node["productMappings"].as_array().map(|m| m.iter().filter(|p| p["lastPush"]["status"].is_string()).count()).unwrap_or(0);
            if mappings == 0 || with_push != mappings || node["licenses"].as_array().is_none_or(|l| l.is_empty()) {
                return fail(format!(
                    "the first customer lacks licenses, mappings or last pushes: {}",
                    crate::clip(&node.to_string(), 300)
                ));
            }
        }
        if info["hasNextPage"] != json!(true) {
            return Ok(bodies);
        }
        after = info["endCursor"].as_str().map(str::to_string);
    }
}

/// What one load run measured.
#[derive(Clone, Copy)]
struct Load {
    requests: usize,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// `connections` clients, each sending the next page as soon as the previous answer is read, for `d`.
async fn load(api: &Api, tok: &str, bodies: &[Vec<u8>], connections: usize, d: Duration) -> Result<Load> {
    let url = format!("{}/graphql", api.base);
    let stop = Instant::now() + d;
    let started = Instant::now();
    let tasks = (0..connections).map(|c| {
        let (url, http) = (url.clone(), api.http.clone());
        let auth = format!("Bearer {tok}");
        let bodies = bodies.to_vec();
        tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(40_000);
            let mut i = c * 7;
            while Instant::now() < stop {
                let body = bodies[i % bodies.len()].clone();
                i += 1;
                let t = Instant::now();
                let resp = http
                    .post(&url)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status();
                let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
                lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                if !status.is_success() || bytes.windows(9).any(|w| w == b"\"errors\":") {
                    return Err(format!("a read failed ({status}): {}", crate::clip(&String::from_utf8_lossy(&bytes), 300)));
                }
            }
            Ok::<_, String>(lat)
        })
    });
    let mut all: Vec<u32> = Vec::new();
    for t in futures::future::join_all(tasks).await {
        all.extend(t.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        f64::from(all[i]) / 1000.0
    };
    Ok(Load { requests: all.len(), rate: all.len() as f64 / elapsed, p50_ms: pct(0.50), p99_ms: pct(0.99), max_ms: pct(1.0) })
}

/// PostgreSQL publishes a backend's transaction counts at most once a second and, once idle, within
/// 10 s: wait that long before reading them.
const STATS_SETTLE: Duration = Duration::from_millis(11_500);

pub async fn run(infra: &Infra, sizes: &Sizes, fake_client_id: &str, extras: &mut Extras) -> Result<Row> {
    let mut row = Row::new(
        &format!(
            "GraphQL reads: customers(first: 50) page with licenses, mappings, lastPush; {} customers, {} connections, {} s",
            crate::report::thousands(sizes.agg_customers as f64),
            sizes.read_connections,
            sizes.read_duration.as_secs()
        ),
        Target::Rate { min_rate: 1000.0, max_p99_ms: 60.0 },
    );
    let api = Api::start(infra, "api-reads", fake_client_id, sizes.read_connections).await?;
    let tok = token("bench-agg", &["viewer"])?;
    // Walking the pages once warms the API (tenant cache, prepared statements) and PostgreSQL.
    let bodies = pages(&api, &tok, 50).await?;
    let small = pages(&api, &tok, 10).await?;

    // SQL statements per request, at two page sizes: a constant count does not grow with the page.
    let count_statements = sizes.judge;
    let mut per_request = Vec::new();
    if count_statements {
        // Leave autovacuum nothing to do after the earlier scenarios' writes, then count what the
        // database does with no request at all over a window of the same length (background
        // transactions) and subtract it from each probe.
        infra.exec("VACUUM ANALYZE").await?;
        tokio::time::sleep(STATS_SETTLE).await;
        let idle_before = infra.transactions().await?;
        tokio::time::sleep(Duration::from_secs(2) + STATS_SETTLE).await;
        let background = infra.transactions().await? - idle_before;
        for (label, b) in [("first: 10", &small), ("first: 50", &bodies)] {
            let before = infra.transactions().await?;
            let probe = load(&api, &tok, b, 4, Duration::from_secs(2)).await?;
            tokio::time::sleep(STATS_SETTLE).await;
            let after = infra.transactions().await?;
            let n = (after - before - background).max(0) as f64 / probe.requests as f64;
            println!(
                "  reads: {label}: {} requests, {} transactions in the database ({background} in an idle window) = {n:.2} SQL statements per request",
                probe.requests,
                after - before
            );
            per_request.push(n);
        }
    }

    for i in 0..sizes.iterations {
        let l = load(&api, &tok, &bodies, sizes.read_connections, sizes.read_duration).await?;
        println!(
            "  reads #{}: {} requests, {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            i + 1,
            l.requests,
            l.rate,
            l.p50_ms,
            l.p99_ms,
            l.max_ms
        );
        row.ours.push(l.rate);
        row.p99_ms.push(l.p99_ms);
    }
    if let [a, b] = per_request[..] {
        extras.statements_per_request = Some((a, b));
        if (a - b).abs() > 0.05 {
            row.error = Some(format!("SQL statements per request grow with the page: {a:.2} (10) vs {b:.2} (50)"));
        }
    }
    extras.read_p99_ms = Some(row.p99_ms.median());
    extras.api_reads_rss_mib = api.child.peak_rss_kib().map(|k| k as f64 / 1024.0);
    drop(api);
    if sizes.judge {
        extras.flood = Some(flood(infra, fake_client_id, &bodies, sizes).await?);
    }
    Ok(row)
}

/// Connections of the tenant whose reads are measured during the flood (few enough to stay within
/// the budget), and of the flooding tenant.
const VICTIM_CONNECTIONS: usize = 2;
const FLOOD_CONNECTIONS: usize = 16;

/// One tenant floods an `api` with a real budget (cheap `me` queries from many connections, most
/// answered 429) while another reads pages: the reader's p99 alone and under the flood, and the
/// share of the flood refused. A measurement, not a CI assertion (latency on a shared machine).
async fn flood(infra: &Infra, fake_client_id: &str, bodies: &[Vec<u8>], sizes: &Sizes) -> Result<(f64, f64, f64)> {
    let budget = [("API_RATE_PER_TENANT", "1000"), ("API_BURST_PER_TENANT", "1000")];
    let api = Api::start_with(infra, "api-flood", fake_client_id, VICTIM_CONNECTIONS + FLOOD_CONNECTIONS, &budget).await?;
    let reader = token("bench-agg", &["viewer"])?;
    let flooder = token("bench-flood", &["viewer"])?;
    let window = sizes.read_duration.min(Duration::from_secs(10));
    load(&api, &reader, bodies, VICTIM_CONNECTIONS, Duration::from_secs(2)).await?; // warm-up
    let idle = load(&api, &reader, bodies, VICTIM_CONNECTIONS, window).await?;
    let stop = Instant::now() + window;
    let url = format!("{}/graphql", api.base);
    let floods = (0..FLOOD_CONNECTIONS).map(|_| {
        let (url, http, auth) = (url.clone(), api.http.clone(), format!("Bearer {flooder}"));
        tokio::spawn(async move {
            let (mut sent, mut refused) = (0u64, 0u64);
            while Instant::now() < stop {
                let resp = http
                    .post(&url)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(r#"{"query":"{ me { sub } }"}"#)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                sent += 1;
                refused += u64::from(resp.status().as_u16() == 429);
                resp.bytes().await.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>((sent, refused))
        })
    });
    let (flooded, counts) = tokio::join!(load(&api, &reader, bodies, VICTIM_CONNECTIONS, window), futures::future::join_all(floods));
    let flooded = flooded?;
    let (mut sent, mut refused) = (0u64, 0u64);
    for c in counts {
        let (s, r) = c.map_err(|e| e.to_string())??;
        sent += s;
        refused += r;
    }
    println!(
        "  reads under a flood: alone {} requests, p99 {:.1} ms; flooded {} requests, p99 {:.1} ms; the flood sent {sent} requests, {refused} answered 429",
        idle.requests, idle.p99_ms, flooded.requests, flooded.p99_ms
    );
    Ok((idle.p99_ms, flooded.p99_ms, if sent == 0 { 0.0 } else { refused as f64 / sent as f64 }))
}
