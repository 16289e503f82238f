//! Typed client for the parts of the ConnectWise PSA (Manage) REST API that Consumption Sync uses.
//!
//! * [`CwClient`] issues authenticated calls (`Authorization: Basic …`, `clientId`, a pinned
//!   `Accept` model version), follows `Link: rel="next"` paging, and classifies failures as
//!   [`CwError`] with stable machine codes ([`CwError::code`]).
//! * [`discover_codebase`] finds a site's codebase (e.g. `v4_6_release`) without credentials.
//! * The model types ([`Company`], [`Agreement`], [`Addition`], …) mirror ConnectWise's camelCase
//!   JSON, ignore unknown fields and default missing ones.
//!
//! Nothing in this crate ever logs or formats the private key or the `Authorization` header.

#![warn(missing_docs)]

mod client;
mod error;
mod models;

pub use client::{ACCEPT_HEADER_VALUE, Credentials, CwClient, MAX_PAGES, PAGE_SIZE, discover_codebase};
pub use error::{CwError, CwErrorKind};
pub use models::{
    Addition, Agreement, Board, BoardItem, BoardItemKind, Company, CwNumber, CwResponse, NamedRef, NewTicket, ProductRef, Ticket,
    truncate_chars,
};
