//! The tenant boundary as a type. The API name `writer` of tenant `acme` is the node's agent
//! `acme.writer`: a [`Scoped`] name is minted only from the authenticated [`Principal`] of the
//! request (as an extractor of the route's path parameter, or with [`Scoped::new`] for a name
//! in a body), so a handler that takes one cannot reach another tenant's agent or namespace by
//! forgetting a call.

use std::collections::HashMap;

use aios_core::{AgentName, Namespace};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use crate::daemon::http::Problem;
use crate::daemon::keys::{OPERATOR_TENANT, Principal};

/// A kind of tenant-scoped name, and the path parameter that carries it.
pub(crate) trait ScopedKind: Sized {
    /// The route's path parameter (`{name}`, `{ns}`).
    const PARAM: &'static str;
    /// Checks the node's name (`<tenant>.<name>`).
    ///
    /// # Errors
    /// The name and the rule it breaks.
    fn check(full: String) -> Result<Self, aios_core::NameError>;
    /// The node's name.
    fn as_str(&self) -> &str;
}

impl ScopedKind for AgentName {
    const PARAM: &'static str = "name";
    fn check(full: String) -> Result<Self, aios_core::NameError> {
        AgentName::new(full)
    }
    fn as_str(&self) -> &str {
        AgentName::as_str(self)
    }
}

impl ScopedKind for Namespace {
    const PARAM: &'static str = "ns";
    fn check(full: String) -> Result<Self, aios_core::NameError> {
        Namespace::new(full)
    }
    fn as_str(&self) -> &str {
        Namespace::as_str(self)
    }
}

/// A name of the caller's tenant, as the node knows it (`<tenant>.<name>`). Derefs to the
/// node's name; [`Scoped::name`] is the tenant's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scoped<T> {
    full: T,
    /// Where the tenant's own name starts in `full`.
    name_at: usize,
}

impl<T: ScopedKind> Scoped<T> {
    /// The node's name for `name` of `p`'s tenant.
    ///
    /// # Errors
    /// 400 when `name` is not a name, or too long with the tenant in front.
    pub(crate) fn new(p: &Principal, name: &str) -> Result<Self, Problem> {
        aios_core::name::validate_name(name).map_err(Problem::bad_request)?;
        let full = format!("{}.{name}", p.tenant);
        let name_at = p.tenant.len() + 1;
        let full = T::check(full).map_err(|_| {
            Problem::bad_request(format!(
                "name {name:?} is too long: with the tenant it must fit in {} characters",
                aios_core::name::NAME_LEN_MAX
            ))
        })?;
        Ok(Self { full, name_at })
    }

    /// The node's name (`<tenant>.<name>`).
    pub(crate) fn full(&self) -> &str {
        self.full.as_str()
    }

    /// The tenant's own name.
    pub(crate) fn name(&self) -> &str {
        &self.full.as_str()[self.name_at..]
    }
}

impl<T: ScopedKind> std::ops::Deref for Scoped<T> {
    type Target = str;
    fn deref(&self) -> &str {
        self.full()
    }
}

impl<T: ScopedKind> std::fmt::Display for Scoped<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.full())
    }
}

impl<T: ScopedKind> From<Scoped<T>> for String {
    fn from(s: Scoped<T>) -> String {
        s.full().to_owned()
    }
}

/// The route's `{name}` (agents) or `{ns}` (memory namespaces), scoped to the caller's tenant.
impl<S: Send + Sync, T: ScopedKind + Send> FromRequestParts<S> for Scoped<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Problem::internal("a scoped name on a route without authentication"))?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| Problem::bad_request(e.body_text()))?;
        let name = params.get(T::PARAM).ok_or_else(|| {
            Problem::internal(format!("the route has no {{{}}} parameter", T::PARAM))
        })?;
        Self::new(&principal, name)
    }
}

/// A scoped agent name.
pub(crate) type ScopedAgent = Scoped<AgentName>;
/// A scoped memory namespace.
pub(crate) type ScopedNamespace = Scoped<Namespace>;

/// Node-wide resources are for the operator tenant only.
pub(crate) fn operator_tenant(p: &Principal) -> Result<(), Problem> {
    if p.tenant == OPERATOR_TENANT {
        Ok(())
    } else {
        Err(Problem::forbidden(format!(
            "this is node-wide; only keys of the {OPERATOR_TENANT:?} tenant may use it"
        )))
    }
}

/// The node's name for a tenant's agent `name` (for names in request bodies).
pub(crate) fn scoped(p: &Principal, name: &str) -> Result<String, Problem> {
    ScopedAgent::new(p, name).map(String::from)
}

/// The tenant's name for a node name, if it is the tenant's.
pub(crate) fn unscoped<'a>(p: &Principal, full: &'a str) -> Option<&'a str> {
    full.strip_prefix(p.tenant.as_str())?.strip_prefix('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::keys::Role;

    fn principal(tenant: &str) -> Principal {
        Principal {
            key_id: "00112233aabb".into(),
            role: Role::Admin,
            tenant: tenant.into(),
        }
    }

    #[test]
    fn a_scoped_name_is_the_callers_tenants_and_nobody_elses() {
        let acme = principal("acme");
        let name = ScopedAgent::new(&acme, "writer").expect("a name");
        assert_eq!((name.full(), name.name()), ("acme.writer", "writer"));
        assert_eq!(&*name, "acme.writer");
        // A dot cannot climb into another tenant: `evil.x` of acme is `acme.evil.x`.
        let sneaky = ScopedNamespace::new(&acme, "evil.kb").expect("a name");
        assert_eq!(sneaky.full(), "acme.evil.kb");
        assert_eq!(unscoped(&principal("evil"), sneaky.full()), None);
        assert!(ScopedAgent::new(&acme, "bad name").is_err());
        assert!(
            ScopedAgent::new(&acme, &"x".repeat(60)).is_err(),
            "too long with the tenant"
        );
    }
}

#[cfg(test)]
mod boundary {
    /// Routes under `/v1/agents/{name}` and `/v1/memory/namespaces/{ns}` take their name as a
    /// [`super::Scoped`] extractor; a raw `Path(name)` or `Path(ns)` there could reach another
    /// tenant's. Tools (`/v1/tools/{name}`) are node-wide and keep plain names.
    #[test]
    fn no_handler_takes_an_agent_or_namespace_name_unscoped() {
        let daemon = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/daemon");
        let mut files = aios_testkit::source::rust_files(&daemon.join("api"));
        files
            .extend(["openai.rs", "streams.rs", "runs.rs", "schedules.rs"].map(|f| daemon.join(f)));
        let mut found = Vec::new();
        for file in files {
            if file.ends_with("api/tools.rs") || file.ends_with("api/scope.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("read a source file");
            for (i, line) in text.lines().enumerate() {
                if ["Path(name)", "Path(ns)", "Path((ns"]
                    .iter()
                    .any(|p| line.contains(p))
                {
                    found.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
                }
            }
        }
        assert!(
            found.is_empty(),
            "take a Scoped name instead:\n{}",
            found.join("\n")
        );
    }
}
