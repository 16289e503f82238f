//! `GET /export/billing-review.csv?period=YYYY-MM`: the billing review of a month as RFC 4180 CSV
//! (UTF-8, a header row, one row per line), streamed page by page so memory stays constant
//! whatever the number of lines. Same Bearer token as GraphQL; viewer and up.
use std::collections::HashMap;

use actix_web::{
    HttpRequest, HttpResponse,
    http::{StatusCode, header},
    web,
};
use futures::stream;
use sync_core::{auth::Permission, service::review};

use crate::{
    graphql::{
        ids::GlobalId,
        types::{Customer, ProductMapping},
    },
    http::{HttpState, authenticate, error_body},
};

fn json_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).content_type("application/json").body(error_body(code, message).to_string())
}

/// CSV bytes of some records (the header when `header` is set).
fn csv_bytes(header: bool, lines: &[review::ReviewLine]) -> Result<web::Bytes, csv::Error> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::with_capacity(256 * (lines.len() + 1)));
    if header {
        w.write_record(review::CSV_HEADER)?;
    }
    for line in lines {
        // The ids a client can use with the API: the same global ids as the query's.
        let mut record = review::csv_record(line);
        record[0] = GlobalId::of::<ProductMapping>(line.product_mapping_id).0;
        record[1] = GlobalId::of::<Customer>(line.customer_id).0;
        w.write_record(record)?;
    }
    w.flush()?;
    w.into_inner().map(web::Bytes::from).map_err(|e| csv::Error::from(e.into_error()))
}

/// Where the stream stands: the next page starts after this mapping id; `None` once done.
struct Cursor {
    after: Option<i64>,
    first: bool,
}

/// `GET /export/billing-review.csv`.
pub async fn billing_review_csv(req: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let principal = match authenticate(authorization, &state).await {
        Ok(p) => p,
        Err(e) => {
            return HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .content_type("application/json")
                .body(error_body("UNAUTHENTICATED", &e.to_string()).to_string());
        }
    };
    if !principal.may(Permission::Read) {
        return json_error(StatusCode::FORBIDDEN, "FORBIDDEN", "reading the billing review needs the viewer role or above");
    }
    let params: HashMap<String, String> =
        web::Query::<HashMap<String, String>>::from_query(req.query_string()).map(|q| q.into_inner()).unwrap_or_default();
    let period = match params.get("period").map(|p| review::parse_period(p)) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return json_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
        None => return json_error(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", "give the month as `?period=YYYY-MM`"),
    };
    let tenant_id = principal.tenant_id;
    let db = state.app.db.clone();
    // Each page is computed when the client is ready for it; a failure ends the body early (the
    // status line is gone by then), logged with its cause.
    let body = stream::unfold(Cursor { after: Some(0), first: true }, move |cursor| {
        let db = db.clone();
        async move {
            let after = cursor.after?;
            let (lines, next) = match review::export_page(&db, tenant_id, period, after).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = ?e, "billing review export failed");
                    return Some((Err(actix_web::error::ErrorInternalServerError("export failed")), Cursor { after: None, first: false }));
                }
            };
            let chunk = csv_bytes(cursor.first, &lines).map_err(|e| {
                tracing::error!(error = %e, "billing review export failed");
                actix_web::error::ErrorInternalServerError("export failed")
            });
            Some((chunk, Cursor { after: next, first: false }))
        }
    });
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((header::CONTENT_DISPOSITION, format!("attachment; filename=\"billing-review-{period}.csv\"")))
        .streaming(body)
}
