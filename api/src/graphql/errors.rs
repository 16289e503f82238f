//! GraphQL errors with a stable `extensions.code`. Internal causes are logged, never sent.
use async_graphql::{Error, ErrorExtensions};
use sync_core::ServiceError;

pub fn coded(code: &str, message: impl Into<String>) -> Error {
    Error::new(message.into()).extend_with(|_, e| e.set("code", code))
}

pub fn internal(cause: impl std::fmt::Display) -> Error {
    tracing::error!(error = %cause, "internal error");
    coded("INTERNAL", "internal error; the details are in the server log")
}

pub fn bad_input(message: impl Into<String>) -> Error {
    coded("BAD_USER_INPUT", message)
}

/// Map a service error to a GraphQL error.
pub fn from_service(e: ServiceError) -> Error {
    match e {
        ServiceError::Forbidden(m) => coded("FORBIDDEN", m),
        ServiceError::BadInput(m) => bad_input(m),
        other => {
            tracing::error!(error = ?other, "service error");
            coded("INTERNAL", "internal error; the details are in the server log")
        }
    }
}

/// `?`-friendly conversion for service results.
pub trait OrGql<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> OrGql<T> for Result<T, ServiceError> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(from_service)
    }
}
