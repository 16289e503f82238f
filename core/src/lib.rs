//! The application core shared by `api` and `worker`: configuration, database access, the use cases
//! (services) with their transactions, the sync engine, and the contract of the job queue.
//!
//! Nothing here knows about GraphQL or HTTP; nothing here knows which queue backend runs the jobs.
pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod db;
pub mod engine;
pub mod error;
pub mod jobs;
pub mod ledger;
pub mod pagination;
pub mod service;

pub use config::Settings;
pub use error::{ServiceError, UserError};
