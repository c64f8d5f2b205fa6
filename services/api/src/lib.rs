//! Clew's API: GraphQL over HTTP and WebSocket, the C2SP checkpoint and tile
//! endpoints, health and metrics, over the spine of `clew-node`.
//!
//! ```text
//!   HTTP ──▶ app(state): Router
//!             ├─ POST /graphql          queries and mutations      ┐ bearer token
//!             ├─ GET  /graphql/ws       graphql-transport-ws       │ → Viewer
//!             ├─ GET  /checkpoint, /tile/…  C2SP tlog-tiles mirror  │ (roles, grants)
//!             ├─ GET  /metrics          Prometheus                  ┘
//!             └─ GET  /healthz, /readyz
//!
//!   mutation ──▶ Node::record (sign with the service key, actor = caller)
//!            ──▶ sequencer thread: Ledger::sequence ▶ Catalog::catch_up
//!            ──▶ receipt: leaf index, checkpoint, inclusion proof
//!   query    ──▶ Catalog / Ledger reads, filtered and redacted by the Viewer
//!   subscription ──▶ watch of the applied size ▶ leaves read from the ledger
//! ```
//!
//! Every request is authenticated first ([`access::TokenStore`]); what a
//! caller may see is decided in one place ([`access::Viewer`]) and applied to
//! every answer — search (before facets are counted), lookups, lineage,
//! history, proofs and subscriptions. Errors map onto GraphQL error codes in
//! one place ([`ApiError::code`]).

pub mod access;
mod http;
pub mod openlineage;
mod parsed;
mod read;
mod schema;
pub mod standards;
mod state;
mod ws;

use thiserror::Error;

pub use access::{TokenStore, Viewer};
pub use clew_node::{Metrics, Node, Outcome, Sequenced};
pub use http::{app, serve, serve_connections, serve_router, ConnectionLimits, ConnectionMetrics};
pub use read::access::{
    access_audit, access_requests, data_use_register, proven_access_audit, AccessAudit,
    AccessRequest, DataUse, RequestScope,
};
pub use schema::{build_schema, sdl, ClewSchema};
pub use state::{AppState, Limits};

/// Failures of the API, each with a stable error code.
#[derive(Debug, Error)]
pub enum ApiError {
    /// No or unknown bearer token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's roles do not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// Input that cannot be an event or a query.
    #[error("{0}")]
    BadInput(String),
    /// Nothing the caller may see by that name.
    #[error("{0}")]
    NotFound(String),
    /// The sequencer refused the event (kept in the rejected log).
    #[error("refused ({reason}): {detail}")]
    Rejected {
        /// `RejectionReason` name, e.g. `DANGLING_REFERENCE`.
        reason: String,
        /// What exactly was wrong.
        detail: String,
        /// Index in the rejected log.
        rejection_index: u64,
    },
    /// Starting up or shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the server.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The `extensions.code` of the GraphQL error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::BadInput(_) => "BAD_USER_INPUT",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Rejected { .. } => "REJECTED",
            ApiError::Unavailable(_) => "UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL",
        }
    }
}

impl From<clew_blobs::BlobError> for ApiError {
    fn from(e: clew_blobs::BlobError) -> Self {
        use clew_blobs::BlobError as B;
        match e {
            B::BadDigest(_) | B::DigestMismatch { .. } | B::TooLarge { .. } | B::Refused(_) => {
                ApiError::BadInput(e.to_string())
            }
            // The store was unreachable or refused: retry later.
            B::Store { .. } => ApiError::Unavailable(e.to_string()),
            B::Conflict { .. } | B::Config(_) | B::Io { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

impl ApiError {
    /// The error a GraphQL error `code` stands for (the inverse of
    /// [`ApiError::code`]; limits and validation failures are bad input).
    pub fn from_code(code: &str, message: String) -> Self {
        match code {
            "UNAUTHENTICATED" => ApiError::Unauthenticated(message),
            "FORBIDDEN" => ApiError::Forbidden(message),
            "NOT_FOUND" => ApiError::NotFound(message),
            "UNAVAILABLE" | "TIMEOUT" => ApiError::Unavailable(message),
            "INTERNAL" => ApiError::Internal(message),
            _ => ApiError::BadInput(message),
        }
    }

    /// The HTTP status every route answers this error with (GraphQL answers
    /// 200 with the code in `extensions.code`, as the GraphQL-over-HTTP
    /// convention for `application/json` responses has it).
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode as S;
        match self {
            ApiError::Unauthenticated(_) => S::UNAUTHORIZED,
            ApiError::Forbidden(_) => S::FORBIDDEN,
            ApiError::BadInput(_) => S::BAD_REQUEST,
            ApiError::NotFound(_) => S::NOT_FOUND,
            ApiError::Rejected { .. } => S::CONFLICT,
            ApiError::Unavailable(_) => S::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => S::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<clew_ledger::Rejection> for ApiError {
    /// A sequencer refusal, reason without its `REJECTION_REASON_` prefix.
    fn from(r: clew_ledger::Rejection) -> Self {
        ApiError::Rejected {
            reason: r
                .reason
                .as_str_name()
                .trim_start_matches("REJECTION_REASON_")
                .to_string(),
            detail: r.detail,
            rejection_index: r.rejection_index,
        }
    }
}

impl From<clew_node::NodeError> for ApiError {
    fn from(e: clew_node::NodeError) -> Self {
        use clew_node::NodeError as N;
        match e {
            N::BadInput(m) => ApiError::BadInput(m),
            N::Unavailable(m) => ApiError::Unavailable(m),
            // The blob store was away: the batch was not written; retry.
            N::Sequencing(e) if matches!(*e, clew_ledger::LedgerError::ContentUnavailable(_)) => {
                ApiError::Unavailable(format!("nothing was recorded: {e}"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<clew_catalog::CatalogError> for ApiError {
    fn from(e: clew_catalog::CatalogError) -> Self {
        use clew_catalog::CatalogError as C;
        match e {
            C::NotFound(m) => ApiError::NotFound(m),
            C::BadRequest(m) => ApiError::BadInput(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<clew_ledger::LedgerError> for ApiError {
    fn from(e: clew_ledger::LedgerError) -> Self {
        use clew_ledger::LedgerError as L;
        match e {
            L::NotFound(m) => ApiError::NotFound(m),
            L::ContentUnavailable(_) => ApiError::Unavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    /// The GraphQL error, with `extensions.code` (and for refusals `reason`
    /// and `rejectionIndex`). Always convert through this: async-graphql's
    /// blanket `From<Display>` would drop the code.
    pub fn into_graphql(self) -> async_graphql::Error {
        use async_graphql::ErrorExtensions;
        let e = self;
        let code = e.code();
        let (reason, index) = match &e {
            ApiError::Rejected {
                reason,
                rejection_index,
                ..
            } => (Some(reason.clone()), Some(*rejection_index)),
            _ => (None, None),
        };
        if let ApiError::Internal(m) = &e {
            tracing::error!(error = %m, "internal error answering a request");
        }
        async_graphql::Error::new(e.to_string()).extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(r) = reason {
                ext.set("reason", r);
            }
            if let Some(i) = index {
                ext.set("rejectionIndex", i);
            }
        })
    }
}
