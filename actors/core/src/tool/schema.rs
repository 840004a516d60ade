//! JSON Schema validation of tool arguments and results (the `jsonschema` crate), with
//! errors an agent can act on: each names the path in the value and what is wrong.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most violations reported per value.
const VIOLATIONS_MAX: usize = 16;

/// One way a value breaks its schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// JSON pointer to the offending part (`""` for the whole value).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Violations of one value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}", self.summary())]
pub struct Violations(pub Vec<Violation>);

impl Violations {
    fn summary(&self) -> String {
        self.0
            .iter()
            .map(|v| {
                if v.path.is_empty() {
                    v.message.clone()
                } else {
                    format!("{}: {}", v.path, v.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A compiled schema.
pub struct Schema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schema")
    }
}

impl Schema {
    /// Compiles `schema`.
    ///
    /// # Errors
    /// Why it is not a valid JSON Schema.
    pub fn compile(schema: &Value) -> Result<Self, String> {
        jsonschema::validator_for(schema)
            .map(|validator| Self { validator })
            .map_err(|e| e.to_string())
    }

    /// Checks `value`.
    ///
    /// # Errors
    /// Up to 16 violations, each with its path.
    pub fn check(&self, value: &Value) -> Result<(), Violations> {
        let v: Vec<Violation> = self
            .validator
            .iter_errors(value)
            .take(VIOLATIONS_MAX)
            .map(|e| Violation {
                path: e.instance_path().to_string(),
                message: e.to_string(),
            })
            .collect();
        if v.is_empty() {
            Ok(())
        } else {
            Err(Violations(v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn violations_name_paths_and_problems() {
        let s = Schema::compile(&json!({"type": "object",
            "properties": {"url": {"type": "string"}, "n": {"type": "integer", "minimum": 1}},
            "required": ["url"], "additionalProperties": false}))
        .expect("schema");
        assert!(s.check(&json!({"url": "x", "n": 2})).is_ok());
        let e = s.check(&json!({"n": 0, "extra": true})).expect_err("bad");
        let text = e.to_string();
        assert!(text.contains("url"), "{text}");
        assert!(e.0.iter().any(|v| v.path == "/n"), "{e:?}");
        assert!(text.contains("extra"), "{text}");
        assert!(Schema::compile(&json!({"type": 5})).is_err());
    }
}
