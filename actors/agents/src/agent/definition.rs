//! Agent definitions: what an agent is (role, prompt, model, tools, capabilities, limits).

use serde::{Deserialize, Serialize};

use super::busy::OnBusy;
use aios_llm::cost::NANOS_PER_USD;
use aios_llm::scheduler::ModelKey;

/// The longest agent name.
pub const AGENT_NAME_LEN_MAX: usize = aios_core::name::NAME_LEN_MAX;
pub use aios_core::name::validate_name;
/// The longest system prompt, in bytes.
pub(super) const SYSTEM_PROMPT_LEN_MAX: usize = 64 * 1024;
/// The most tools or capabilities one agent may list.
pub(super) const AGENT_LIST_LEN_MAX: usize = 64;
/// The highest `max_steps`.
pub(super) const AGENT_STEPS_MAX: u32 = 256;

/// An agent's role. Roles shape prompts and let orchestration pick planners.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AgentRole {
    /// Turns tasks into plans.
    Planner,
    /// Carries out steps, usually with tools.
    Executor,
    /// Gathers and summarises information.
    Researcher,
    /// Anything else.
    Custom(String),
}

impl AgentRole {
    /// The role's name (`planner`, `executor`, `researcher`, or the custom name).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Planner => "planner",
            Self::Executor => "executor",
            Self::Researcher => "researcher",
            Self::Custom(name) => name,
        }
    }
}

pub use aios_core::Capability;

/// What an agent may consume per task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// LLM calls per task (1..=[`AGENT_STEPS_MAX`]).
    #[serde(default = "default_steps")]
    pub max_steps: u32,
    /// Tokens (in + out) per task.
    #[serde(default = "default_tokens")]
    pub max_tokens: u64,
    /// Dollars per task; unlimited when `None`.
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
}

fn default_steps() -> u32 {
    16
}
fn default_tokens() -> u64 {
    200_000
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_steps: default_steps(),
            max_tokens: default_tokens(),
            max_cost_usd: None,
        }
    }
}

impl Limits {
    /// The cost limit in nanodollars.
    pub fn max_cost_nanos(&self) -> Option<u64> {
        self.max_cost_usd
            .map(|usd| (usd * NANOS_PER_USD as f64).round() as u64)
    }
}

/// An agent definition. Versioned by the [`super::AgentRegistry`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentDef {
    /// Unique name: 1..=64 of `a-z 0-9 _ -`.
    pub name: String,
    /// Role.
    pub role: AgentRole,
    /// What it is for, for people and for capability listings.
    #[serde(default)]
    pub description: String,
    /// The system prompt.
    pub system_prompt: String,
    /// `provider/model`.
    pub model: String,
    /// Tools it may call: `name`, or `name@requirement` to pin plugin tool versions
    /// (`web_fetch@^1.2`).
    #[serde(default)]
    pub tools: Vec<String>,
    /// The memory namespace its retrieval hook reads.
    #[serde(default)]
    pub memory_namespace: Option<String>,
    /// What it can do.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Limits per task.
    #[serde(default)]
    pub limits: Limits,
    /// Sampling temperature (0 makes answers cacheable).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// What happens to a message that arrives while the agent works on another.
    #[serde(default)]
    pub on_busy: OnBusy,
}

/// The schema version of [`AgentDef`] records written by this build (2 added `on_busy`).
pub const AGENT_DEF_SCHEMA_VERSION: u32 = 2;

/// [`AgentDef`] as schema version 1 wrote it (before `on_busy`).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct AgentDefV1 {
    name: String,
    role: AgentRole,
    description: String,
    system_prompt: String,
    model: String,
    tools: Vec<String>,
    memory_namespace: Option<String>,
    capabilities: Vec<Capability>,
    limits: Limits,
    temperature: Option<f32>,
}

/// Reads an [`AgentDef`] record payload written by schema version `version`.
///
/// # Errors
/// An unknown version or an undecodable payload.
pub(crate) fn decode_def(version: u32, payload: &[u8]) -> Result<AgentDef, String> {
    use aios_supervisor::snapshot::codec::decode;
    match version {
        AGENT_DEF_SCHEMA_VERSION => decode(payload),
        1 => {
            let v1: AgentDefV1 = decode(payload)?;
            Ok(AgentDef {
                name: v1.name,
                role: v1.role,
                description: v1.description,
                system_prompt: v1.system_prompt,
                model: v1.model,
                tools: v1.tools,
                memory_namespace: v1.memory_namespace,
                capabilities: v1.capabilities,
                limits: v1.limits,
                temperature: v1.temperature,
                on_busy: OnBusy::default(),
            })
        }
        v => Err(format!(
            "agent definition schema version {v} is newer than this build's {AGENT_DEF_SCHEMA_VERSION}"
        )),
    }
}

impl AgentDef {
    /// A definition with defaults for everything but the essentials.
    pub fn new(
        name: impl Into<String>,
        role: AgentRole,
        model: impl Into<String>,
        system_prompt: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            role,
            description: String::new(),
            system_prompt: system_prompt.into(),
            model: model.into(),
            tools: Vec::new(),
            memory_namespace: None,
            capabilities: Vec::new(),
            limits: Limits::default(),
            temperature: None,
            on_busy: OnBusy::default(),
        }
    }

    /// The model key.
    ///
    /// # Errors
    /// When `model` is not `provider/model`.
    pub fn model_key(&self) -> Result<ModelKey, String> {
        ModelKey::parse(&self.model)
    }

    /// Checks every field.
    ///
    /// # Errors
    /// Names the agent and the bad field.
    pub fn validate(&self) -> Result<(), String> {
        validate_name(&self.name)?;
        let err = |m: String| Err(format!("agent {:?}: {m}", self.name));
        if self.system_prompt.len() > SYSTEM_PROMPT_LEN_MAX {
            return err(format!(
                "system_prompt is longer than {SYSTEM_PROMPT_LEN_MAX} bytes"
            ));
        }
        if let Err(e) = self.model_key() {
            return err(format!("model: {e}"));
        }
        if self.tools.len() > AGENT_LIST_LEN_MAX || self.capabilities.len() > AGENT_LIST_LEN_MAX {
            return err(format!(
                "at most {AGENT_LIST_LEN_MAX} tools and {AGENT_LIST_LEN_MAX} capabilities"
            ));
        }
        if !(1..=AGENT_STEPS_MAX).contains(&self.limits.max_steps) {
            return err(format!(
                "limits.max_steps must be 1..={AGENT_STEPS_MAX}, got {}",
                self.limits.max_steps
            ));
        }
        if self.limits.max_tokens == 0 {
            return err("limits.max_tokens must be more than 0".into());
        }
        if let Some(c) = self.limits.max_cost_usd
            && !(c.is_finite() && c > 0.0)
        {
            return err(format!(
                "limits.max_cost_usd must be a positive number, got {c}"
            ));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return err(format!("temperature must be 0..=2, got {t}"));
        }
        for entry in &self.tools {
            if let Err(e) = aios_core::ToolRequirement::parse(entry) {
                return err(format!("tools: {e}"));
            }
        }
        if self.capabilities.iter().any(|c| c.name.is_empty()) {
            return err("a capability has an empty name".into());
        }
        if let Err(e) = self.on_busy.validate() {
            return err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let mut d = AgentDef::new("writer", AgentRole::Executor, "scripted/demo", "write");
        assert!(d.validate().is_ok());
        d.limits.max_steps = 0;
        assert!(d.validate().unwrap_err().contains("max_steps"));
        let mut d = AgentDef::new("bad name", AgentRole::Planner, "scripted/demo", "");
        assert!(d.validate().unwrap_err().contains("bad name"));
        d.name = "ok".into();
        d.model = "nomodel".into();
        assert!(d.validate().unwrap_err().contains("model"));
    }

    #[test]
    fn definitions_round_trip_through_toml_and_bincode() {
        let text = r#"
            name = "researcher"
            role = "researcher"
            system_prompt = "Find facts."
            model = "scripted/demo"
            tools = ["calculator"]
            capabilities = [{ name = "research", params = { cost_class = "low" } }]
            limits = { max_steps = 8 }
        "#;
        let d: AgentDef = toml::from_str(text).expect("toml");
        assert_eq!(d.limits.max_tokens, 200_000);
        let bytes = aios_supervisor::snapshot::codec::encode(&d).expect("encode");
        let back: AgentDef = aios_supervisor::snapshot::codec::decode(&bytes).expect("decode");
        assert_eq!(back, d);
        let custom: AgentDef =
            toml::from_str("name='x'\nrole={custom='critic'}\nsystem_prompt=''\nmodel='a/b'")
                .expect("custom role");
        assert_eq!(custom.role, AgentRole::Custom("critic".into()));
    }

    #[test]
    fn version_1_records_read_with_the_default_busy_policy() {
        let v1 = AgentDefV1 {
            name: "old".into(),
            role: AgentRole::Researcher,
            description: "d".into(),
            system_prompt: "p".into(),
            model: "scripted/demo".into(),
            tools: vec!["calculator".into()],
            memory_namespace: Some("kb".into()),
            capabilities: vec![Capability::named("research")],
            limits: Limits::default(),
            temperature: Some(0.0),
        };
        let bytes = aios_supervisor::snapshot::codec::encode(&v1).expect("encode");
        let def = decode_def(1, &bytes).expect("a version 1 record decodes");
        assert_eq!(def.on_busy, OnBusy::default());
        assert_eq!(def.memory_namespace.as_deref(), Some("kb"));
        let now = aios_supervisor::snapshot::codec::encode(&def).expect("encode");
        assert_eq!(decode_def(AGENT_DEF_SCHEMA_VERSION, &now), Ok(def));
        assert!(decode_def(9, &now).unwrap_err().contains("newer"));
    }
}
