//! Request ids and the request log line. Every request gets an id — the caller's `x-request-id`
//! when it is sane (1–64 characters of `[A-Za-z0-9_-]`), a fresh UUID otherwise — echoed on the
//! response, carried by the `request` tracing span (so every log line of the request names it) and
//! by the one `request` log line: method, matched route, path, status, latency. No headers are
//! logged: they carry tokens.
use std::{
    future::{Ready, ready},
    time::Instant,
};

use actix_web::{
    Error, HttpMessage,
    dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready},
    http::header::{HeaderName, HeaderValue},
};
use futures::future::LocalBoxFuture;
use tracing::Instrument;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
const MAX_LEN: usize = 64;

/// The id of the current request (in the request's extensions, for handlers that want it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Whether a caller-supplied id may be reused as is (it ends up in logs and headers).
pub fn is_sane(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The caller's id when sane, else a fresh UUID.
pub fn accept_or_generate(incoming: Option<&str>) -> String {
    match incoming {
        Some(id) if is_sane(id) => id.to_string(),
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

/// The middleware: outermost, so its span covers the whole request.
pub struct RequestLog;

impl<S, B> Transform<S, ServiceRequest> for RequestLog
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type InitError = ();
    type Transform = RequestLogMiddleware<S>;
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestLogMiddleware { service }))
    }
}

pub struct RequestLogMiddleware<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for RequestLogMiddleware<S>
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
        let incoming = req.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok());
        let id = accept_or_generate(incoming);
        req.extensions_mut().insert(RequestId(id.clone()));
        let (method, path) = (req.method().to_string(), req.path().to_string());
        let span = tracing::info_span!("request", request_id = %id, %method, %path);
        // No clone of the request may live across the call: routing needs it unshared.
        let fut = span.in_scope(|| self.service.call(req));
        Box::pin(
            async move {
                let mut res = match fut.await {
                    Ok(res) => res,
                    Err(e) => {
                        // Handlers turn their errors into responses; an error here comes from a
                        // middleware and becomes a response further out, without our header.
                        let status = e.as_response_error().status_code().as_u16();
                        let elapsed_ms = started.elapsed().as_millis() as u64;
                        tracing::warn!(request_id = %id, %method, %path, status, elapsed_ms, error = %e, "request");
                        return Err(e);
                    }
                };
                if let Ok(value) = HeaderValue::from_str(&id) {
                    res.headers_mut().insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
                }
                let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_string());
                let status = res.status().as_u16();
                let elapsed_ms = started.elapsed().as_millis() as u64;
                if status >= 500 {
                    tracing::warn!(request_id = %id, %method, %route, %path, status, elapsed_ms, "request");
                } else {
                    tracing::info!(request_id = %id, %method, %route, %path, status, elapsed_ms, "request");
                }
                Ok(res)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_and_others_replaced() {
        assert_eq!(accept_or_generate(Some("abc-DEF_123")), "abc-DEF_123");
        let long = "a".repeat(64);
        assert_eq!(accept_or_generate(Some(&long)), long);
        for bad in ["", "has space", "semi;colon", "ünïcode", &"a".repeat(65)] {
            let got = accept_or_generate(Some(bad));
            assert_ne!(got, bad);
            assert!(uuid::Uuid::parse_str(&got).is_ok(), "{got}");
        }
        assert!(uuid::Uuid::parse_str(&accept_or_generate(None)).is_ok());
    }

    /// A `MakeWriter` that keeps what was logged.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[actix_web::test]
    async fn the_id_is_on_the_response_and_in_every_log_line_of_the_request() {
        use actix_web::{App, HttpResponse, test, web};
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt().json().with_writer(captured.clone()).with_max_level(tracing::Level::INFO).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = test::init_service(App::new().wrap(RequestLog).route(
            "/things/{id}",
            web::get().to(|| async {
                tracing::info!("inside the handler");
                HttpResponse::Ok().finish()
            }),
        ))
        .await;
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/things/7").insert_header((REQUEST_ID_HEADER, "abc-1")).to_request())
                .await;
        assert_eq!(res.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()), Some("abc-1"));
        let logged = String::from_utf8(captured.0.lock().map(|v| v.clone()).unwrap_or_default()).unwrap_or_default();
        let lines: Vec<serde_json::Value> = logged.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let handler = lines.iter().find(|l| l["fields"]["message"] == "inside the handler").expect("the handler's line");
        assert_eq!(handler["span"]["request_id"], "abc-1", "{logged}");
        let request = lines.iter().find(|l| l["fields"]["message"] == "request").expect("the request line");
        assert_eq!(request["fields"]["request_id"], "abc-1");
        assert_eq!(request["fields"]["route"], "/things/{id}");
        assert_eq!(request["fields"]["status"], 200);
    }
}
