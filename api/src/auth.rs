//! Bearer JWT verification (docs/concepts.md: Who may do what). The accepted algorithms come from configuration, never from
//! the token; `none` is never accepted. Keys: an HS256 secret, an RS256/ES256 PEM public key, or a
//! JWKS URL (fetched, cached, refetched on an unknown `kid` at most every 30 s).
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::sync::RwLock;

use sync_core::{clock::SharedClock, config::JwtSettings};

/// The claims we read. `exp` is required; `exp` and `nbf` are checked against the service's clock
/// (with [`LEEWAY_SECS`]), `iss` and `aud` by the JWT library.
#[derive(Debug, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Expiry, seconds since the epoch (a JSON number; fractions are allowed by RFC 7519).
    exp: serde_json::Number,
    /// Not before, seconds since the epoch.
    #[serde(default)]
    nbf: Option<serde_json::Number>,
}

/// Why a token was refused (all become HTTP 401). `Display` is the short, stable message sent to
/// the caller; what exactly was wrong (the JWT library's words) is [`AuthError::detail`], for the
/// debug log only.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("invalid token")]
    Invalid(String),
    #[error("invalid token")]
    Algorithm(String),
    #[error("invalid token")]
    NoKeys,
    /// The token was good but its tenant could not be looked up (the database is unreachable).
    #[error("tenant lookup failed")]
    TenantLookup,
}

impl AuthError {
    /// Why, in detail (never the token itself): for the debug log, not for the caller.
    pub fn detail(&self) -> String {
        match self {
            AuthError::Invalid(d) => d.clone(),
            AuthError::Algorithm(alg) => format!("token algorithm {alg} is not accepted"),
            AuthError::NoKeys => "no verification key is configured".into(),
            other => other.to_string(),
        }
    }
}

/// A JWT library error as one of ours: expiry and not-before get their own message.
fn from_jwt(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
        jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        _ => AuthError::Invalid(e.to_string()),
    }
}

const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// `sub` and `tenant`: 1 to 200 characters, no control characters.
const MAX_CLAIM_CHARS: usize = 200;
/// At most this many roles of at most 64 characters each.
const MAX_ROLES: usize = 32;
const MAX_ROLE_CHARS: usize = 64;
const LEEWAY_SECS: u64 = 30;
const JWKS_REFRESH_MIN: Duration = Duration::from_secs(30);

enum KeySource {
    Static { key: DecodingKey, algorithms: Vec<Algorithm> },
    Jwks(Box<JwksCache>),
}

/// Keys by `kid`, and when they were last fetched.
#[derive(Default)]
struct JwksState {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched_at: Option<Instant>,
}

struct JwksCache {
    url: String,
    http: reqwest::Client,
    state: RwLock<JwksState>,
}

/// Verifies tokens against every configured key source.
pub struct JwtVerifier {
    sources: Vec<KeySource>,
    issuer: Option<String>,
    audience: Option<String>,
    clock: SharedClock,
}

impl JwtVerifier {
    pub fn from_settings(s: &JwtSettings, http: reqwest::Client, clock: SharedClock) -> Result<Arc<Self>, String> {
        let mut sources = Vec::new();
        if let Some(secret) = &s.hs256_secret {
            sources.push(KeySource::Static {
                key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
                algorithms: vec![Algorithm::HS256],
            });
        }
        if let Some(pem) = &s.public_key_pem {
            // Accept the PEM text itself or a path to a file holding it.
            let text = if pem.contains("-----BEGIN") {
                pem.replace("\\n", "\n")
            } else {
                std::fs::read_to_string(pem).map_err(|e| format!("JWT_PUBLIC_KEY_PEM: cannot read {pem}: {e}"))?
            };
            let (key, algorithms) = if let Ok(k) = DecodingKey::from_rsa_pem(text.as_bytes()) {
                (k, vec![Algorithm::RS256])
            } else if let Ok(k) = DecodingKey::from_ec_pem(text.as_bytes()) {
                (k, vec![Algorithm::ES256])
            } else {
                return Err("JWT_PUBLIC_KEY_PEM is neither an RSA nor an EC (P-256) public key in PEM".into());
            };
            sources.push(KeySource::Static { key, algorithms });
        }
        if let Some(url) = &s.jwks_url {
            sources.push(KeySource::Jwks(Box::new(JwksCache { url: url.clone(), http, state: RwLock::new(JwksState::default()) })));
        }
        Ok(Arc::new(JwtVerifier { sources, issuer: s.issuer.clone(), audience: s.audience.clone(), clock }))
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_SECS;
        // Time claims are checked by `check_times` on the service's clock, not the library's.
        v.validate_exp = false;
        v.validate_nbf = false;
        let mut required = vec!["exp", "sub"];
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        v
    }

    /// Verify a raw token (without the `Bearer ` prefix).
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("token too large".into()));
        }
        if self.sources.is_empty() {
            return Err(AuthError::NoKeys);
        }
        let header = decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let mut last = AuthError::Algorithm(format!("{:?}", header.alg));
        for source in &self.sources {
            let (key, alg) = match source {
                KeySource::Static { key, algorithms } => {
                    if !algorithms.contains(&header.alg) {
                        continue;
                    }
                    (key.clone(), header.alg)
                }
                KeySource::Jwks(cache) => match cache.key_for(header.kid.as_deref(), header.alg).await {
                    Ok(k) => k,
                    Err(e) => {
                        last = e;
                        continue;
                    }
                },
            };
            match decode::<Claims>(token, &key, &self.validation(alg)) {
                Ok(data) => return check_times(data.claims, self.clock.now().timestamp()).and_then(check_claims),
                Err(e) => last = from_jwt(e),
            }
        }
        Err(last)
    }
}

/// `exp` and `nbf` against `now` (seconds since the epoch), with [`LEEWAY_SECS`] either way.
fn check_times(c: Claims, now: i64) -> Result<Claims, AuthError> {
    let seconds = |n: &serde_json::Number| n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f.floor() as i64));
    let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(0);
    let exp = seconds(&c.exp).ok_or_else(|| AuthError::Invalid("the `exp` claim is not a number of seconds".into()))?;
    if exp.saturating_add(leeway) <= now {
        return Err(AuthError::Expired);
    }
    if let Some(nbf) = &c.nbf {
        let nbf = seconds(nbf).ok_or_else(|| AuthError::Invalid("the `nbf` claim is not a number of seconds".into()))?;
        if nbf.saturating_sub(leeway) > now {
            return Err(AuthError::NotYetValid);
        }
    }
    Ok(c)
}

/// Claims reach the database (the tenant row) and the audit log (the actor): short, printable.
fn check_claims(c: Claims) -> Result<Claims, AuthError> {
    let text_ok = |s: &str, max: usize| !s.trim().is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control);
    if !text_ok(&c.tenant, MAX_CLAIM_CHARS) {
        return Err(AuthError::Invalid(format!("the `tenant` claim must be 1 to {MAX_CLAIM_CHARS} printable characters")));
    }
    if !text_ok(&c.sub, MAX_CLAIM_CHARS) {
        return Err(AuthError::Invalid(format!("the `sub` claim must be 1 to {MAX_CLAIM_CHARS} printable characters")));
    }
    if c.roles.len() > MAX_ROLES || c.roles.iter().any(|r| !text_ok(r, MAX_ROLE_CHARS)) {
        return Err(AuthError::Invalid(format!("`roles` must be at most {MAX_ROLES} names of 1 to {MAX_ROLE_CHARS} printable characters")));
    }
    Ok(c)
}

impl JwksCache {
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<(DecodingKey, Algorithm), AuthError> {
        let kid = kid.ok_or_else(|| AuthError::Invalid("token has no `kid` and keys come from a JWKS".into()))?;
        if let Some(found) = self.lookup(kid, alg).await {
            return Ok(found);
        }
        let due = self.state.read().await.fetched_at.is_none_or(|t| t.elapsed() >= JWKS_REFRESH_MIN);
        if due {
            self.refresh().await?;
        }
        self.lookup(kid, alg).await.ok_or_else(|| AuthError::Invalid(format!("unknown key id {kid:?}")))
    }

    async fn lookup(&self, kid: &str, alg: Algorithm) -> Option<(DecodingKey, Algorithm)> {
        let state = self.state.read().await;
        state.keys.get(kid).filter(|(_, a)| *a == alg).cloned()
    }

    async fn refresh(&self) -> Result<(), AuthError> {
        let mut state = self.state.write().await;
        state.fetched_at = Some(Instant::now());
        let set: JwkSet = self
            .http
            .get(&self.url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| AuthError::Invalid(format!("JWKS unavailable: {}", e.without_url())))?
            .json()
            .await
            .map_err(|e| AuthError::Invalid(format!("JWKS unreadable: {}", e.without_url())))?;
        let allowed: HashSet<Algorithm> = [Algorithm::RS256, Algorithm::ES256].into_iter().collect();
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            let alg = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => continue, // symmetric keys never come from a JWKS URL
            };
            if !allowed.contains(&alg) {
                continue;
            }
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, (key, alg));
            }
        }
        state.keys = keys;
        Ok(())
    }
}

/// Extract the bearer token from an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let h = header.ok_or(AuthError::Missing)?.trim();
    let (scheme, token) = h.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed(exp: serde_json::Value, nbf: Option<serde_json::Value>) -> Claims {
        let mut v = serde_json::json!({"sub": "s", "tenant": "t", "exp": exp});
        if let Some(nbf) = nbf {
            v["nbf"] = nbf;
        }
        serde_json::from_value(v).expect("claims")
    }

    #[test]
    fn exp_and_nbf_are_judged_on_the_given_clock_with_30s_leeway() {
        let now = 1_800_000_000;
        assert!(check_times(timed((now - 29).into(), None), now).is_ok(), "inside the leeway");
        assert!(check_times(timed((now - 30).into(), None), now).is_err(), "expired beyond the leeway");
        assert!(check_times(timed(serde_json::json!(now as f64 + 0.5), None), now).is_ok(), "fractional seconds");
        assert!(check_times(timed((now + 60).into(), Some((now + 30).into())), now).is_ok(), "nbf inside the leeway");
        assert!(check_times(timed((now + 60).into(), Some((now + 31).into())), now).is_err(), "not valid yet");
        let text_exp = serde_json::from_value::<Claims>(serde_json::json!({"sub": "s", "tenant": "t", "exp": "soon"}));
        assert!(text_exp.is_err(), "a non-numeric exp is refused");
    }

    fn claims(sub: &str, tenant: &str, roles: &[&str]) -> Claims {
        Claims { sub: sub.into(), tenant: tenant.into(), roles: roles.iter().map(|r| r.to_string()).collect(), exp: 0.into(), nbf: None }
    }

    #[test]
    fn claims_are_short_and_printable() {
        assert!(check_claims(claims("alice", "acme", &["admin"])).is_ok());
        for bad in [
            claims("alice", "ac\u{0}me", &[]),
            claims("al\u{7}ice", "acme", &[]),
            claims("alice", " ", &[]),
            claims("alice", &"t".repeat(201), &[]),
            claims("alice", "acme", &["ad\nmin"]),
            claims("alice", "acme", &[&"r".repeat(65)]),
            claims("alice", "acme", &["viewer"; 33]),
        ] {
            let e = check_claims(bad).expect_err("refused");
            assert_eq!(e.to_string(), "invalid token");
        }
    }

    #[test]
    fn messages_are_short_and_stable() {
        assert_eq!(AuthError::Algorithm("HS512".into()).to_string(), "invalid token");
        assert!(AuthError::Algorithm("HS512".into()).detail().contains("HS512"));
        assert_eq!(AuthError::Invalid("JSON error: missing field `sub` at line 1 column 52".into()).to_string(), "invalid token");
        assert_eq!(AuthError::Expired.to_string(), "token expired");
        assert_eq!(AuthError::NotYetValid.to_string(), "token not yet valid");
        assert_eq!(AuthError::Missing.to_string(), "missing bearer token");
    }
}
