//! Agent and team templates: TOML files listing agent definitions. Instantiating one creates
//! its agents in the registry, optionally with a name prefix and another model.

use serde::Deserialize;

use super::definition::AgentDef;
use super::registry::{AgentRegistry, RegistryError};

/// The most agents in one template.
pub(super) const TEMPLATE_AGENTS_MAX: usize = 64;

/// A template failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The TOML does not parse or an agent is invalid.
    #[error("template {name:?}: {reason}")]
    Invalid {
        /// The template (or file) name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Creating an agent failed (it may exist already); agents created before it remain.
    #[error("template {name:?}: {source}")]
    Registry {
        /// The template.
        name: String,
        /// The registry's error.
        source: RegistryError,
    },
}

/// A team (or single-agent) template.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Its name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Its agents.
    pub agents: Vec<AgentDef>,
}

impl Template {
    /// Parses and validates a template.
    ///
    /// # Errors
    /// [`TemplateError::Invalid`] naming the template and the problem.
    pub fn from_toml(text: &str) -> Result<Self, TemplateError> {
        let t: Template = toml::from_str(text).map_err(|e| TemplateError::Invalid {
            name: "<toml>".into(),
            reason: e.to_string(),
        })?;
        if t.agents.is_empty() || t.agents.len() > TEMPLATE_AGENTS_MAX {
            return Err(TemplateError::Invalid {
                name: t.name,
                reason: format!("needs 1..={TEMPLATE_AGENTS_MAX} agents"),
            });
        }
        for a in &t.agents {
            a.validate().map_err(|reason| TemplateError::Invalid {
                name: t.name.clone(),
                reason,
            })?;
        }
        Ok(t)
    }

    /// The definitions it would create: names prefixed with `prefix-` when given, and every
    /// model replaced by `model` when given.
    pub fn definitions(&self, prefix: Option<&str>, model: Option<&str>) -> Vec<AgentDef> {
        self.agents
            .iter()
            .cloned()
            .map(|mut d| {
                if let Some(p) = prefix {
                    d.name = format!("{p}-{}", d.name);
                }
                if let Some(m) = model {
                    d.model = m.to_string();
                }
                d
            })
            .collect()
    }

    /// Creates its agents; returns their names.
    ///
    /// # Errors
    /// [`TemplateError`]; every definition is validated before any is created.
    pub async fn instantiate(
        &self,
        registry: &AgentRegistry,
        prefix: Option<&str>,
        model: Option<&str>,
    ) -> Result<Vec<String>, TemplateError> {
        let defs = self.definitions(prefix, model);
        for d in &defs {
            d.validate().map_err(|reason| TemplateError::Invalid {
                name: self.name.clone(),
                reason,
            })?;
        }
        let mut names = Vec::new();
        for d in defs {
            let name = d.name.clone();
            registry
                .create(d)
                .await
                .map_err(|source| TemplateError::Registry {
                    name: self.name.clone(),
                    source,
                })?;
            names.push(name);
        }
        Ok(names)
    }
}

/// The templates shipped with AIOS (`research-team`, `assistant`).
///
/// # Panics
/// Never: the shipped files are checked by the tests.
pub fn builtin_templates() -> Vec<Template> {
    [
        include_str!("../../templates/research-team.toml"),
        include_str!("../../templates/assistant.toml"),
    ]
    .into_iter()
    .filter_map(|t| match Template::from_toml(t) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, "a built-in template is invalid");
            None
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_templates_parse() {
        let t = builtin_templates();
        assert_eq!(t.len(), 2);
        let team = &t[0];
        assert_eq!(team.agents.len(), 3);
        let defs = team.definitions(Some("acme"), Some("openai/gpt-4o-mini"));
        assert_eq!(defs[0].name, "acme-planner");
        assert!(defs.iter().all(|d| d.model == "openai/gpt-4o-mini"));
        assert!(Template::from_toml("name='x'\nagents=[]").is_err());
    }
}
