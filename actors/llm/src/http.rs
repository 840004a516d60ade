//! What the HTTP providers share: the API key, timeouts, and the mapping from an HTTP error
//! to an [`LlmError`].

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::LlmError;
use super::retry::{retry_after_from_header, retry_after_from_message};

/// The largest error body read from a provider (the rest is ignored).
const ERROR_BODY_LEN_MAX: usize = 16 * 1024;

/// An API key. It prints as `***`, is never serialised, and is redacted from provider
/// messages before they become errors.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(SecretString::from(key.into()))
    }

    /// Reads a key from the environment variable `var`; `None` when unset or empty.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(Self::new)
    }

    /// The key itself, for the request header that carries it (never for logs).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Replaces every occurrence of the key in `text` with `***`.
    pub fn redact(&self, text: &str) -> String {
        let key = self.expose();
        if key.len() < 4 {
            return text.to_string();
        }
        text.replace(key, "***")
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Timeouts of an HTTP provider.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpOptions {
    /// Connecting, TLS included.
    pub connect_timeout: Duration,
    /// One whole request (for a stream: until its last byte).
    pub request_timeout: Duration,
}

impl Default for HttpOptions {
    /// 10 s to connect, 300 s per request.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(300),
        }
    }
}

impl HttpOptions {
    /// A client with these timeouts.
    ///
    /// # Errors
    /// The TLS backend could not be set up.
    pub fn client(&self) -> Result<reqwest::Client, String> {
        reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }
}

/// Sends a request and turns a transport failure or an error status into an [`LlmError`];
/// shared by the HTTP providers.
pub async fn send_checked(
    provider: &str,
    key: Option<&ApiKey>,
    timeout: Duration,
    builder: reqwest::RequestBuilder,
) -> Result<reqwest::Response, LlmError> {
    let response = builder
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| transport_error(provider, key, timeout, &e))?;
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(status_error(provider, key, response).await)
    }
}

/// Reads a whole (non-streamed) response body.
pub async fn read_body(
    provider: &str,
    key: Option<&ApiKey>,
    timeout: Duration,
    response: reqwest::Response,
) -> Result<impl AsRef<[u8]>, LlmError> {
    response
        .bytes()
        .await
        .map_err(|e| transport_error(provider, key, timeout, &e))
}

/// Maps a transport error (no HTTP status) to an [`LlmError`].
pub fn transport_error(
    provider: &str,
    key: Option<&ApiKey>,
    timeout: Duration,
    e: &reqwest::Error,
) -> LlmError {
    if e.is_timeout() {
        return LlmError::Timeout {
            provider: provider.to_string(),
            after_ms: timeout.as_millis() as u64,
        };
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if let Some(key) = key {
        message = key.redact(&message);
    }
    LlmError::Connection {
        provider: provider.to_string(),
        message,
    }
}

/// Maps an HTTP error status and its body to an [`LlmError`].
pub async fn status_error(
    provider: &str,
    key: Option<&ApiKey>,
    response: reqwest::Response,
) -> LlmError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after_from_header);
    let body = match response.bytes().await {
        Ok(b) => String::from_utf8_lossy(&b[..b.len().min(ERROR_BODY_LEN_MAX)]).into_owned(),
        Err(_) => String::new(),
    };
    let mut message = error_message(&body);
    if let Some(key) = key {
        message = key.redact(&message);
    }
    classify(provider, status, retry_after, message)
}

/// Picks the human message out of an OpenAI- or Anthropic-style error body.
fn error_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let found = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .and_then(|m| m.as_str().map(str::to_string))
    });
    let code = parsed.as_ref().and_then(|v| {
        v.pointer("/error/code")
            .or_else(|| v.pointer("/error/type"))
            .and_then(|c| c.as_str().map(str::to_string))
    });
    match (found, code) {
        (Some(m), Some(c)) => format!("{m} ({c})"),
        (Some(m), None) => m,
        _ => body.trim().chars().take(512).collect(),
    }
}

fn classify(provider: &str, status: u16, retry_after: Option<u64>, message: String) -> LlmError {
    let provider = provider.to_string();
    let lower = message.to_ascii_lowercase();
    let context = lower.contains("context_length_exceeded")
        || lower.contains("context length")
        || lower.contains("prompt is too long")
        || lower.contains("maximum context");
    match status {
        401 | 403 => LlmError::Authentication { provider, message },
        429 | 529 => LlmError::RateLimited {
            provider,
            retry_after_ms: retry_after.or_else(|| retry_after_from_message(&message)),
            message,
        },
        400 | 413 if context => LlmError::ContextTooLong { provider, message },
        400..=499 => LlmError::BadRequest {
            provider,
            message: format!("HTTP {status}: {message}"),
        },
        _ => LlmError::Server {
            provider,
            status,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_typed_errors() {
        let e = classify("p", 429, None, "Please try again in 2.5s.".into());
        assert_eq!(
            e,
            LlmError::RateLimited {
                provider: "p".into(),
                retry_after_ms: Some(2500),
                message: "Please try again in 2.5s.".into()
            }
        );
        let body = r#"{"error":{"message":"This model's maximum context length is 10","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
        assert!(matches!(
            classify("p", 400, None, error_message(body)),
            LlmError::ContextTooLong { .. }
        ));
        assert!(matches!(
            classify("p", 401, None, "bad".into()),
            LlmError::Authentication { .. }
        ));
        assert!(matches!(
            classify("p", 529, Some(10), "overloaded".into()),
            LlmError::RateLimited {
                retry_after_ms: Some(10),
                ..
            }
        ));
        assert!(matches!(
            classify("p", 503, None, String::new()),
            LlmError::Server { status: 503, .. }
        ));
        assert!(matches!(
            classify("p", 422, None, String::new()),
            LlmError::BadRequest { .. }
        ));
    }

    #[test]
    fn keys_are_redacted_and_never_printed() {
        let key = ApiKey::new("sk-secret-123");
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert_eq!(
            key.redact("Incorrect API key provided: sk-secret-123."),
            "Incorrect API key provided: ***."
        );
    }
}
