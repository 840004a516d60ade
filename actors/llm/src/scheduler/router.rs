//! The router: model keys to schedulers, and budget-aware fallback to a cheaper model.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::quota::{Ask, TenantQuota};
use super::{CancelFilter, LlmOutcome, RequestMeta, Scheduler, SchedulerStats};
use crate::tokens::ContextWindow;
use crate::{ChatRequest, DeltaSink, LlmError};

/// `provider/model`: the name of one scheduler.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelKey(Arc<str>);

impl ModelKey {
    /// `provider/model`.
    pub fn new(provider: &str, model: &str) -> Self {
        Self(format!("{provider}/{model}").into())
    }

    /// Parses `provider/model` (the model part may itself contain `/`).
    ///
    /// # Errors
    /// When there is no `/` or either part is empty.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((p, m)) if !p.is_empty() && !m.is_empty() => Ok(Self(s.into())),
            _ => Err(format!("expected provider/model, got {s:?}")),
        }
    }

    /// The provider part.
    pub fn provider(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(p, _)| p)
    }

    /// The model part.
    pub fn model(&self) -> &str {
        self.0.split_once('/').map_or("", |(_, m)| m)
    }

    /// The whole key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ModelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An agent's cost limit for the current task and what it has spent of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The limit in nanodollars.
    pub limit_nanos: u64,
    /// Spent so far in nanodollars.
    pub spent_nanos: u64,
}

/// Routes requests to the scheduler of their model, within their tenant's LLM budget.
/// Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct LlmRouter {
    schedulers: Arc<BTreeMap<ModelKey, Scheduler>>,
    quota: Option<TenantQuota>,
}

impl LlmRouter {
    /// A router over `schedulers`.
    ///
    /// # Errors
    /// Two schedulers for one model, or a fallback naming a model that has none.
    pub fn new(schedulers: Vec<Scheduler>) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for s in schedulers {
            let key = s.key().clone();
            if map.insert(key.clone(), s).is_some() {
                return Err(format!("model {key} is configured twice"));
            }
        }
        for (key, s) in &map {
            if let Some(f) = &s.config().fallback {
                let f = ModelKey::parse(f).map_err(|e| format!("model {key}: fallback: {e}"))?;
                if !map.contains_key(&f) {
                    return Err(format!(
                        "model {key}: fallback {f} is not a configured model"
                    ));
                }
            }
        }
        Ok(Self {
            schedulers: Arc::new(map),
            quota: None,
        })
    }

    /// This router with tenant budgets: every call reserves its stated maximum first
    /// ([`TenantQuota::reserve`]).
    #[must_use]
    pub fn with_quota(mut self, quota: TenantQuota) -> Self {
        self.quota = Some(quota);
        self
    }

    /// The tenants' budgets, when set.
    pub fn quota(&self) -> Option<&TenantQuota> {
        self.quota.as_ref()
    }

    /// The scheduler of `key`.
    pub fn get(&self, key: &ModelKey) -> Option<&Scheduler> {
        self.schedulers.get(key)
    }

    /// The context window of `key`, if configured.
    pub fn window(&self, key: &ModelKey) -> Option<ContextWindow> {
        self.get(key).map(|s| s.config().window())
    }

    /// Every configured model.
    pub fn models(&self) -> impl Iterator<Item = &ModelKey> {
        self.schedulers.keys()
    }

    /// Runs `request` on `model`, or on its fallback once `budget` is spent beyond the
    /// model's `fallback_at` fraction.
    ///
    /// # Errors
    /// [`LlmError::UnknownModel`], [`LlmError::BudgetExceeded`] when the budget is spent,
    /// [`LlmError::QuotaExceeded`] when the tenant's budget is, or the scheduler's error.
    pub async fn chat(
        &self,
        model: &ModelKey,
        request: ChatRequest,
        meta: RequestMeta,
        budget: Option<Budget>,
        stream: Option<DeltaSink>,
        cancel: Option<&CancellationToken>,
    ) -> Result<LlmOutcome, LlmError> {
        let scheduler = self.get(model).ok_or_else(|| LlmError::UnknownModel {
            model: model.to_string(),
        })?;
        let mut target = scheduler;
        let mut fallback = false;
        if let Some(b) = budget {
            if b.spent_nanos >= b.limit_nanos {
                return Err(LlmError::BudgetExceeded {
                    message: format!(
                        "spent {} of {} nanodollars allowed for this task",
                        b.spent_nanos, b.limit_nanos
                    ),
                });
            }
            let cfg = scheduler.config();
            let near = b.spent_nanos as f64 >= cfg.fallback_at * b.limit_nanos as f64;
            if near
                && let Some(f) = cfg
                    .fallback
                    .as_deref()
                    .and_then(|f| ModelKey::parse(f).ok())
                && let Some(s) = self.get(&f)
            {
                tracing::info!(from = %model, to = %f, agent = %meta.agent, "budget fallback");
                target = s;
                fallback = true;
            }
        }
        // Held until the call's usage is in the ledger (the scheduler records it before it
        // answers).
        let _reserved = match &self.quota {
            Some(q) if !q.limits().is_unlimited() => Some(
                q.reserve(&meta.tenant, Ask::of(target.config(), &request), cancel)
                    .await?,
            ),
            _ => None,
        };
        let mut outcome = target.chat(request, meta, stream, cancel).await?;
        outcome.fallback = fallback;
        Ok(outcome)
    }

    /// Cancels matching requests on every scheduler; returns how many.
    pub async fn cancel(&self, filter: CancelFilter) -> usize {
        let mut n = 0;
        for s in self.schedulers.values() {
            n += s.cancel(filter.clone()).await.unwrap_or(0);
        }
        n
    }

    /// Every scheduler's stats.
    pub fn stats(&self) -> Vec<SchedulerStats> {
        self.schedulers.values().map(Scheduler::stats).collect()
    }
}
