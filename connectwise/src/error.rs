//! Error type of the ConnectWise client.

use std::time::Duration;

/// A failed ConnectWise call, with everything needed to log it and to decide whether to retry.
///
/// `Display` and `Debug` never contain credentials: the client never puts them into an error, and
/// transport messages are stripped of URLs (which could carry userinfo).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct CwError {
    /// What went wrong.
    pub kind: CwErrorKind,
    /// HTTP status of the response, when one was received.
    pub status: Option<u16>,
    /// The `x-cw-request-id` response header, when a response was received.
    pub request_id: Option<String>,
    /// Time from sending the request until the failure was known.
    pub duration: Duration,
    /// How long ConnectWise asked us to wait (`Retry-After`, seconds or HTTP-date) on 429/503.
    pub retry_after: Option<Duration>,
}

/// The class of a [`CwError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CwErrorKind {
    /// No complete response within the configured timeout.
    Timeout,
    /// The connection could not be established or broke off (DNS, refused, reset, TLS, …).
    Connect(String),
    /// A non-2xx response; `code`/`message` come from ConnectWise's error body when present.
    Http {
        /// ConnectWise's error `code` (e.g. `NotFound`, `InvalidObject`, `Unauthorized`).
        code: Option<String>,
        /// ConnectWise's error `message` (plus field errors), or the start of the body / the
        /// status reason when the body is not a ConnectWise error.
        message: String,
    },
    /// A 2xx response whose body did not have the expected shape (or a paging anomaly).
    Decode(String),
    /// The configured site URL, codebase or client id cannot form a valid request.
    InvalidUrl(String),
    /// The site answered with a redirect (3xx). Redirects are never followed, and what the
    /// redirect said (body, `Location`) is not kept.
    Redirect,
    /// The destination is, or resolves only to, an address the outbound guard forbids
    /// (loopback, private, link-local, reserved…; see [`crate::is_forbidden_address`]).
    ForbiddenAddress(String),
}

impl CwError {
    /// A new error without response details (status, request id, retry-after).
    pub fn new(kind: CwErrorKind, duration: Duration) -> Self {
        CwError { kind, status: None, request_id: None, duration, retry_after: None }
    }

    /// Whether the same request may succeed later: timeouts, connection errors and HTTP
    /// 408/429/500/502/503/504.
    pub fn is_retryable(&self) -> bool {
        match &self.kind {
            CwErrorKind::Timeout | CwErrorKind::Connect(_) => true,
            CwErrorKind::Http { .. } => {
                matches!(self.status, Some(408 | 429 | 500 | 502 | 503 | 504))
            }
            CwErrorKind::Decode(_) | CwErrorKind::InvalidUrl(_) | CwErrorKind::Redirect | CwErrorKind::ForbiddenAddress(_) => false,
        }
    }

    /// The wait ConnectWise asked for (`Retry-After` on a 429 or 503), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether ConnectWise rejected the credentials (401) or the API member's role (403).
    pub fn is_auth_failure(&self) -> bool {
        matches!(self.kind, CwErrorKind::Http { .. }) && matches!(self.status, Some(401 | 403))
    }

    /// Whether the resource does not exist (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self.kind, CwErrorKind::Http { .. }) && self.status == Some(404)
    }

    /// Whether ConnectWise answered 429 (too many requests).
    pub fn is_rate_limited(&self) -> bool {
        matches!(self.kind, CwErrorKind::Http { .. }) && self.status == Some(429)
    }

    /// ConnectWise's error code from the body (e.g. `NotFound`), when there was one.
    pub fn cw_code(&self) -> Option<&str> {
        match &self.kind {
            CwErrorKind::Http { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Stable machine code: `CW_TIMEOUT`, `CW_CONNECT`, `CW_RATE_LIMITED`, `CW_AUTH_FAILED`,
    /// `CW_NOT_FOUND`, `CW_SERVER_ERROR`, `CW_BAD_REQUEST` (other 4xx), `CW_DECODE`,
    /// `CW_INVALID_URL`, `CW_REDIRECT_REFUSED`, `CW_ADDRESS_REFUSED`.
    pub fn code(&self) -> &'static str {
        match &self.kind {
            CwErrorKind::Redirect => "CW_REDIRECT_REFUSED",
            CwErrorKind::ForbiddenAddress(_) => "CW_ADDRESS_REFUSED",
            CwErrorKind::Timeout => "CW_TIMEOUT",
            CwErrorKind::Connect(_) => "CW_CONNECT",
            CwErrorKind::Decode(_) => "CW_DECODE",
            CwErrorKind::InvalidUrl(_) => "CW_INVALID_URL",
            CwErrorKind::Http { .. } => match self.status {
                Some(429) => "CW_RATE_LIMITED",
                Some(401 | 403) => "CW_AUTH_FAILED",
                Some(404) => "CW_NOT_FOUND",
                Some(408) => "CW_TIMEOUT",
                Some(s) if (400..500).contains(&s) => "CW_BAD_REQUEST",
                _ => "CW_SERVER_ERROR",
            },
        }
    }

    fn describe(&self) -> String {
        let mut out = match &self.kind {
            CwErrorKind::Timeout => "ConnectWise request timed out".to_string(),
            CwErrorKind::Connect(m) => format!("ConnectWise connection failed: {m}"),
            CwErrorKind::Http { code, message } => {
                let status = self.status.map(|s| s.to_string()).unwrap_or_else(|| "?".into());
                match code {
                    Some(c) => format!("ConnectWise answered HTTP {status} {c}: {message}"),
                    None => format!("ConnectWise answered HTTP {status}: {message}"),
                }
            }
            CwErrorKind::Decode(m) => match self.status {
                Some(s) => format!("unexpected ConnectWise response (HTTP {s}): {m}"),
                None => format!("unexpected ConnectWise response: {m}"),
            },
            CwErrorKind::InvalidUrl(m) => format!("invalid ConnectWise connection setting: {m}"),
            CwErrorKind::Redirect => {
                let status = self.status.map(|s| s.to_string()).unwrap_or_else(|| "3xx".into());
                format!("ConnectWise answered with a redirect (HTTP {status}); redirects are refused")
            }
            CwErrorKind::ForbiddenAddress(m) => format!("ConnectWise address refused: {m}"),
        };
        out.push_str(&format!(
            " [{}; request id {}; after {} ms",
            self.code(),
            self.request_id.as_deref().unwrap_or("-"),
            self.duration.as_millis()
        ));
        if let Some(ra) = self.retry_after {
            out.push_str(&format!("; retry after {} s", ra.as_secs()));
        }
        out.push(']');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> CwError {
        CwError {
            kind: CwErrorKind::Http { code: Some("X".into()), message: "m".into() },
            status: Some(status),
            request_id: Some("rid".into()),
            duration: Duration::from_millis(5),
            retry_after: None,
        }
    }

    #[test]
    fn codes_and_classes() {
        assert_eq!(http(429).code(), "CW_RATE_LIMITED");
        assert_eq!(http(401).code(), "CW_AUTH_FAILED");
        assert_eq!(http(403).code(), "CW_AUTH_FAILED");
        assert_eq!(http(404).code(), "CW_NOT_FOUND");
        assert_eq!(http(400).code(), "CW_BAD_REQUEST");
        assert_eq!(http(409).code(), "CW_BAD_REQUEST");
        assert_eq!(http(500).code(), "CW_SERVER_ERROR");
        assert_eq!(http(503).code(), "CW_SERVER_ERROR");
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(http(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 501] {
            assert!(!http(s).is_retryable(), "{s}");
        }
        assert!(http(403).is_auth_failure());
        assert!(http(404).is_not_found());
        assert!(CwError::new(CwErrorKind::Timeout, Duration::ZERO).is_retryable());
        assert!(CwError::new(CwErrorKind::Connect("x".into()), Duration::ZERO).is_retryable());
        assert!(!CwError::new(CwErrorKind::Decode("x".into()), Duration::ZERO).is_retryable());
        let redirect = CwError { status: Some(302), ..CwError::new(CwErrorKind::Redirect, Duration::ZERO) };
        assert_eq!((redirect.code(), redirect.is_retryable()), ("CW_REDIRECT_REFUSED", false));
        assert!(redirect.to_string().contains("redirect (HTTP 302)"), "{redirect}");
        let refused = CwError::new(CwErrorKind::ForbiddenAddress("10.0.0.1".into()), Duration::ZERO);
        assert_eq!((refused.code(), refused.is_retryable()), ("CW_ADDRESS_REFUSED", false));
    }

    #[test]
    fn display_is_human() {
        let s = http(404).to_string();
        assert!(s.contains("404"), "{s}");
        assert!(s.contains("rid"), "{s}");
        assert!(s.contains("CW_NOT_FOUND"), "{s}");
        assert!(s.contains(": m"), "{s}");
    }
}
