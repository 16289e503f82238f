//! Who is acting, and what they may do (docs/concepts.md: Who may do what). Token verification lives in `api`; this is the
//! role matrix, a pure rule used by every resolver and by the dashboard.
use serde::Serialize;

/// A role named in a token's `roles` claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
    Integration,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            "integration" => Some(Role::Integration),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Integration => "integration",
        }
    }
}

/// What an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Read everything of the tenant except secrets.
    Read,
    /// Read customers (and their licenses): viewers and integrations.
    ReadCustomers,
    /// Customer/product mappings, runs, retries, catalog refresh.
    Operate,
    /// ConnectWise settings and the consumption-sync switch.
    Administer,
    /// Upsert customers and licenses, record consumption.
    Ingest,
}

impl Permission {
    /// The nested matrix: admin ⊇ operator ⊇ viewer; admin may also do what integration does.
    pub fn granted_by(self, role: Role) -> bool {
        use Permission::*;
        use Role::*;
        matches!(
            (self, role),
            (_, Admin)
                | (Read | ReadCustomers | Operate, Operator)
                | (Read | ReadCustomers, Viewer)
                | (Ingest | ReadCustomers, Integration)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::ReadCustomers => "read customers",
            Permission::Operate => "operate",
            Permission::Administer => "administer",
            Permission::Ingest => "ingest",
        }
    }
}

/// The authenticated caller, bound to exactly one tenant.
#[derive(Clone, Debug, Serialize)]
pub struct Principal {
    pub sub: String,
    /// The tenant id as the token names it.
    pub tenant_key: String,
    /// Our row id of that tenant.
    pub tenant_id: i64,
    /// Role names as given in the token (unknown ones are kept for display, grant nothing).
    pub roles: Vec<String>,
}

impl Principal {
    pub fn may(&self, permission: Permission) -> bool {
        self.roles.iter().filter_map(|r| Role::parse(r)).any(|r| permission.granted_by(r))
    }

    pub fn require(&self, permission: Permission) -> Result<(), crate::ServiceError> {
        if self.may(permission) {
            Ok(())
        } else {
            Err(crate::ServiceError::Forbidden(format!("your roles do not allow you to {}", permission.as_str())))
        }
    }

    /// How the audit log names this actor.
    pub fn actor(&self) -> String {
        format!("user:{}", self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix() {
        use Permission::*;
        let table = [
            (Role::Viewer, [true, true, false, false, false]),
            (Role::Operator, [true, true, true, false, false]),
            (Role::Admin, [true, true, true, true, true]),
            (Role::Integration, [false, true, false, false, true]),
        ];
        for (role, expect) in table {
            for (perm, want) in [Read, ReadCustomers, Operate, Administer, Ingest].into_iter().zip(expect) {
                assert_eq!(perm.granted_by(role), want, "{role:?} {perm:?}");
            }
        }
    }

    #[test]
    fn several_roles_and_unknown_roles() {
        let p = Principal {
            sub: "s".into(),
            tenant_key: "t".into(),
            tenant_id: 1,
            roles: vec!["integration".into(), "viewer".into(), "root".into()],
        };
        assert!(p.may(Permission::Read) && p.may(Permission::Ingest));
        assert!(!p.may(Permission::Operate));
    }
}
