//! `/metrics` in the Prometheus text exposition format (0.0.4), hand-rolled: a few counters and
//! histograms kept in process, plus figures computed from PostgreSQL and Redis at scrape time
//! (the workers are other processes; the database and the queue are the shared truth).
//!
//! In process: HTTP requests by matched route and status with a latency histogram, GraphQL
//! operations by type and outcome, GraphQL errors by code. At scrape: pushes and runs by status,
//! push attempt latency over the last 24 h, queue depth, workers alive, open ConnectWise breakers.
//! Everything is an aggregate across tenants; no tenant name or id appears in a label.
use std::{
    collections::BTreeMap,
    fmt::{Display, Write as _},
    future::{Ready, ready},
    sync::{LazyLock, Mutex},
    time::Instant,
};

use actix_web::{
    Error, HttpResponse,
    dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready},
    web,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use futures::future::LocalBoxFuture;
use sync_core::service::status;

use crate::http::HttpState;

/// Upper bounds (seconds) of the HTTP and GraphQL latency histograms.
const LATENCY_BOUNDS_S: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The label of requests no route matched (the raw path would let anyone create series).
const UNMATCHED_ROUTE: &str = "unmatched";

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

/// A cumulative histogram with fixed bounds.
#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last slot is above every bound.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0 }
    }

    fn observe(&mut self, v: f64) {
        let slot = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        self.counts[slot] += 1;
        self.sum += v;
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[derive(Default)]
struct Registry {
    /// (method, route, status) → requests.
    http_requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// (method, route) → latency.
    http_latency: Mutex<BTreeMap<(String, String), Histogram>>,
    /// (operation type, outcome) → operations.
    graphql_operations: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// operation type → latency of executed operations.
    graphql_latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// (operation type, error code) → errors.
    graphql_errors: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl Registry {
    fn http_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut m) = self.http_requests.lock() {
            *m.entry((method.to_string(), route.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut m) = self.http_latency.lock() {
            m.entry((method.to_string(), route.to_string())).or_insert_with(|| Histogram::new(&LATENCY_BOUNDS_S)).observe(seconds);
        }
    }

    fn graphql_operation(&self, op_type: &'static str, outcome: &'static str) {
        if let Ok(mut m) = self.graphql_operations.lock() {
            *m.entry((op_type, outcome)).or_default() += 1;
        }
    }

    fn graphql_latency(&self, op_type: &'static str, seconds: f64) {
        if let Ok(mut m) = self.graphql_latency.lock() {
            m.entry(op_type).or_insert_with(|| Histogram::new(&LATENCY_BOUNDS_S)).observe(seconds);
        }
    }

    fn graphql_error(&self, op_type: &'static str, code: &str) {
        if let Ok(mut m) = self.graphql_errors.lock() {
            *m.entry((op_type, bounded_code(code))).or_default() += 1;
        }
    }
}

/// Error codes are ours (a small set); anything unexpected is folded so labels stay bounded.
fn bounded_code(code: &str) -> String {
    if !code.is_empty() && code.len() <= 40 && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
        code.to_string()
    } else {
        "OTHER".to_string()
    }
}

// ---------------------------------------------------------------- GraphQL hook

fn operation_type_name(ty: OperationType) -> &'static str {
    match ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

/// Observes one GraphQL operation from parse to response. Created in `http::execute` once the
/// document parsed; [`GraphqlOperationMetrics::finish`] records an executed operation, dropping it
/// unfinished records a rejected one (unauthenticated, mutation over GET, a panic).
pub struct GraphqlOperationMetrics {
    op_type: &'static str,
    started: Instant,
    finished: bool,
}

impl GraphqlOperationMetrics {
    pub fn start(doc: &ExecutableDocument, operation_name: Option<&str>) -> Self {
        let mut ops = doc.operations.iter();
        let ty = match operation_name {
            Some(name) => ops.find(|(n, _)| n.map(|n| n.as_str()) == Some(name)).map(|(_, o)| o.node.ty),
            None => match (ops.next(), ops.next()) {
                (Some((_, o)), None) => Some(o.node.ty),
                _ => None,
            },
        };
        GraphqlOperationMetrics { op_type: ty.map(operation_type_name).unwrap_or("unknown"), started: Instant::now(), finished: false }
    }

    /// The operation ran (possibly with errors): count it, its latency and its error codes.
    pub fn finish(mut self, response: &async_graphql::Response) {
        self.finished = true;
        let outcome = if response.errors.is_empty() { "ok" } else { "error" };
        REGISTRY.graphql_operation(self.op_type, outcome);
        REGISTRY.graphql_latency(self.op_type, self.started.elapsed().as_secs_f64());
        for e in &response.errors {
            let code = e.extensions.as_ref().and_then(|x| x.get("code")).and_then(|v| match v {
                async_graphql::Value::String(s) => Some(s.as_str()),
                _ => None,
            });
            REGISTRY.graphql_error(self.op_type, code.unwrap_or("OTHER"));
        }
    }
}

impl Drop for GraphqlOperationMetrics {
    fn drop(&mut self) {
        if !self.finished {
            REGISTRY.graphql_operation(self.op_type, "rejected");
        }
    }
}

/// A document that did not parse (counted before any operation type is known).
pub fn record_graphql_parse_failure() {
    REGISTRY.graphql_operation("unknown", "rejected");
    REGISTRY.graphql_error("unknown", "GRAPHQL_PARSE_FAILED");
}

// ---------------------------------------------------------------- HTTP middleware

/// Counts every request by method, matched route pattern and status, and times it.
pub struct HttpMetrics;

impl<S, B> Transform<S, ServiceRequest> for HttpMetrics
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type InitError = ();
    type Transform = HttpMetricsMiddleware<S>;
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(HttpMetricsMiddleware { service }))
    }
}

pub struct HttpMetricsMiddleware<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for HttpMetricsMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let method = req.method().to_string();
        let fut = self.service.call(req);
        Box::pin(async move {
            let res = fut.await;
            // The pattern is known once routing happened, i.e. from the response's request.
            let (route, status) = match &res {
                Ok(r) => (r.request().match_pattern(), r.status().as_u16()),
                Err(e) => (None, e.as_response_error().status_code().as_u16()),
            };
            let route = route.unwrap_or_else(|| UNMATCHED_ROUTE.to_string());
            REGISTRY.http_request(&method, &route, status, started.elapsed().as_secs_f64());
            res
        })
    }
}

// ---------------------------------------------------------------- exposition

/// The text format: `# HELP`/`# TYPE` once per family, then its samples.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// `_bucket` (cumulative, with `+Inf`), `_sum` and `_count` of one histogram series.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], buckets: &[(String, u64)], sum: f64, count: u64) {
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        for (le, n) in buckets {
            with_le.push(("le", le));
            self.sample(&format!("{name}_bucket"), &with_le, n);
            with_le.pop();
        }
        with_le.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &with_le, count);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count);
    }

    fn local_histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let mut cumulative = 0;
        let buckets: Vec<(String, u64)> = h
            .bounds
            .iter()
            .zip(&h.counts)
            .map(|(b, n)| {
                cumulative += n;
                (b.to_string(), cumulative)
            })
            .collect();
        self.histogram(name, labels, &buckets, h.sum, h.count());
    }
}

fn write_in_process(out: &mut Exposition) {
    out.family("csync_http_requests_total", "counter", "HTTP requests by method, matched route pattern and status.");
    if let Ok(m) = REGISTRY.http_requests.lock() {
        for ((method, route, status), n) in m.iter() {
            out.sample("csync_http_requests_total", &[("method", method), ("route", route), ("status", &status.to_string())], n);
        }
    }
    out.family("csync_http_request_duration_seconds", "histogram", "HTTP request latency by method and matched route pattern.");
    if let Ok(m) = REGISTRY.http_latency.lock() {
        for ((method, route), h) in m.iter() {
            out.local_histogram("csync_http_request_duration_seconds", &[("method", method), ("route", route)], h);
        }
    }
    out.family(
        "csync_graphql_operations_total",
        "counter",
        "GraphQL operations by type (query, mutation, unknown) and outcome (ok, error: ran with errors, rejected: not executed).",
    );
    if let Ok(m) = REGISTRY.graphql_operations.lock() {
        for ((ty, outcome), n) in m.iter() {
            out.sample("csync_graphql_operations_total", &[("type", ty), ("outcome", outcome)], n);
        }
    }
    out.family("csync_graphql_errors_total", "counter", "GraphQL errors by operation type and extensions.code.");
    if let Ok(m) = REGISTRY.graphql_errors.lock() {
        for ((ty, code), n) in m.iter() {
            out.sample("csync_graphql_errors_total", &[("type", ty), ("code", code)], n);
        }
    }
    out.family("csync_graphql_operation_duration_seconds", "histogram", "Latency of executed GraphQL operations by type.");
    if let Ok(m) = REGISTRY.graphql_latency.lock() {
        for (ty, h) in m.iter() {
            out.local_histogram("csync_graphql_operation_duration_seconds", &[("type", ty)], h);
        }
    }
}

/// Counts per status, with every known status present (0 when absent) so series never vanish.
fn write_status_counts(out: &mut Exposition, name: &str, known: &[&str], rows: &[(String, i64)]) {
    for s in known {
        let n = rows.iter().find(|(k, _)| k == s).map(|(_, n)| *n).unwrap_or(0);
        out.sample(name, &[("status", s)], n);
    }
    for (k, n) in rows.iter().filter(|(k, _)| !known.contains(&k.as_str())) {
        out.sample(name, &[("status", k)], n);
    }
}

async fn write_from_database(out: &mut Exposition, state: &HttpState) -> bool {
    let db = &state.app.db;
    let now = state.app.clock.now();
    let (pushes, runs, alive, breakers, latency) = futures::join!(
        status::pushes_by_status(db),
        status::runs_by_status(db),
        status::workers_alive(db, now),
        status::open_breakers(db),
        status::attempt_latency(db, now - status::ATTEMPT_LATENCY_WINDOW, &status::ATTEMPT_LATENCY_BOUNDS_MS),
    );
    let mut ok = true;
    let mut failed = |what: &str, e: &sync_core::ServiceError| {
        tracing::warn!(error = ?e, what, "metrics: database figure unavailable");
        ok = false;
    };
    match pushes {
        Ok(rows) => {
            out.family("csync_pushes", "gauge", "Pushes (outbox rows) by status, across tenants.");
            let known: Vec<&str> = domain::PushStatus::ALL.iter().map(|s| s.as_str()).collect();
            write_status_counts(out, "csync_pushes", &known, &rows);
        }
        Err(e) => failed("pushes", &e),
    }
    match runs {
        Ok(rows) => {
            out.family("csync_sync_runs", "gauge", "Sync runs by status, across tenants.");
            let known: Vec<&str> = domain::SyncRunStatus::ALL.iter().map(|s| s.as_str()).collect();
            write_status_counts(out, "csync_sync_runs", &known, &rows);
        }
        Err(e) => failed("runs", &e),
    }
    match alive {
        Ok(n) => {
            out.family("csync_workers_alive", "gauge", "Worker processes with a heartbeat in the last 60 seconds.");
            out.sample("csync_workers_alive", &[], n);
        }
        Err(e) => failed("workers", &e),
    }
    match breakers {
        Ok(n) => {
            out.family("csync_connectwise_breakers_open", "gauge", "Tenants whose ConnectWise connection is broken (auth breaker open).");
            out.sample("csync_connectwise_breakers_open", &[], n);
        }
        Err(e) => failed("breakers", &e),
    }
    match latency {
        Ok(series) => {
            out.family(
                "csync_push_attempt_duration_seconds",
                "histogram",
                "ConnectWise call latency of push attempts started in the last 24 hours, by step and outcome \
                 (a sliding window recomputed at each scrape: read it directly, not with rate()).",
            );
            for h in series {
                let buckets: Vec<(String, u64)> = h.buckets.iter().map(|(ms, n)| ((*ms as f64 / 1000.0).to_string(), *n)).collect();
                let labels = [("step", h.step.as_str()), ("outcome", h.outcome.as_str())];
                out.histogram("csync_push_attempt_duration_seconds", &labels, &buckets, h.sum_ms as f64 / 1000.0, h.count);
            }
        }
        Err(e) => failed("attempt latency", &e),
    }
    ok
}

async fn write_queue(out: &mut Exposition, state: &HttpState) -> bool {
    match state.app.queue.depth().await {
        Ok(depth) => {
            out.family("csync_queue_depth", "gauge", "Jobs waiting per queue (ready now or scheduled).");
            for (queue, n) in depth {
                out.sample("csync_queue_depth", &[("queue", &queue)], n);
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: queue depth unavailable");
            false
        }
    }
}

/// `GET /metrics` (unauthenticated, for a scraper; aggregates only).
pub async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    let mut out = Exposition::default();
    write_in_process(&mut out);
    let db_ok = write_from_database(&mut out, &state).await;
    let queue_ok = write_queue(&mut out, &state).await;
    out.family("csync_scrape_source_up", "gauge", "Whether a source of the scrape-time figures answered (1) or not (0).");
    out.sample("csync_scrape_source_up", &[("source", "database")], u8::from(db_ok));
    out.sample("csync_scrape_source_up", &[("source", "queue")], u8::from(queue_ok));
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(out.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.5, 0.7, 3.0] {
            h.observe(v);
        }
        let mut out = Exposition::default();
        out.local_histogram("x_seconds", &[("route", "/a")], &h);
        let text = out.0;
        assert!(text.contains("x_seconds_bucket{route=\"/a\",le=\"0.1\"} 1\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{route=\"/a\",le=\"1\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("x_seconds_count{route=\"/a\"} 4\n"), "{text}");
        assert!(text.contains("x_seconds_sum{route=\"/a\"} 4.25\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.sample("m", &[("l", "a\"b\\c\nd")], 1);
        assert_eq!(out.0, "m{l=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn unexpected_error_codes_are_folded() {
        assert_eq!(bounded_code("FORBIDDEN"), "FORBIDDEN");
        assert_eq!(bounded_code("drop table"), "OTHER");
        assert_eq!(bounded_code(&"A".repeat(41)), "OTHER");
    }
}
