//! HTTP endpoints: GraphQL over HTTP (our own responder — async-graphql-actix-web ignores `Accept`),
//! GraphiQL, `/healthz`, `/readyz`.
//!
//! A GraphQL request costs an actix worker (the threads that also answer `/healthz`) only its
//! headers: reading the JSON body, the token, the tenant's request budget, parsing, the cost and
//! input checks of [`crate::graphql::limits`], validation and execution all run on the GraphQL
//! runtime ([`graphql_runtime`]), in that order — each step refuses before the next, dearer one.
use std::{
    collections::HashMap,
    future::Future,
    sync::{Mutex, RwLock},
};

use actix_web::{
    HttpRequest, HttpResponse,
    http::{StatusCode, header},
    web,
};
use async_graphql::{
    ErrorExtensions, Request, Response, ServerError, Variables,
    parser::{parse_query, types::OperationType},
};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::{
    auth::{AuthError, JwtVerifier, bearer},
    graphql::{AppCtx, AppSchema, limits, loaders::Loaders},
    rate_limit::{TenantBudget, retry_after_secs},
};
use sync_core::auth::Principal;

/// Shared by every HTTP worker.
pub struct HttpState {
    pub schema: AppSchema,
    pub app: AppCtx,
    pub verifier: std::sync::Arc<JwtVerifier>,
    pub graphiql: bool,
    /// Tenant external id → row id (tenants are never deleted while the process runs).
    pub tenants: RwLock<HashMap<String, i64>>,
    /// The per-tenant request budget.
    pub budget: TenantBudget,
    /// Where GraphQL requests run (off the actix workers).
    pub runtime: tokio::runtime::Handle,
}

/// The GraphQL runtime of this process: a multi-threaded tokio runtime (one thread per core, at
/// least two) shared by every `Application` and never shut down (dropping a runtime inside another
/// is not allowed, and requests may run until the process ends).
pub fn graphql_runtime() -> std::io::Result<tokio::runtime::Handle> {
    static RUNTIME: Mutex<Option<&'static tokio::runtime::Runtime>> = Mutex::new(None);
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rt) = *slot {
        return Ok(rt.handle().clone());
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).thread_name("graphql").enable_all().build()?;
    let rt: &'static tokio::runtime::Runtime = Box::leak(Box::new(rt));
    *slot = Some(rt);
    Ok(rt.handle().clone())
}

pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const APPLICATION_JSON: &str = "application/json";

#[derive(Clone, Copy, PartialEq, Eq)]
enum MediaType {
    /// `application/json`: well-formed requests always get 200 (legacy clients).
    Json,
    /// `application/graphql-response+json`: request errors get 4xx.
    GraphqlResponse,
}

impl MediaType {
    fn as_str(self) -> &'static str {
        match self {
            MediaType::Json => "application/json; charset=utf-8",
            MediaType::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
        }
    }
}

/// Pick the response media type from `Accept` (GraphQL-over-HTTP §"Accept"); `None` → 406.
fn negotiate(req: &HttpRequest) -> Option<MediaType> {
    let Some(accept) = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Some(MediaType::Json);
    };
    let mut best: Option<(f32, MediaType)> = None;
    for part in accept.split(',') {
        let mut it = part.split(';');
        let mt = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it.filter_map(|p| p.trim().strip_prefix("q=").and_then(|v| v.parse::<f32>().ok())).next().unwrap_or(1.0);
        let kind = match mt.as_str() {
            GRAPHQL_RESPONSE_JSON => MediaType::GraphqlResponse,
            APPLICATION_JSON | "application/*" | "*/*" => MediaType::Json,
            _ => continue,
        };
        if q <= 0.0 {
            continue;
        }
        // Prefer the newer media type on ties.
        let better = match best {
            None => true,
            Some((bq, bk)) => q > bq || (q == bq && kind == MediaType::GraphqlResponse && bk == MediaType::Json && mt != "*/*"),
        };
        if better {
            best = Some((q, kind));
        }
    }
    best.map(|(_, k)| k)
}

pub(crate) fn error_body(code: &str, message: &str) -> Value {
    json!({"errors": [{"message": message, "extensions": {"code": code}}]})
}

/// A response built off the actix workers (actix's `HttpResponse` stays on them).
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    headers: Vec<(header::HeaderName, String)>,
    body: String,
}

impl Reply {
    fn new(status: StatusCode, mt: MediaType, body: Value) -> Reply {
        Reply { status, content_type: mt.as_str(), headers: Vec::new(), body: body.to_string() }
    }

    /// A request that was refused before it could execute: 400 under
    /// `application/graphql-response+json`, 200 under `application/json`.
    fn not_executed(mt: MediaType, code: &str, message: &str) -> Reply {
        let status = if mt == MediaType::GraphqlResponse { StatusCode::BAD_REQUEST } else { StatusCode::OK };
        Reply::new(status, mt, error_body(code, message))
    }

    fn header(mut self, name: header::HeaderName, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    fn into_response(self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        r.content_type(self.content_type);
        for (name, value) in self.headers {
            r.insert_header((name, value));
        }
        r.body(self.body)
    }
}

fn request_error(mt: MediaType, message: &str) -> Reply {
    // A malformed request is a 400 under either media type.
    Reply::new(StatusCode::BAD_REQUEST, mt, error_body("BAD_REQUEST", message))
}

/// Run `work` on the GraphQL runtime. The actix worker only waits; when the client goes away (the
/// handler is dropped) the work is aborted at its next await, as it would have been on the worker.
async fn off_io_threads(state: &HttpState, mt: MediaType, work: impl Future<Output = Reply> + Send + 'static) -> HttpResponse {
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = state.runtime.spawn(work.instrument(tracing::Span::current()));
    let _abort = AbortOnDrop(task.abort_handle());
    match task.await {
        Ok(reply) => reply.into_response(),
        Err(e) => {
            if e.is_panic() {
                tracing::error!("a resolver panicked");
            }
            Reply::new(StatusCode::INTERNAL_SERVER_ERROR, mt, error_body("INTERNAL", "internal error")).into_response()
        }
    }
}

/// What a GraphQL request asks, once read from a POST body or GET parameters.
struct Call {
    query: String,
    operation_name: Option<String>,
    variables: Option<Value>,
    is_get: bool,
}

fn not_acceptable() -> HttpResponse {
    HttpResponse::NotAcceptable()
        .content_type(APPLICATION_JSON)
        .body(error_body("NOT_ACCEPTABLE", "Accept must allow application/graphql-response+json or application/json").to_string())
}

fn authorization(req: &HttpRequest) -> Option<String> {
    req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// `POST /graphql`.
pub async fn graphql_post(req: HttpRequest, body: web::Bytes, state: web::Data<HttpState>) -> HttpResponse {
    let Some(mt) = negotiate(&req) else {
        return not_acceptable();
    };
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if !content_type.starts_with(APPLICATION_JSON) {
        return Reply::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            mt,
            error_body("UNSUPPORTED_MEDIA_TYPE", "send the request as application/json"),
        )
        .into_response();
    }
    let auth = authorization(&req);
    let shared = state.clone();
    off_io_threads(&state, mt, async move {
        match read_post_body(mt, &body) {
            Ok(call) => graphql(&shared, mt, auth, call).await,
            Err(reply) => reply,
        }
    })
    .await
}

/// The request of a POST body: one JSON object with a `query` (batches are refused).
fn read_post_body(mt: MediaType, body: &[u8]) -> Result<Call, Reply> {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Err(request_error(mt, &format!("the body is not JSON: {e}"))),
    };
    let obj = match parsed {
        Value::Object(o) => o,
        Value::Array(_) => return Err(request_error(mt, "batched requests are not supported; send one operation per request")),
        _ => return Err(request_error(mt, "the body must be a JSON object with a `query`")),
    };
    let Some(Value::String(query)) = obj.get("query") else {
        return Err(request_error(mt, "the request has no `query` string"));
    };
    let operation_name = match obj.get("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(request_error(mt, "`operationName` must be a string")),
    };
    let variables = match obj.get("variables") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err(request_error(mt, "`variables` must be an object")),
    };
    Ok(Call { query: query.clone(), operation_name, variables, is_get: false })
}

/// `GET /graphql`: GraphiQL for browsers, queries (never mutations) for clients.
pub async fn graphql_get(req: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    let params: HashMap<String, String> =
        web::Query::<HashMap<String, String>>::from_query(req.query_string()).map(|q| q.into_inner()).unwrap_or_default();
    let wants_html = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if !params.contains_key("query") && wants_html {
        return crate::graphiql::page(&state);
    }
    let Some(mt) = negotiate(&req) else {
        return not_acceptable();
    };
    let Some(query) = params.get("query").cloned() else {
        return request_error(mt, "the request has no `query` parameter").into_response();
    };
    let variables = match params.get("variables").map(|v| serde_json::from_str::<Value>(v)) {
        None => None,
        Some(Ok(v @ Value::Object(_))) => Some(v),
        Some(Ok(Value::Null)) => None,
        Some(_) => return request_error(mt, "`variables` must be a JSON object").into_response(),
    };
    let call = Call { query, operation_name: params.get("operationName").cloned(), variables, is_get: true };
    let auth = authorization(&req);
    let shared = state.clone();
    off_io_threads(&state, mt, async move { graphql(&shared, mt, auth, call).await }).await
}

pub(crate) async fn authenticate(authorization: Option<&str>, state: &HttpState) -> Result<Principal, AuthError> {
    let claims = state.verifier.verify(bearer(authorization)?).await?;
    let cached = state.tenants.read().ok().and_then(|m| m.get(&claims.tenant).copied());
    let tenant_id = match cached {
        Some(id) => id,
        None => {
            let id =
                sync_core::service::tenants::ensure_tenant(&state.app.db, &claims.tenant, state.app.clock.now()).await.map_err(|e| {
                    tracing::error!(error = %e, "tenant lookup failed");
                    AuthError::TenantLookup
                })?;
            if let Ok(mut m) = state.tenants.write() {
                m.insert(claims.tenant.clone(), id);
            }
            id
        }
    };
    Ok(Principal { sub: claims.sub, tenant_key: claims.tenant, tenant_id, roles: claims.roles })
}

/// The GraphQL pipeline, cheapest refusal first: token, the tenant's budget, syntax, GET rules, the
/// document's cost and input strings (linear, before validation expands anything), then
/// validation and execution.
async fn graphql(state: &HttpState, mt: MediaType, authorization: Option<String>, call: Call) -> Reply {
    // A request without a valid token costs a signature check, nothing more.
    let principal = match authenticate(authorization.as_deref(), state).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(reason = %e.detail(), "bearer token refused");
            return Reply::new(StatusCode::UNAUTHORIZED, mt, error_body("UNAUTHENTICATED", &e.to_string()))
                .header(header::WWW_AUTHENTICATE, "Bearer");
        }
    };
    if let Err(wait) = state.budget.check(principal.tenant_id) {
        let secs = retry_after_secs(wait);
        let body = json!({"errors": [{
            "message": format!("too many requests for this tenant; retry after {secs} s"),
            "extensions": {"code": "RATE_LIMITED", "retryAfterSeconds": secs},
        }]});
        return Reply::new(StatusCode::TOO_MANY_REQUESTS, mt, body).header(header::RETRY_AFTER, secs.to_string());
    }
    let doc = match parse_query(&call.query) {
        Ok(d) => d,
        Err(e) => {
            crate::metrics::record_graphql_parse_failure();
            return Reply::not_executed(mt, "GRAPHQL_PARSE_FAILED", &e.to_string());
        }
    };
    let operation_metrics = crate::metrics::GraphqlOperationMetrics::start(&doc, call.operation_name.as_deref());
    if call.is_get {
        let op_type = match &call.operation_name {
            Some(name) => doc.operations.iter().find(|(n, _)| n.map(|n| n.as_str()) == Some(name.as_str())).map(|(_, o)| o.node.ty),
            None => doc.operations.iter().next().map(|(_, o)| o.node.ty),
        };
        if matches!(op_type, Some(OperationType::Mutation) | Some(OperationType::Subscription)) {
            return Reply::new(StatusCode::METHOD_NOT_ALLOWED, mt, error_body("METHOD_NOT_ALLOWED", "mutations must be sent with POST"))
                .header(header::ALLOW, "POST");
        }
    }
    // Bounded before any work: the document's expanded size, aliases and root fields, and every
    // input string (length, control characters).
    if let Err(message) =
        limits::check_cost(&doc).and_then(|()| limits::check_inputs(&doc, call.variables.as_ref(), call.operation_name.as_deref()))
    {
        return Reply::not_executed(mt, "BAD_USER_INPUT", &message);
    }
    let mut request = Request::new(call.query).data(Loaders::new(&state.app.db, principal.tenant_id)).data(principal);
    // Parsed once: the schema executes the document parsed above.
    request.set_parsed_query(doc);
    if let Some(name) = call.operation_name {
        request = request.operation_name(name);
    }
    if let Some(v) = call.variables {
        request = request.variables(Variables::from_json(v));
    }
    let response = with_codes(state.schema.execute(request).await);
    operation_metrics.finish(&response);
    // Under the new media type, a request that never executed (parse/validation/variable errors:
    // no data, no error with a path) is a 400.
    let never_executed =
        response.data == async_graphql::Value::Null && !response.errors.is_empty() && response.errors.iter().all(|e| e.path.is_empty());
    let status = if mt == MediaType::GraphqlResponse && never_executed { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let body = serde_json::to_string(&response).unwrap_or_else(|_| error_body("INTERNAL", "could not serialise the response").to_string());
    Reply { status, content_type: mt.as_str(), headers: Vec::new(), body }
}

/// Every error gets an `extensions.code`: ours set it; validation errors become `BAD_USER_INPUT`.
fn with_codes(mut response: Response) -> Response {
    response.errors = response
        .errors
        .into_iter()
        .map(|e: ServerError| {
            let has_code = e.extensions.as_ref().is_some_and(|x| x.get("code").is_some());
            if has_code {
                e
            } else {
                let message = e.message.clone();
                let locations = e.locations.clone();
                let path = e.path.clone();
                let mut out = async_graphql::Error::new(message)
                    .extend_with(|_, x| x.set("code", "BAD_USER_INPUT"))
                    .into_server_error(async_graphql::Pos::default());
                out.locations = locations;
                out.path = path;
                out
            }
        })
        .collect();
    response
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// Ready when PostgreSQL/SQLite and the queue answer.
pub async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    let db_ok = state.app.db.ping().await.is_ok();
    let queue_ok = state.app.queue.ping().await.is_ok();
    let body = json!({"database": if db_ok {"ok"} else {"unreachable"}, "queue": if queue_ok {"ok"} else {"unreachable"}});
    if db_ok && queue_ok { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}
