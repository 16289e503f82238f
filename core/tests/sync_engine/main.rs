//! Engine and service tests against a real database and the fake ConnectWise. One binary; each test
//! has its own database, fake and queue, and steps the jobs itself.
mod support;

mod catalog_schedule;
mod consumption;
mod ledger;
mod model;
mod monthly;
mod push_failures;
