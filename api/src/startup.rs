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
    metrics, request_id,
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
}

/// A bound, not yet running, HTTP server.
pub struct Application {
    port: u16,
    server: Server,
}

/// A shared HTTP client: ConnectWise calls set their own per-request timeouts.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(120))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap_or_default()
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
        let http_client = http_client();
        let secrets = secret_box(&settings)?;
        let verifier = JwtVerifier::from_settings(&settings.jwt, http_client.clone(), clock.clone()).map_err(StartupError::Jwt)?;
        let app = AppCtx { db, settings: settings.clone(), queue, secrets, http: http_client, clock };
        let state = web::Data::new(HttpState {
            schema: build_schema(Some(app.clone()), settings.graphql_introspection),
            app,
            verifier,
            graphiql: settings.graphql_introspection,
            tenants: RwLock::new(Default::default()),
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
