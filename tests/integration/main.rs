//! All integration tests compile into one binary (zero2prod style). Each test spawns its own app.
mod auth;
mod bad_input;
mod customers;
mod http_errors;
mod isolation;
mod mappings;
mod outage;
mod reliability;
mod schema;
mod security;
mod settings;
mod sync;
