//! The typed error of every LLM request.

use serde::{Deserialize, Serialize};

/// Why an LLM request failed. It reaches the agent and the API caller as such.
///
/// Messages are the provider's own, with any API key redacted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LlmError {
    /// The provider refused the credentials (HTTP 401/403).
    #[error("{provider}: authentication failed: {message}")]
    Authentication {
        /// The provider's name.
        provider: String,
        /// The provider's message.
        message: String,
    },
    /// Too many requests (HTTP 429, or 529 "overloaded") after all retries.
    #[error("{provider}: rate limited{}: {message}", retry_after_ms.map(|ms| format!(" (retry after {ms} ms)")).unwrap_or_default())]
    RateLimited {
        /// The provider's name.
        provider: String,
        /// What the provider asked us to wait, when it said.
        retry_after_ms: Option<u64>,
        /// The provider's message.
        message: String,
    },
    /// The request itself is wrong (HTTP 400, 404, 422): fix it rather than retry.
    #[error("{provider}: bad request: {message}")]
    BadRequest {
        /// The provider's name.
        provider: String,
        /// The provider's message.
        message: String,
    },
    /// The conversation exceeds the model's context window.
    #[error("{provider}: context too long: {message}")]
    ContextTooLong {
        /// The provider's name.
        provider: String,
        /// The provider's message.
        message: String,
    },
    /// The provider failed (HTTP 5xx) after all retries.
    #[error("{provider}: server error {status}: {message}")]
    Server {
        /// The provider's name.
        provider: String,
        /// The HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// No complete answer within the request timeout.
    #[error("{provider}: timed out after {after_ms} ms")]
    Timeout {
        /// The provider's name.
        provider: String,
        /// The timeout that expired.
        after_ms: u64,
    },
    /// The connection failed or dropped, after all retries.
    #[error("{provider}: connection failed: {message}")]
    Connection {
        /// The provider's name.
        provider: String,
        /// What failed.
        message: String,
    },
    /// The provider answered something that is not the wire format.
    #[error("{provider}: invalid response: {message}")]
    InvalidResponse {
        /// The provider's name.
        provider: String,
        /// What was wrong.
        message: String,
    },
    /// The request was cancelled (its agent or run stopped) before it completed.
    #[error("request cancelled")]
    Cancelled,
    /// The scheduler's queue is full; try later.
    #[error("scheduler for {model} is full ({queue_len_max} queued requests)")]
    QueueFull {
        /// The scheduler's model key.
        model: String,
        /// The queue bound.
        queue_len_max: usize,
    },
    /// The request would exceed a cost or token limit of its agent or run.
    #[error("budget exceeded: {message}")]
    BudgetExceeded {
        /// Which limit, and by how much.
        message: String,
    },
    /// No scheduler serves the requested provider/model.
    #[error("no provider/model {model:?} is configured")]
    UnknownModel {
        /// The requested `provider/model`.
        model: String,
    },
    /// The scheduler is not running (the node is shutting down).
    #[error("the LLM scheduler is unavailable: {message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// The tenant has used up its LLM tokens of the day or its cost of the month
    /// ([`crate::scheduler::TenantQuota`]).
    #[error("quota exceeded: {message}")]
    QuotaExceeded {
        /// Which limit, and how much of it is used.
        message: String,
        /// Seconds until the limit renews (or, when too many calls wait, a short pause).
        retry_after_s: u64,
    },
}

impl LlmError {
    /// True for errors worth retrying: rate limits, server errors, timeouts and connection
    /// failures.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Server { .. }
                | Self::Timeout { .. }
                | Self::Connection { .. }
        )
    }

    /// A short stable name of the error kind, for metrics and API bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Authentication { .. } => "authentication",
            Self::RateLimited { .. } => "rate_limited",
            Self::BadRequest { .. } => "bad_request",
            Self::ContextTooLong { .. } => "context_too_long",
            Self::Server { .. } => "server",
            Self::Timeout { .. } => "timeout",
            Self::Connection { .. } => "connection",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::Cancelled => "cancelled",
            Self::QueueFull { .. } => "queue_full",
            Self::BudgetExceeded { .. } => "budget_exceeded",
            Self::UnknownModel { .. } => "unknown_model",
            Self::Unavailable { .. } => "unavailable",
            Self::QuotaExceeded { .. } => "quota_exceeded",
        }
    }
}
