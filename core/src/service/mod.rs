//! Use cases called by the GraphQL resolvers and the dashboard. They take a connection and plain
//! inputs, scope every query by the principal's tenant, and return domain results. Permission checks
//! happen in the API layer (one guard per field); tenant scoping happens here, on every query.
pub mod catalog;
pub mod consumption;
pub mod customers;
pub mod history;
pub mod mappings;
pub mod review;
pub mod settings;
pub mod status;
pub mod sync;
pub mod tenants;

/// Parse an `ID` argument. Malformed ids are treated exactly like ids that do not exist.
pub fn parse_id(id: &str) -> Option<i64> {
    id.trim().parse::<i64>().ok().filter(|v| *v > 0)
}
