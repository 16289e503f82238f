//! Building the HTTP application (zero2prod's `Application::build`): binds the listener first so
//! callers (tests) can use port 0 and read the real port.
use std::{
    net::TcpListener,
    sync::{Arc, RwLock},
};

use actix_web::{App, HttpServer, dev::Server, web};
use sea_orm::DatabaseConnection;

use crate::{
    auth::JwtVerifier,
    dashboard, graphiql,
    graphql::{AppCtx, build_schema},
    http::{self, HttpState, MAX_BODY_BYTES},
    metrics,
    rate_limit::TenantBudget,
    request_id,
};
use sync_core::{Settings, clock::SharedClock, crypto::SecretBox, jobs::JobQueue};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("JWT configuration: {0}")]
    Jwt(String),
    #[error("SECRETS_KEY: {0}")]
    Secrets(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("cannot start the GraphQL runtime: {0}")]
    Runtime(std::io::Error),
}

/// A bound, not yet running, HTTP server.
pub struct Application {
    port: u16,
    server: Server,
}

/// The ConnectWise HTTP client of this process (ConnectWise calls set their own per-request
/// timeouts): no redirects, and the outbound address guard of `CW_ALLOW_HTTP` on every connection.
pub fn cw_http(settings: &Settings) -> Result<connectwise::CwHttp, StartupError> {
    connectwise::CwHttp::new(connectwise::AddressPolicy::from_allow_http(settings.cw_allow_http))
        .map_err(|e| StartupError::Http(e.to_string()))
}

/// [`cw_http`] that may also reach the demo's sandbox ConnectWise (`api --demo` only).
pub fn cw_http_with_sandbox(settings: &Settings, sandbox: Option<connectwise::SandboxOrigin>) -> Result<connectwise::CwHttp, StartupError> {
    let policy = connectwise::AddressPolicy::from_allow_http(settings.cw_allow_http);
    match sandbox {
        Some(origin) => connectwise::CwHttp::with_sandbox(policy, origin).map_err(|e| StartupError::Http(e.to_string())),
        None => cw_http(settings),
    }
}

/// The client fetching `JWT_JWKS_URL` (an operator's setting, not a tenant's).
fn jwks_client() -> Result<reqwest::Client, StartupError> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| StartupError::Http(e.to_string()))
}

pub fn secret_box(settings: &Settings) -> Result<Option<SecretBox>, StartupError> {
    settings.secrets_key.as_ref().map(SecretBox::from_base64).transpose().map_err(|e| StartupError::Secrets(e.to_string()))
}

impl Application {
    pub async fn build(
        settings: Arc<Settings>,
        db: DatabaseConnection,
        queue: Arc<dyn JobQueue>,
        clock: SharedClock,
    ) -> Result<Self, StartupError> {
        let http = cw_http(&settings)?;
        Self::build_with_cw_http(settings, db, queue, clock, http).await
    }

    /// [`Application::build`] with the process's ConnectWise client (the demo's, which may reach
    /// its sandbox).
    pub async fn build_with_cw_http(
        settings: Arc<Settings>,
        db: DatabaseConnection,
        queue: Arc<dyn JobQueue>,
        clock: SharedClock,
        http: connectwise::CwHttp,
    ) -> Result<Self, StartupError> {
        let secrets = secret_box(&settings)?;
        let verifier = JwtVerifier::from_settings(&settings.jwt, jwks_client()?, clock.clone()).map_err(StartupError::Jwt)?;
        let app = AppCtx { db, settings: settings.clone(), queue, secrets, http, clock };
        let state = web::Data::new(HttpState {
            schema: build_schema(Some(app.clone()), settings.graphql_introspection),
            app,
            verifier,
            graphiql: settings.graphql_introspection,
            tenants: RwLock::new(Default::default()),
            budget: TenantBudget::new(settings.api_rate_per_tenant, settings.api_burst_per_tenant),
            runtime: http::graphql_runtime().map_err(StartupError::Runtime)?,
        });
        let listener =
            TcpListener::bind(&settings.bind_addr).map_err(|source| StartupError::Bind { addr: settings.bind_addr.clone(), source })?;
        let port = listener.local_addr().map_err(|source| StartupError::Bind { addr: settings.bind_addr.clone(), source })?.port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                // Registered last = outermost: the request id and its span cover the metrics too.
                .wrap(metrics::HttpMetrics)
                .wrap(request_id::RequestLog)
                .route("/graphql", web::post().to(http::graphql_post))
                .route("/graphql", web::get().to(http::graphql_get))
                .route("/graphiql/{file:.+}", web::get().to(graphiql::asset))
                .route("/export/billing-review.csv", web::get().to(crate::export::billing_review_csv))
                .route("/healthz", web::get().to(http::healthz))
                .route("/readyz", web::get().to(http::readyz))
                .route("/metrics", web::get().to(metrics::metrics))
                .route("/", web::get().to(dashboard::redirect_root))
                .route("/dashboard", web::get().to(dashboard::page))
                .route("/dashboard/", web::get().to(dashboard::redirect_to_page))
                .route("/dashboard/app.js", web::get().to(dashboard::script))
                .route("/dashboard/app.css", web::get().to(dashboard::style))
        })
        .listen(listener)
        .map_err(|source| StartupError::Bind { addr: settings.bind_addr.clone(), source })?
        .shutdown_timeout(30)
        .disable_signals()
        .run();
        Ok(Application { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
