//! Bearer JWT verification (SPEC §4). The accepted algorithms come from configuration, never from
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

/// Why a token was refused (all become HTTP 401; the message is safe to show).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token algorithm {0:?} is not accepted")]
    Algorithm(String),
    #[error("no verification key is configured")]
    NoKeys,
}

const MAX_TOKEN_BYTES: usize = 16 * 1024;
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
                Err(e) => last = AuthError::Invalid(e.to_string()),
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
        return Err(AuthError::Invalid("the token has expired".into()));
    }
    if let Some(nbf) = &c.nbf {
        let nbf = seconds(nbf).ok_or_else(|| AuthError::Invalid("the `nbf` claim is not a number of seconds".into()))?;
        if nbf.saturating_sub(leeway) > now {
            return Err(AuthError::Invalid("the token is not valid yet".into()));
        }
    }
    Ok(c)
}

fn check_claims(c: Claims) -> Result<Claims, AuthError> {
    if c.tenant.trim().is_empty() || c.tenant.len() > 200 {
        return Err(AuthError::Invalid("the `tenant` claim is missing or empty".into()));
    }
    if c.sub.trim().is_empty() || c.sub.len() > 200 {
        return Err(AuthError::Invalid("the `sub` claim is missing or empty".into()));
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
            .map_err(|e| AuthError::Invalid(format!("JWKS unavailable: {e}")))?
            .json()
            .await
            .map_err(|e| AuthError::Invalid(format!("JWKS unreadable: {e}")))?;
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

    fn claims(exp: serde_json::Value, nbf: Option<serde_json::Value>) -> Claims {
        let mut v = serde_json::json!({"sub": "s", "tenant": "t", "exp": exp});
        if let Some(nbf) = nbf {
            v["nbf"] = nbf;
        }
        serde_json::from_value(v).expect("claims")
    }

    #[test]
    fn exp_and_nbf_are_judged_on_the_given_clock_with_30s_leeway() {
        let now = 1_800_000_000;
        assert!(check_times(claims((now - 29).into(), None), now).is_ok(), "inside the leeway");
        assert!(check_times(claims((now - 30).into(), None), now).is_err(), "expired beyond the leeway");
        assert!(check_times(claims(serde_json::json!(now as f64 + 0.5), None), now).is_ok(), "fractional seconds");
        assert!(check_times(claims((now + 60).into(), Some((now + 30).into())), now).is_ok(), "nbf inside the leeway");
        assert!(check_times(claims((now + 60).into(), Some((now + 31).into())), now).is_err(), "not valid yet");
        let text_exp = serde_json::from_value::<Claims>(serde_json::json!({"sub": "s", "tenant": "t", "exp": "soon"}));
        assert!(text_exp.is_err(), "a non-numeric exp is refused");
    }
}
