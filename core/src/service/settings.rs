//! ConnectWise settings of a tenant: configure (private key encrypted, write-only), the
//! consumption-sync switch, and the connection test.
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use connectwise::AddressPolicy;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DatabaseConnection, EntityTrait, IntoActiveModel};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use url::Url;

use crate::{
    Settings, UserError,
    audit::{self, AuditRecord},
    auth::Principal,
    crypto::SecretBox,
    error::{Outcome, ServiceError, ServiceResult},
};
use domain::codes;
use entity::cw_settings;

/// What `configureConnectWise` takes.
#[derive(Clone, Debug)]
pub struct SettingsInput {
    pub site_url: String,
    pub company_id: String,
    pub public_key: String,
    /// `None` on update keeps the stored key.
    pub private_key: Option<SecretString>,
    /// `None` = discover via `/login/companyinfo/{companyId}`.
    pub codebase: Option<String>,
    pub ticket_board_id: i64,
    pub ticket_team_id: i64,
    pub ticket_status_id: i64,
    pub ticket_type_id: Option<i64>,
    pub ticket_subtype_id: Option<i64>,
    /// `None` keeps the current switch (off for a new configuration).
    pub consumption_sync_enabled: Option<bool>,
}

/// What the process needs to talk to ConnectWise on a user's behalf.
pub struct CwAccess<'a> {
    pub settings: &'a Settings,
    pub secrets: Option<&'a SecretBox>,
    /// The guarded client (no redirects, the address guard at connect time).
    pub http: &'a connectwise::CwHttp,
}

pub async fn get(db: &DatabaseConnection, tenant_id: i64) -> ServiceResult<Option<cw_settings::Model>> {
    Ok(cw_settings::Entity::find_by_id(tenant_id).one(db).await?)
}

/// The audit/GraphQL view of settings: never the key, only whether there is one.
pub fn public_view(m: &cw_settings::Model) -> serde_json::Value {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("private_key_enc");
        o.insert("has_private_key".into(), json!(m.private_key_enc.is_some()));
    }
    v
}

const MAX_TEXT: usize = 200;

pub async fn configure(
    db: &DatabaseConnection,
    cw: &CwAccess<'_>,
    p: &Principal,
    input: SettingsInput,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<cw_settings::Model>> {
    let mut errors = Vec::new();
    let site = match check_site_url(&input.site_url, cw.settings.cw_allow_http).await {
        Ok(u) => Some(u),
        Err(e) => {
            errors.push(e.at(["input", "siteUrl"]));
            None
        }
    };
    for (name, value) in [("companyId", &input.company_id), ("publicKey", &input.public_key)] {
        if value.trim().is_empty() || value.len() > MAX_TEXT {
            errors.push(UserError::new(codes::INVALID_INPUT, format!("{name} must be 1 to {MAX_TEXT} characters")).at(["input", name]));
        }
    }
    if let Some(c) = input.codebase.as_deref().map(str::trim).filter(|c| !c.is_empty())
        && !connectwise::is_valid_codebase(c.trim_start_matches('/'))
    {
        errors.push(
            UserError::new(codes::INVALID_INPUT, "codebase is 1 to 64 letters, digits, `_`, `.` or `-`, such as v4_6_release")
                .at(["input", "codebase"]),
        );
    }
    if let Some(k) = &input.private_key
        && (k.expose_secret().is_empty() || k.expose_secret().len() > MAX_TEXT)
    {
        errors.push(
            UserError::new(codes::INVALID_INPUT, format!("privateKey must be 1 to {MAX_TEXT} characters")).at(["input", "privateKey"]),
        );
    }
    for (name, v) in [
        ("ticketBoardId", Some(input.ticket_board_id)),
        ("ticketTeamId", Some(input.ticket_team_id)),
        ("ticketStatusId", Some(input.ticket_status_id)),
        ("ticketTypeId", input.ticket_type_id),
        ("ticketSubtypeId", input.ticket_subtype_id),
    ] {
        if v.is_some_and(|v| v <= 0) {
            errors.push(UserError::new(codes::INVALID_INPUT, format!("{name} must be a positive ConnectWise id")).at(["input", name]));
        }
    }
    let existing = get(db, p.tenant_id).await?;
    if existing.as_ref().and_then(|e| e.private_key_enc.as_ref()).is_none() && input.private_key.is_none() {
        errors.push(
            UserError::new(codes::INVALID_INPUT, "privateKey is required the first time ConnectWise is configured")
                .at(["input", "privateKey"]),
        );
    }
    let (Some(site), true) = (site, errors.is_empty()) else {
        return Ok(Err(errors));
    };

    let codebase = match input.codebase.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        Some(c) => c.trim_matches('/').to_string(),
        // The discovered value was checked against the same shape by the client.
        None => match connectwise::discover_codebase(cw.http, &site, input.company_id.trim(), cw.settings.cw_timeout).await {
            Ok(c) => c,
            Err(e) => {
                return Ok(Err(vec![
                    UserError::new(
                        "CODEBASE_DISCOVERY_FAILED",
                        format!("could not discover the codebase from {site}login/companyinfo: {e}; enter it explicitly"),
                    )
                    .at(["input", "codebase"]),
                ]));
            }
        },
    };
    let private_key_enc = match &input.private_key {
        Some(k) => {
            let sb =
                cw.secrets.ok_or_else(|| ServiceError::Internal("SECRETS_KEY is not configured; cannot store a private key".into()))?;
            Some(sb.encrypt(k.expose_secret()).map_err(ServiceError::internal)?)
        }
        None => existing.as_ref().and_then(|e| e.private_key_enc.clone()),
    };
    let site_str = site.as_str().trim_end_matches('/').to_string();
    let txn = crate::engine::sql::begin_write(db).await?;
    let saved = match &existing {
        Some(e) => {
            let mut am = e.clone().into_active_model();
            am.site_url = Set(site_str);
            am.company_id = Set(input.company_id.trim().to_string());
            am.public_key = Set(input.public_key.trim().to_string());
            am.private_key_enc = Set(private_key_enc);
            am.codebase = Set(codebase);
            am.ticket_board_id = Set(input.ticket_board_id);
            am.ticket_team_id = Set(input.ticket_team_id);
            am.ticket_status_id = Set(input.ticket_status_id);
            am.ticket_type_id = Set(input.ticket_type_id);
            am.ticket_subtype_id = Set(input.ticket_subtype_id);
            if let Some(on) = input.consumption_sync_enabled {
                am.consumption_sync_enabled = Set(on);
            }
            // New credentials: give the connection a fresh chance.
            am.breaker_open = Set(false);
            am.breaker_reason = Set(None);
            am.breaker_opened_at = Set(None);
            am.updated_at = Set(now);
            am.update(&txn).await?
        }
        None => {
            cw_settings::ActiveModel {
                tenant_id: Set(p.tenant_id),
                site_url: Set(site_str),
                company_id: Set(input.company_id.trim().to_string()),
                public_key: Set(input.public_key.trim().to_string()),
                private_key_enc: Set(private_key_enc),
                codebase: Set(codebase),
                consumption_sync_enabled: Set(input.consumption_sync_enabled.unwrap_or(false)),
                ticket_board_id: Set(input.ticket_board_id),
                ticket_team_id: Set(input.ticket_team_id),
                ticket_status_id: Set(input.ticket_status_id),
                ticket_type_id: Set(input.ticket_type_id),
                ticket_subtype_id: Set(input.ticket_subtype_id),
                breaker_open: Set(false),
                breaker_reason: Set(None),
                breaker_opened_at: Set(None),
                paused_until: Set(None),
                catalog_refreshed_at: Set(None),
                owed_scheduled_period: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(&txn)
            .await?
        }
    };
    let mut detail = json!({});
    if input.private_key.is_some() {
        detail = json!({"private_key": "replaced"});
    }
    audit::record(
        &txn,
        AuditRecord {
            at: now,
            tenant_id: p.tenant_id,
            actor: &p.actor(),
            action: if existing.is_some() { "settings.updated" } else { "settings.created" },
            entity_type: "connectwise_settings",
            entity_id: p.tenant_id.to_string(),
            before: existing.as_ref().map(public_view),
            after: Some(public_view(&saved)),
            detail: Some(detail),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(Ok(saved))
}

pub async fn set_consumption_sync(
    db: &DatabaseConnection,
    p: &Principal,
    enabled: bool,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<cw_settings::Model>> {
    let txn = crate::engine::sql::begin_write(db).await?;
    let Some(existing) = cw_settings::Entity::find_by_id(p.tenant_id).one(&txn).await? else {
        return Ok(Err(vec![
            UserError::new("CONNECTWISE_NOT_CONFIGURED", "configure ConnectWise before switching consumption sync on or off")
                .at(["enabled"]),
        ]));
    };
    let mut am = existing.clone().into_active_model();
    am.consumption_sync_enabled = Set(enabled);
    am.updated_at = Set(now);
    let saved = am.update(&txn).await?;
    audit::record(
        &txn,
        AuditRecord {
            at: now,
            tenant_id: p.tenant_id,
            actor: &p.actor(),
            action: if enabled { "settings.consumption_sync_enabled" } else { "settings.consumption_sync_disabled" },
            entity_type: "connectwise_settings",
            entity_id: p.tenant_id.to_string(),
            before: Some(json!({"consumption_sync_enabled": existing.consumption_sync_enabled})),
            after: Some(json!({"consumption_sync_enabled": enabled})),
            detail: None,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(Ok(saved))
}

/// `siteUrl` must be `https://` (scheme + host [+ port], nothing else) and must not be or resolve
/// to an address the outbound guard forbids (`connectwise::is_forbidden_address`: loopback,
/// private, link-local, reserved, in every embedded form). With `CW_ALLOW_HTTP`, `http://` and
/// loopback/private addresses are allowed too and names are not resolved here. This is a save-time
/// courtesy: the guard itself runs on every connection (`connectwise::CwHttp`), so a name that
/// later resolves elsewhere (DNS rebinding) or a URL stored under another setting is still refused.
pub async fn check_site_url(raw: &str, allow_http: bool) -> Result<Url, UserError> {
    let policy = AddressPolicy::from_allow_http(allow_http);
    let insecure = |m: String| UserError::new(codes::INSECURE_SITE_URL, m);
    let url = Url::parse(raw.trim()).map_err(|_| insecure("siteUrl is not a URL like https://api-na.myconnectwise.net".into()))?;
    if !policy.permits_scheme(url.scheme()) {
        return Err(insecure(format!("siteUrl must use https, not {}", url.scheme())));
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
        || !(url.path().is_empty() || url.path() == "/")
    {
        return Err(insecure("siteUrl is the scheme and host (and optional port) only, e.g. https://api-na.myconnectwise.net".into()));
    }
    let refused = |host: &str| insecure(format!("siteUrl host {host} is, or resolves to, a loopback, private or reserved address"));
    let host = match url.host() {
        Some(url::Host::Ipv4(v4)) => return if policy.permits(IpAddr::V4(v4)) { Ok(url) } else { Err(refused(&v4.to_string())) },
        Some(url::Host::Ipv6(v6)) => return if policy.permits(IpAddr::V6(v6)) { Ok(url) } else { Err(refused(&v6.to_string())) },
        Some(url::Host::Domain(d)) => d.to_string(),
        None => return Err(insecure("siteUrl has no host".into())),
    };
    if policy == AddressPolicy::AllowPrivate {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> =
        match tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::lookup_host((host.as_str(), port))).await {
            Ok(Ok(it)) => it.map(|a| a.ip()).collect(),
            _ => return Err(insecure(format!("siteUrl host {host} does not resolve"))),
        };
    if addrs.is_empty() || addrs.iter().any(|ip| !policy.permits(*ip)) {
        return Err(refused(&host));
    }
    Ok(url)
}

/// One line of the connection test.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConnectionCheck {
    pub name: String,
    pub ok: bool,
    pub message: String,
}

/// Test credentials (`GET /system/info`) and that the configured board, team, status, type and
/// subtype exist together. A passing test closes an open auth breaker.
pub async fn test_connection(
    db: &DatabaseConnection,
    cw: &CwAccess<'_>,
    p: &Principal,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<Vec<ConnectionCheck>>> {
    let Some(s) = get(db, p.tenant_id).await? else {
        return Ok(Err(vec![UserError::new("CONNECTWISE_NOT_CONFIGURED", "configure ConnectWise first")]));
    };
    let client = match client_for(cw, &s) {
        Ok(c) => c,
        Err(e) => return Ok(Err(vec![e])),
    };
    let mut checks = Vec::new();
    let credentials_ok = match client.system_info().await {
        Ok(r) => {
            checks.push(ConnectionCheck {
                name: "credentials".into(),
                ok: true,
                message: format!("connected (request {})", r.request_id.unwrap_or_default()),
            });
            true
        }
        Err(e) => {
            checks.push(ConnectionCheck { name: "credentials".into(), ok: false, message: e.to_string() });
            false
        }
    };
    let mut check = |name: &str, ok: bool, message: String| checks.push(ConnectionCheck { name: name.into(), ok, message });
    if credentials_ok {
        use connectwise::BoardItemKind as K;
        match client.list_boards().await {
            Ok(boards) => match boards.iter().find(|b| b.id == Some(s.ticket_board_id)) {
                None => check("board", false, format!("board {} does not exist", s.ticket_board_id)),
                Some(b) => {
                    check("board", true, format!("board {} ({})", s.ticket_board_id, display_name(&b.name)));
                    for (name, kind, want) in [
                        ("team", K::Teams, Some(s.ticket_team_id)),
                        ("status", K::Statuses, Some(s.ticket_status_id)),
                        ("type", K::Types, s.ticket_type_id),
                        ("subtype", K::Subtypes, s.ticket_subtype_id),
                    ] {
                        let Some(want) = want else { continue };
                        match client.list_board_items(s.ticket_board_id, kind).await {
                            Ok(items) => match items.iter().find(|i| i.id == Some(want)) {
                                Some(i) => {
                                    check(name, true, format!("{name} {want} ({}) on board {}", display_name(&i.name), s.ticket_board_id))
                                }
                                None => check(name, false, format!("{name} {want} is not on board {}", s.ticket_board_id)),
                            },
                            Err(e) => check(name, false, e.to_string()),
                        }
                    }
                }
            },
            Err(e) => check("board", false, e.to_string()),
        }
    }
    let ok = checks.iter().all(|c| c.ok);
    let txn = crate::engine::sql::begin_write(db).await?;
    if ok && s.breaker_open {
        let mut am = s.clone().into_active_model();
        am.breaker_open = Set(false);
        am.breaker_reason = Set(None);
        am.breaker_opened_at = Set(None);
        am.updated_at = Set(now);
        am.update(&txn).await?;
    }
    audit::record(
        &txn,
        AuditRecord {
            at: now,
            tenant_id: p.tenant_id,
            actor: &p.actor(),
            action: "settings.connection_tested",
            entity_type: "connectwise_settings",
            entity_id: p.tenant_id.to_string(),
            before: None,
            after: None,
            detail: Some(json!({"ok": ok, "checks": checks})),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(Ok(checks))
}

/// A name from ConnectWise as shown in a check's message: printable and at most 100 characters.
fn display_name(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(100).collect()
}

/// A client for the tenant's stored settings (decrypting the key).
pub fn client_for(cw: &CwAccess<'_>, s: &cw_settings::Model) -> Result<connectwise::CwClient, UserError> {
    let not_ready = |m: &str| UserError::new("CONNECTWISE_NOT_CONFIGURED", m);
    let sb = cw.secrets.ok_or_else(|| not_ready("SECRETS_KEY is not configured"))?;
    let enc = s.private_key_enc.as_deref().ok_or_else(|| not_ready("no private key is stored"))?;
    let private_key = sb
        .decrypt(enc)
        .map_err(|_| not_ready("the stored private key cannot be decrypted with the current SECRETS_KEY; enter it again"))?;
    let site_url = Url::parse(&s.site_url).map_err(|_| not_ready("the stored siteUrl is invalid"))?;
    let creds = connectwise::Credentials {
        site_url,
        codebase: s.codebase.clone(),
        company_id: s.company_id.clone(),
        public_key: s.public_key.clone(),
        private_key,
        client_id: cw.settings.cw_client_id.clone().unwrap_or_else(|| PLACEHOLDER_CLIENT_ID.to_string()),
    };
    Ok(connectwise::CwClient::new(cw.http.clone(), creds, cw.settings.cw_timeout))
}

/// Sent when `CW_CLIENT_ID` is unset (development only; real pushes need a registered clientId).
pub const PLACEHOLDER_CLIENT_ID: &str = "00000000-0000-0000-0000-000000000000";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn site_url_guard() {
        assert!(check_site_url("https://8.8.8.8", false).await.is_ok());
        for bad in [
            "http://8.8.8.8",
            "https://127.0.0.1",
            "https://10.1.2.3",
            "https://192.168.0.1",
            "https://169.254.169.254",
            "https://[::1]",
            "https://[fd00::1]",
            "https://localhost",
            "https://8.8.8.8/path",
            "https://u:p@8.8.8.8",
            "ftp://8.8.8.8",
            "nonsense",
            // The guard gaps: embedded loopback and reserved ranges.
            "https://[::127.0.0.1]",
            "https://[64:ff9b::7f00:1]",
            "https://[2002:7f00:1::]",
            "https://192.0.0.1",
            "https://240.0.0.1",
            "https://2130706433",
        ] {
            let e = check_site_url(bad, false).await.expect_err(bad);
            assert_eq!(e.code, "INSECURE_SITE_URL", "{bad}");
        }
        assert!(check_site_url("http://127.0.0.1:9999", true).await.is_ok());
        // A lab may reach loopback and private addresses, never link-local (cloud metadata).
        assert_eq!(check_site_url("http://169.254.169.254", true).await.expect_err("metadata").code, "INSECURE_SITE_URL");
    }
}
