//! Validated names: each kind of name is a newtype with one validator, and its serde checks it,
//! so a name read from a request, a config file, a peer or the store is valid or an error.
//!
//! Each serialises as its plain string (`bincode` and JSON alike), so a field can change from
//! `String` to a name type without changing what is stored.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest agent, namespace, session or schedule name, in bytes.
pub const NAME_LEN_MAX: usize = 64;
/// The longest tenant name, in bytes.
pub const TENANT_LEN_MAX: usize = 32;
/// The longest node name, in bytes.
pub const NODE_NAME_LEN_MAX: usize = 64;
/// The longest tag, in bytes.
pub const TAG_LEN_MAX: usize = 32;
/// The longest tool name, in bytes.
pub const TOOL_NAME_LEN_MAX: usize = 64;

/// A name that breaks its rule; the message names the value and the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub String);

impl From<NameError> for String {
    fn from(e: NameError) -> Self {
        e.0
    }
}

/// Checks a name of an agent, memory namespace, session, schedule or team: 1..=64 of
/// `A-Z a-z 0-9 _ - .`.
///
/// # Errors
/// The name and the rule.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= NAME_LEN_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?} must be 1..={NAME_LEN_MAX} characters of a-z, A-Z, 0-9, '_', '-', '.'"
        ))
    }
}

/// Checks a tenant name: 1..=32 of `a-z 0-9 _ -`.
///
/// # Errors
/// The name and the rule.
pub fn validate_tenant(tenant: &str) -> Result<(), String> {
    let ok = !tenant.is_empty()
        && tenant.len() <= TENANT_LEN_MAX
        && tenant
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant {tenant:?} must be 1..={TENANT_LEN_MAX} of a-z, 0-9, '_', '-'"
        ))
    }
}

/// Checks a node name: 1..=64 of `A-Z a-z 0-9 . _ -` (the rule of the store's lease holders,
/// [`aios_supervisor::snapshot::valid_node_name`]).
///
/// # Errors
/// The name and the rule.
pub fn validate_node_name(node: &str) -> Result<(), String> {
    if aios_supervisor::snapshot::valid_node_name(node) {
        Ok(())
    } else {
        Err(format!(
            "{node:?} is not a node name (1..={NODE_NAME_LEN_MAX} of A-Z a-z 0-9 . _ -)"
        ))
    }
}

/// Checks a tag: 1..=32 of `a-z 0-9 . _ -`.
///
/// # Errors
/// The tag and the rule.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = (1..=TAG_LEN_MAX).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{tag:?} is not a tag (1..={TAG_LEN_MAX} of a-z 0-9 . _ -)"
        ))
    }
}

/// Checks a tool name: 1..=64 of `a-z 0-9 _ -`, starting with a letter.
///
/// # Errors
/// The name and the rule.
pub fn validate_tool_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= TOOL_NAME_LEN_MAX
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?} must be 1..={TOOL_NAME_LEN_MAX} of a-z, 0-9, '_', '-', starting with a letter"
        ))
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $check:path, $pattern:literal, $len_max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Checks `name` and wraps it.
            ///
            /// # Errors
            /// The name and the rule it breaks.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                $check(&name).map_err(NameError)?;
                Ok(Self(name))
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name, as a `String`.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(name: String) -> Result<Self, NameError> {
                Self::new(name)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = NameError;
            fn try_from(name: &str) -> Result<Self, NameError> {
                Self::new(name)
            }
        }

        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(name: &str) -> Result<Self, NameError> {
                Self::new(name)
            }
        }

        impl From<$ty> for String {
            fn from(name: $ty) -> String {
                name.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl schemars::JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $len_max,
                    "pattern": $pattern,
                })
            }
        }
    };
}

name_type!(
    /// The name of an agent definition (as the node knows it: tenant-scoped names are
    /// `<tenant>.<name>`).
    AgentName,
    validate_name,
    "^[A-Za-z0-9_.-]+$",
    NAME_LEN_MAX
);
name_type!(
    /// The name of a memory namespace.
    Namespace,
    validate_name,
    "^[A-Za-z0-9_.-]+$",
    NAME_LEN_MAX
);
name_type!(
    /// A tenant: the owner of keys, agents, namespaces, schedules and webhooks.
    Tenant,
    validate_tenant,
    "^[a-z0-9_-]+$",
    TENANT_LEN_MAX
);
name_type!(
    /// A node of a cluster (`[store] node`), as it appears in lease holders.
    NodeName,
    validate_node_name,
    "^[A-Za-z0-9._-]+$",
    NODE_NAME_LEN_MAX
);
name_type!(
    /// A placement tag of a node (`[cluster] tags`).
    Tag,
    validate_tag,
    "^[a-z0-9._-]+$",
    TAG_LEN_MAX
);
name_type!(
    /// The name of a tool, as the model calls it.
    ToolName,
    validate_tool_name,
    "^[a-z][a-z0-9_-]*$",
    TOOL_NAME_LEN_MAX
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_check_their_rule_and_serde_checks_it_too() {
        assert!(AgentName::new("writer.v2").is_ok());
        assert!(AgentName::new("bad name").is_err());
        assert!(AgentName::new("x".repeat(NAME_LEN_MAX + 1)).is_err());
        assert!(Tenant::new("acme").is_ok());
        assert!(Tenant::new("Acme").is_err());
        assert!(NodeName::new("node-1").is_ok());
        assert!(NodeName::new("node 1").is_err());
        assert!(Tag::new("gpu").is_ok());
        assert!(Tag::new("GPU").is_err());
        assert!(ToolName::new("web_fetch").is_ok());
        assert!(ToolName::new("1tool").is_err());

        let ok: Tenant = serde_json::from_str("\"acme\"").expect("valid");
        assert_eq!(ok, "acme");
        let err = serde_json::from_str::<Tenant>("\"ACME\"").expect_err("invalid");
        assert!(err.to_string().contains("tenant \"ACME\""), "{err}");
    }

    #[test]
    fn a_name_is_stored_as_its_plain_string() {
        let config = bincode::config::standard();
        let as_string = bincode::serde::encode_to_vec("writer", config).expect("encode");
        let as_name =
            bincode::serde::encode_to_vec(AgentName::new("writer").expect("valid"), config)
                .expect("encode");
        assert_eq!(as_string, as_name);
        let (back, _): (AgentName, usize) =
            bincode::serde::decode_from_slice(&as_string, config).expect("decode");
        assert_eq!(back, "writer");
        assert_eq!(serde_json::to_string(&back).expect("json"), "\"writer\"");
    }
}
