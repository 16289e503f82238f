//! Ingest: N daily samples through `recordConsumption` over HTTP in 10,000-sample batches, against
//! PostgreSQL `COPY` of the same rows into an identical table (same columns, primary key, check and
//! foreign key), each starting from an empty table.
use std::{collections::HashMap, time::Instant};

use futures::StreamExt;
use sea_orm::sqlx::postgres::PgPoolCopyExt;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::infra::{Api, Infra, Result, fail, token};
use crate::report::{Row, Series, Target};
use crate::{Extras, Sizes, seed};

const MUTATION: &str = "mutation($s: [ConsumptionSampleInput!]!) { recordConsumption(samples: $s) { \
                        result { accepted inserted updated } userErrors { code field message } } }";

/// The batches as request bodies and the same rows as `COPY` text.
struct Data {
    bodies: Vec<(usize, Vec<u8>)>,
    copy: Vec<Vec<u8>>,
    total: usize,
}

/// Sample `(customer c, series k, day d)`: a value with three decimals.
fn value(c: usize, k: usize, d: usize) -> (String, i64) {
    let units = (c * 37 + k * 101 + d * 7) % 5000;
    let frac = (c * 13 + d) % 1000;
    (format!("{units}.{frac:03}"), (units * 1_000_000 + frac * 1000) as i64)
}

fn generate(sizes: &Sizes, tenant_id: i64, ids: &HashMap<String, i64>) -> Result<Data> {
    let first_day = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).ok_or("date")?;
    let mut samples: Vec<(usize, usize, usize)> = Vec::with_capacity(sizes.ingest_samples());
    // Day by day, as an integration reports: every customer's series of one day, then the next day.
    for d in 0..sizes.ingest_days {
        for c in 1..=sizes.ingest_customers {
            for k in 0..seed::SERIES.len() {
                samples.push((c, k, d));
            }
        }
    }
    let mut bodies = Vec::new();
    let mut copy = Vec::new();
    for chunk in samples.chunks(sizes.ingest_batch) {
        let mut json = String::with_capacity(chunk.len() * 140 + 300);
        json.push_str(&format!("{{\"query\":{},\"variables\":{{\"s\":[", serde_json::to_string(MUTATION)?));
        let mut text = String::with_capacity(chunk.len() * 70);
        for (i, &(c, k, d)) in chunk.iter().enumerate() {
            let ext = format!("i{c:05}");
            let (module, usage) = seed::SERIES[k];
            let day = first_day + chrono::Duration::days(d as i64);
            let (v, micros) = value(c, k, d);
            if i > 0 {
                json.push(',');
            }
            json.push_str(&format!(
                "{{\"customerExternalId\":\"{ext}\",\"productModule\":\"{module}\",\"usage\":\"{usage}\",\"day\":\"{day}\",\"value\":\"{v}\"}}"
            ));
            let id = ids.get(&ext).ok_or_else(|| format!("customer {ext} missing"))?;
            text.push_str(&format!("{tenant_id}\t{id}\t{module}\t{usage}\t{day}\t{micros}\n"));
        }
        json.push_str("]}}");
        bodies.push((chunk.len(), json.into_bytes()));
        copy.push(text.into_bytes());
    }
    Ok(Data { bodies, copy, total: samples.len() })
}

/// One COPY of all rows into the empty copy table.
async fn copy_once(infra: &Infra, data: &Data) -> Result<f64> {
    infra.exec("TRUNCATE bench_copy_samples").await?;
    let pool = infra.db.get_postgres_connection_pool();
    let started = Instant::now();
    let mut copy =
        pool.copy_in_raw("COPY bench_copy_samples (tenant_id, customer_id, product_module, usage, day, value_micros) FROM STDIN").await?;
    for chunk in &data.copy {
        copy.send(chunk.as_slice()).await?;
    }
    let rows = copy.finish().await?;
    let elapsed = started.elapsed().as_secs_f64();
    if rows as usize != data.total {
        return fail(format!("COPY wrote {rows} rows, expected {}", data.total));
    }
    Ok(elapsed)
}

/// All batches through the API, `concurrency` requests in flight.
async fn ingest_once(infra: &Infra, api: &Api, token: &str, data: &Data, concurrency: usize, tenant_id: i64) -> Result<f64> {
    infra.exec("TRUNCATE consumption_samples").await?;
    let started = Instant::now();
    let results: Vec<Result<u64>> = futures::stream::iter(data.bodies.iter())
        .map(|(n, body)| async move {
            let v = api.gql_raw(token, body.clone()).await?;
            let r = &v["recordConsumption"];
            if r["userErrors"].as_array().is_some_and(|e| !e.is_empty()) {
                return fail(format!("recordConsumption rejected a batch: {}", crate::clip(&r["userErrors"].to_string(), 400)));
            }
            let inserted = r["result"]["inserted"].as_u64().unwrap_or(0);
            if inserted != *n as u64 {
                return fail(format!("recordConsumption inserted {inserted} of {n}"));
            }
            Ok(inserted)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut inserted = 0;
    for r in results {
        inserted += r?;
    }
    let stored = infra.scalar(&format!("SELECT COUNT(*) FROM consumption_samples WHERE tenant_id = {tenant_id}")).await?;
    if inserted as usize != data.total || stored as usize != data.total {
        return fail(format!("ingest stored {stored} rows (API said {inserted}), expected {}", data.total));
    }
    Ok(elapsed)
}

/// The stored rows of both tables are the same (smoke check of the baseline's fairness and of ours).
async fn same_rows(infra: &Infra) -> Result<()> {
    let diff = infra
        .scalar(
            "SELECT COUNT(*) FROM ((SELECT customer_id, product_module, usage, day, value_micros FROM consumption_samples \
               EXCEPT SELECT customer_id, product_module, usage, day, value_micros FROM bench_copy_samples) \
             UNION ALL (SELECT customer_id, product_module, usage, day, value_micros FROM bench_copy_samples \
               EXCEPT SELECT customer_id, product_module, usage, day, value_micros FROM consumption_samples)) d",
        )
        .await?;
    if diff != 0 {
        return fail(format!("{diff} rows differ between recordConsumption's table and COPY's"));
    }
    Ok(())
}

pub async fn run(infra: &Infra, sizes: &Sizes, fake_client_id: &str, extras: &mut Extras) -> Result<Row> {
    let mut row = Row::new(
        &format!(
            "ingest: {} samples via recordConsumption ({}/batch, {} in flight) vs COPY",
            crate::report::thousands(sizes.ingest_samples() as f64),
            sizes.ingest_batch,
            sizes.ingest_concurrency
        ),
        Target::Time { max_ratio: Some(4.0), min_rate: Some(170_000.0), units: sizes.ingest_samples() as f64, unit: "samples" },
    );
    let tenant_id = seed::tenant(infra, "bench-ingest").await?;
    seed::customers(infra, tenant_id, "i", sizes.ingest_customers).await?;
    let rows = infra
        .db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT id, external_id FROM customers WHERE tenant_id = {tenant_id}"),
        ))
        .await?;
    let mut ids = HashMap::new();
    for r in rows {
        ids.insert(r.try_get::<String>("", "external_id")?, r.try_get::<i64>("", "id")?);
    }
    let data = generate(sizes, tenant_id, &ids)?;
    infra.exec("DROP TABLE IF EXISTS bench_copy_samples").await?;
    infra.exec("CREATE TABLE bench_copy_samples (LIKE consumption_samples INCLUDING ALL)").await?;
    infra.exec("ALTER TABLE bench_copy_samples ADD FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE CASCADE").await?;
    infra.exec("ANALYZE customers").await?;

    let api = Api::start(infra, "api-ingest", fake_client_id, sizes.ingest_concurrency).await?;
    let tok = token("bench-ingest", &["integration"])?;
    // Warm-up (not measured): connections, prepared statements, the tenant cache.
    let warm = Data {
        bodies: data.bodies.iter().take(2).cloned().collect(),
        copy: Vec::new(),
        total: data.bodies.iter().take(2).map(|b| b.0).sum(),
    };
    ingest_once(infra, &api, &tok, &warm, sizes.ingest_concurrency, tenant_id).await?;

    let mut baseline = Series::default();
    for i in 0..sizes.iterations {
        let b = copy_once(infra, &data).await?;
        baseline.push(b);
        let o = ingest_once(infra, &api, &tok, &data, sizes.ingest_concurrency, tenant_id).await?;
        row.ours.push(o);
        println!(
            "  ingest #{}: COPY {:.2} s ({:.0} rows/s), recordConsumption {:.2} s ({:.0} samples/s)",
            i + 1,
            b,
            data.total as f64 / b,
            o,
            data.total as f64 / o
        );
    }
    // Both tables now hold what their last run wrote: the same rows, so the baseline did the same work.
    same_rows(infra).await?;
    row.baseline = Some(baseline);
    extras.ingest_rate = Some(data.total as f64 / row.ours.median());
    extras.copy_rate = row.baseline.as_ref().map(|b| data.total as f64 / b.median());
    extras.api_ingest_rss_mib = api.child.peak_rss_kib().map(|k| k as f64 / 1024.0);
    drop(api);
    infra.exec("TRUNCATE consumption_samples").await?;
    infra.exec("DROP TABLE bench_copy_samples").await?;
    Ok(row)
}
