//! How an agent definition names a tool: `name` or `name@requirement`.

use semver::VersionReq;

/// A requirement on a tool: a name and a semver range (`web_fetch@^1.2`, `web_fetch`), as an
/// agent definition lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolRequirement {
    /// The tool.
    pub name: String,
    /// The versions accepted.
    pub req: VersionReq,
}

impl ToolRequirement {
    /// Parses `name` or `name@req`.
    ///
    /// # Errors
    /// A bad range, named.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, req) = match text.split_once('@') {
            Some((n, r)) => (
                n,
                VersionReq::parse(r).map_err(|e| format!("{text:?}: version requirement: {e}"))?,
            ),
            None => (text, VersionReq::STAR),
        };
        if name.is_empty() {
            return Err(format!("{text:?}: no tool name"));
        }
        Ok(Self {
            name: name.to_string(),
            req,
        })
    }
}

impl std::fmt::Display for ToolRequirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.req)
    }
}
