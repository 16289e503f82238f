//! The operator dashboard: one static page with its script and stylesheet, compiled into the
//! binary (no front-end build). The page itself needs no authentication — it holds no data; it asks
//! for a JWT once, keeps it in `sessionStorage`, and reads everything through `/graphql`.
use actix_web::{HttpResponse, http::header};

const PAGE: &str = include_str!("../static/dashboard/index.html");
const SCRIPT: &str = include_str!("../static/dashboard/app.js");
const STYLE: &str = include_str!("../static/dashboard/app.css");

/// Same-origin only, no inline script or style: any data that slipped into markup could not run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .body(body)
}

/// `GET /dashboard`.
pub async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /` → `/dashboard`: the address printed at start, opened bare, lands on the dashboard.
/// Temporary (307), so browsers do not remember it should `/` ever serve something else.
pub async fn redirect_root() -> HttpResponse {
    HttpResponse::TemporaryRedirect().insert_header((header::LOCATION, "/dashboard")).finish()
}

/// `GET /dashboard/` → `/dashboard`.
pub async fn redirect_to_page() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "/dashboard")).finish()
}

/// `GET /dashboard/app.js`.
pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /dashboard/app.css`.
pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}
