//! Relay global object ids: the one place that builds and reads the `id` of our entities.
//!
//! A global id is the base64url (no padding) of `"<Type>:<table key>"`, e.g. `Customer:42` →
//! `Q3VzdG9tZXI6NDI`. Clients treat it as opaque; the server decodes it back to the type and the key
//! and looks the key up in the caller's tenant only. Anything that does not decode to a key of the
//! expected type (malformed, another type, a non-canonical key) is treated exactly like an id that
//! does not exist. ConnectWise ids are not ours and stay plain `Int`s.
//!
//! ```ignore
//! let id: ID = GlobalId::encode(NodeType::Push, 42);   // or GlobalId::of::<Push>(42)
//! let key: Option<i64> = GlobalId::decode::<Push>(&id);
//! ```
use std::fmt;

use async_graphql::ID;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use super::{
    sync::SyncRun,
    types::{AuditEntry, Customer, ProductMapping, Push},
};

/// Every type that implements `Node`. Adding one here (and to the `Node` interface) is all it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeType {
    Customer,
    ProductMapping,
    SyncRun,
    Push,
    AuditEntry,
}

impl NodeType {
    pub const ALL: [NodeType; 5] = [NodeType::Customer, NodeType::ProductMapping, NodeType::SyncRun, NodeType::Push, NodeType::AuditEntry];

    /// The GraphQL type name, which is also the prefix inside the id.
    pub fn type_name(self) -> &'static str {
        match self {
            NodeType::Customer => "Customer",
            NodeType::ProductMapping => "ProductMapping",
            NodeType::SyncRun => "SyncRun",
            NodeType::Push => "Push",
            NodeType::AuditEntry => "AuditEntry",
        }
    }

    pub fn from_type_name(name: &str) -> Option<NodeType> {
        NodeType::ALL.into_iter().find(|t| t.type_name() == name)
    }

    /// The `entityType` the audit log records for this type, when its changes are audited.
    pub fn audit_entity_type(self) -> Option<&'static str> {
        match self {
            NodeType::Customer => Some("customer"),
            NodeType::ProductMapping => Some("product_mapping"),
            NodeType::SyncRun => Some("sync_run"),
            NodeType::Push => Some("push"),
            NodeType::AuditEntry => None,
        }
    }

    pub fn from_audit_entity_type(entity_type: &str) -> Option<NodeType> {
        NodeType::ALL.into_iter().find(|t| t.audit_entity_type() == Some(entity_type))
    }
}

/// A GraphQL type whose `id` is a global id of `NODE_TYPE`.
pub trait NodeKind {
    const NODE_TYPE: NodeType;
}

impl NodeKind for Customer {
    const NODE_TYPE: NodeType = NodeType::Customer;
}
impl NodeKind for ProductMapping {
    const NODE_TYPE: NodeType = NodeType::ProductMapping;
}
impl NodeKind for SyncRun {
    const NODE_TYPE: NodeType = NodeType::SyncRun;
}
impl NodeKind for Push {
    const NODE_TYPE: NodeType = NodeType::Push;
}
impl NodeKind for AuditEntry {
    const NODE_TYPE: NodeType = NodeType::AuditEntry;
}

/// A decoded global id: the type and the table key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GlobalId {
    pub node_type: NodeType,
    pub key: i64,
}

impl GlobalId {
    /// The global id of row `key` of `node_type`.
    pub fn encode(node_type: NodeType, key: i64) -> ID {
        ID(GlobalId { node_type, key }.to_string())
    }

    /// The global id of row `key` of the GraphQL type `T`.
    pub fn of<T: NodeKind>(key: i64) -> ID {
        GlobalId::encode(T::NODE_TYPE, key)
    }

    /// Decode any global id; `None` for anything that is not one we issued.
    pub fn parse(id: &str) -> Option<GlobalId> {
        let bytes = URL_SAFE_NO_PAD.decode(id.as_bytes()).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let (name, key_text) = text.split_once(':')?;
        let node_type = NodeType::from_type_name(name)?;
        let key: i64 = key_text.parse().ok()?;
        // One spelling per row: no `+42`, `042` or non-positive keys, so equal rows have equal ids
        // (normalized client caches depend on it).
        let gid = GlobalId { node_type, key };
        (key > 0 && key.to_string() == key_text && gid.to_string() == id).then_some(gid)
    }

    /// The table key of a global id of type `T`; `None` when malformed or of another type.
    pub fn decode<T: NodeKind>(id: &str) -> Option<i64> {
        GlobalId::parse(id).filter(|g| g.node_type == T::NODE_TYPE).map(|g| g.key)
    }

    /// The table key of `T` as the id string the service layer takes (it treats ids it cannot
    /// parse as ids that do not exist): a global id that is not one of `T` becomes such an id, so
    /// every id argument answers for it exactly what it answers for an unknown row.
    pub fn service_key<T: NodeKind>(id: &str) -> String {
        GlobalId::decode::<T>(id).map(|k| k.to_string()).unwrap_or_default()
    }

    /// An optional id filter (`customerId`, `syncRunId`, …) as a table key. A filter by an id that
    /// is not one of `T` matches nothing: key 0, which no row has (keys start at 1).
    pub fn filter_key<T: NodeKind>(id: Option<&ID>) -> Option<i64> {
        id.map(|i| GlobalId::decode::<T>(i).unwrap_or(0))
    }
}

impl fmt::Display for GlobalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(format!("{}:{}", self.node_type.type_name(), self.key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type() {
        for t in NodeType::ALL {
            for key in [1, 42, i64::MAX] {
                let id = GlobalId::encode(t, key);
                assert_eq!(GlobalId::parse(&id), Some(GlobalId { node_type: t, key }), "{t:?} {key}");
                assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "URL-safe: {}", *id);
            }
            assert_eq!(NodeType::from_type_name(t.type_name()), Some(t));
        }
        assert_eq!(*GlobalId::encode(NodeType::Customer, 42), "Q3VzdG9tZXI6NDI");
    }

    #[test]
    fn decode_checks_the_type() {
        let push = GlobalId::of::<Push>(7);
        assert_eq!(GlobalId::decode::<Push>(&push), Some(7));
        assert_eq!(GlobalId::decode::<Customer>(&push), None);
        assert_eq!(GlobalId::service_key::<Customer>(&push), "");
        assert_eq!(GlobalId::service_key::<Push>(&push), "7");
        assert_eq!(GlobalId::filter_key::<Push>(Some(&push)), Some(7));
        assert_eq!(GlobalId::filter_key::<SyncRun>(Some(&push)), Some(0));
        assert_eq!(GlobalId::filter_key::<SyncRun>(None), None);
    }

    #[test]
    fn rejects_what_we_did_not_issue() {
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for bad in [
            String::new(),
            "42".into(),
            "not base64!".into(),
            b64("Customer"),
            b64("Customer:"),
            b64("Customer:abc"),
            b64("Customer:0"),
            b64("Customer:-3"),
            b64("Customer:042"),
            b64("Customer:+42"),
            b64("Customer:42:1"),
            b64("Tenant:1"),
            b64("customer:42"),
            format!("{}=", b64("Customer:4")),
            base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, b':', b'1']),
        ] {
            assert_eq!(GlobalId::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn audit_entity_types_map_back() {
        for t in NodeType::ALL {
            if let Some(e) = t.audit_entity_type() {
                assert_eq!(NodeType::from_audit_entity_type(e), Some(t));
            }
        }
        assert_eq!(NodeType::from_audit_entity_type("consumption"), None);
    }
}
