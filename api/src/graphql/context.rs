//! What resolvers can reach: the shared application state and the per-request principal,
//! plus the role guard used on every field.
use std::sync::Arc;

use async_graphql::{Context, Guard};
use sea_orm::DatabaseConnection;
use sync_core::{
    Settings,
    auth::{Permission, Principal},
    clock::SharedClock,
    crypto::SecretBox,
    jobs::JobQueue,
};

use super::errors::{coded, internal};

/// Shared by every request.
#[derive(Clone)]
pub struct AppCtx {
    pub db: DatabaseConnection,
    pub settings: Arc<Settings>,
    pub queue: Arc<dyn JobQueue>,
    pub secrets: Option<SecretBox>,
    /// The guarded ConnectWise client (no redirects; the address guard on every connection).
    pub http: connectwise::CwHttp,
    /// The service's clock (period rules, audit times, token validity).
    pub clock: SharedClock,
}

impl AppCtx {
    pub fn cw_access(&self) -> sync_core::service::settings::CwAccess<'_> {
        sync_core::service::settings::CwAccess { settings: &self.settings, secrets: self.secrets.as_ref(), http: &self.http }
    }
}

pub fn app<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a AppCtx> {
    ctx.data::<AppCtx>().map_err(|_| internal("application state missing from the schema"))
}

pub fn principal<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Principal> {
    ctx.data::<Principal>().map_err(|_| coded("UNAUTHENTICATED", "a bearer token is required"))
}

/// Field guard: the principal's roles must grant `0`.
pub struct Need(pub Permission);

impl Guard for Need {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let p = principal(ctx)?;
        if p.may(self.0) {
            Ok(())
        } else {
            Err(coded("FORBIDDEN", format!("your roles ({}) do not allow you to {}", p.roles.join(", "), self.0.as_str())))
        }
    }
}
