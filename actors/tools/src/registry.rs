//! The tool registry: installed manifests, several versions side by side, semver
//! resolution of requirements such as `web_fetch@^1.2`, dependency checks with cycle
//! detection, refusal to remove what is still needed, and pins for rollback. Manifests are
//! persisted as records (`toolman/<name>/<version>`, JSON text), pins as `toolpin/<name>`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use aios_supervisor::snapshot::Durability;
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

use super::manifest::{ManifestError, ToolManifest};
use aios_core::records::Records;

const MANIFEST_PREFIX: &str = aios_core::keyspace::TOOL_MANIFEST;
const PIN_PREFIX: &str = aios_core::keyspace::TOOL_PIN;
/// Tool versions kept at most (over all tools).
pub const TOOL_VERSIONS_MAX: usize = 10_000;

/// Why a registry operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolRegistryError {
    /// The manifest is invalid.
    #[error(transparent)]
    Invalid(#[from] ManifestError),
    /// This name and version is installed with different contents.
    #[error("{0} is already installed with a different manifest; publish a new version")]
    Exists(String),
    /// No such tool or version.
    #[error("no tool matches {0}")]
    NotFound(String),
    /// A dependency has no installed version that satisfies it.
    #[error("{tool} needs {dependency} {requirement}, which no installed version satisfies")]
    MissingDependency {
        /// The tool being installed.
        tool: String,
        /// The dependency.
        dependency: String,
        /// Its requirement.
        requirement: String,
    },
    /// Installing would create a dependency cycle.
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// Still needed by other tools or agents.
    #[error("{tool} is still needed by {}", .needed_by.join(", "))]
    InUse {
        /// The tool.
        tool: String,
        /// Who needs it, with their requirement.
        needed_by: Vec<String>,
    },
    /// The store failed.
    #[error("tool registry store: {0}")]
    Store(String),
    /// Too many versions installed.
    #[error("at most {TOOL_VERSIONS_MAX} tool versions can be installed")]
    Full,
    /// A configuration (of an MCP server, a grant) is invalid.
    #[error("{0}")]
    InvalidConfig(String),
    /// A tool's server could not be reached or started.
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Serialize, Deserialize)]
struct ManifestRecord {
    json: String,
}

pub(super) use aios_core::ToolRequirement;

#[derive(Default)]
struct State {
    /// name → version → manifest.
    tools: BTreeMap<String, BTreeMap<Version, Arc<ToolManifest>>>,
    pins: BTreeMap<String, Version>,
}

impl State {
    fn resolve(&self, name: &str, req: &VersionReq) -> Option<Arc<ToolManifest>> {
        let versions = self.tools.get(name)?;
        if let Some(pinned) = self.pins.get(name)
            && req.matches(pinned)
            && let Some(m) = versions.get(pinned)
        {
            return Some(m.clone());
        }
        versions
            .iter()
            .rev()
            .find(|(v, _)| req.matches(v))
            .map(|(_, m)| m.clone())
    }

    fn count(&self) -> usize {
        self.tools.values().map(BTreeMap::len).sum()
    }

    /// A dependency cycle through `start`, following each dependency's resolved version.
    fn cycle_from(&self, start: &ToolManifest) -> Option<Vec<String>> {
        fn visit(
            state: &State,
            m: &ToolManifest,
            path: &mut Vec<String>,
            on_path: &mut BTreeSet<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            let id = m.id();
            if on_path.contains(&id) {
                let at = path.iter().position(|p| p == &id).unwrap_or(0);
                let mut cycle = path[at..].to_vec();
                cycle.push(id);
                return Some(cycle);
            }
            if !done.insert(id.clone()) {
                return None;
            }
            path.push(id.clone());
            on_path.insert(id.clone());
            for (dep, req) in &m.dependencies {
                if let Some(d) = state.resolve(dep, req)
                    && let Some(c) = visit(state, &d, path, on_path, done)
                {
                    return Some(c);
                }
            }
            path.pop();
            on_path.remove(&id);
            None
        }
        visit(
            self,
            start,
            &mut Vec::new(),
            &mut BTreeSet::new(),
            &mut BTreeSet::new(),
        )
    }
}

/// Installed tools. Cheap to clone.
#[derive(Clone)]
pub struct ToolRegistry {
    records: Records,
    state: Arc<RwLock<State>>,
    /// Serialises writers.
    write: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolRegistry")
            .field("versions", &self.read().count())
            .finish()
    }
}

fn manifest_key(name: &str, v: &Version) -> String {
    format!("{MANIFEST_PREFIX}{name}/{v}")
}

/// The pinned version of each tool, as stored.
async fn read_pins(records: &Records) -> Result<BTreeMap<String, Version>, ToolRegistryError> {
    let mut pins = BTreeMap::new();
    for key in records
        .keys(PIN_PREFIX, TOOL_VERSIONS_MAX)
        .await
        .map_err(store_err)?
    {
        if let Some(v) = records.get::<String>(&key).await.map_err(store_err)?
            && let Ok(v) = Version::parse(&v)
        {
            pins.insert(key.trim_start_matches(PIN_PREFIX).to_string(), v);
        }
    }
    Ok(pins)
}

fn store_err(e: impl std::fmt::Display) -> ToolRegistryError {
    ToolRegistryError::Store(e.to_string())
}

impl ToolRegistry {
    /// Loads every installed manifest and pin.
    ///
    /// # Errors
    /// Store failures or an unreadable manifest.
    pub async fn open(records: Records) -> Result<Self, ToolRegistryError> {
        let mut state = State::default();
        for key in records
            .keys(MANIFEST_PREFIX, TOOL_VERSIONS_MAX)
            .await
            .map_err(store_err)?
        {
            let Some(r) = records
                .get::<ManifestRecord>(&key)
                .await
                .map_err(store_err)?
            else {
                continue;
            };
            let m = ToolManifest::from_json(&r.json)?;
            state
                .tools
                .entry(m.name.clone())
                .or_default()
                .insert(m.version.clone(), Arc::new(m));
        }
        state.pins = read_pins(&records).await?;
        Ok(Self {
            records,
            state: Arc::new(RwLock::new(state)),
            write: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The store the registry keeps its records in.
    pub(crate) fn records(&self) -> &Records {
        &self.records
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Installs a version (upgrading is installing a newer one; older ones stay). Every
    /// dependency must be satisfied by an installed version, and no cycle may result.
    /// Installing the identical manifest again is a no-op.
    ///
    /// # Errors
    /// [`ToolRegistryError::Invalid`], [`ToolRegistryError::Exists`],
    /// [`ToolRegistryError::MissingDependency`], [`ToolRegistryError::Cycle`],
    /// [`ToolRegistryError::Full`], store failures.
    pub async fn install(&self, manifest: ToolManifest) -> Result<(), ToolRegistryError> {
        manifest.validate()?;
        let _w = self.write.lock().await;
        {
            let state = self.read();
            if let Some(existing) = state
                .tools
                .get(&manifest.name)
                .and_then(|v| v.get(&manifest.version))
            {
                return if **existing == manifest {
                    Ok(())
                } else {
                    Err(ToolRegistryError::Exists(manifest.id()))
                };
            }
            if state.count() >= TOOL_VERSIONS_MAX {
                return Err(ToolRegistryError::Full);
            }
            for (dep, req) in &manifest.dependencies {
                if state.resolve(dep, req).is_none() {
                    return Err(ToolRegistryError::MissingDependency {
                        tool: manifest.id(),
                        dependency: dep.clone(),
                        requirement: req.to_string(),
                    });
                }
            }
        }
        // Would the new version close a cycle (it may be what others resolve to)?
        {
            let mut trial = State {
                tools: self.read().tools.clone(),
                pins: self.read().pins.clone(),
            };
            let m = Arc::new(manifest.clone());
            trial
                .tools
                .entry(m.name.clone())
                .or_default()
                .insert(m.version.clone(), m.clone());
            if let Some(cycle) = trial.cycle_from(&m) {
                return Err(ToolRegistryError::Cycle(cycle));
            }
        }
        let json = serde_json::to_string(&manifest).map_err(store_err)?;
        self.records
            .put(
                &manifest_key(&manifest.name, &manifest.version),
                &ManifestRecord { json },
                Durability::Durable,
            )
            .await
            .map_err(store_err)?;
        self.write_state()
            .tools
            .entry(manifest.name.clone())
            .or_default()
            .insert(manifest.version.clone(), Arc::new(manifest));
        Ok(())
    }

    /// The version a requirement resolves to: the pinned version if it matches, otherwise the
    /// highest matching one.
    pub fn resolve(&self, requirement: &ToolRequirement) -> Option<Arc<ToolManifest>> {
        self.read().resolve(&requirement.name, &requirement.req)
    }

    /// Installed versions of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Vec<Version> {
        self.read()
            .tools
            .get(name)
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The version `name` resolves to without a requirement.
    pub fn current(&self, name: &str) -> Option<Arc<ToolManifest>> {
        self.read().resolve(name, &VersionReq::STAR)
    }

    /// Every tool's current version.
    pub fn list(&self) -> Vec<Arc<ToolManifest>> {
        let state = self.read();
        state
            .tools
            .keys()
            .filter_map(|n| state.resolve(n, &VersionReq::STAR))
            .collect()
    }

    /// Pins `name` to an installed version (a rollback when it is older than the newest);
    /// `None` unpins.
    ///
    /// # Errors
    /// [`ToolRegistryError::NotFound`], store failures.
    pub async fn pin(&self, name: &str, version: Option<Version>) -> Result<(), ToolRegistryError> {
        let _w = self.write.lock().await;
        let key = format!("{PIN_PREFIX}{name}");
        match version {
            Some(v) => {
                if !self
                    .read()
                    .tools
                    .get(name)
                    .is_some_and(|vs| vs.contains_key(&v))
                {
                    return Err(ToolRegistryError::NotFound(format!("{name}@={v}")));
                }
                self.records
                    .put(&key, &v.to_string(), Durability::Durable)
                    .await
                    .map_err(store_err)?;
                self.write_state().pins.insert(name.to_string(), v);
            }
            None => {
                self.records.delete(&key).await.map_err(store_err)?;
                self.write_state().pins.remove(name);
            }
        }
        Ok(())
    }

    /// Forgets one version on this node only, without checks and without touching the
    /// store (another node of a shared store removed it).
    pub fn forget_here(&self, name: &str, version: &Version) {
        let mut state = self.write_state();
        if let Some(vs) = state.tools.get_mut(name) {
            vs.remove(version);
            if vs.is_empty() {
                state.tools.remove(name);
            }
        }
        if state.pins.get(name) == Some(version) {
            state.pins.remove(name);
        }
    }

    /// Brings this node's view up to the store (which other nodes of a cluster write): loads
    /// the manifests installed elsewhere since, drops the ones whose records are gone unless
    /// `keep` says this node runs them (by id, `name@version`), and takes the stored pins.
    /// Returns how many changed.
    ///
    /// # Errors
    /// Store failures (nothing changes then); an unreadable manifest is skipped and logged.
    pub async fn sync_from_store(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<usize, ToolRegistryError> {
        let _w = self.write.lock().await;
        let keys = self
            .records
            .keys(MANIFEST_PREFIX, TOOL_VERSIONS_MAX)
            .await
            .map_err(store_err)?;
        let stored: std::collections::BTreeSet<&str> = keys
            .iter()
            .map(|k| k.trim_start_matches(MANIFEST_PREFIX))
            .collect();
        let known: Vec<(String, Version)> = {
            let state = self.read();
            state
                .tools
                .iter()
                .flat_map(|(name, vs)| vs.keys().map(move |v| (name.clone(), v.clone())))
                .collect()
        };
        let known_keys: std::collections::BTreeSet<String> =
            known.iter().map(|(n, v)| format!("{n}/{v}")).collect();
        let mut loaded = Vec::new();
        for key in &keys {
            if known_keys.contains(key.trim_start_matches(MANIFEST_PREFIX)) {
                continue;
            }
            let Some(r) = self
                .records
                .get::<ManifestRecord>(key)
                .await
                .map_err(store_err)?
            else {
                continue;
            };
            match ToolManifest::from_json(&r.json) {
                Ok(m) => loaded.push(m),
                Err(e) => tracing::warn!(%key, error = %e, "unreadable tool manifest in the store"),
            }
        }
        let pins = read_pins(&self.records).await?;
        let mut changed = loaded.len();
        let mut state = self.write_state();
        for m in loaded {
            state
                .tools
                .entry(m.name.clone())
                .or_default()
                .insert(m.version.clone(), Arc::new(m));
        }
        for (name, version) in known {
            if stored.contains(format!("{name}/{version}").as_str())
                || keep(&format!("{name}@{version}"))
            {
                continue;
            }
            if let Some(vs) = state.tools.get_mut(&name) {
                vs.remove(&version);
                if vs.is_empty() {
                    state.tools.remove(&name);
                }
            }
            if state.pins.get(&name) == Some(&version) {
                state.pins.remove(&name);
            }
            changed += 1;
        }
        // Pins set or cleared on another node (a pin on a version this node does not know
        // is kept: the version's manifest arrives with it).
        if pins != state.pins {
            state.pins = pins;
            changed += 1;
        }
        Ok(changed)
    }

    /// Removes one version, unless an installed tool or one of `agent_needs` (agent name and
    /// requirement) would be left without a version that satisfies it.
    ///
    /// # Errors
    /// [`ToolRegistryError::NotFound`], [`ToolRegistryError::InUse`] (naming who needs it),
    /// store failures.
    pub async fn uninstall(
        &self,
        name: &str,
        version: &Version,
        agent_needs: &[(String, ToolRequirement)],
    ) -> Result<(), ToolRegistryError> {
        let _w = self.write.lock().await;
        let mut needed_by = Vec::new();
        {
            let state = self.read();
            if !state
                .tools
                .get(name)
                .is_some_and(|v| v.contains_key(version))
            {
                return Err(ToolRegistryError::NotFound(format!("{name}@={version}")));
            }
            let mut without = State {
                tools: state.tools.clone(),
                pins: state.pins.clone(),
            };
            if let Some(vs) = without.tools.get_mut(name) {
                vs.remove(version);
            }
            for (tool, versions) in &state.tools {
                for (v, m) in versions {
                    if tool == name && v == version {
                        continue;
                    }
                    if let Some(req) = m.dependencies.get(name)
                        && state.resolve(name, req).is_some()
                        && without.resolve(name, req).is_none()
                    {
                        needed_by.push(format!("tool {} ({name}{req})", m.id()));
                    }
                }
            }
            for (agent, r) in agent_needs {
                if r.name == name
                    && state.resolve(name, &r.req).is_some()
                    && without.resolve(name, &r.req).is_none()
                {
                    needed_by.push(format!("agent {agent} ({r})"));
                }
            }
        }
        if !needed_by.is_empty() {
            return Err(ToolRegistryError::InUse {
                tool: format!("{name}@{version}"),
                needed_by,
            });
        }
        self.records
            .delete(&manifest_key(name, version))
            .await
            .map_err(store_err)?;
        if self.read().pins.get(name) == Some(version) {
            self.records
                .delete(&format!("{PIN_PREFIX}{name}"))
                .await
                .map_err(store_err)?;
        }
        self.forget_here(name, version);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aios_supervisor::snapshot::{SledStore, Snapshots};

    fn tool(name: &str, version: &str, deps: &[(&str, &str)]) -> ToolManifest {
        let deps: String = deps
            .iter()
            .map(|(d, r)| format!("{d} = \"{r}\"\n"))
            .collect();
        ToolManifest::from_toml(&format!(
            "name = \"{name}\"\nversion = \"{version}\"\ndescription = \"t\"\n\
             input_schema = {{ type = \"object\" }}\n[dependencies]\n{deps}"
        ))
        .expect("valid manifest")
    }

    fn req(s: &str) -> ToolRequirement {
        ToolRequirement::parse(s).expect("requirement")
    }

    #[tokio::test]
    async fn versions_dependencies_cycles_pins_and_removal() {
        let dir = tempfile::tempdir().expect("dir");
        let records = || {
            Records::new(Snapshots::new(Arc::new(
                SledStore::open(dir.path(), &Default::default()).expect("store"),
            )))
        };
        {
            let reg = ToolRegistry::open(records()).await.expect("open");
            assert!(matches!(
                reg.install(tool("summarise", "1.0.0", &[("fetch", "^1")]))
                    .await,
                Err(ToolRegistryError::MissingDependency { .. })
            ));
            reg.install(tool("fetch", "1.0.0", &[]))
                .await
                .expect("fetch 1.0");
            reg.install(tool("fetch", "1.2.0", &[]))
                .await
                .expect("fetch 1.2");
            reg.install(tool("fetch", "2.0.0", &[]))
                .await
                .expect("fetch 2.0");
            reg.install(tool("summarise", "1.0.0", &[("fetch", "^1")]))
                .await
                .expect("summarise");
            // Idempotent; a different manifest under the same version is refused.
            reg.install(tool("fetch", "1.0.0", &[]))
                .await
                .expect("again");
            assert!(matches!(
                reg.install(tool("fetch", "1.0.0", &[("summarise", "*")]))
                    .await,
                Err(ToolRegistryError::Exists(_))
            ));
            // fetch 1.3 depending on summarise would close fetch -> summarise -> fetch.
            match reg
                .install(tool("fetch", "1.3.0", &[("summarise", "^1")]))
                .await
            {
                Err(ToolRegistryError::Cycle(path)) => {
                    assert_eq!(path.first(), path.last());
                    assert!(path.iter().any(|p| p.starts_with("summarise")), "{path:?}");
                }
                other => panic!("expected a cycle, got {other:?}"),
            }
            assert_eq!(
                reg.resolve(&req("fetch@^1.1")).expect("resolves").version,
                Version::new(1, 2, 0)
            );
            assert_eq!(
                reg.resolve(&req("fetch")).expect("resolves").version,
                Version::new(2, 0, 0)
            );
            assert!(reg.resolve(&req("fetch@^3")).is_none());
            // Rollback by pin.
            reg.pin("fetch", Some(Version::new(1, 0, 0)))
                .await
                .expect("pin");
            assert_eq!(
                reg.resolve(&req("fetch@^1")).expect("pinned").version,
                Version::new(1, 0, 0)
            );
            assert_eq!(
                reg.resolve(&req("fetch@^2")).expect("other major").version,
                Version::new(2, 0, 0)
            );
            // Removal: 1.2 may go (1.0 still satisfies ^1); then 1.0 may not.
            let agents = vec![("writer".to_string(), req("fetch@>=1.0, <1.1"))];
            assert!(matches!(
                reg.uninstall("fetch", &Version::new(1, 0, 0), &agents).await,
                Err(ToolRegistryError::InUse { needed_by, .. }) if needed_by.iter().any(|n| n.contains("writer"))
            ));
            reg.uninstall("fetch", &Version::new(1, 2, 0), &agents)
                .await
                .expect("1.2 is not needed");
            match reg.uninstall("fetch", &Version::new(1, 0, 0), &[]).await {
                Err(ToolRegistryError::InUse { needed_by, .. }) => {
                    assert!(
                        needed_by.iter().any(|n| n.contains("summarise@1.0.0")),
                        "{needed_by:?}"
                    );
                }
                other => panic!("expected in use, got {other:?}"),
            }
        }
        // Everything, pins included, survives a reopen.
        let reg = ToolRegistry::open(records()).await.expect("reopen");
        assert_eq!(
            reg.versions("fetch"),
            vec![Version::new(1, 0, 0), Version::new(2, 0, 0)]
        );
        assert_eq!(
            reg.resolve(&req("fetch@^1")).expect("pinned").version,
            Version::new(1, 0, 0)
        );
        assert!(ToolRequirement::parse("fetch@^x").is_err());
        assert_eq!(req("fetch@^1.2").to_string(), "fetch@^1.2");
    }
}
