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
    graphql::{AppCtx, build_schema},
    http::{self, HttpState, MAX_BODY_BYTES},
};
use sync_core::{Settings, crypto::SecretBox, jobs::JobQueue};

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
    pub async fn build(settings: Arc<Settings>, db: DatabaseConnection, queue: Arc<dyn JobQueue>) -> Result<Self, StartupError> {
        let http_client = http_client();
        let secrets = secret_box(&settings)?;
        let verifier = JwtVerifier::from_settings(&settings.jwt, http_client.clone()).map_err(StartupError::Jwt)?;
        let app = AppCtx { db, settings: settings.clone(), queue, secrets, http: http_client };
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
                .wrap(tracing_actix::TracingLogger)
                .route("/graphql", web::post().to(http::graphql_post))
                .route("/graphql", web::get().to(http::graphql_get))
                .route("/healthz", web::get().to(http::healthz))
                .route("/readyz", web::get().to(http::readyz))
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

/// Minimal request logging: method, path, status, latency (no headers: they carry tokens).
mod tracing_actix {
    use std::{
        future::{Ready, ready},
        time::Instant,
    };

    use actix_web::{
        Error,
        dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready},
    };
    use futures::future::LocalBoxFuture;

    pub struct TracingLogger;

    impl<S, B> Transform<S, ServiceRequest> for TracingLogger
    where
        S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
        B: 'static,
    {
        type Response = ServiceResponse<B>;
        type Error = Error;
        type InitError = ();
        type Transform = TracingLoggerMiddleware<S>;
        type Future = Ready<Result<Self::Transform, Self::InitError>>;

        fn new_transform(&self, service: S) -> Self::Future {
            ready(Ok(TracingLoggerMiddleware { service }))
        }
    }

    pub struct TracingLoggerMiddleware<S> {
        service: S,
    }

    impl<S, B> Service<ServiceRequest> for TracingLoggerMiddleware<S>
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
            let (method, path) = (req.method().to_string(), req.path().to_string());
            let fut = self.service.call(req);
            Box::pin(async move {
                let res = fut.await?;
                tracing::info!(%method, %path, status = res.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
                Ok(res)
            })
        }
    }
}
