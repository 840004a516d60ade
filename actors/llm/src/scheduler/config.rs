//! LLM configuration as a node reads it (TOML in the daemon): providers and the models
//! scheduled on them. The default is the offline `scripted/demo` model, so a node runs with
//! no LLM configured.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{RateLimits, SchedulerConfig};
use crate::anthropic::{AnthropicConfig, AnthropicProvider};
use crate::openai::{OpenAiConfig, OpenAiProvider};
use crate::scripted::{Script, ScriptedProvider};
use crate::{ApiKey, HttpOptions, RetryPolicy, SharedProvider};

/// The wire protocol of a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI-compatible Chat Completions (OpenAI, vLLM, Ollama, llama.cpp, LM Studio).
    Openai,
    /// The Anthropic Messages API.
    Anthropic,
    /// The offline, deterministic scripted provider.
    Scripted,
}

/// One provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Its name; models refer to it as `name/model`.
    pub name: String,
    /// Its protocol.
    pub kind: ProviderKind,
    /// Base URL (without `/v1`), required for `openai` and `anthropic`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable holding the API key (the key itself never goes in config).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// For `scripted`: a TOML script file (the built-in defaults without one).
    #[serde(default)]
    pub script_file: Option<PathBuf>,
    /// Requests/min and tokens/min for the whole provider.
    #[serde(default)]
    pub limits: RateLimits,
    /// Attempts per request, first included (default 5).
    #[serde(default = "default_attempts")]
    pub retry_attempts_max: u32,
    /// Per-request timeout (default 300 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

fn default_attempts() -> u32 {
    5
}
fn default_timeout() -> Duration {
    Duration::from_secs(300)
}

/// Providers and models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Providers.
    pub providers: Vec<ProviderConfig>,
    /// Models, each with its scheduler settings.
    pub models: Vec<SchedulerConfig>,
}

impl Default for LlmConfig {
    /// The offline `scripted` provider with one model, `scripted/demo`.
    fn default() -> Self {
        Self {
            providers: vec![ProviderConfig {
                name: "scripted".into(),
                kind: ProviderKind::Scripted,
                base_url: None,
                api_key_env: None,
                script_file: None,
                limits: RateLimits::default(),
                retry_attempts_max: 1,
                request_timeout: default_timeout(),
            }],
            models: vec![SchedulerConfig::new("scripted", "demo")],
        }
    }
}

impl LlmConfig {
    /// Checks names, references and bounds.
    ///
    /// # Errors
    /// Names the provider or model and the problem.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for p in &self.providers {
            if p.name.is_empty() || p.name.contains('/') {
                return Err(format!(
                    "provider name {:?} must be non-empty without '/'",
                    p.name
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(format!("provider {:?} is configured twice", p.name));
            }
            if matches!(p.kind, ProviderKind::Openai | ProviderKind::Anthropic)
                && p.base_url.is_none()
            {
                return Err(format!(
                    "provider {:?}: base_url is required for {:?}",
                    p.name, p.kind
                ));
            }
            RetryPolicy {
                attempts_max: p.retry_attempts_max,
                ..RetryPolicy::default()
            }
            .validate()
            .map_err(|e| format!("provider {:?}: {e}", p.name))?;
            if p.request_timeout.is_zero() {
                return Err(format!(
                    "provider {:?}: request_timeout must be > 0",
                    p.name
                ));
            }
        }
        for m in &self.models {
            m.validate()?;
            if !names.contains(m.provider.as_str()) {
                return Err(format!(
                    "model {}: provider {:?} is not configured",
                    m.key(),
                    m.provider
                ));
            }
        }
        Ok(())
    }

    /// Builds a provider client.
    ///
    /// # Errors
    /// A missing API key variable, an unreadable script, or an invalid URL.
    pub fn build_provider(p: &ProviderConfig) -> Result<SharedProvider, String> {
        let api_key = match &p.api_key_env {
            Some(var) => Some(ApiKey::from_env(var).ok_or_else(|| {
                format!(
                    "provider {:?}: environment variable {var} is not set",
                    p.name
                )
            })?),
            None => None,
        };
        let http = HttpOptions {
            request_timeout: p.request_timeout,
            ..HttpOptions::default()
        };
        let retry = RetryPolicy {
            attempts_max: p.retry_attempts_max,
            ..RetryPolicy::default()
        };
        let base_url = p.base_url.clone().unwrap_or_default();
        let named = |e: String| format!("provider {:?}: {e}", p.name);
        Ok(match p.kind {
            ProviderKind::Openai => Arc::new(
                OpenAiProvider::new(OpenAiConfig {
                    name: p.name.clone(),
                    base_url,
                    api_key,
                    http,
                    retry,
                })
                .map_err(named)?,
            ),
            ProviderKind::Anthropic => Arc::new(
                AnthropicProvider::new(AnthropicConfig {
                    name: p.name.clone(),
                    base_url,
                    api_key,
                    http,
                    retry,
                })
                .map_err(named)?,
            ),
            ProviderKind::Scripted => {
                let script = match &p.script_file {
                    Some(path) => {
                        let text = std::fs::read_to_string(path)
                            .map_err(|e| named(format!("cannot read {}: {e}", path.display())))?;
                        Script::from_toml(&text).map_err(named)?
                    }
                    None => Script::default(),
                };
                Arc::new(ScriptedProvider::new(p.name.clone(), script))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_references_are_checked() {
        assert!(LlmConfig::default().validate().is_ok());
        let mut c = LlmConfig::default();
        c.models.push(SchedulerConfig::new("nope", "m"));
        assert!(c.validate().unwrap_err().contains("nope"));
        let c: LlmConfig = toml::from_str(
            r#"
            [[providers]]
            name = "local"
            kind = "openai"
            base_url = "http://127.0.0.1:8000"
            request_timeout = "30s"
            limits = { requests_per_min = 600 }
            [[models]]
            provider = "local"
            model = "qwen"
            concurrency_max = 4
            price = { input_usd_per_mtok = 0.1, output_usd_per_mtok = 0.2 }
            "#,
        )
        .expect("toml");
        assert!(c.validate().is_ok());
        assert_eq!(c.providers[0].request_timeout, Duration::from_secs(30));
        assert_eq!(c.models[0].queue_len_max, 10_000);
        let mut keyed = c.providers[0].clone();
        keyed.api_key_env = Some("AIOS_TEST_SURELY_UNSET_KEY".into());
        let e = LlmConfig::build_provider(&keyed)
            .err()
            .expect("missing key");
        assert!(e.contains("AIOS_TEST_SURELY_UNSET_KEY"));
    }
}
