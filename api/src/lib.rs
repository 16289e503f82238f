//! The `api` process: GraphQL over HTTP on actix-web, JWT auth, health endpoints, `/metrics`,
//! request ids and the operator dashboard.
pub mod auth;
pub mod dashboard;
pub mod demo;
pub mod embedded;
pub mod export;
pub mod graphiql;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod rate_limit;
pub mod request_id;
pub mod startup;
pub mod telemetry;
pub mod token;

pub use startup::Application;
