//! Plugin manifests: what a tool is, does, needs and depends on, in TOML or JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use aios_core::Capability;
use aios_core::name::validate_tool_name;
use aios_core::tool::Schema;

/// The longest tool timeout a manifest may ask for.
pub const TOOL_TIMEOUT_MAX: Duration = Duration::from_secs(600);
/// The most concurrent calls a manifest may allow.
pub const TOOL_CONCURRENCY_MAX: usize = 1024;

/// What a tool may touch. Anything not listed is denied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// Hosts it may connect to (`example.com`, `*.example.com`, `127.0.0.1:8080`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Directories it may read and write, relative to its sandbox.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Environment variables it may read.
    #[serde(default)]
    pub env: Vec<String>,
}

/// An example call: an input, and the output expected (exactly) or its schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// What it shows.
    #[serde(default)]
    pub name: String,
    /// The arguments.
    pub input: Value,
    /// The exact result expected.
    #[serde(default)]
    pub output: Option<Value>,
    /// A schema the result must satisfy.
    #[serde(default)]
    pub output_schema: Option<Value>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_concurrency() -> usize {
    16
}

/// A tool's manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolManifest {
    /// 1..=64 of `a-z 0-9 _ -`, starting with a letter.
    pub name: String,
    /// Semantic version.
    pub version: Version,
    /// What it does (shown to models).
    pub description: String,
    /// JSON Schema of its arguments.
    pub input_schema: Value,
    /// JSON Schema of its result, if it promises one.
    #[serde(default)]
    pub output_schema: Option<Value>,
    /// What it can do, for capability discovery.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// What it needs.
    #[serde(default)]
    pub permissions: Permissions,
    /// Other tools it calls, by name and semver requirement.
    #[serde(default)]
    pub dependencies: BTreeMap<String, VersionReq>,
    /// How long one call may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Calls running at once at most.
    #[serde(default = "default_concurrency")]
    pub concurrency_max: usize,
    /// Same arguments, same result, no side effects: results may be cached.
    #[serde(default)]
    pub pure: bool,
    /// Example calls, run by the tool test command.
    #[serde(default)]
    pub examples: Vec<Example>,
}

/// Why a manifest was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("tool manifest{}: {problem}", name.as_ref().map(|n| format!(" {n}")).unwrap_or_default())]
pub struct ManifestError {
    /// The tool, when the manifest got that far.
    pub name: Option<String>,
    /// What is wrong, naming the field.
    pub problem: String,
}

impl ToolManifest {
    /// Name, description and input schema, as offered to a model.
    pub fn spec(&self) -> aios_core::ToolSpec {
        aios_core::ToolSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            parameters: self.input_schema.clone(),
        }
    }

    /// Parses a TOML manifest and validates it.
    ///
    /// # Errors
    /// A syntax error (with its position) or the first invalid field.
    pub fn from_toml(text: &str) -> Result<Self, ManifestError> {
        let m: Self = toml::from_str(text).map_err(|e| ManifestError {
            name: None,
            problem: e.to_string(),
        })?;
        m.validate()?;
        Ok(m)
    }

    /// Parses a JSON manifest and validates it.
    ///
    /// # Errors
    /// As [`ToolManifest::from_toml`].
    pub fn from_json(text: &str) -> Result<Self, ManifestError> {
        let m: Self = serde_json::from_str(text).map_err(|e| ManifestError {
            name: None,
            problem: e.to_string(),
        })?;
        m.validate()?;
        Ok(m)
    }

    /// `name@version`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Checks names, schemas, limits, dependencies and examples.
    ///
    /// # Errors
    /// The first problem, naming the field.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let err = |problem: String| ManifestError {
            name: Some(self.name.clone()),
            problem,
        };
        validate_tool_name(&self.name).map_err(err)?;
        if self.description.trim().is_empty() {
            return Err(err("description: empty".into()));
        }
        let input =
            Schema::compile(&self.input_schema).map_err(|e| err(format!("input_schema: {e}")))?;
        let output = match &self.output_schema {
            Some(s) => Some(Schema::compile(s).map_err(|e| err(format!("output_schema: {e}")))?),
            None => None,
        };
        if self.timeout.is_zero() || self.timeout > TOOL_TIMEOUT_MAX {
            return Err(err(format!(
                "timeout: must be positive and at most {TOOL_TIMEOUT_MAX:?}"
            )));
        }
        if !(1..=TOOL_CONCURRENCY_MAX).contains(&self.concurrency_max) {
            return Err(err(format!(
                "concurrency_max: must be 1..={TOOL_CONCURRENCY_MAX}"
            )));
        }
        for dep in self.dependencies.keys() {
            validate_tool_name(dep).map_err(|e| err(format!("dependencies: {e}")))?;
            if dep == &self.name {
                return Err(err("dependencies: a tool cannot depend on itself".into()));
            }
        }
        for (i, ex) in self.examples.iter().enumerate() {
            input
                .check(&ex.input)
                .map_err(|e| err(format!("examples[{i}].input: {e}")))?;
            if let (Some(out), Some(schema)) = (&ex.output, &output) {
                schema
                    .check(out)
                    .map_err(|e| err(format!("examples[{i}].output: {e}")))?;
            }
            if let Some(s) = &ex.output_schema {
                Schema::compile(s).map_err(|e| err(format!("examples[{i}].output_schema: {e}")))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FETCH: &str = r#"
name = "web_fetch"
version = "1.2.0"
description = "Fetches a web page."
input_schema = { type = "object", properties = { url = { type = "string" } }, required = ["url"] }
output_schema = { type = "object", properties = { status = { type = "integer" } } }
timeout = "10s"
concurrency_max = 4
pure = true
permissions = { hosts = ["example.com"] }
dependencies = { http_core = "^0.3" }
capabilities = [{ name = "web", params = { cost_class = "free" } }]
[[examples]]
name = "a page"
input = { url = "https://example.com" }
output = { status = 200 }
"#;

    #[test]
    fn a_toml_manifest_parses_and_validates() {
        let m = ToolManifest::from_toml(FETCH).expect("valid");
        assert_eq!(m.id(), "web_fetch@1.2.0");
        assert_eq!(m.timeout, Duration::from_secs(10));
        assert!(m.dependencies["http_core"].matches(&Version::new(0, 3, 7)));
        let json = serde_json::to_string(&m).expect("json");
        assert_eq!(ToolManifest::from_json(&json).expect("round trip"), m);
    }

    #[test]
    fn invalid_manifests_name_the_field() {
        let cases = [
            (FETCH.replace("web_fetch", "Web Fetch"), "name"),
            (FETCH.replace("1.2.0", "1.2"), "version"),
            (FETCH.replace("\"10s\"", "\"0s\""), "timeout"),
            (
                FETCH.replace("concurrency_max = 4", "concurrency_max = 0"),
                "concurrency_max",
            ),
            (
                FETCH.replace(
                    "type = \"object\", properties = { url",
                    "type = \"objekt\", properties = { url",
                ),
                "input_schema",
            ),
            (
                FETCH.replace(
                    "input = { url = \"https://example.com\" }",
                    "input = { uri = 1 }",
                ),
                "examples[0].input",
            ),
            (FETCH.replace("http_core", "web_fetch"), "itself"),
            (
                FETCH.replace("pure = true", "pure = true\nbogus = 1"),
                "bogus",
            ),
        ];
        for (text, field) in cases {
            let e = ToolManifest::from_toml(&text).expect_err(field);
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
    }
}
