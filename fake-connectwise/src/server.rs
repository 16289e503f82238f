//! Request handling of the fake.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use serde_json::{Value, json};

use crate::conditions;
use crate::openapi::{self, Contract, MEDIA_TYPE, RequestParts};
use crate::{Catalog, FakeAddition, FakeAgreement, FakeBoard, FakeCompany, Fault, RecordedRequest, State, lock};

/// `Some(key)` when `path` is `/finance/agreements/{a}/additions/{id}`.
pub(crate) fn addition_key(path: &str) -> Option<&str> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["finance", "agreements", a, "additions", id] if a.parse::<i64>().is_ok() && id.parse::<i64>().is_ok() => Some(path),
        _ => None,
    }
}

/// Records the request when finished — or with 499 when the client went away first.
struct Recorder {
    state: Arc<State>,
    rec: Option<RecordedRequest>,
}

impl Recorder {
    fn finish(mut self, status: u16) {
        if let Some(mut r) = self.rec.take() {
            r.status = status;
            r.finished_at = Instant::now();
            lock(&self.state.log).push(r);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(mut r) = self.rec.take() {
            r.status = 499;
            r.finished_at = Instant::now();
            lock(&self.state.log).push(r);
        }
    }
}

/// Counts a request as in flight for its addition path while alive.
struct InflightGuard {
    state: Arc<State>,
    key: String,
}

impl InflightGuard {
    fn new(state: Arc<State>, key: &str) -> Self {
        let n = {
            let mut m = lock(&state.inflight);
            let n = m.entry(key.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        state.max_inflight.fetch_max(n, Ordering::SeqCst);
        InflightGuard { state, key: key.to_string() }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut m = lock(&self.state.inflight);
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The single entry point: every request goes through here.
pub(crate) async fn handle(req: HttpRequest, body: Bytes, state: Data<State>) -> HttpResponse {
    let state: Arc<State> = state.into_inner();
    let started_at = Instant::now();
    let wall_clock = chrono::Utc::now();
    let method = req.method().as_str().to_ascii_uppercase();
    let full_path = req.path().to_string();
    let prefix = format!("/{}/apis/3.0", state.cfg.codebase);
    let (path, in_api) = match full_path.strip_prefix(&prefix) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => (rest.to_string(), true),
        _ => (full_path.clone(), false),
    };
    let query = req.query_string().to_string();
    let body_json: Option<Value> = if body.is_empty() { None } else { serde_json::from_slice(&body).ok() };
    let authorized = header(&req, "authorization").as_deref() == Some(&state.expected_auth)
        && header(&req, "clientid").as_deref() == Some(&state.cfg.client_id);
    let seq = state.request_seq.fetch_add(1, Ordering::SeqCst);
    let port = state.site_url.get().and_then(|s| s.rsplit(':').next()).unwrap_or("0").to_string();
    let request_id = format!("fake-{port}-{seq:08}");
    let mut recorder = Recorder {
        state: state.clone(),
        rec: Some(RecordedRequest {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: body_json.clone(),
            started_at,
            finished_at: started_at,
            wall_clock,
            status: 0,
            authorized,
            request_id: request_id.clone(),
            accept: header(&req, "accept"),
            content_type: header(&req, "content-type"),
            headers: req
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_string())))
                .collect(),
            body_len: body.len(),
            applied: false,
            retry_after_secs: None,
        }),
    };
    let _inflight = if in_api { addition_key(&path).map(|k| InflightGuard::new(state.clone(), k)) } else { None };

    let latency = state.latency_nanos.load(Ordering::SeqCst);
    if latency > 0 {
        actix_web::rt::time::sleep(Duration::from_nanos(latency)).await;
    }

    let fault = pick_fault(&state, &method, &path, in_api);
    if let (Some(Fault::RateLimit { retry_after_secs }), Some(rec)) = (&fault, recorder.rec.as_mut()) {
        rec.retry_after_secs = Some(*retry_after_secs);
    }
    // A broken connection is recorded as 444 ("closed without response"), not as its 200 head.
    let closes = matches!(fault, Some(Fault::CloseConnection));
    let headers: Vec<(String, String)> = recorder.rec.as_ref().map(|r| r.headers.clone()).unwrap_or_default();
    let ctx = Ctx {
        state: &state,
        method: &method,
        path: &path,
        full_path: &full_path,
        query: &query,
        body: body_json.as_ref(),
        raw_body_len: body.len(),
        content_type: header(&req, "content-type"),
        headers: &headers,
        applied: std::cell::Cell::new(false),
    };
    let serve = |ctx: &Ctx<'_>| {
        if !in_api {
            route_outside_api(ctx)
        } else if !authorized {
            let msg = if header(&req, "clientid").is_none() { "clientId header is required" } else { "Invalid credentials or clientId" };
            error(401, "Unauthorized", msg)
        } else {
            refuse_if_invalid(ctx).unwrap_or_else(|| route(ctx))
        }
    };
    let mut response = match fault {
        Some(Fault::Delay(d)) => {
            actix_web::rt::time::sleep(d).await;
            serve(&ctx)
        }
        Some(Fault::AppliedButUnreadable) => {
            let r = serve(&ctx);
            if r.status().is_success() { unreadable() } else { r }
        }
        Some(Fault::AppliedThenHang(d)) => {
            let r = serve(&ctx);
            if let Some(rec) = recorder.rec.as_mut() {
                rec.applied = ctx.applied.get();
            }
            actix_web::rt::time::sleep(d).await;
            r
        }
        Some(f) => fault_response(f),
        None => serve(&ctx),
    };
    if let Some(rec) = recorder.rec.as_mut() {
        rec.applied = ctx.applied.get();
    }
    let headers = response.headers_mut();
    if let Ok(v) = request_id.parse() {
        headers.insert(actix_web::http::header::HeaderName::from_static("x-cw-request-id"), v);
    }
    headers.insert(
        actix_web::http::header::HeaderName::from_static("api-current-version"),
        actix_web::http::header::HeaderValue::from_static("2025.8"),
    );
    recorder.finish(if closes { 444 } else { response.status().as_u16() });
    response
}

fn status_name(code: u16) -> &'static str {
    match code {
        400 => "InvalidObject",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        415 => "UnsupportedMediaType",
        429 => "TooManyRequests",
        500 => "InternalServerError",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        _ => "Error",
    }
}

fn status(code: u16) -> HttpResponseBuilder {
    HttpResponse::build(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
}

/// Marks a JSON string that is really a number to be written verbatim (see [`exact_number`]).
const EXACT_NUMBER: &str = "\u{0}number:";

/// A number held as text (money, fractional sequence numbers): carried through `Value` as a marked
/// string and written as the bare number by [`body_text`], so no digit is lost to `f64`.
fn exact_number(text: &str) -> Value {
    Value::String(format!("{EXACT_NUMBER}{text}"))
}

/// The JSON text of `v`, with [`exact_number`] markers replaced by their numbers.
fn body_text(v: &Value) -> String {
    let text = v.to_string();
    // serde_json writes U+0000 as `\u0000`.
    const MARK: &str = "\"\\u0000number:";
    if !text.contains(MARK) {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find(MARK) {
        out.push_str(&rest[..i]);
        let after = &rest[i + MARK.len()..];
        let end = after.find('"').unwrap_or(after.len());
        out.push_str(&after[..end]);
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// A JSON answer with ConnectWise's media type.
fn cw_json(code: u16, v: &Value) -> HttpResponse {
    status(code).content_type(MEDIA_TYPE).body(body_text(v))
}

fn error(code: u16, cw_code: &str, message: &str) -> HttpResponse {
    cw_json(code, &json!({"code": cw_code, "message": message}))
}

fn invalid(message: &str, field: &str) -> HttpResponse {
    cw_json(
        400,
        &json!({
            "code": "InvalidObject",
            "message": message,
            "errors": [{"code": "InvalidField", "message": message, "resource": "fake", "field": field}]
        }),
    )
}

/// A 200 whose body is not JSON (a cut-off answer).
fn unreadable() -> HttpResponse {
    status(200).content_type(MEDIA_TYPE).body(r#"{"id": 1, "product": {"id"#)
}

/// 400 `InvalidObject` when the official document would refuse the request (paths it does not
/// describe, such as the `count` endpoints, are left to the routes).
fn refuse_if_invalid(ctx: &Ctx<'_>) -> Option<HttpResponse> {
    if ctx.path.ends_with("/count") {
        return None;
    }
    let contract = match Contract::official() {
        Ok(c) => c,
        Err(e) => return Some(error(500, "InternalServerError", &format!("fake-connectwise: {e}"))),
    };
    contract.find(ctx.method, ctx.path)?;
    let parts = RequestParts {
        method: ctx.method,
        path: ctx.path,
        query: ctx.query,
        headers: ctx.headers,
        body: ctx.body,
        body_sent: ctx.raw_body_len > 0,
    };
    let violations: Vec<openapi::Violation> = match contract.check_request(&parts) {
        Ok(_) => return None,
        Err(v) => v.into_iter().filter(|v| v.refused).collect(),
    };
    if violations.is_empty() {
        return None;
    }
    let message = violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    let errors: Vec<Value> =
        violations.iter().map(|v| json!({"code": "InvalidField", "message": v.message, "resource": "request", "field": v.at})).collect();
    Some(cw_json(400, &json!({"code": "InvalidObject", "message": message, "errors": errors})))
}

/// A body that fails immediately: the connection is dropped mid-response.
struct BrokenBody;

impl MessageBody for BrokenBody {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::other("fake-connectwise: injected connection close"))))
    }
}

fn fault_response(f: Fault) -> HttpResponse {
    match f {
        Fault::Status(code) => error(code, status_name(code), &format!("Injected fault: HTTP {code}")),
        Fault::RateLimit { retry_after_secs } => {
            let mut r = error(429, "TooManyRequests", "Too many requests, retry later");
            if let Ok(v) = retry_after_secs.to_string().parse() {
                r.headers_mut().insert(actix_web::http::header::RETRY_AFTER, v);
            }
            r
        }
        Fault::CloseConnection => status(200).content_type("application/json").body(BrokenBody),
        Fault::Raw { status: code, headers, body } => {
            let mut b = status(code);
            b.content_type("application/json");
            for (k, v) in headers {
                b.insert_header((k, v));
            }
            b.body(body)
        }
        // Handled by the caller.
        Fault::Delay(_) | Fault::AppliedButUnreadable | Fault::AppliedThenHang(_) => status(500).finish(),
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xorshift64* step.
fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

fn pick_fault(state: &State, method: &str, path: &str, in_api: bool) -> Option<Fault> {
    let mut faults = lock(&state.faults);
    for rule in faults.rules.iter_mut() {
        if rule.times == 0 {
            continue;
        }
        if let Some(m) = &rule.method
            && !m.eq_ignore_ascii_case(method)
        {
            continue;
        }
        if let Some(p) = &rule.path_contains
            && !path.contains(p.as_str())
        {
            continue;
        }
        if rule.times != usize::MAX {
            rule.times -= 1;
        }
        return Some(rule.fault.clone());
    }
    faults.rules.retain(|r| r.times > 0);
    let rnd = faults.random.as_mut()?;
    if !in_api || !(method == "GET" || method == "PATCH") || addition_key(path).is_none() {
        return None;
    }
    let key = format!("{method} {path}");
    let n = {
        let c = rnd.counters.entry(key.clone()).or_insert(0);
        *c += 1;
        *c
    };
    let mut x = splitmix64(rnd.seed ^ fnv1a(&key) ^ splitmix64(n));
    if x == 0 {
        x = 0x1234_5678_9ABC_DEF1;
    }
    let plan = &rnd.plan;
    let roll = (xorshift(&mut x) % 1000) as u32;
    let p5 = plan.p_5xx_permille;
    let p429 = p5.saturating_add(plan.p_429_permille);
    let pslow = p429.saturating_add(plan.p_slow_permille);
    let fault = if roll < p5 {
        let code = [500u16, 502, 503, 504][(xorshift(&mut x) % 4) as usize];
        Some(Fault::Status(code))
    } else if roll < p429 {
        let (lo, hi) = plan.retry_after_secs;
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        let span = hi - lo;
        let secs = if span == u64::MAX { xorshift(&mut x) } else { lo + xorshift(&mut x) % (span + 1) };
        Some(Fault::RateLimit { retry_after_secs: secs })
    } else if roll < pslow {
        Some(Fault::Delay(plan.slow))
    } else {
        None
    };
    // The bound is per push, not per request: a push attempt is a GET then a PATCH, so a run of
    // faults only ends when a PATCH of that addition succeeds (a successful GET alone does not).
    let max = plan.max_consecutive_per_path;
    let faults_in_a_row = rnd.consecutive.entry(path.to_string()).or_insert(0);
    let fault = if max > 0 && *faults_in_a_row >= max { None } else { fault };
    match (&fault, method) {
        (Some(_), _) => *faults_in_a_row += 1,
        (None, "PATCH") => *faults_in_a_row = 0,
        (None, _) => {}
    }
    fault
}

struct Ctx<'a> {
    state: &'a State,
    method: &'a str,
    path: &'a str,
    full_path: &'a str,
    query: &'a str,
    body: Option<&'a Value>,
    raw_body_len: usize,
    content_type: Option<String>,
    headers: &'a [(String, String)],
    /// Set when the request changed the fake's state.
    applied: std::cell::Cell<bool>,
}

fn route_outside_api(ctx: &Ctx<'_>) -> HttpResponse {
    let segs: Vec<&str> = ctx.path.trim_start_matches('/').split('/').collect();
    match (ctx.method, segs.as_slice()) {
        ("GET", [login, info, company]) if login.eq_ignore_ascii_case("login") && info.eq_ignore_ascii_case("companyinfo") => {
            let cfg = &ctx.state.cfg;
            if company.eq_ignore_ascii_case(&cfg.company_id) {
                status(200).json(json!({
                    "CompanyName": "Fake MSP",
                    "Codebase": format!("{}/", cfg.codebase),
                    "VersionCode": "v2025.1",
                    "VersionNumber": "v4.6.2025.1",
                    "CompanyID": cfg.company_id,
                    "IsCloud": true,
                    "SiteUrl": ctx.state.site_url.get().cloned().unwrap_or_default(),
                }))
            } else {
                // Real ConnectWise answers unknown companies with empty fields.
                status(200).json(json!({
                    "CompanyName": null, "Codebase": null, "VersionCode": null,
                    "CompanyID": null, "IsCloud": false, "SiteUrl": null
                }))
            }
        }
        _ => error(404, "NotFound", "Not found"),
    }
}

const COMPANY_FIELDS: &[&str] = &["id", "identifier", "name", "deletedflag", "status/id", "status/name"];
const AGREEMENT_FIELDS: &[&str] = &[
    "id",
    "name",
    "type/id",
    "type/name",
    "company/id",
    "company/identifier",
    "company/name",
    "agreementstatus",
    "cancelledflag",
    "nextinvoicedate",
];
const ADDITION_FIELDS: &[&str] = &[
    "id",
    "product/id",
    "product/identifier",
    "quantity",
    "sequencenumber",
    "agreementid",
    "agreementstatus",
    "cancelleddate",
    "effectivedate",
    "description",
];
const BOARD_FIELDS: &[&str] = &["id", "name", "inactiveflag"];
const BOARD_ITEM_FIELDS: &[&str] = &["id", "name", "defaultflag"];
const TICKET_FIELDS: &[&str] = &["id", "summary", "externalxref", "company/id", "board/id", "status/id", "team/id"];

/// What a JSON record is, for its sparse form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Company,
    Agreement,
    Addition,
    Board,
    Team,
    Status,
    Type,
    Subtype,
    Ticket,
}

impl Kind {
    fn of_board_list(segment: &str) -> Option<Kind> {
        match segment {
            "teams" => Some(Kind::Team),
            "statuses" => Some(Kind::Status),
            "types" => Some(Kind::Type),
            "subtypes" => Some(Kind::Subtype),
            _ => None,
        }
    }
}

fn set_null(v: &mut Value, key: &str) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_string(), Value::Null);
    }
}

fn remove(v: &mut Value, keys: &[&str]) {
    if let Some(o) = v.as_object_mut() {
        for k in keys {
            o.remove(*k);
        }
    }
}

/// `false` is ConnectWise's default for a flag: the sparse form sends `null` instead.
fn null_if_false(v: &mut Value, key: &str) {
    if v.get(key) == Some(&Value::Bool(false)) {
        set_null(v, key);
    }
}

/// The sparsest form the official schema allows for a full record the fake rendered (see the
/// crate documentation for what keeps its value).
fn sparse(kind: Kind, mut v: Value) -> Value {
    let unmodelled = json!({"id": null});
    remove(&mut v, &["_info"]);
    match kind {
        Kind::Company => {
            if let Some(status) = v.get_mut("status") {
                set_null(status, "id");
            }
            null_if_false(&mut v, "deletedFlag");
        }
        Kind::Agreement => {
            if let Some(t) = v.get_mut("type") {
                set_null(t, "id");
            }
            v["contact"] = unmodelled;
            null_if_false(&mut v, "cancelledFlag");
            null_if_false(&mut v, "prorateFlag");
            remove(&mut v, &["startDate"]);
        }
        Kind::Addition => {
            for key in ["billCustomer", "agreementId", "agreementStatus"] {
                set_null(&mut v, key);
            }
            remove(&mut v, &["uom"]);
            if v.get("description") == Some(&json!("")) {
                remove(&mut v, &["description"]);
            }
        }
        Kind::Board => {
            v["location"] = unmodelled.clone();
            v["department"] = unmodelled;
            null_if_false(&mut v, "inactiveFlag");
        }
        Kind::Team => {
            v["teamLeader"] = unmodelled;
            null_if_false(&mut v, "defaultFlag");
        }
        Kind::Status | Kind::Type => null_if_false(&mut v, "defaultFlag"),
        Kind::Subtype => null_if_false(&mut v, "inactiveFlag"),
        Kind::Ticket => {}
    }
    v
}

/// A record as answered: full, or sparse when the fake is in sparse mode.
fn present(ctx: &Ctx<'_>, kind: Kind, v: Value) -> Value {
    if ctx.state.sparse.load(Ordering::SeqCst) { sparse(kind, v) } else { v }
}

fn route(ctx: &Ctx<'_>) -> HttpResponse {
    let segs: Vec<&str> = ctx.path.trim_start_matches('/').split('/').collect();
    let id = |s: &str| s.parse::<i64>().ok();
    let m = ctx.method;
    let cat = || lock(&ctx.state.catalog);
    let one = |kind: Kind, v: Value| cw_json(200, &present(ctx, kind, v));
    match segs.as_slice() {
        ["system", "info"] if m == "GET" => {
            let info = if ctx.state.sparse.load(Ordering::SeqCst) {
                json!({})
            } else {
                json!({
                    "version": "v2025.1",
                    "isCloud": true,
                    "serverTimeZone": "Eastern Standard Time",
                    "licenseBits": [{"name": "PSA", "activeFlag": true}],
                    "cloudRegion": "NA",
                    "maxWorkFlowRecordsAllowed": 1000
                })
            };
            cw_json(200, &info)
        }
        ["company", "companies"] if m == "GET" => {
            let items: Vec<Value> = {
                let c = cat();
                c.companies.values().map(company_json).collect()
            };
            list(ctx, items, COMPANY_FIELDS, Kind::Company)
        }
        ["company", "companies", "count"] if m == "GET" => {
            let items: Vec<Value> = cat().companies.values().map(company_json).collect();
            count(ctx, items, COMPANY_FIELDS)
        }
        ["company", "companies", cid] if m == "GET" => match id(cid) {
            Some(cid) => match cat().companies.get(&cid).map(company_json) {
                Some(c) => one(Kind::Company, c),
                None => error(404, "NotFound", &format!("Company with id {cid} not found")),
            },
            None => invalid("Invalid company id", "id"),
        },
        ["finance", "agreements"] if m == "GET" => {
            let items: Vec<Value> = {
                let c = cat();
                c.agreements.values().map(|a| agreement_json(&c, a)).collect()
            };
            list(ctx, items, AGREEMENT_FIELDS, Kind::Agreement)
        }
        ["finance", "agreements", "count"] if m == "GET" => {
            let items: Vec<Value> = {
                let c = cat();
                c.agreements.values().map(|a| agreement_json(&c, a)).collect()
            };
            count(ctx, items, AGREEMENT_FIELDS)
        }
        ["finance", "agreements", aid] if m == "GET" => match id(aid) {
            Some(aid) => {
                let found = {
                    let c = cat();
                    c.agreements.get(&aid).map(|a| agreement_json(&c, a))
                };
                match found {
                    Some(a) => one(Kind::Agreement, a),
                    None => error(404, "NotFound", &format!("Agreement with id {aid} not found")),
                }
            }
            None => invalid("Invalid agreement id", "id"),
        },
        ["finance", "agreements", aid, "additions"] if m == "GET" => {
            let Some(aid) = id(aid) else {
                return invalid("Invalid agreement id", "id");
            };
            let items: Option<Vec<Value>> = {
                let c = cat();
                c.agreements.get(&aid).map(|_| {
                    c.additions_by_agreement
                        .get(&aid)
                        .map(|set| set.iter().filter_map(|i| c.additions.get(i)).map(|a| addition_json(&c, a)).collect())
                        .unwrap_or_default()
                })
            };
            match items {
                Some(items) => list(ctx, items, ADDITION_FIELDS, Kind::Addition),
                None => error(404, "NotFound", &format!("Agreement with id {aid} not found")),
            }
        }
        ["finance", "agreements", aid, "additions", xid] if m == "GET" || m == "PATCH" => {
            let (Some(aid), Some(xid)) = (id(aid), id(xid)) else {
                return invalid("Invalid id", "id");
            };
            if m == "GET" {
                let found = {
                    let c = cat();
                    c.additions.get(&xid).filter(|a| a.agreement_id == aid).map(|a| addition_json(&c, a))
                };
                match found {
                    Some(a) => one(Kind::Addition, a),
                    None => not_found_addition(aid, xid),
                }
            } else {
                patch_addition(ctx, aid, xid)
            }
        }
        ["service", "boards"] if m == "GET" => {
            let items: Vec<Value> = cat().boards.values().map(board_json).collect();
            list(ctx, items, BOARD_FIELDS, Kind::Board)
        }
        ["service", "boards", bid] if m == "GET" => match id(bid) {
            Some(bid) => match cat().boards.get(&bid).map(board_json) {
                Some(b) => one(Kind::Board, b),
                None => error(404, "NotFound", &format!("Board with id {bid} not found")),
            },
            None => invalid("Invalid board id", "id"),
        },
        ["service", "boards", bid, segment] if m == "GET" => {
            let Some(bid) = id(bid) else {
                return invalid("Invalid board id", "id");
            };
            let Some(kind) = Kind::of_board_list(segment) else {
                return error(404, "NotFound", "Not found");
            };
            let items: Option<Vec<Value>> = cat().boards.get(&bid).map(|b| board_items_json(b, kind));
            match items {
                Some(items) => list(ctx, items, BOARD_ITEM_FIELDS, kind),
                None => error(404, "NotFound", &format!("Board with id {bid} not found")),
            }
        }
        ["service", "tickets"] if m == "GET" => {
            let items: Vec<Value> = cat().tickets.iter().map(public_ticket).collect();
            list(ctx, items, TICKET_FIELDS, Kind::Ticket)
        }
        ["service", "tickets"] if m == "POST" => create_ticket(ctx),
        ["service", "tickets", tid] if m == "GET" => {
            let Some(tid) = id(tid) else {
                return invalid("Invalid ticket id", "id");
            };
            let found = cat().tickets.iter().find(|t| t["id"].as_i64() == Some(tid)).map(public_ticket);
            match found {
                Some(t) => one(Kind::Ticket, t),
                None => error(404, "NotFound", &format!("Ticket with id {tid} not found")),
            }
        }
        _ if is_known_path(&segs) => error(405, "MethodNotAllowed", "Method not allowed"),
        _ => error(404, "NotFound", "Not found"),
    }
}
fn is_known_path(segs: &[&str]) -> bool {
    matches!(
        segs,
        ["system", "info"]
            | ["company", "companies", ..]
            | ["finance", "agreements", ..]
            | ["service", "boards", ..]
            | ["service", "tickets", ..]
    )
}

fn not_found_addition(aid: i64, xid: i64) -> HttpResponse {
    error(404, "NotFound", &format!("AgreementAddition with id {xid} not found on agreement {aid}"))
}

fn requires_json(ctx: &Ctx<'_>) -> Option<HttpResponse> {
    let ok = ctx.content_type.as_deref().is_some_and(|c| c.to_ascii_lowercase().contains("json"));
    if ok { None } else { Some(error(415, "UnsupportedMediaType", "Content-Type must be application/json")) }
}

fn patch_addition(ctx: &Ctx<'_>, aid: i64, xid: i64) -> HttpResponse {
    if let Some(r) = requires_json(ctx) {
        return r;
    }
    let Some(Value::Array(ops)) = ctx.body else {
        let what = if ctx.raw_body_len == 0 { "missing" } else { "not a JSON array" };
        return invalid(&format!("PATCH body must be a JSON array of operations ({what})"), "body");
    };
    if ops.is_empty() {
        return invalid("PATCH body must contain at least one operation", "body");
    }
    let mut new_quantity = None;
    for op in ops {
        let Some(obj) = op.as_object() else {
            return invalid("Each operation must be an object", "body");
        };
        let keys_ok = obj.len() == 3
            && obj.get("op").and_then(Value::as_str) == Some("replace")
            && obj.get("path").and_then(Value::as_str) == Some("quantity");
        if !keys_ok {
            return invalid("Only {\"op\":\"replace\",\"path\":\"quantity\",\"value\":<number>} is supported", "body");
        }
        let q = match obj.get("value") {
            Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64)),
            _ => None,
        };
        match q {
            Some(q) => new_quantity = Some(q),
            None => return invalid("quantity must be a whole number", "quantity"),
        }
    }
    let mut c = lock(&ctx.state.catalog);
    let Some(q) = new_quantity else {
        return invalid("No operation", "body");
    };
    match c.additions.get_mut(&xid).filter(|a| a.agreement_id == aid) {
        Some(a) => {
            a.quantity = q;
            ctx.applied.set(true);
            let a = a.clone();
            let answer = addition_json(&c, &a);
            if let Some(delta) = c.hand_edits.remove(&xid)
                && let Some(edited) = c.additions.get_mut(&xid)
            {
                edited.quantity += delta;
            }
            drop(c);
            cw_json(200, &present(ctx, Kind::Addition, answer))
        }
        None => not_found_addition(aid, xid),
    }
}

fn ref_id(body: &Value, key: &str) -> Option<i64> {
    body.get(key)?.get("id")?.as_i64()
}

fn create_ticket(ctx: &Ctx<'_>) -> HttpResponse {
    if let Some(r) = requires_json(ctx) {
        return r;
    }
    let Some(body) = ctx.body.filter(|b| b.is_object()) else {
        return invalid("Ticket body must be a JSON object", "body");
    };
    let summary = body.get("summary").and_then(Value::as_str).unwrap_or("");
    if summary.trim().is_empty() {
        return invalid("summary is required", "summary");
    }
    if summary.chars().count() > 100 {
        return invalid("summary may not exceed 100 characters", "summary");
    }
    let xref = match body.get("externalXRef") {
        None => None,
        Some(Value::String(s)) if s.chars().count() <= 100 => Some(s.clone()),
        Some(_) => return invalid("externalXRef must be a string of at most 100 characters", "externalXRef"),
    };
    let mut c = lock(&ctx.state.catalog);
    let company = match ref_id(body, "company").and_then(|id| c.companies.get(&id)) {
        Some(co) => json!({"id": co.id, "identifier": co.identifier, "name": co.name}),
        None => return invalid("company is required and must exist", "company"),
    };
    let Some(board) = ref_id(body, "board").and_then(|id| c.boards.get(&id)) else {
        return invalid("board is required and must exist", "board");
    };
    let pick = |key: &str, items: &[(i64, String, bool)], use_default: bool| match ref_id(body, key) {
        Some(id) => match items.iter().find(|(i, _, _)| *i == id) {
            Some((i, n, _)) => Ok(Some(json!({"id": i, "name": n}))),
            None => Err((format!("{key} {id} does not belong to board {}", board.id), key.to_string())),
        },
        None if use_default => Ok(items.iter().find(|(_, _, d)| *d).map(|(i, n, _)| json!({"id": i, "name": n}))),
        None => Ok(None),
    };
    let status_v = match pick("status", &board.statuses, true) {
        Ok(v) => v,
        Err((msg, field)) => return invalid(&msg, &field),
    };
    let team = match pick("team", &board.teams, false) {
        Ok(v) => v,
        Err((msg, field)) => return invalid(&msg, &field),
    };
    let type_v = match pick("type", &board.types, false) {
        Ok(v) => v,
        Err((msg, field)) => return invalid(&msg, &field),
    };
    let subtype = match pick("subType", &board.subtypes, false) {
        Ok(v) => v,
        Err((msg, field)) => return invalid(&msg, &field),
    };
    let board_v = json!({"id": board.id, "name": board.name});
    let id = c.next_ticket_id;
    c.next_ticket_id += 1;
    // Absent references and texts are left out: the schema allows no `null` for them.
    let mut stored = json!({"id": id, "summary": summary, "company": company, "board": board_v});
    let optional = [
        ("externalXRef", xref.map(Value::String)),
        ("status", status_v),
        ("team", team),
        ("type", type_v),
        ("subType", subtype),
        ("initialDescription", body.get("initialDescription").cloned()),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            stored[key] = v;
        }
    }
    let public = public_ticket(&stored);
    c.tickets.push(stored);
    drop(c);
    cw_json(201, &present(ctx, Kind::Ticket, public))
}

fn public_ticket(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(o) = t.as_object_mut() {
        o.remove("initialDescription");
    }
    t
}

fn company_status_id(name: &str) -> i64 {
    match name.to_ascii_lowercase().as_str() {
        "active" => 1,
        "inactive" => 2,
        "not approved" => 3,
        "credit hold" => 4,
        "no longer in business" => 5,
        other => 100 + (fnv1a(other) % 900) as i64,
    }
}

fn company_json(c: &FakeCompany) -> Value {
    json!({
        "id": c.id,
        "identifier": c.identifier,
        "name": c.name,
        "status": {"id": company_status_id(&c.status), "name": c.status},
        "deletedFlag": c.deleted,
        "_info": {"lastUpdated": "2026-01-01T00:00:00Z"}
    })
}

/// ConnectWise sends date-times: a bare `YYYY-MM-DD` the fake was given is served at midnight UTC.
fn date_time(d: &str) -> String {
    if d.len() == 10 { format!("{d}T00:00:00Z") } else { d.to_string() }
}

fn agreement_json(cat: &Catalog, a: &FakeAgreement) -> Value {
    let company = match cat.companies.get(&a.company_id) {
        Some(c) => json!({"id": c.id, "identifier": c.identifier, "name": c.name}),
        None => json!({"id": a.company_id}),
    };
    let mut v = json!({
        "id": a.id,
        "name": a.name,
        "type": {"id": 1, "name": "Managed Services"},
        "company": company,
        "contact": {"id": 1, "name": "Billing Contact"},
        "agreementStatus": a.status,
        "cancelledFlag": a.cancelled_flag,
        "startDate": "2025-01-01T00:00:00Z",
        "prorateFlag": false,
        "_info": {"lastUpdated": "2026-01-01T00:00:00Z"}
    });
    if let Some(d) = &a.next_invoice_date {
        v["nextInvoiceDate"] = json!(d);
    }
    v
}

fn addition_json(cat: &Catalog, a: &FakeAddition) -> Value {
    let agreement_status = cat.agreements.get(&a.agreement_id).map(|g| g.status.clone());
    let amount = |t: &Option<String>| t.as_deref().map(exact_number).unwrap_or(Value::Null);
    let sequence = match &a.sequence_number_text {
        Some(t) => exact_number(t),
        None => json!(a.sequence_number),
    };
    let mut v = json!({
        "id": a.id,
        "product": {"id": a.product_id, "identifier": a.product_identifier},
        "quantity": a.quantity,
        "lessIncluded": amount(&a.less_included),
        "unitPrice": amount(&a.unit_price),
        "unitCost": amount(&a.unit_cost),
        "billCustomer": "Billable",
        "sequenceNumber": sequence,
        "agreementId": a.agreement_id,
        "agreementStatus": agreement_status,
        "description": a.description,
        "uom": "Each",
        "_info": {"lastUpdated": "2026-01-01T00:00:00Z", "updatedBy": "fake"}
    });
    // Non-nullable date-times: left out when not set.
    if let Some(d) = &a.effective_date {
        v["effectiveDate"] = json!(date_time(d));
    }
    if let Some(d) = &a.cancelled_date {
        v["cancelledDate"] = json!(date_time(d));
    }
    v
}

fn board_json(b: &FakeBoard) -> Value {
    json!({
        "id": b.id,
        "name": b.name,
        "location": {"id": 1, "name": "Main"},
        "department": {"id": 1, "identifier": "Services", "name": "Services"},
        "inactiveFlag": false
    })
}

/// A board's teams, statuses, types or subtypes in ConnectWise's shapes (`BoardSubType` has no
/// `defaultFlag`; `BoardTeam` requires a `teamLeader`).
fn board_items_json(b: &FakeBoard, kind: Kind) -> Vec<Value> {
    let items = match kind {
        Kind::Team => &b.teams,
        Kind::Status => &b.statuses,
        Kind::Type => &b.types,
        _ => &b.subtypes,
    };
    items
        .iter()
        .map(|(id, name, default)| match kind {
            Kind::Team => json!({
                "id": id, "name": name, "defaultFlag": default, "boardId": b.id,
                "teamLeader": {"id": 1, "identifier": "lead", "name": "Team Lead"}
            }),
            Kind::Subtype => json!({"id": id, "name": name, "inactiveFlag": false, "board": {"id": b.id, "name": b.name}}),
            _ => json!({"id": id, "name": name, "defaultFlag": default, "board": {"id": b.id, "name": b.name}}),
        })
        .collect()
}

struct ListQuery {
    page: usize,
    page_size: usize,
    conditions: Option<conditions::Expr>,
    others: Vec<(String, String)>,
}

/// Page, page size and conditions of a list request; `Err((message, field))` when invalid.
fn parse_list_query(ctx: &Ctx<'_>, allowed: &[&str]) -> Result<ListQuery, (String, &'static str)> {
    let mut q = ListQuery { page: 1, page_size: 25, conditions: None, others: Vec::new() };
    for (k, v) in url::form_urlencoded::parse(ctx.query.as_bytes()) {
        if k.eq_ignore_ascii_case("page") {
            match v.trim().parse::<i64>() {
                Ok(p) => q.page = p.max(1) as usize,
                Err(_) => return Err(("page must be a number".into(), "page")),
            }
        } else if k.eq_ignore_ascii_case("pageSize") {
            match v.trim().parse::<i64>() {
                Ok(s) if s >= 1 => q.page_size = (s as usize).min(1000),
                Ok(_) => q.page_size = 25,
                Err(_) => return Err(("pageSize must be a number".into(), "pageSize")),
            }
        } else if k.eq_ignore_ascii_case("conditions") {
            if !v.trim().is_empty() {
                match conditions::parse(&v, allowed) {
                    Ok(e) => q.conditions = Some(e),
                    Err(e) => return Err((format!("Invalid conditions: {e}"), "conditions")),
                }
            }
            q.others.push((k.into_owned(), v.into_owned()));
        } else {
            q.others.push((k.into_owned(), v.into_owned()));
        }
    }
    Ok(q)
}

fn count(ctx: &Ctx<'_>, items: Vec<Value>, allowed: &[&str]) -> HttpResponse {
    let q = match parse_list_query(ctx, allowed) {
        Ok(q) => q,
        Err((msg, field)) => return invalid(&msg, field),
    };
    let n = match &q.conditions {
        Some(e) => items.iter().filter(|i| conditions::eval(e, i)).count(),
        None => items.len(),
    };
    cw_json(200, &json!({"count": n}))
}

/// One page of `items` (full records: conditions see every field), each presented as `kind`.
fn list(ctx: &Ctx<'_>, items: Vec<Value>, allowed: &[&str], kind: Kind) -> HttpResponse {
    let q = match parse_list_query(ctx, allowed) {
        Ok(q) => q,
        Err((msg, field)) => return invalid(&msg, field),
    };
    let filtered: Vec<Value> = match &q.conditions {
        Some(e) => items.into_iter().filter(|i| conditions::eval(e, i)).collect(),
        None => items,
    };
    let total = filtered.len();
    let last_page = total.div_ceil(q.page_size).max(1);
    let start = (q.page - 1).saturating_mul(q.page_size).min(total);
    let end = start.saturating_add(q.page_size).min(total);
    let page: Vec<Value> = filtered[start..end].iter().map(|v| present(ctx, kind, v.clone())).collect();

    let site = ctx.state.site_url.get().cloned().unwrap_or_default();
    let link_for = |p: usize| {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &q.others {
            ser.append_pair(k, v);
        }
        ser.append_pair("page", &p.to_string());
        ser.append_pair("pageSize", &q.page_size.to_string());
        format!("<{site}{}?{}>", ctx.full_path, ser.finish())
    };
    let mut links = Vec::new();
    if q.page > 1 {
        links.push(format!("{}; rel=\"prev\"", link_for(q.page - 1)));
    }
    if q.page < last_page {
        links.push(format!("{}; rel=\"next\"", link_for(q.page + 1)));
    }
    links.push(format!("{}; rel=\"first\"", link_for(1)));
    links.push(format!("{}; rel=\"last\"", link_for(last_page)));
    let mut r = cw_json(200, &Value::Array(page));
    if let Ok(v) = links.join(", ").parse() {
        r.headers_mut().insert(actix_web::http::header::LINK, v);
    }
    r
}
