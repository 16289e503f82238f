//! The `api` process: GraphQL over HTTP on actix-web, JWT auth, health endpoints.
pub mod auth;
pub mod graphql;
pub mod http;
pub mod startup;
pub mod telemetry;

pub use startup::Application;
