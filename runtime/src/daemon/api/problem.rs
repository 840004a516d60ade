//! How errors of the subsystems become HTTP problems: one `From` impl each, so a handler
//! writes `?` or `.map_err(Problem::from)`.

use axum::http::StatusCode;

use aios_actors::agent::{AgentError, RegistryError};
use aios_actors::llm::LlmError;
use aios_actors::memory::MemoryError;
use aios_actors::orchestration::OrchestrationError;
use aios_actors::tools::ToolRegistryError;

use crate::daemon::http::Problem;
use crate::daemon::keys::KeyError;
use crate::daemon::webhooks::WebhookError;

impl From<RegistryError> for Problem {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid(m) => Problem::bad_request(m),
            RegistryError::Exists(_) => Problem::conflict(e.to_string()),
            RegistryError::NotFound(_) => Problem::not_found(e.to_string()),
            RegistryError::Full => Problem::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
            other => Problem::internal(other),
        }
    }
}

impl From<MemoryError> for Problem {
    fn from(e: MemoryError) -> Self {
        match e {
            MemoryError::Invalid(_) | MemoryError::ModelMismatch(_) => {
                Problem::bad_request(e.to_string())
            }
            MemoryError::NamespaceNotFound(_) => Problem::not_found(e.to_string()),
            MemoryError::NamespaceExists(_) => Problem::conflict(e.to_string()),
            MemoryError::QuotaExceeded(_) => {
                Problem::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
            }
            MemoryError::Unavailable(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            other => Problem::internal(other),
        }
    }
}

impl From<ToolRegistryError> for Problem {
    fn from(e: ToolRegistryError) -> Self {
        match e {
            ToolRegistryError::NotFound(_) => Problem::not_found(e.to_string()),
            ToolRegistryError::Exists(_) | ToolRegistryError::InUse { .. } => {
                Problem::conflict(e.to_string())
            }
            // The server named in the request cannot be started or reached: the request cannot be
            // carried out as given (found by the API fuzzer, which got a 502 here).
            ToolRegistryError::Unavailable(_) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            ToolRegistryError::Store(_) => Problem::internal(e),
            other => Problem::bad_request(other.to_string()),
        }
    }
}

impl From<KeyError> for Problem {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Invalid(m) => Problem::bad_request(m),
            KeyError::NotFound(_) => Problem::not_found(e.to_string()),
            KeyError::Full => Problem::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
            KeyError::Store(_) => Problem::internal(e),
        }
    }
}

impl From<LlmError> for Problem {
    /// Only a tenant's quota is the caller's to act on; other LLM errors reach callers
    /// through the agent's error.
    fn from(e: LlmError) -> Self {
        match e {
            LlmError::QuotaExceeded {
                message,
                retry_after_s,
            } => {
                let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS, message);
                p.kind = "https://aios.dev/problems/quota-exceeded".into();
                p.retry_after_s = Some(retry_after_s);
                p
            }
            other => Problem::from(AgentError::Llm(other)),
        }
    }
}

impl From<AgentError> for Problem {
    fn from(e: AgentError) -> Self {
        if let AgentError::Llm(e @ LlmError::QuotaExceeded { .. }) = e {
            return Problem::from(e);
        }
        let status = match e.kind().as_str() {
            "not_found" => StatusCode::NOT_FOUND,
            "invalid" => StatusCode::BAD_REQUEST,
            "limit_exceeded" => StatusCode::UNPROCESSABLE_ENTITY,
            "deadline_exceeded" => StatusCode::GATEWAY_TIMEOUT,
            "unavailable" | "rate_limited" => StatusCode::SERVICE_UNAVAILABLE,
            "busy" | "interrupted" => StatusCode::CONFLICT,
            "queue_full" => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_GATEWAY,
        };
        Problem::new(status, e.to_string())
    }
}

impl From<WebhookError> for Problem {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid(m) => Problem::bad_request(m),
            WebhookError::NotFound(_) => Problem::not_found(e.to_string()),
            WebhookError::Store(_) => Problem::internal(e),
        }
    }
}

impl From<OrchestrationError> for Problem {
    fn from(e: OrchestrationError) -> Self {
        let status = match &e {
            OrchestrationError::Invalid(_) => StatusCode::BAD_REQUEST,
            OrchestrationError::RunNotFound(_)
            | OrchestrationError::SessionNotFound(_)
            | OrchestrationError::UnknownStep(_) => StatusCode::NOT_FOUND,
            OrchestrationError::NotAwaitingApproval(_)
            | OrchestrationError::Finished(_)
            | OrchestrationError::Busy(_) => StatusCode::CONFLICT,
            OrchestrationError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            OrchestrationError::RunFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Problem::new(status, e.to_string())
    }
}
