//! Pure business rules of Consumption Sync (docs/billing-rules.md, docs/graphql.md).
//!
//! Everything here is deterministic and free of I/O: the product catalog and its usage matrix, exact
//! decimal values in micro-units, calendar periods, the monthly aggregation, push and run statuses,
//! retry classification and backoff, and the product-mapping validation matrix.

#[macro_use]
mod macros;

pub mod aggregate;
pub mod catalog;
pub mod mapping;
pub mod money;
pub mod period;
pub mod retry;
pub mod review;
pub mod status;

pub use aggregate::*;
pub use catalog::*;
pub use mapping::*;
pub use money::*;
pub use period::*;
pub use retry::*;
pub use review::*;
pub use status::*;
