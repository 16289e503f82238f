//! HTTP endpoints: GraphQL over HTTP (our own responder — async-graphql-actix-web ignores `Accept`),
//! GraphiQL, `/healthz`, `/readyz`.
use std::{collections::HashMap, panic::AssertUnwindSafe, sync::RwLock};

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use async_graphql::{
    ErrorExtensions, Request, Response, ServerError, Variables,
    parser::{parse_query, types::OperationType},
};
use futures::FutureExt;
use serde_json::{Value, json};

use crate::{
    auth::{AuthError, JwtVerifier, bearer},
    graphql::{AppCtx, AppSchema, loaders::Loaders},
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

fn error_body(code: &str, message: &str) -> Value {
    json!({"errors": [{"message": message, "extensions": {"code": code}}]})
}

fn reply(status: actix_web::http::StatusCode, mt: MediaType, body: Value) -> HttpResponse {
    HttpResponse::build(status).content_type(mt.as_str()).body(body.to_string())
}

fn request_error(mt: MediaType, message: &str) -> HttpResponse {
    // A malformed request is a 400 under either media type.
    reply(actix_web::http::StatusCode::BAD_REQUEST, mt, error_body("BAD_REQUEST", message))
}

/// `POST /graphql`.
pub async fn graphql_post(req: HttpRequest, body: web::Bytes, state: web::Data<HttpState>) -> HttpResponse {
    let Some(mt) = negotiate(&req) else {
        return HttpResponse::NotAcceptable()
            .content_type(APPLICATION_JSON)
            .body(error_body("NOT_ACCEPTABLE", "Accept must allow application/graphql-response+json or application/json").to_string());
    };
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if !content_type.starts_with(APPLICATION_JSON) {
        return reply(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            mt,
            error_body("UNSUPPORTED_MEDIA_TYPE", "send the request as application/json"),
        );
    }
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return request_error(mt, &format!("the body is not JSON: {e}")),
    };
    let obj = match parsed {
        Value::Object(o) => o,
        Value::Array(_) => return request_error(mt, "batched requests are not supported; send one operation per request"),
        _ => return request_error(mt, "the body must be a JSON object with a `query`"),
    };
    let Some(Value::String(query)) = obj.get("query") else {
        return request_error(mt, "the request has no `query` string");
    };
    let operation_name = match obj.get("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return request_error(mt, "`operationName` must be a string"),
    };
    let variables = match obj.get("variables") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return request_error(mt, "`variables` must be an object"),
    };
    execute(&req, &state, mt, query.clone(), operation_name, variables, false).await
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
        return HttpResponse::NotAcceptable()
            .content_type(APPLICATION_JSON)
            .body(error_body("NOT_ACCEPTABLE", "Accept must allow application/graphql-response+json or application/json").to_string());
    };
    let Some(query) = params.get("query").cloned() else {
        return request_error(mt, "the request has no `query` parameter");
    };
    let variables = match params.get("variables").map(|v| serde_json::from_str::<Value>(v)) {
        None => None,
        Some(Ok(v @ Value::Object(_))) => Some(v),
        Some(Ok(Value::Null)) => None,
        Some(_) => return request_error(mt, "`variables` must be a JSON object"),
    };
    execute(&req, &state, mt, query, params.get("operationName").cloned(), variables, true).await
}

async fn authenticate(req: &HttpRequest, state: &HttpState) -> Result<Principal, AuthError> {
    let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let claims = state.verifier.verify(bearer(header)?).await?;
    let cached = state.tenants.read().ok().and_then(|m| m.get(&claims.tenant).copied());
    let tenant_id = match cached {
        Some(id) => id,
        None => {
            let id =
                sync_core::service::tenants::ensure_tenant(&state.app.db, &claims.tenant, state.app.clock.now()).await.map_err(|e| {
                    tracing::error!(error = %e, "tenant lookup failed");
                    AuthError::Invalid("tenant lookup failed".into())
                })?;
            if let Ok(mut m) = state.tenants.write() {
                m.insert(claims.tenant.clone(), id);
            }
            id
        }
    };
    Ok(Principal { sub: claims.sub, tenant_key: claims.tenant, tenant_id, roles: claims.roles })
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    req: &HttpRequest,
    state: &HttpState,
    mt: MediaType,
    query: String,
    operation_name: Option<String>,
    variables: Option<Value>,
    is_get: bool,
) -> HttpResponse {
    // Syntax first: a document that does not parse is a request error, whoever sends it.
    let doc = match parse_query(&query) {
        Ok(d) => d,
        Err(e) => {
            crate::metrics::record_graphql_parse_failure();
            let status =
                if mt == MediaType::GraphqlResponse { actix_web::http::StatusCode::BAD_REQUEST } else { actix_web::http::StatusCode::OK };
            return reply(status, mt, error_body("GRAPHQL_PARSE_FAILED", &e.to_string()));
        }
    };
    let operation_metrics = crate::metrics::GraphqlOperationMetrics::start(&doc, operation_name.as_deref());
    if is_get {
        let op_type = match &operation_name {
            Some(name) => doc.operations.iter().find(|(n, _)| n.map(|n| n.as_str()) == Some(name.as_str())).map(|(_, o)| o.node.ty),
            None => doc.operations.iter().next().map(|(_, o)| o.node.ty),
        };
        if matches!(op_type, Some(OperationType::Mutation) | Some(OperationType::Subscription)) {
            return HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, "POST"))
                .content_type(mt.as_str())
                .body(error_body("METHOD_NOT_ALLOWED", "mutations must be sent with POST").to_string());
        }
    }
    let principal = match authenticate(req, state).await {
        Ok(p) => p,
        Err(e) => {
            return HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .content_type(mt.as_str())
                .body(error_body("UNAUTHENTICATED", &e.to_string()).to_string());
        }
    };
    let mut request = Request::new(query).data(Loaders::new(&state.app.db, principal.tenant_id)).data(principal);
    // Parsed once: the schema executes the document parsed above.
    request.set_parsed_query(doc);
    if let Some(name) = operation_name {
        request = request.operation_name(name);
    }
    if let Some(v) = variables {
        request = request.variables(Variables::from_json(v));
    }
    let response = match AssertUnwindSafe(state.schema.execute(request)).catch_unwind().await {
        Ok(r) => r,
        Err(_) => {
            tracing::error!("a resolver panicked");
            return reply(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR, mt, error_body("INTERNAL", "internal error"));
        }
    };
    let response = with_codes(response);
    operation_metrics.finish(&response);
    // Under the new media type, a request that never executed (parse/validation/variable errors:
    // no data, no error with a path) is a 400.
    let never_executed =
        response.data == async_graphql::Value::Null && !response.errors.is_empty() && response.errors.iter().all(|e| e.path.is_empty());
    let status = if mt == MediaType::GraphqlResponse && never_executed {
        actix_web::http::StatusCode::BAD_REQUEST
    } else {
        actix_web::http::StatusCode::OK
    };
    let body = serde_json::to_string(&response).unwrap_or_else(|_| error_body("INTERNAL", "could not serialise the response").to_string());
    HttpResponse::build(status).content_type(mt.as_str()).body(body)
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
