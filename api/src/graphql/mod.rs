//! The GraphQL schema (docs/graphql.md): merged query and mutation parts, limits, and SDL export.
pub mod context;
pub mod enums;
pub mod errors;
pub mod ids;
pub mod limits;
pub mod loaders;
pub mod node;
pub mod resolvers;
pub mod review;
pub mod scalars;
pub mod status;
pub mod sync;
pub mod types;

use async_graphql::{EmptySubscription, Schema};

pub use context::AppCtx;
pub use resolvers::{Mutation, Query};

pub type AppSchema = Schema<Query, Mutation, EmptySubscription>;

/// Depth limit (docs/graphql.md: Limits).
pub const MAX_DEPTH: usize = 15;
/// Complexity budget: list fields cost `first` × their selection, fields that reach PostgreSQL or
/// Redis carry their cost (`limits::COST_*`).
pub const MAX_COMPLEXITY: usize = 20_000;

/// Build the schema. `app` is `None` only for SDL export.
pub fn build_schema(app: Option<AppCtx>, introspection: bool) -> AppSchema {
    let mut b = Schema::build(Query::default(), Mutation::default(), EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(32)
        .limit_directives(20);
    if !introspection {
        // "Did you mean …?" would describe the schema that introspection hides.
        b = b.disable_introspection().disable_suggestions();
    }
    if let Some(app) = app {
        b = b.data(app);
    }
    b.finish()
}

/// The SDL committed as `schema.graphql`.
pub fn sdl() -> String {
    build_schema(None, true).sdl()
}
