//! The HTTP client.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use url::Url;

use crate::error::{CwError, CwErrorKind};
use crate::guard::{CwHttp, ForbiddenDestination};
use crate::models::{Addition, Agreement, Board, BoardItem, BoardItemKind, Company, CwResponse, NewTicket, Ticket, truncate_chars};

/// The `Accept` header pinning the ConnectWise model version.
pub const ACCEPT_HEADER_VALUE: &str = "application/vnd.connectwise.com+json; version=2025.8";

/// Page size requested on every list call (ConnectWise's maximum).
pub const PAGE_SIZE: usize = 1000;

/// Upper bound on pages followed by one list call (guards against `Link` loops).
pub const MAX_PAGES: usize = 10_000;

/// Header carrying ConnectWise's request id.
const REQUEST_ID_HEADER: &str = "x-cw-request-id";

/// Whether `codebase` has the shape of a ConnectWise codebase (`v4_6_release`, `v2025_1`, with an
/// optional trailing slash): `^[A-Za-z0-9_.-]{1,64}/?$`, and not `.` or `..`. Anything else, from a
/// user or from a site's `companyinfo`, is refused rather than put into a URL or stored.
pub fn is_valid_codebase(codebase: &str) -> bool {
    let bare = codebase.strip_suffix('/').unwrap_or(codebase);
    (1..=64).contains(&bare.len())
        && bare.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && bare != "."
        && bare != ".."
}

/// The API member's connection settings for one ConnectWise tenant.
#[derive(Clone)]
pub struct Credentials {
    /// Scheme + host (+ port), e.g. `https://api-na.myconnectwise.net`; any path, query or
    /// userinfo is ignored.
    pub site_url: Url,
    /// Codebase, e.g. `v4_6_release` (surrounding slashes are ignored).
    pub codebase: String,
    /// The MSP's ConnectWise company id (login company), e.g. `msp`.
    pub company_id: String,
    /// The API member's public key.
    pub public_key: String,
    /// The API member's private key.
    pub private_key: SecretString,
    /// The integration's `clientId` GUID.
    pub client_id: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("site_url", &origin_of(&self.site_url))
            .field("codebase", &self.codebase)
            .field("company_id", &self.company_id)
            .field("public_key", &self.public_key)
            .field("private_key", &"[REDACTED]")
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// `scheme://host[:port]` of a URL (no userinfo, path or query).
fn origin_of(url: &Url) -> String {
    let origin = url.origin();
    if origin.is_tuple() {
        origin.ascii_serialization()
    } else {
        // Not http(s): keep something recognisable for error messages, minus any userinfo.
        let mut u = url.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.as_str().trim_end_matches('/').to_string()
    }
}

/// A typed ConnectWise client for one tenant.
///
/// Cheap to clone (the inner `reqwest::Client` is reference counted).
#[derive(Clone)]
pub struct CwClient {
    http: CwHttp,
    creds: Credentials,
    timeout: Duration,
    origin: String,
}

impl fmt::Debug for CwClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CwClient").field("creds", &self.creds).field("timeout", &self.timeout).finish()
    }
}

/// What [`CwClient::execute`] returns for a 2xx response.
struct RawResponse {
    status: u16,
    request_id: Option<String>,
    duration: Duration,
    next_link: Option<String>,
    bytes: Vec<u8>,
}

impl RawResponse {
    fn decode<T: DeserializeOwned>(self) -> Result<CwResponse<T>, CwError> {
        match serde_json::from_slice::<T>(&self.bytes) {
            Ok(body) => Ok(CwResponse { body, status: self.status, request_id: self.request_id, duration: self.duration }),
            Err(e) => Err(CwError {
                kind: CwErrorKind::Decode(json_error(&e)),
                status: Some(self.status),
                request_id: self.request_id,
                duration: self.duration,
                retry_after: None,
            }),
        }
    }
}

impl CwClient {
    /// A client using `http` (shared connection pool and the outbound address guard), `creds`,
    /// and `timeout` per request (covering connect, send and reading the whole body).
    pub fn new(http: CwHttp, creds: Credentials, timeout: Duration) -> Self {
        let origin = origin_of(&creds.site_url);
        CwClient { http, creds, timeout, origin }
    }

    /// The credentials this client uses.
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// The configured per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `{site}/{codebase}/apis/3.0`.
    pub fn base_url(&self) -> String {
        format!("{}/{}/apis/3.0", self.origin, self.creds.codebase.trim_matches('/'))
    }

    /// `GET /system/info` — a cheap connectivity and credentials check.
    pub async fn system_info(&self) -> Result<CwResponse<serde_json::Value>, CwError> {
        self.get_one("/system/info").await
    }

    /// All non-deleted companies, any status (`GET /company/companies?conditions=deletedFlag=false`).
    pub async fn list_companies(&self) -> Result<Vec<Company>, CwError> {
        self.get_all("/company/companies", Some("deletedFlag=false")).await
    }

    /// One company.
    pub async fn get_company(&self, id: i64) -> Result<CwResponse<Company>, CwError> {
        self.get_one(&format!("/company/companies/{id}")).await
    }

    /// All agreements (`GET /finance/agreements`).
    pub async fn list_agreements(&self) -> Result<Vec<Agreement>, CwError> {
        self.get_all("/finance/agreements", None).await
    }

    /// One agreement.
    pub async fn get_agreement(&self, id: i64) -> Result<CwResponse<Agreement>, CwError> {
        self.get_one(&format!("/finance/agreements/{id}")).await
    }

    /// All additions of an agreement.
    pub async fn list_additions(&self, agreement_id: i64) -> Result<Vec<Addition>, CwError> {
        self.get_all(&format!("/finance/agreements/{agreement_id}/additions"), None).await
    }

    /// One addition (`GET /finance/agreements/{agreementId}/additions/{additionId}`).
    pub async fn get_addition(&self, agreement_id: i64, addition_id: i64) -> Result<CwResponse<Addition>, CwError> {
        self.get_one(&format!("/finance/agreements/{agreement_id}/additions/{addition_id}")).await
    }

    /// Sets an addition's quantity with
    /// `PATCH [{"op":"replace","path":"quantity","value":Q}]`; returns the updated addition.
    pub async fn patch_addition_quantity(
        &self,
        agreement_id: i64,
        addition_id: i64,
        quantity: i64,
    ) -> Result<CwResponse<Addition>, CwError> {
        let body = serde_json::json!([{"op": "replace", "path": "quantity", "value": quantity}]);
        let url = self.url(&format!("/finance/agreements/{agreement_id}/additions/{addition_id}"))?;
        self.execute(Method::PATCH, url, Some(body.to_string().into_bytes())).await?.decode()
    }

    /// All service boards.
    pub async fn list_boards(&self) -> Result<Vec<Board>, CwError> {
        self.get_all("/service/boards", None).await
    }

    /// A board's teams, statuses, types or subtypes.
    pub async fn list_board_items(&self, board_id: i64, kind: BoardItemKind) -> Result<Vec<BoardItem>, CwError> {
        self.get_all(&format!("/service/boards/{board_id}/{}", kind.path_segment()), None).await
    }

    /// The first ticket whose `externalXRef` equals `xref` (truncated to 100 characters, as
    /// [`NewTicket`] sends it), if any.
    pub async fn find_ticket_by_xref(&self, xref: &str) -> Result<Option<Ticket>, CwError> {
        let xref = truncate_chars(xref, 100);
        let conditions = format!("externalXRef={}", quote_condition_string(xref));
        let tickets: Vec<Ticket> = self.get_all("/service/tickets", Some(&conditions)).await?;
        // Defensive: only trust an exact match even if the server ignored the condition.
        Ok(tickets.into_iter().find(|t| t.external_x_ref.as_deref() == Some(xref)))
    }

    /// Creates a ticket (`POST /service/tickets`).
    pub async fn create_ticket(&self, t: &NewTicket) -> Result<CwResponse<Ticket>, CwError> {
        let url = self.url("/service/tickets")?;
        let body =
            serde_json::to_vec(t).map_err(|e| CwError::new(CwErrorKind::Decode(format!("cannot encode ticket: {e}")), Duration::ZERO))?;
        self.execute(Method::POST, url, Some(body)).await?.decode()
    }

    fn url(&self, path: &str) -> Result<Url, CwError> {
        if !is_valid_codebase(self.creds.codebase.trim_start_matches('/')) {
            return Err(CwError::new(
                CwErrorKind::InvalidUrl("the codebase is not a ConnectWise codebase such as v4_6_release".into()),
                Duration::ZERO,
            ));
        }
        let raw = format!("{}{}", self.base_url(), path);
        let url = Url::parse(&raw).map_err(|e| CwError::new(CwErrorKind::InvalidUrl(format!("{raw}: {e}")), Duration::ZERO))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(CwError::new(CwErrorKind::InvalidUrl(format!("{raw}: scheme must be http or https")), Duration::ZERO));
        }
        Ok(url)
    }

    async fn get_one<T: DeserializeOwned>(&self, path: &str) -> Result<CwResponse<T>, CwError> {
        let url = self.url(path)?;
        self.execute(Method::GET, url, None).await?.decode()
    }

    /// Reads every page of a list, following `Link: rel="next"`.
    async fn get_all<T: DeserializeOwned>(&self, path: &str, conditions: Option<&str>) -> Result<Vec<T>, CwError> {
        let mut url = self.url(path)?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(c) = conditions {
                q.append_pair("conditions", c);
            }
            q.append_pair("page", "1");
            q.append_pair("pageSize", &PAGE_SIZE.to_string());
        }
        let mut out: Vec<T> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let started = Instant::now();
        for _ in 0..MAX_PAGES {
            seen.insert(url.as_str().to_string());
            let raw = self.execute(Method::GET, url.clone(), None).await?;
            let next = raw.next_link.clone();
            let (status, request_id) = (raw.status, raw.request_id.clone());
            let page: Vec<T> = raw.decode::<Vec<T>>()?.body;
            let empty = page.is_empty();
            out.extend(page);
            let Some(next) = next else { return Ok(out) };
            if empty {
                return Ok(out);
            }
            let next_url = self.rebase_next(&url, &next).map_err(|m| CwError {
                kind: CwErrorKind::Decode(m),
                status: Some(status),
                request_id: request_id.clone(),
                duration: started.elapsed(),
                retry_after: None,
            })?;
            if seen.contains(next_url.as_str()) {
                return Err(CwError {
                    kind: CwErrorKind::Decode("paging loop: Link rel=\"next\" points back to a page already read".into()),
                    status: Some(status),
                    request_id,
                    duration: started.elapsed(),
                    retry_after: None,
                });
            }
            url = next_url;
        }
        Err(CwError::new(CwErrorKind::Decode(format!("more than {MAX_PAGES} pages for {path}")), started.elapsed()))
    }

    /// Resolves a `next` link against the current URL and forces it onto the configured site
    /// (so credentials are never sent to another host).
    fn rebase_next(&self, current: &Url, next: &str) -> Result<Url, String> {
        let resolved = current.join(next).map_err(|e| format!("invalid Link rel=\"next\" URL: {e}"))?;
        let mut raw = format!("{}{}", self.origin, resolved.path());
        if let Some(q) = resolved.query() {
            raw.push('?');
            raw.push_str(q);
        }
        Url::parse(&raw).map_err(|e| format!("invalid Link rel=\"next\" URL: {e}"))
    }

    fn headers(&self) -> Result<HeaderMap, CwError> {
        let mut h = HeaderMap::new();
        let token = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}+{}:{}",
            self.creds.company_id,
            self.creds.public_key,
            self.creds.private_key.expose_secret()
        ));
        let mut auth = HeaderValue::from_str(&format!("Basic {token}"))
            .map_err(|_| CwError::new(CwErrorKind::InvalidUrl("credentials cannot form an HTTP header".into()), Duration::ZERO))?;
        auth.set_sensitive(true);
        h.insert(AUTHORIZATION, auth);
        let client_id = HeaderValue::from_str(&self.creds.client_id).map_err(|_| {
            CwError::new(CwErrorKind::InvalidUrl("clientId contains characters not allowed in a header".into()), Duration::ZERO)
        })?;
        h.insert("clientId", client_id);
        h.insert(ACCEPT, HeaderValue::from_static(ACCEPT_HEADER_VALUE));
        Ok(h)
    }

    /// Sends one request and reads the whole body within the timeout; non-2xx become errors.
    async fn execute(&self, method: Method, url: Url, body: Option<Vec<u8>>) -> Result<RawResponse, CwError> {
        // IP literals never reach the resolver, and the scheme may have been allowed once only.
        self.http.check_url(&url)?;
        let headers = self.headers()?;
        let mut rb = self.http.client().request(method.clone(), url.clone()).headers(headers).timeout(self.timeout);
        if let Some(b) = body {
            rb = rb.header(CONTENT_TYPE, HeaderValue::from_static("application/json")).body(b);
        }
        let started = Instant::now();
        let result = send_and_read(&self.timeout, rb).await;
        let duration = started.elapsed();
        let outcome = classify(result, duration, &method, &url);
        match &outcome {
            Ok(r) => tracing::debug!(
                method = %method, path = %url.path(), status = r.status,
                request_id = r.request_id.as_deref().unwrap_or("-"),
                duration_ms = duration.as_millis() as u64, "connectwise call"
            ),
            Err(e) => tracing::debug!(
                method = %method, path = %url.path(), status = e.status.unwrap_or(0),
                request_id = e.request_id.as_deref().unwrap_or("-"), code = e.code(),
                duration_ms = duration.as_millis() as u64, "connectwise call failed"
            ),
        }
        outcome
    }
}

/// Status, headers and body of a response (any status), or the transport error.
type Received = (u16, HeaderMap, Vec<u8>);

enum SendError {
    Timeout,
    Transport(reqwest::Error),
    /// Headers arrived, then the body failed.
    Body(u16, HeaderMap, reqwest::Error),
}

async fn send_and_read(timeout: &Duration, rb: reqwest::RequestBuilder) -> Result<Received, SendError> {
    let fut = async {
        let resp = rb.send().await.map_err(SendError::Transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        match resp.bytes().await {
            Ok(b) => Ok((status, headers, b.to_vec())),
            Err(e) => Err(SendError::Body(status, headers, e)),
        }
    };
    // reqwest enforces the timeout too; this is a backstop covering the whole exchange.
    match tokio::time::timeout(*timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(SendError::Timeout),
    }
}

/// ConnectWise's request id, when it looks like one (it is shown and stored; anything else from an
/// unknown server is dropped).
fn request_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?.trim();
    let sane = !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    sane.then(|| v.to_string())
}

/// A JSON error without the text it quotes (serde quotes offending values, which come from the
/// response): its class and position only.
fn json_error(e: &serde_json::Error) -> String {
    let class = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "not the expected shape",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("invalid response body: {class} (line {}, column {})", e.line(), e.column())
}

fn classify(result: Result<Received, SendError>, duration: Duration, method: &Method, url: &Url) -> Result<RawResponse, CwError> {
    let (status, headers, bytes) = match result {
        Ok(r) => r,
        Err(SendError::Timeout) => return Err(CwError::new(CwErrorKind::Timeout, duration)),
        Err(SendError::Transport(e)) => {
            return Err(transport_error(e, None, duration, method, url));
        }
        Err(SendError::Body(status, headers, e)) => {
            let mut err = transport_error(e, Some(status), duration, method, url);
            err.request_id = request_id(&headers);
            return Err(err);
        }
    };
    let request_id = request_id(&headers);
    if (200..300).contains(&status) {
        let next_link = headers.get_all(reqwest::header::LINK).iter().filter_map(|v| v.to_str().ok()).find_map(next_link);
        return Ok(RawResponse { status, request_id, duration, next_link, bytes });
    }
    if (300..400).contains(&status) {
        // Never followed, and neither its body nor its `Location` is kept.
        return Err(CwError { kind: CwErrorKind::Redirect, status: Some(status), request_id, duration, retry_after: None });
    }
    let (code, message) = parse_error_body(status, &bytes);
    let retry_after = if status == 429 || status == 503 {
        headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after)
    } else {
        None
    };
    Err(CwError { kind: CwErrorKind::Http { code, message }, status: Some(status), request_id, duration, retry_after })
}

fn transport_error(e: reqwest::Error, status: Option<u16>, duration: Duration, method: &Method, url: &Url) -> CwError {
    if let Some(refused) = find_cause::<ForbiddenDestination>(&e) {
        return CwError { kind: CwErrorKind::ForbiddenAddress(refused.to_string()), status, request_id: None, duration, retry_after: None };
    }
    let kind = if e.is_timeout() {
        CwErrorKind::Timeout
    } else if e.is_builder() {
        CwErrorKind::InvalidUrl(error_chain(&e.without_url()))
    } else if e.is_decode() {
        CwErrorKind::Decode(error_chain(&e.without_url()))
    } else {
        // connect, request, body: the connection could not be used or broke off.
        let mut safe = url.clone();
        let _ = safe.set_username("");
        let _ = safe.set_password(None);
        safe.set_query(None);
        CwErrorKind::Connect(format!("{} ({method} {safe})", error_chain(&e.without_url())))
    };
    CwError { kind, status, request_id: None, duration, retry_after: None }
}

/// The first error of type `T` in `e`'s source chain.
fn find_cause<'a, T: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        cur = err.source();
    }
    None
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    errors: Option<Vec<ErrorItem>>,
}

#[derive(serde::Deserialize)]
struct ErrorItem {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    field: Option<String>,
}

/// A code or field name as ConnectWise writes them (`InvalidObject`, `quantity`,
/// `agreement/id`): short, ASCII, no spaces. Anything else is not ConnectWise's and is dropped.
fn is_identifier(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-'))
}

/// `(code, message)` of an error answer. Only ConnectWise's well-formed `code` (and each field
/// error's `field: code`) is kept beside the status reason: bodies are never echoed or stored,
/// whoever sent them (an answer that is not ConnectWise's could be anything).
fn parse_error_body(status: u16, bytes: &[u8]) -> (Option<String>, String) {
    let reason = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("unexpected status").to_string();
    let Ok(body) = serde_json::from_slice::<ErrorBody>(bytes) else {
        return (None, reason);
    };
    let Some(code) = body.code.filter(|c| is_identifier(c)) else {
        return (None, reason);
    };
    let details: Vec<String> = body
        .errors
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| {
            let code = i.code.filter(|c| is_identifier(c))?;
            Some(match i.field.filter(|f| is_identifier(f)) {
                Some(f) => format!("{f}: {code}"),
                None => code,
            })
        })
        .take(10)
        .collect();
    let message = if details.is_empty() { reason } else { format!("{reason} ({})", details.join("; ")) };
    (Some(code), message)
}

/// Parses `Retry-After`: delay seconds, or an HTTP-date (delay until then, at least zero).
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// The `rel="next"` target of a `Link` header value, if any.
fn next_link(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after.find('>')?;
        let target = &after[..end];
        let params_and_more = &after[end + 1..];
        let params = match params_and_more.find('<') {
            Some(i) => &params_and_more[..i],
            None => params_and_more,
        };
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            let Some((k, v)) = p.split_once('=') else {
                return false;
            };
            k.trim().eq_ignore_ascii_case("rel") && v.trim().trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.trim().to_string());
        }
        rest = params_and_more;
    }
    None
}

/// A ConnectWise conditions string literal: `"…"` with `\` and `"` escaped.
fn quote_condition_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Finds a site's codebase: `GET {site}/login/companyinfo/{companyId}` (no credentials), field
/// `Codebase` such as `"v4_6_release/"`, returned without the trailing slash. A `Codebase` that is
/// not shaped like one ([`is_valid_codebase`]) is refused, never shown or stored.
pub async fn discover_codebase(http: &CwHttp, site_url: &Url, company_id: &str, timeout: Duration) -> Result<String, CwError> {
    let origin = origin_of(site_url);
    let mut url = Url::parse(&origin).map_err(|e| CwError::new(CwErrorKind::InvalidUrl(format!("{origin}: {e}")), Duration::ZERO))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CwError::new(CwErrorKind::InvalidUrl(format!("{origin}: scheme must be http or https")), Duration::ZERO));
    }
    url.path_segments_mut()
        .map_err(|_| CwError::new(CwErrorKind::InvalidUrl(format!("{origin}: cannot carry a path")), Duration::ZERO))?
        .clear()
        .extend(["login", "companyinfo", company_id]);
    http.check_url(&url)?;
    let rb = http.client().get(url.clone()).header(ACCEPT, HeaderValue::from_static("application/json")).timeout(timeout);
    let started = Instant::now();
    let result = send_and_read(&timeout, rb).await;
    let raw = classify(result, started.elapsed(), &Method::GET, &url)?;
    let (status, request_id, duration) = (raw.status, raw.request_id.clone(), raw.duration);
    let info: serde_json::Value = raw.decode::<serde_json::Value>()?.body;
    let refused = |m: &str| CwError {
        kind: CwErrorKind::Decode(m.to_string()),
        status: Some(status),
        request_id: request_id.clone(),
        duration,
        retry_after: None,
    };
    match info.get("Codebase").and_then(|v| v.as_str()).map(str::trim).filter(|s| !s.is_empty()) {
        None => Err(refused("companyinfo has no Codebase (unknown company id?)")),
        Some(c) if !is_valid_codebase(c) => Err(refused("companyinfo answered a Codebase that is not shaped like one")),
        Some(c) => Ok(c.trim_matches('/').to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next() {
        let h = r#"<https://x/a?page=1&pageSize=2>; rel="first", <https://x/a?page=3&pageSize=2>; rel="next", <https://x/a?page=9>; rel="last""#;
        assert_eq!(next_link(h).as_deref(), Some("https://x/a?page=3&pageSize=2"));
        assert_eq!(next_link(r#"<https://x/a?page=1>; rel="prev""#), None);
        assert_eq!(next_link(r#"</a?page=2>; rel=next"#).as_deref(), Some("/a?page=2"));
        assert_eq!(next_link(""), None);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let future = (chrono::Utc::now() + chrono::Duration::seconds(120)).format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let d = parse_retry_after(&future).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn error_bodies_are_reduced_to_connectwise_codes() {
        let (c, m) = parse_error_body(
            400,
            br#"{"code":"InvalidObject","message":"bad","errors":[{"code":"ObjectExists","message":"dup","field":"name"}]}"#,
        );
        assert_eq!(c.as_deref(), Some("InvalidObject"));
        assert_eq!(m, "Bad Request (name: ObjectExists)");
        // Not ConnectWise's: only the status reason.
        let (c, m) = parse_error_body(502, b"<html>gateway</html>");
        assert_eq!((c, m.as_str()), (None, "Bad Gateway"));
        let (_, m) = parse_error_body(503, b"");
        assert_eq!(m, "Service Unavailable");
        for body in [
            br#"{"code":"root:x:0:0:root:/root:/bin/bash","message":"internal"}"#.as_slice(),
            br#"{"code":"has space","message":"secret"}"#,
            br#"{"code":42}"#,
            br#"{"message":"only a message from somewhere"}"#,
        ] {
            let (c, m) = parse_error_body(400, body);
            assert_eq!((c, m.as_str()), (None, "Bad Request"), "{}", String::from_utf8_lossy(body));
        }
        let (c, m) =
            parse_error_body(400, br#"{"code":"InvalidObject","errors":[{"code":"a b","field":"x"},{"code":"Bad","field":"<script>"}]}"#);
        assert_eq!((c.as_deref(), m.as_str()), (Some("InvalidObject"), "Bad Request (Bad)"));
    }

    #[test]
    fn codebase_shape() {
        for ok in ["v4_6_release", "v4_6_release/", "v2025_1", "V2025.1-beta", &"a".repeat(64)] {
            assert!(is_valid_codebase(ok), "{ok}");
        }
        for bad in ["", "/", ".", "..", "../", "a/b", "v4 6", "v4?x=1", "v4#x", &"a".repeat(65), "v4\u{0}", "ü", "a//"] {
            assert!(!is_valid_codebase(bad), "{bad}");
        }
    }

    #[test]
    fn json_errors_never_quote_the_body() {
        let e = serde_json::from_slice::<Vec<i64>>(br#"["s3cret-internal-value"]"#).unwrap_err();
        let m = json_error(&e);
        assert!(!m.contains("s3cret"), "{m}");
        assert!(m.contains("not the expected shape"), "{m}");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_condition_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn base_url_ignores_userinfo_and_path() {
        let c = CwClient::new(
            CwHttp::new(crate::AddressPolicy::PublicOnly).unwrap(),
            Credentials {
                site_url: Url::parse("https://u:p@api-na.myconnectwise.net/some/path").unwrap(),
                codebase: "/v4_6_release/".into(),
                company_id: "msp".into(),
                public_key: "pub".into(),
                private_key: SecretString::from("priv"),
                client_id: "cid".into(),
            },
            Duration::from_secs(1),
        );
        assert_eq!(c.base_url(), "https://api-na.myconnectwise.net/v4_6_release/apis/3.0");
    }
}
