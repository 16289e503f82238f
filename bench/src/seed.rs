//! The data each scenario works on, written with set-based SQL (and into the fake ConnectWise).
use chrono::Utc;
use domain::Period;
use fake_connectwise::{FakeAddition, FakeAgreement, FakeCompany, FakeConnectWise};

use crate::infra::{Infra, Result};

/// The five (module, usage) series every bench customer reports; product mapping `k` (1-based)
/// maps series `k`.
pub const SERIES: [(&str, &str); 5] = [
    ("MICROSOFT_365", "ACTIVE_USERS"),
    ("ENDPOINTS", "ACTIVE_USERS"),
    ("GOOGLE_WORKSPACE", "ACTIVE_USERS"),
    ("ENTERPRISE_WORKLOADS", "CLOUD_STORAGE"),
    ("ENTERPRISE_WORKLOADS", "LTR_STORAGE"),
];

/// A tenant row with this external id.
pub async fn tenant(infra: &Infra, external_id: &str) -> Result<i64> {
    Ok(sync_core::service::tenants::ensure_tenant(&infra.db, external_id, chrono::Utc::now()).await?)
}

/// `n` customers `{prefix}{00001…}` named `Customer {prefix}{00001…}` (so names sort like numbers).
pub async fn customers(infra: &Infra, tenant_id: i64, prefix: &str, n: usize) -> Result<()> {
    infra
        .exec(&format!(
            "INSERT INTO customers (tenant_id, external_id, account_name, created_at, updated_at) \
             SELECT {tenant_id}, '{prefix}' || lpad(g::text, 5, '0'), 'Customer {prefix}' || lpad(g::text, 5, '0'), now(), now() \
             FROM generate_series(1, {n}) g"
        ))
        .await
}

/// ConnectWise settings pointing at the fake, consumption sync on; plus a finished scheduled run of
/// the latest closed month, so a worker's start-up catch-up creates no run of its own.
pub async fn cw_settings(infra: &Infra, tenant_id: i64, site_url: &str) -> Result<()> {
    let key = infra.secrets.encrypt("priv")?;
    infra
        .exec(&format!(
            "INSERT INTO cw_settings (tenant_id, site_url, company_id, public_key, private_key_enc, codebase, \
               consumption_sync_enabled, ticket_board_id, ticket_team_id, ticket_status_id, created_at, updated_at) \
             VALUES ({tenant_id}, '{site_url}', 'msp', 'pub', '{key}', 'v4_6_release', TRUE, 1, 11, 11, now(), now())"
        ))
        .await?;
    let latest = Period::latest_closed(Utc::now().date_naive());
    infra
        .exec(&format!(
            "INSERT INTO sync_runs (tenant_id, period, trigger, dry_run, status, requested_by, started_at, aggregated_at, finished_at) \
             VALUES ({tenant_id}, '{latest}', 'SCHEDULED', FALSE, 'SUCCEEDED', 'bench', now(), now(), now())"
        ))
        .await
}

/// The customer number `g` of a bench customer (its external id without the prefix).
fn g(prefix_len: usize) -> String {
    format!("CAST(substr(c.external_id, {}) AS BIGINT)", prefix_len + 1)
}

/// The aggregation/reads tenant: `n` customers, 4 licenses and 5 mappings each (all four methods
/// mixed), and a month of samples with the cases the rules care about: customers provisioned inside
/// the month (AVERAGE drops that day), deprovisioned inside it (LAST_DAY/SUM bill 0), without the last
/// day's sample (LAST_DAY/SUM fall back), and without any sample of a series (skipped).
pub async fn aggregation_tenant(infra: &Infra, tenant_id: i64, n: usize, period: Period, site_url: &str) -> Result<()> {
    let g = g(1);
    let (first, last) = (period.first_day(), period.last_day());
    customers(infra, tenant_id, "a", n).await?;
    cw_settings(infra, tenant_id, site_url).await?;
    let statements = [
        format!(
            "INSERT INTO customer_mappings (tenant_id, customer_id, cw_company_id, created_at, updated_at) \
             SELECT {tenant_id}, c.id, 100000 + {g}, now(), now() FROM customers c WHERE c.tenant_id = {tenant_id}"
        ),
        format!(
            "INSERT INTO cw_companies (tenant_id, id, identifier, name, status, refreshed_at) \
             SELECT {tenant_id}, 100000 + {g}, 'C' || {g}, 'Company ' || {g}, 'Active', now() FROM customers c WHERE c.tenant_id = {tenant_id}"
        ),
        format!(
            "INSERT INTO licenses (tenant_id, customer_id, product_module, edition, provisioned_on, deprovisioned_on, add_ons) \
             SELECT {tenant_id}, c.id, m, 'BUSINESS', \
                    CASE WHEN {g} % 10 = 3 THEN DATE '{first}' + 9 ELSE DATE '2025-06-01' END, \
                    CASE WHEN {g} % 20 = 7 THEN DATE '{first}' + 19 END, '[]' \
             FROM customers c, unnest(ARRAY['MICROSOFT_365', 'ENDPOINTS', 'GOOGLE_WORKSPACE', 'ENTERPRISE_WORKLOADS']) m \
             WHERE c.tenant_id = {tenant_id}"
        ),
        format!(
            "INSERT INTO product_mappings (tenant_id, customer_id, product_module, usage, interval_method, cw_agreement_id, \
               cw_sequence_number, cw_addition_id, cw_product_id, created_at, updated_at) \
             SELECT {tenant_id}, c.id, x.m, x.u, \
                    CASE x.k WHEN 1 THEN (ARRAY['AVERAGE', 'MAXIMUM', 'LAST_DAY'])[{g} % 3 + 1] \
                             WHEN 2 THEN (ARRAY['MAXIMUM', 'LAST_DAY', 'AVERAGE'])[{g} % 3 + 1] \
                             WHEN 3 THEN (ARRAY['LAST_DAY', 'AVERAGE', 'MAXIMUM'])[{g} % 3 + 1] \
                             WHEN 4 THEN (ARRAY['AVERAGE', 'MAXIMUM', 'LAST_DAY'])[({g} / 3) % 3 + 1] \
                             ELSE 'SUM' END, \
                    100000 + {g}, x.k, {g} * 10 + x.k, x.k, now(), now() \
             FROM customers c, ({values}) AS x(m, u, k) WHERE c.tenant_id = {tenant_id}",
            values = series_values()
        ),
        format!(
            "INSERT INTO consumption_samples (tenant_id, customer_id, product_module, usage, day, value_micros) \
             SELECT {tenant_id}, c.id, x.m, x.u, DATE '{first}' + d, ({g} * 7919 + d * 104729 + x.k * 130363) % 4000000000 \
             FROM customers c, ({values}) AS x(m, u, k), generate_series(0, {days}) d \
             WHERE c.tenant_id = {tenant_id} \
               AND NOT ({g} % 50 = 11 AND x.k = 1) \
               AND NOT ({g} % 10 = 5 AND x.k IN (3, 5) AND d = {days})",
            values = series_values(),
            days = (last - first).num_days()
        ),
        // History for `lastPush`: a finished run of the month before with one succeeded push per mapping.
        format!(
            "INSERT INTO sync_runs (tenant_id, period, trigger, dry_run, status, requested_by, started_at, aggregated_at, finished_at) \
             VALUES ({tenant_id}, '{prev}', 'MANUAL', FALSE, 'SUCCEEDED', 'bench', now(), now(), now())",
            prev = period.previous()
        ),
        format!(
            "INSERT INTO pushes (tenant_id, sync_run_id, product_mapping_id, customer_id, period, dry_run, product_module, usage, \
               interval_method, cw_company_id, cw_agreement_id, cw_addition_id, cw_sequence_number, cw_product_id, status, \
               value_micros, quantity, sample_days, attempts, max_attempts, created_at, updated_at, finished_at) \
             SELECT pm.tenant_id, r.id, pm.id, pm.customer_id, r.period, FALSE, pm.product_module, pm.usage, pm.interval_method, \
                    100000 + {gpm}, pm.cw_agreement_id, pm.cw_addition_id, pm.cw_sequence_number, pm.cw_product_id, 'SUCCEEDED', \
                    (pm.id % 97) * 1000000, pm.id % 97, 30, 1, 8, now(), now(), now() \
             FROM product_mappings pm, sync_runs r \
             WHERE pm.tenant_id = {tenant_id} AND r.tenant_id = {tenant_id} AND r.period = '{prev}' AND r.trigger = 'MANUAL'",
            prev = period.previous(),
            gpm = "pm.cw_agreement_id - 100000"
        ),
        "ANALYZE".to_string(),
    ];
    for sql in statements {
        infra.exec(&sql).await?;
    }
    Ok(())
}

fn series_values() -> String {
    format!("VALUES {}", SERIES.iter().enumerate().map(|(i, (m, u))| format!("('{m}', '{u}', {})", i + 1)).collect::<Vec<_>>().join(", "))
}

/// One push tenant `t`: `n` customers with 5 mappings each (LAST_DAY, SUM for the fifth) on
/// additions of the fake, and one sample per series on the period's last day.
pub async fn push_tenant(infra: &Infra, fake: &FakeConnectWise, t: usize, n: usize, period: Period) -> Result<i64> {
    let external = format!("bench-push-{t:02}");
    let tenant_id = tenant(infra, &external).await?;
    let prefix = format!("p{t:02}-");
    customers(infra, tenant_id, &prefix, n).await?;
    cw_settings(infra, tenant_id, &fake.site_url()).await?;
    let g = g(prefix.len());
    // Global numbers: customer (t, g) has gid = t × 100000 + g; its company 2e6 + gid, agreement
    // 3e6 + gid, additions gid × 10 + k (+ 1e8).
    let gid = format!("({t} * 100000 + {g})");
    let last = period.last_day();
    let statements = [
        format!(
            "INSERT INTO customer_mappings (tenant_id, customer_id, cw_company_id, created_at, updated_at) \
             SELECT {tenant_id}, c.id, 2000000 + {gid}, now(), now() FROM customers c WHERE c.tenant_id = {tenant_id}"
        ),
        format!(
            "INSERT INTO cw_companies (tenant_id, id, identifier, name, status, refreshed_at) \
             SELECT {tenant_id}, 2000000 + {gid}, 'C' || {gid}, 'Company ' || {gid}, 'Active', now() FROM customers c WHERE c.tenant_id = {tenant_id}"
        ),
        format!(
            "INSERT INTO licenses (tenant_id, customer_id, product_module, edition, provisioned_on, add_ons) \
             SELECT {tenant_id}, c.id, m, 'BUSINESS', DATE '2025-01-01', '[]' \
             FROM customers c, unnest(ARRAY['MICROSOFT_365', 'ENDPOINTS', 'GOOGLE_WORKSPACE', 'ENTERPRISE_WORKLOADS']) m \
             WHERE c.tenant_id = {tenant_id}"
        ),
        format!(
            "INSERT INTO product_mappings (tenant_id, customer_id, product_module, usage, interval_method, cw_agreement_id, \
               cw_sequence_number, cw_addition_id, cw_product_id, created_at, updated_at) \
             SELECT {tenant_id}, c.id, x.m, x.u, CASE WHEN x.k = 5 THEN 'SUM' ELSE 'LAST_DAY' END, \
                    3000000 + {gid}, x.k, 100000000 + {gid} * 10 + x.k, x.k, now(), now() \
             FROM customers c, ({values}) AS x(m, u, k) WHERE c.tenant_id = {tenant_id}",
            values = series_values()
        ),
        format!(
            "INSERT INTO consumption_samples (tenant_id, customer_id, product_module, usage, day, value_micros) \
             SELECT {tenant_id}, c.id, x.m, x.u, DATE '{last}', ({g} % 50 + x.k) * 1000000 + 250000 \
             FROM customers c, ({values}) AS x(m, u, k) WHERE c.tenant_id = {tenant_id}",
            values = series_values()
        ),
    ];
    for sql in statements {
        infra.exec(&sql).await?;
    }
    for g in 1..=n as i64 {
        let gid = t as i64 * 100_000 + g;
        fake.add_company(FakeCompany::new(2_000_000 + gid, &format!("C{gid}"), &format!("Company {gid}")));
        fake.add_agreement(FakeAgreement::new(3_000_000 + gid, &format!("Agreement {gid}"), 2_000_000 + gid));
        for k in 1..=5 {
            let mut a = FakeAddition::new(100_000_000 + gid * 10 + k, 3_000_000 + gid, k, 0);
            a.sequence_number = k;
            fake.add_addition(a);
        }
    }
    Ok(tenant_id)
}
