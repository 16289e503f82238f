//! Typed client for the parts of the ConnectWise PSA (Manage) REST API that Consumption Sync uses.
//!
//! * [`CwClient`] issues authenticated calls (`Authorization: Basic …`, `clientId`, a pinned
//!   `Accept` model version), follows `Link: rel="next"` paging, and classifies failures as
//!   [`CwError`] with stable machine codes ([`CwError::code`]).
//! * [`discover_codebase`] finds a site's codebase (e.g. `v4_6_release`) without credentials.
//! * [`CwHttp`] is the only HTTP client they use: no redirects, and the outbound address guard
//!   ([`is_forbidden_address`]) applied to the address actually connected to.
//! * The model types ([`Company`], [`Agreement`], [`Addition`], …) mirror ConnectWise's camelCase
//!   JSON and decode everything ConnectWise's official schema (v2025.8) allows: optional record
//!   ids, nullable reference ids and flags (a `null` flag means `false`, ConnectWise's default),
//!   `sequenceNumber` as a double and money as exact [`CwNumber`]s. Unknown fields are ignored.
//!   `README.md` lists each endpoint, its schema and our handling of its optional fields.
//!
//! Nothing in this crate ever logs or formats the private key or the `Authorization` header.

#![warn(missing_docs)]

mod client;
mod error;
mod guard;
mod models;

pub use client::{ACCEPT_HEADER_VALUE, Credentials, CwClient, MAX_PAGES, PAGE_SIZE, discover_codebase, is_valid_codebase};
pub use error::{CwError, CwErrorKind};
pub use guard::{
    AddressPolicy, CwHttp, ForbiddenDestination, GuardedResolver, HostLookup, SandboxOrigin, SystemLookup, is_forbidden_address,
};
pub use models::{
    Addition, Agreement, Board, BoardItem, BoardItemKind, Company, CwNumber, CwResponse, NamedRef, NewTicket, ProductRef, Ticket,
    truncate_chars,
};
