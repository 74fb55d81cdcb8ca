//! What a call can fail with.

use std::time::Duration;

use wharf_contract::{ErrorCode, Problem};

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gateway answered with a problem (RFC 9457): its `code` says what went wrong, its
    /// `errors` which fields; `retry_after` is its `Retry-After` (with 429 and 503), when to
    /// ask again.
    #[error("{} ({}): {}{}", .problem.title, .problem.status, .problem.detail, fields(.problem))]
    Api {
        problem: Box<Problem>,
        retry_after: Option<Duration>,
    },
    /// Something answered that is not the gateway's problem+json (a proxy's page, say).
    #[error("{status}: {body}")]
    Status { status: u16, body: String },
    /// The gateway could not be reached, or the connection broke.
    #[error("cannot reach the gateway at {base}: {source}")]
    Transport {
        base: String,
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not the body the API documents.
    #[error("an answer the client cannot read: {0}")]
    Decode(String),
    /// A task's event stream ended before the task did (the gateway stopping, say); the task
    /// may still run: follow it again or read it.
    #[error("the event stream of task {0} ended before the task did")]
    StreamEnded(uuid::Uuid),
    /// A credential or base URL that cannot be used.
    #[error("{0}")]
    Config(String),
}

/// The failing fields the detail does not already name.
fn fields(p: &Problem) -> String {
    p.errors
        .iter()
        .map(|e| format!("{}: {}", e.pointer, e.detail))
        .filter(|line| !p.detail.contains(line.as_str()))
        .map(|line| format!("\n  {line}"))
        .collect()
}

impl Error {
    /// The problem the gateway answered with, if it did.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Api { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// The problem's stable code, if the gateway answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        self.problem().map(|p| p.code)
    }

    /// The HTTP status of the answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { problem, .. } => Some(problem.status),
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the gateway asked to wait before asking again (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The gateway's problem as an error.
    pub(crate) fn api(problem: Problem, retry_after: Option<Duration>) -> Error {
        Error::Api {
            problem: Box::new(problem),
            retry_after,
        }
    }
}

/// What every call returns.
pub type Result<T, E = Error> = std::result::Result<T, E>;
