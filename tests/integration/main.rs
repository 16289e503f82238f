//! All integration tests compile into one binary (zero2prod style). Each test spawns its own app.
mod auth;
mod bad_input;
mod config_errors;
mod customers;
mod dashboard;
mod embedded;
mod http_errors;
mod isolation;
mod mappings;
mod metrics;
mod outage;
mod reliability;
mod schema;
mod security;
mod settings;
mod sqlite_core_flow;
mod sync;
