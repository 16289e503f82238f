//! `api token`: mint a JWT from the configured HS256 secret (`JWT_SECRET`, or the embedded
//! default's generated `jwt-secret`), so trying the API needs no JWT library. Only for the HS256
//! secret: with an identity provider's keys (`JWT_PUBLIC_KEY_PEM`, `JWT_JWKS_URL`) tokens come from
//! the provider.
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use sync_core::auth::Role;

pub const USAGE: &str = "api token --tenant TENANT --role ROLE [--role ROLE…] [--sub SUBJECT] [--days DAYS]";

/// Default validity of a minted token.
pub const DEFAULT_DAYS: i64 = 30;
/// Longest validity `--days` accepts.
pub const MAX_DAYS: i64 = 366;

/// What `api token` was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub tenant: String,
    pub roles: Vec<String>,
    pub sub: String,
    pub days: i64,
}

/// Parse the arguments after `token`. Roles may repeat `--role` or be comma-separated.
pub fn parse_args(args: &[String]) -> Result<TokenRequest, String> {
    let (mut tenant, mut roles, mut sub, mut days) = (None, Vec::new(), None, DEFAULT_DAYS);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (flag.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next().cloned()).ok_or_else(|| format!("{name} needs a value; usage: {USAGE}"));
        match name {
            "--tenant" => tenant = Some(value()?),
            "--role" | "--roles" => {
                for r in value()?.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                    let role = Role::parse(r)
                        .ok_or_else(|| format!("unknown role {r:?}: one of viewer, operator, admin, integration; usage: {USAGE}"))?;
                    if !roles.iter().any(|x| x == role.as_str()) {
                        roles.push(role.as_str().to_string());
                    }
                }
            }
            "--sub" => sub = Some(value()?),
            "--days" => {
                let v = value()?;
                days = v
                    .parse::<i64>()
                    .ok()
                    .filter(|d| (1..=MAX_DAYS).contains(d))
                    .ok_or_else(|| format!("--days must be a whole number from 1 to {MAX_DAYS}, got {v:?}"))?;
            }
            other => return Err(format!("unknown argument {other:?}; usage: {USAGE}")),
        }
    }
    let tenant = tenant.filter(|t| !t.trim().is_empty()).ok_or_else(|| format!("--tenant is required; usage: {USAGE}"))?;
    if roles.is_empty() {
        return Err(format!("at least one --role is required; usage: {USAGE}"));
    }
    let sub = sub.unwrap_or_else(|| format!("cli-{}", roles[0]));
    Ok(TokenRequest { tenant, roles, sub, days })
}

/// The signed token: HS256 with `sub`, `tenant`, `roles`, `iat`, `exp`, and `iss`/`aud` when the
/// service requires them.
pub fn mint(
    secret: &SecretString,
    request: &TokenRequest,
    issuer: Option<&str>,
    audience: Option<&str>,
    now: DateTime<Utc>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = now.timestamp();
    let mut claims = serde_json::json!({
        "sub": request.sub,
        "tenant": request.tenant,
        "roles": request.roles,
        "iat": now,
        "exp": now + request.days * 86_400,
    });
    if let Some(iss) = issuer {
        claims["iss"] = iss.into();
    }
    if let Some(aud) = audience {
        claims["aud"] = aud.into();
    }
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.expose_secret().as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sync_core::{clock::ShiftedClock, config::JwtSettings};

    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        assert_eq!(
            parse_args(&args(&["--tenant", "demo", "--role", "admin"])),
            Ok(TokenRequest { tenant: "demo".into(), roles: vec!["admin".into()], sub: "cli-admin".into(), days: DEFAULT_DAYS })
        );
        assert_eq!(
            parse_args(&args(&["--tenant=msp-1", "--role", "viewer,operator", "--role=viewer", "--sub", "alice", "--days", "2"])),
            Ok(TokenRequest { tenant: "msp-1".into(), roles: vec!["viewer".into(), "operator".into()], sub: "alice".into(), days: 2 })
        );
        for bad in [
            &["--role", "admin"][..],
            &["--tenant", "demo"],
            &["--tenant", "demo", "--role", "root"],
            &["--tenant", "demo", "--role", "admin", "--days", "0"],
            &["--tenant", "demo", "--role", "admin", "--days", "a week"],
            &["--tenant", "demo", "--role"],
            &["--tenant", "demo", "--role", "admin", "--extra"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?} should be refused");
        }
    }

    /// The service's own verifier accepts what `mint` signs, with the issuer and audience it requires.
    #[tokio::test]
    async fn the_verifier_accepts_a_minted_token() {
        let secret = SecretString::from("a-long-enough-secret-for-the-token-test");
        let now = chrono::DateTime::parse_from_rfc3339("2026-08-03T10:00:00Z").expect("instant").to_utc();
        let clock: sync_core::clock::SharedClock = Arc::new(ShiftedClock::starting_at(now));
        let request = parse_args(&args(&["--tenant", "demo", "--role", "operator", "--days", "1"])).expect("args");
        let settings = JwtSettings {
            hs256_secret: Some(secret.clone()),
            issuer: Some("csync".into()),
            audience: Some("csync-api".into()),
            ..Default::default()
        };
        let verifier = crate::auth::JwtVerifier::from_settings(&settings, reqwest::Client::new(), clock.clone()).expect("verifier");
        let token = mint(&secret, &request, Some("csync"), Some("csync-api"), clock.now()).expect("mint");
        let claims = verifier.verify(&token).await.expect("a valid token");
        assert_eq!(
            (claims.tenant.as_str(), claims.roles.clone(), claims.sub.as_str()),
            ("demo", vec!["operator".to_string()], "cli-operator")
        );
        // Without the required audience it is refused; after `days` it has expired.
        let no_aud = mint(&secret, &request, Some("csync"), None, clock.now()).expect("mint");
        assert!(verifier.verify(&no_aud).await.is_err());
        let old = mint(&secret, &request, Some("csync"), Some("csync-api"), now - chrono::Duration::days(2)).expect("mint");
        assert!(verifier.verify(&old).await.is_err());
    }
}
