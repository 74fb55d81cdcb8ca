//! What a call can fail with.

use wharf_contract::{ErrorCode, Problem};

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gateway answered with a problem (RFC 9457): its `code` says what went wrong, its
    /// `errors` which fields.
    #[error("{} ({}): {}{}", .0.title, .0.status, .0.detail, fields(.0))]
    Api(Box<Problem>),
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
    /// A credential or base URL that cannot be used.
    #[error("{0}")]
    Config(String),
}

fn fields(p: &Problem) -> String {
    p.errors
        .iter()
        .map(|e| format!("\n  {}: {}", e.pointer, e.detail))
        .collect()
}

impl Error {
    /// The problem the gateway answered with, if it did.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Api(p) => Some(p),
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
            Error::Api(p) => Some(p.status),
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What every call returns.
pub type Result<T, E = Error> = std::result::Result<T, E>;
