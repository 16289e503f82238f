//! Relay object identification: `interface Node { id: ID! }` and `node(id:)` / `nodes(ids:)`.
//! Ids are decoded by [`super::ids`]; rows are read through the request's DataLoaders, scoped to
//! the caller's tenant, so `nodes` costs one query per type asked for, whatever the number of ids.
use std::collections::HashMap;

use async_graphql::{Context, ID, Interface, Object};
use sync_core::auth::Permission;

use super::{
    context::principal,
    errors::{bad_input, coded},
    ids::{GlobalId, NodeType},
    limits::COST_DB_READ,
    loaders::{load_err, loaders},
    sync::SyncRun,
    types::{AuditEntry, Customer, ProductMapping, Push},
};

/// An entity of ours with a global id: fetch it again with `node(id:)`.
// A `Node` lives for one response field, at most 100 of them: the push row's size is not worth
// an allocation per node.
#[allow(clippy::large_enum_variant)]
#[derive(Interface)]
#[graphql(field(
    name = "id",
    ty = "ID",
    desc = "The global id: opaque (it encodes the type and the key; never build or parse it). Every id argument takes it."
))]
pub enum Node {
    Customer(Customer),
    ProductMapping(ProductMapping),
    SyncRun(SyncRun),
    Push(Push),
    AuditEntry(AuditEntry),
}

/// Most ids one `nodes` call takes (a page is at most 100 too).
pub const MAX_NODES: usize = 100;

/// What the caller needs to read a type: the permission of its own query field.
fn permission_for(t: NodeType) -> Permission {
    match t {
        NodeType::Customer => Permission::ReadCustomers,
        NodeType::ProductMapping | NodeType::SyncRun | NodeType::Push | NodeType::AuditEntry => Permission::Read,
    }
}

/// Resolve ids in order: `None` for an id that is malformed, of no type of ours, or not a row of
/// the caller's tenant. Asking for a type the caller's roles may not read is `FORBIDDEN`, as the
/// type's own field (`customer`, `push`, …) would answer.
async fn resolve(ctx: &Context<'_>, ids: &[ID]) -> async_graphql::Result<Vec<Option<Node>>> {
    let p = principal(ctx)?;
    let decoded: Vec<Option<GlobalId>> = ids.iter().map(|id| GlobalId::parse(id)).collect();
    let mut keys: HashMap<NodeType, Vec<i64>> = HashMap::new();
    for g in decoded.iter().flatten() {
        let need = permission_for(g.node_type);
        if !p.may(need) {
            return Err(coded("FORBIDDEN", format!("your roles ({}) do not allow you to {}", p.roles.join(", "), need.as_str())));
        }
        keys.entry(g.node_type).or_default().push(g.key);
    }
    let l = loaders(ctx)?;
    let keys_of = |t: NodeType| keys.get(&t).cloned().unwrap_or_default();
    // One batched read per type, all at once.
    let (customers, mappings, runs, pushes, entries) = futures::try_join!(
        l.customer.load_many(keys_of(NodeType::Customer)),
        l.mapping.load_many(keys_of(NodeType::ProductMapping)),
        l.run.load_many(keys_of(NodeType::SyncRun)),
        l.push.load_many(keys_of(NodeType::Push)),
        l.audit_entry.load_many(keys_of(NodeType::AuditEntry)),
    )
    .map_err(load_err)?;
    // Cloned, not removed: the same id may be asked for twice.
    Ok(decoded
        .into_iter()
        .map(|g| {
            let g = g?;
            Some(match g.node_type {
                NodeType::Customer => Node::Customer(Customer(customers.get(&g.key)?.clone())),
                NodeType::ProductMapping => Node::ProductMapping(ProductMapping(mappings.get(&g.key)?.clone())),
                NodeType::SyncRun => Node::SyncRun(SyncRun(runs.get(&g.key)?.clone())),
                NodeType::Push => Node::Push(Push(pushes.get(&g.key)?.clone())),
                NodeType::AuditEntry => Node::AuditEntry(AuditEntry(entries.get(&g.key)?.clone())),
            })
        })
        .collect())
}

#[derive(Default)]
pub struct NodeQuery;

#[Object]
impl NodeQuery {
    /// Any entity of yours by its global id; `null` for an id that is malformed, of another tenant,
    /// or of nothing that exists.
    #[graphql(complexity = "COST_DB_READ + child_complexity")]
    async fn node(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Node>> {
        Ok(resolve(ctx, std::slice::from_ref(&id)).await?.pop().flatten())
    }

    /// Entities by global id, in the order asked (at most 100); `null` where `node` would be.
    #[graphql(complexity = "COST_DB_READ + ids.len().max(1) * child_complexity")]
    async fn nodes(&self, ctx: &Context<'_>, ids: Vec<ID>) -> async_graphql::Result<Vec<Option<Node>>> {
        if ids.len() > MAX_NODES {
            return Err(bad_input(format!("ids: at most {MAX_NODES} entries, got {}", ids.len())));
        }
        resolve(ctx, &ids).await
    }
}
