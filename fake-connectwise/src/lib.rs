//! A stateful fake of the ConnectWise PSA REST API over real HTTP, for tests and benchmarks.
//!
//! [`FakeConnectWise::start`] binds `127.0.0.1:0` and serves on its own thread with its own actix
//! system, so it works from any tokio runtime and from synchronous code; dropping the handle
//! stops it. The fake checks credentials like ConnectWise (`Authorization: Basic
//! base64("{company}+{public}:{private}")` and `clientId`), pages lists with `Link` headers,
//! understands a useful subset of `conditions`, applies quantity PATCHes, stores tickets, records
//! every request, and injects faults (fixed rules, latency, or seeded random faults).
//!
//! It keeps ConnectWise's official contract ([`openapi`], version 2025.8): answers carry
//! `Content-Type: application/vnd.connectwise.com+json; version=2025.8` and every required field,
//! never `null` where the schema does not allow it, and requests the schema would refuse are
//! answered 400 `InvalidObject`. In **sparse mode** ([`FakeConfig::sparse`],
//! [`FakeConnectWise::set_sparse`]) answers take the sparsest form the schema allows for the data
//! held: `null` for every nullable field without a value of its own — flags that are `false`
//! (ConnectWise's default), `billCustomer`, an addition's denormalised `agreementId` and
//! `agreementStatus`, the ids of references to records the fake does not model (agreement type and
//! contact, company status, board location and department, team leader) — and optional fields
//! without data left out. The ids the product keys on (company, agreement, addition, product,
//! board, board items) and the values it reads (names, statuses, quantities, sequence numbers) keep
//! their values; conditions are evaluated on the full record, as ConnectWise evaluates them in its
//! database.

#![warn(missing_docs)]

mod conditions;
pub mod openapi;
mod server;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// Settings of a fake instance (credentials it accepts, codebase, worker threads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeConfig {
    /// The MSP company id (`msp`).
    pub company_id: String,
    /// Accepted public key (`pub`).
    pub public_key: String,
    /// Accepted private key (`priv`).
    pub private_key: String,
    /// Accepted `clientId` header (`00000000-0000-0000-0000-000000000001`).
    pub client_id: String,
    /// Codebase served (`v4_6_release`).
    pub codebase: String,
    /// Actix worker threads (2).
    pub workers: usize,
    /// Start in sparse mode (see the crate documentation); `false`.
    pub sparse: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            company_id: "msp".into(),
            public_key: "pub".into(),
            private_key: "priv".into(),
            client_id: "00000000-0000-0000-0000-000000000001".into(),
            codebase: "v4_6_release".into(),
            workers: 2,
            sparse: false,
        }
    }
}

/// A company in the fake's catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeCompany {
    /// Company id.
    pub id: i64,
    /// Short identifier.
    pub identifier: String,
    /// Name.
    pub name: String,
    /// Status name: `Active`, `Inactive`, …
    pub status: String,
    /// Deleted flag.
    pub deleted: bool,
}

impl FakeCompany {
    /// An active, non-deleted company.
    pub fn new(id: i64, identifier: &str, name: &str) -> Self {
        FakeCompany { id, identifier: identifier.into(), name: name.into(), status: "Active".into(), deleted: false }
    }
}

/// An agreement in the fake's catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeAgreement {
    /// Agreement id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// The company's id.
    pub company_id: i64,
    /// `Active`, `Cancelled`, `Expired` or `Inactive`.
    pub status: String,
    /// Cancelled flag.
    pub cancelled_flag: bool,
    /// Next invoice date (served as is).
    pub next_invoice_date: Option<String>,
}

impl FakeAgreement {
    /// An active agreement.
    pub fn new(id: i64, name: &str, company_id: i64) -> Self {
        FakeAgreement { id, name: name.into(), company_id, status: "Active".into(), cancelled_flag: false, next_invoice_date: None }
    }
}

/// An agreement addition in the fake's catalog.
///
/// Amounts (`less_included`, `unit_price`, `unit_cost`) and `sequence_number_text` are JSON number
/// text served verbatim (never through `f64`); `None` amounts are served as `null`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeAddition {
    /// Addition id.
    pub id: i64,
    /// The agreement's id.
    pub agreement_id: i64,
    /// Sequence number.
    pub sequence_number: i64,
    /// Product id.
    pub product_id: i64,
    /// Product identifier.
    pub product_identifier: String,
    /// Quantity.
    pub quantity: i64,
    /// Cancelled date (set = cancelled).
    pub cancelled_date: Option<String>,
    /// Effective date.
    pub effective_date: Option<String>,
    /// Description.
    pub description: String,
    /// `lessIncluded`, as JSON number text (`None` = `null`).
    pub less_included: Option<String>,
    /// `unitPrice`, as JSON number text (`None` = `null`).
    pub unit_price: Option<String>,
    /// `unitCost`, as JSON number text (`None` = `null`).
    pub unit_cost: Option<String>,
    /// When set, `sequenceNumber` is served as this JSON number text instead of `sequence_number`
    /// (ConnectWise's schema declares it a double: `2.5`, `2.0`).
    pub sequence_number_text: Option<String>,
}

/// Panics unless `text` is a JSON number (test setup only: a typo must not produce invalid JSON).
fn json_number_text(text: &str) -> String {
    let is_number = serde_json::from_str::<Box<serde_json::value::RawValue>>(text)
        .is_ok_and(|raw| raw.get().starts_with(|c: char| c == '-' || c.is_ascii_digit()));
    assert!(is_number, "fake-connectwise: {text:?} is not a JSON number");
    text.to_string()
}

impl FakeAddition {
    /// Sets `unitPrice` (JSON number text such as `"12.3456789012345678"`; `None` = `null`).
    pub fn with_unit_price(mut self, price: Option<&str>) -> Self {
        self.unit_price = price.map(json_number_text);
        self
    }

    /// Sets `unitCost` (JSON number text; `None` = `null`).
    pub fn with_unit_cost(mut self, cost: Option<&str>) -> Self {
        self.unit_cost = cost.map(json_number_text);
        self
    }

    /// Sets `lessIncluded` (JSON number text; `None` = `null`).
    pub fn with_less_included(mut self, less_included: Option<&str>) -> Self {
        self.less_included = less_included.map(json_number_text);
        self
    }

    /// Serves `sequenceNumber` as this JSON number text (e.g. `"2.5"`); `None` = `sequence_number`.
    pub fn with_sequence_number_text(mut self, sequence: Option<&str>) -> Self {
        self.sequence_number_text = sequence.map(json_number_text);
        self
    }

    /// An active addition of product `product_id` (identifier `PROD-{product_id}`).
    pub fn new(id: i64, agreement_id: i64, product_id: i64, quantity: i64) -> Self {
        FakeAddition {
            id,
            agreement_id,
            sequence_number: 1,
            product_id,
            product_identifier: format!("PROD-{product_id}"),
            quantity,
            cancelled_date: None,
            effective_date: None,
            description: String::new(),
            less_included: Some("0".into()),
            unit_price: Some("10.0".into()),
            unit_cost: Some("5.0".into()),
            sequence_number_text: None,
        }
    }
}

/// A service board with its teams, statuses, types and subtypes as `(id, name, default)`.
///
/// ConnectWise's `BoardSubType` has no `defaultFlag`: a subtype's flag is kept but not served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeBoard {
    /// Board id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Teams `(id, name, defaultFlag)`.
    pub teams: Vec<(i64, String, bool)>,
    /// Statuses `(id, name, defaultFlag)`.
    pub statuses: Vec<(i64, String, bool)>,
    /// Types `(id, name, defaultFlag)`.
    pub types: Vec<(i64, String, bool)>,
    /// Subtypes `(id, name, defaultFlag)`.
    pub subtypes: Vec<(i64, String, bool)>,
}

impl FakeBoard {
    /// A board with team `{id*10+1, "Team"}` and statuses `{id*10+1, "New", default}`,
    /// `{id*10+2, "Closed"}`; no types or subtypes.
    pub fn new(id: i64, name: &str) -> Self {
        FakeBoard {
            id,
            name: name.into(),
            teams: vec![(id * 10 + 1, "Team".into(), true)],
            statuses: vec![(id * 10 + 1, "New".into(), true), (id * 10 + 2, "Closed".into(), false)],
            types: vec![],
            subtypes: vec![],
        }
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method (`GET`, `PATCH`, …).
    pub method: String,
    /// Path without site and `/{codebase}/apis/3.0`, e.g. `/finance/agreements/1/additions/2`
    /// (paths outside the API, like `/login/companyinfo/msp`, are kept whole).
    pub path: String,
    /// Raw query string (without `?`).
    pub query: String,
    /// The JSON body, when there was one that parsed.
    pub body: Option<serde_json::Value>,
    /// When the fake started handling it.
    pub started_at: Instant,
    /// When the fake produced the response.
    pub finished_at: Instant,
    /// Wall-clock time at start.
    pub wall_clock: chrono::DateTime<chrono::Utc>,
    /// Response status (499 if the client went away before the response, 444 for an injected
    /// [`Fault::CloseConnection`]).
    pub status: u16,
    /// Whether the request carried the configured credentials and `clientId`.
    pub authorized: bool,
    /// The `x-cw-request-id` the fake answered with.
    pub request_id: String,
    /// The `Accept` header sent.
    pub accept: Option<String>,
    /// The `Content-Type` header sent.
    pub content_type: Option<String>,
    /// Every header sent (names lower case), for contract checks.
    pub headers: Vec<(String, String)>,
    /// Length of the body sent, in bytes (also when it did not parse as JSON).
    pub body_len: usize,
    /// Whether the request changed the fake's state (an addition PATCH applied), whatever was
    /// answered — also when the answer was unreadable or the client had gone.
    pub applied: bool,
    /// The `Retry-After` seconds answered with a 429, if any.
    pub retry_after_secs: Option<u64>,
}

/// A fault to inject.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status and a ConnectWise error body `{"code","message"}`.
    Status(u16),
    /// Answer 429 with `Retry-After: {retry_after_secs}`.
    RateLimit {
        /// Seconds in the `Retry-After` header.
        retry_after_secs: u64,
    },
    /// Wait this long, then answer normally (the request is applied). If the client hangs up
    /// meanwhile, the request is abandoned: not applied, recorded with status 499.
    Delay(Duration),
    /// Break the connection without a complete response (nothing is applied).
    CloseConnection,
    /// Apply the request (a PATCH changes the addition), then answer 200 with a body that is not
    /// JSON: the change was made but the answer cannot be read. Requests the fake refuses (4xx)
    /// are answered as usual.
    AppliedButUnreadable,
    /// Apply the request, then wait this long before answering: a client timeout shorter than it
    /// fires after the change was made (recorded with status 499 and `applied`).
    AppliedThenHang(Duration),
    /// Answer with exactly this status, extra headers and body (e.g. an HTTP-date
    /// `Retry-After`, an HTML gateway page, or a malformed 200).
    Raw {
        /// Status code.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// Body text (sent as `application/json`).
        body: String,
    },
}

/// Injects `fault` into the next `times` requests matching `method` and `path_contains`.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// Only this method (case-insensitive); `None` = any.
    pub method: Option<String>,
    /// Only paths (as in [`RecordedRequest::path`]) containing this; `None` = any.
    pub path_contains: Option<String>,
    /// What to do.
    pub fault: Fault,
    /// How many matching requests it affects; `usize::MAX` = forever.
    pub times: usize,
}

/// Seeded random faults on `GET`/`PATCH` of single additions.
///
/// Each decision is drawn from a xorshift generator seeded by `(seed, method, path, n-th request
/// of that method+path)`, so a given addition sees the same fault sequence whatever the
/// interleaving of other requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RandomFaults {
    /// Per-mille chance of a 500/502/503/504.
    pub p_5xx_permille: u32,
    /// Per-mille chance of a 429.
    pub p_429_permille: u32,
    /// Per-mille chance of a slow (then normal) answer.
    pub p_slow_permille: u32,
    /// `Retry-After` seconds of a 429, uniform in `[lo, hi]`.
    pub retry_after_secs: (u64, u64),
    /// Delay of a slow answer.
    pub slow: Duration,
    /// At most this many faults per addition path (GET or PATCH) until a PATCH of that addition
    /// succeeds: once reached, that addition is answered normally until its next successful PATCH.
    /// A push attempt being a GET then a PATCH, a push never sees more than this many failed
    /// attempts in a row. `0` = no limit.
    pub max_consecutive_per_path: usize,
}

struct Catalog {
    companies: BTreeMap<i64, FakeCompany>,
    agreements: BTreeMap<i64, FakeAgreement>,
    additions: HashMap<i64, FakeAddition>,
    additions_by_agreement: HashMap<i64, BTreeSet<i64>>,
    boards: BTreeMap<i64, FakeBoard>,
    tickets: Vec<serde_json::Value>,
    next_ticket_id: i64,
    /// Quantity changes made "by hand" right after the next applied PATCH of an addition.
    hand_edits: HashMap<i64, i64>,
}

struct RandomState {
    seed: u64,
    plan: RandomFaults,
    counters: HashMap<String, u64>,
    consecutive: HashMap<String, usize>,
}

struct Faults {
    rules: Vec<FaultRule>,
    random: Option<RandomState>,
}

pub(crate) struct State {
    cfg: FakeConfig,
    expected_auth: String,
    site_url: OnceLock<String>,
    catalog: Mutex<Catalog>,
    log: Mutex<Vec<RecordedRequest>>,
    faults: Mutex<Faults>,
    inflight: Mutex<HashMap<String, usize>>,
    max_inflight: AtomicUsize,
    sparse: AtomicBool,
    latency_nanos: AtomicU64,
    request_seq: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock only happens in a failing test; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    fn new(cfg: FakeConfig) -> Self {
        let sparse = cfg.sparse;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}+{}:{}", cfg.company_id, cfg.public_key, cfg.private_key));
        State {
            expected_auth: format!("Basic {token}"),
            cfg,
            site_url: OnceLock::new(),
            catalog: Mutex::new(Catalog {
                companies: BTreeMap::new(),
                agreements: BTreeMap::new(),
                additions: HashMap::new(),
                additions_by_agreement: HashMap::new(),
                boards: BTreeMap::new(),
                tickets: Vec::new(),
                next_ticket_id: 1000,
                hand_edits: HashMap::new(),
            }),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults { rules: Vec::new(), random: None }),
            inflight: Mutex::new(HashMap::new()),
            max_inflight: AtomicUsize::new(0),
            sparse: AtomicBool::new(sparse),
            latency_nanos: AtomicU64::new(0),
            request_seq: AtomicU64::new(0),
        }
    }
}

/// A running fake ConnectWise; dropping it stops the server.
pub struct FakeConnectWise {
    state: Arc<State>,
    site_url: String,
    handle: actix_web::dev::ServerHandle,
}

impl std::fmt::Debug for FakeConnectWise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeConnectWise").field("site_url", &self.site_url).finish()
    }
}

type Started = std::io::Result<(String, actix_web::dev::ServerHandle)>;

fn spawn_server(state: Arc<State>, report: Box<dyn FnOnce(Started) + Send>) {
    let workers = state.cfg.workers.max(1);
    let spawned = std::thread::Builder::new().name("fake-connectwise".into()).spawn(move || {
        // Parse and compile the contract (once per process) before serving, so the first request
        // is not slowed down by it. A failure is answered per request (500) by the routes.
        let _ = openapi::Contract::official();
        let system = actix_web::rt::System::new();
        system.block_on(async move {
            let data = actix_web::web::Data::from(state.clone());
            let bound = actix_web::HttpServer::new(move || {
                actix_web::App::new()
                    .app_data(data.clone())
                    .app_data(actix_web::web::PayloadConfig::new(16 * 1024 * 1024))
                    .default_service(actix_web::web::to(server::handle))
            })
            .workers(workers)
            .disable_signals()
            // Abort handling (drop the handler) as soon as the client hangs up, so an
            // abandoned request no longer counts as in flight and is recorded as 499.
            .h1_allow_half_closed(false)
            // Every request reaches the handler (and the log): on a loaded machine actix would
            // otherwise answer a slow client 408 itself, a request nobody recorded.
            .client_request_timeout(std::time::Duration::ZERO)
            .shutdown_timeout(0)
            .bind(("127.0.0.1", 0));
            let srv = match bound {
                Ok(b) => b,
                Err(e) => return report(Err(e)),
            };
            let port = srv.addrs().first().map(|a| a.port()).unwrap_or(0);
            let site = format!("http://127.0.0.1:{port}");
            let _ = state.site_url.set(site.clone());
            let running = srv.run();
            report(Ok((site, running.handle())));
            let _ = running.await;
        });
    });
    if let Err(e) = spawned {
        panic!("fake-connectwise: cannot spawn server thread: {e}");
    }
}

impl FakeConnectWise {
    /// Starts a fake on `127.0.0.1:<free port>` (from async code).
    pub async fn start(cfg: FakeConfig) -> FakeConnectWise {
        let state = Arc::new(State::new(cfg));
        let (tx, rx) = tokio::sync::oneshot::channel();
        spawn_server(
            state.clone(),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let started = rx.await.expect("fake-connectwise: server thread died");
        Self::from_started(state, started)
    }

    /// Starts a fake on `127.0.0.1:<free port>` (from synchronous code).
    pub fn start_blocking(cfg: FakeConfig) -> FakeConnectWise {
        let state = Arc::new(State::new(cfg));
        let (tx, rx) = std::sync::mpsc::channel();
        spawn_server(
            state.clone(),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let started = rx.recv().expect("fake-connectwise: server thread died");
        Self::from_started(state, started)
    }

    fn from_started(state: Arc<State>, started: Started) -> FakeConnectWise {
        let (site_url, handle) = started.expect("fake-connectwise: cannot bind 127.0.0.1:0");
        FakeConnectWise { state, site_url, handle }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn site_url(&self) -> String {
        self.site_url.clone()
    }

    /// `http://127.0.0.1:PORT/{codebase}/apis/3.0`.
    pub fn api_base_url(&self) -> String {
        format!("{}/{}/apis/3.0", self.site_url, self.state.cfg.codebase)
    }

    /// The configuration (credentials accepted, codebase, workers).
    pub fn config(&self) -> &FakeConfig {
        &self.state.cfg
    }

    /// The `Authorization` header value the fake accepts.
    pub fn expected_authorization(&self) -> String {
        self.state.expected_auth.clone()
    }

    /// Adds or replaces a company.
    pub fn add_company(&self, c: FakeCompany) {
        lock(&self.state.catalog).companies.insert(c.id, c);
    }

    /// Adds or replaces an agreement.
    pub fn add_agreement(&self, a: FakeAgreement) {
        lock(&self.state.catalog).agreements.insert(a.id, a);
    }

    /// Adds or replaces an addition (by id).
    pub fn add_addition(&self, a: FakeAddition) {
        let mut cat = lock(&self.state.catalog);
        if let Some(old) = cat.additions.get(&a.id).map(|o| o.agreement_id)
            && let Some(set) = cat.additions_by_agreement.get_mut(&old)
        {
            set.remove(&a.id);
        }
        cat.additions_by_agreement.entry(a.agreement_id).or_default().insert(a.id);
        cat.additions.insert(a.id, a);
    }

    /// Adds or replaces a board.
    pub fn add_board(&self, b: FakeBoard) {
        lock(&self.state.catalog).boards.insert(b.id, b);
    }

    /// Deletes an addition (later GETs/PATCHes answer 404). No-op when absent.
    pub fn remove_addition(&self, agreement_id: i64, addition_id: i64) {
        let mut cat = lock(&self.state.catalog);
        if cat.additions.get(&addition_id).is_some_and(|a| a.agreement_id == agreement_id) {
            cat.additions.remove(&addition_id);
            if let Some(set) = cat.additions_by_agreement.get_mut(&agreement_id) {
                set.remove(&addition_id);
            }
        }
    }

    /// Sets or clears an addition's cancelled date. No-op when absent.
    pub fn set_addition_cancelled(&self, addition_id: i64, date: Option<String>) {
        if let Some(a) = lock(&self.state.catalog).additions.get_mut(&addition_id) {
            a.cancelled_date = date;
        }
    }

    /// Changes an addition's product (identifier becomes `PROD-{product_id}`). No-op when absent.
    pub fn set_addition_product(&self, addition_id: i64, product_id: i64) {
        if let Some(a) = lock(&self.state.catalog).additions.get_mut(&addition_id) {
            a.product_id = product_id;
            a.product_identifier = format!("PROD-{product_id}");
        }
    }

    /// Sets an agreement's status (`Cancelled` also sets the cancelled flag). No-op when absent.
    pub fn set_agreement_status(&self, agreement_id: i64, status: &str) {
        if let Some(a) = lock(&self.state.catalog).agreements.get_mut(&agreement_id) {
            a.status = status.to_string();
            a.cancelled_flag = status.eq_ignore_ascii_case("Cancelled");
        }
    }

    /// Sets a company's status name. No-op when absent.
    pub fn set_company_status(&self, company_id: i64, status: &str) {
        if let Some(c) = lock(&self.state.catalog).companies.get_mut(&company_id) {
            c.status = status.to_string();
        }
    }

    /// Sets an addition's quantity "by hand" (as someone editing it in ConnectWise would, e.g. to
    /// simulate drift). No-op when absent.
    pub fn set_addition_quantity(&self, addition_id: i64, quantity: i64) {
        if let Some(a) = lock(&self.state.catalog).additions.get_mut(&addition_id) {
            a.quantity = quantity;
        }
    }

    /// Somebody edits the addition by hand right after the next PATCH of it is applied: its
    /// quantity changes by `delta` (the PATCH is answered with the quantity it set). The next push
    /// of the addition then finds a quantity that differs from the one last set: drift.
    pub fn hand_edit_after_next_patch(&self, addition_id: i64, delta: i64) {
        lock(&self.state.catalog).hand_edits.insert(addition_id, delta);
    }

    /// Switches sparse mode on or off (see the crate documentation).
    pub fn set_sparse(&self, sparse: bool) {
        self.state.sparse.store(sparse, Ordering::SeqCst);
    }

    /// Whether sparse mode is on.
    pub fn is_sparse(&self) -> bool {
        self.state.sparse.load(Ordering::SeqCst)
    }

    /// An addition's current quantity.
    pub fn addition_quantity(&self, addition_id: i64) -> Option<i64> {
        lock(&self.state.catalog).additions.get(&addition_id).map(|a| a.quantity)
    }

    /// An addition as currently stored.
    pub fn addition(&self, addition_id: i64) -> Option<FakeAddition> {
        lock(&self.state.catalog).additions.get(&addition_id).cloned()
    }

    /// Every request so far (including unauthorized and faulted ones), in completion order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.log).clone()
    }

    /// Number of requests recorded so far.
    pub fn request_count(&self) -> usize {
        lock(&self.state.log).len()
    }

    /// The addition PATCHes that were applied (also those whose answer was lost to a fault).
    pub fn patches(&self) -> Vec<RecordedRequest> {
        lock(&self.state.log).iter().filter(|r| is_applied_patch(r)).cloned().collect()
    }

    /// Number of applied addition PATCHes (see [`FakeConnectWise::patches`]).
    pub fn patch_count(&self) -> usize {
        lock(&self.state.log).iter().filter(|r| is_applied_patch(r)).count()
    }

    /// Created tickets as stored (with `id` and `initialDescription`).
    pub fn tickets(&self) -> Vec<serde_json::Value> {
        lock(&self.state.catalog).tickets.clone()
    }

    /// The highest number of requests that were in flight at once for one addition path
    /// (`/finance/agreements/{a}/additions/{id}`, any method).
    pub fn max_concurrent_per_addition(&self) -> usize {
        self.state.max_inflight.load(Ordering::SeqCst)
    }

    /// Clears the request log and the concurrency high-water mark.
    pub fn clear_requests(&self) {
        lock(&self.state.log).clear();
        self.state.max_inflight.store(0, Ordering::SeqCst);
    }

    /// Adds a fault rule (rules are tried in insertion order; the first live match applies).
    pub fn inject(&self, rule: FaultRule) {
        lock(&self.state.faults).rules.push(rule);
    }

    /// Removes all fault rules and random faults.
    pub fn clear_faults(&self) {
        let mut f = lock(&self.state.faults);
        f.rules.clear();
        f.random = None;
    }

    /// Latency added to every response (async sleep; other requests proceed meanwhile).
    pub fn set_latency(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.state.latency_nanos.store(nanos, Ordering::SeqCst);
    }

    /// Enables seeded random faults on `GET`/`PATCH` of single additions (replaces any previous
    /// plan).
    pub fn set_random_faults(&self, seed: u64, plan: RandomFaults) {
        lock(&self.state.faults).random = Some(RandomState { seed, plan, counters: HashMap::new(), consecutive: HashMap::new() });
    }
}

fn is_applied_patch(r: &RecordedRequest) -> bool {
    r.applied && r.method == "PATCH" && server::addition_key(&r.path).is_some()
}

impl Drop for FakeConnectWise {
    fn drop(&mut self) {
        // The stop command is sent eagerly; the server thread then exits on its own.
        drop(self.handle.stop(false));
    }
}
