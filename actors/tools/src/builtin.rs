//! Built-in plugin tools with their manifests: `web_fetch` (HTTP GET limited to an
//! allow-list of hosts), `files` (read and write inside a sandbox directory), and
//! `memory_save` / `memory_search` (the node's vector memory).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use super::manifest::ToolManifest;
use aios_core::{Tool, ToolContext, ToolError, ToolSpec};
use aios_memory::{MemoryMeta, MemoryStore, NewMemory, SearchRequest};

/// The largest body `web_fetch` returns, in bytes (longer bodies are cut).
pub const FETCH_BODY_MAX: usize = 256 * 1024;
/// The largest file `files` reads or writes, in bytes.
pub const FILE_LEN_MAX: usize = 1024 * 1024;

fn manifest(toml: &str) -> ToolManifest {
    // The built-in manifests are constants validated by this module's tests.
    ToolManifest::from_toml(toml).expect("a valid built-in manifest")
}

/// Redirect hops `web_fetch` follows at most.
const REDIRECTS_MAX: usize = 5;

/// True when `host` (with `port`) matches an allow-list entry: `host`, `host:port`, or
/// `*.suffix` (subdomains only). Hosts compare case-insensitively.
fn host_allowed(allowed: &[String], host: &str, port: Option<u16>) -> bool {
    let host = host.to_ascii_lowercase();
    let with_port = port.map(|p| format!("{host}:{p}"));
    allowed.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        a == host
            || with_port.as_deref() == Some(a.as_str())
            || a.strip_prefix("*.")
                .is_some_and(|suffix| host.ends_with(&format!(".{suffix}")))
    })
}

/// `web_fetch`: GET a URL whose host is on the allow-list.
#[derive(Debug)]
pub struct WebFetch {
    allowed_hosts: Vec<String>,
    /// For hosts named exactly in the allow-list (the operator's own destinations).
    client: Option<reqwest::Client>,
    /// For hosts that match only a wildcard: connects where the outbound guard allows.
    guarded: Option<reqwest::Client>,
    guard: aios_core::outbound::OutboundGuard,
}

/// Whether `host` is named exactly (not by a wildcard) in `allowed`.
fn host_named(allowed: &[String], host: &str, port: Option<u16>) -> bool {
    let host = host.to_ascii_lowercase();
    let with_port = port.map(|p| format!("{host}:{p}"));
    allowed.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        a == host || with_port.as_deref() == Some(a.as_str())
    })
}

impl WebFetch {
    /// A fetcher for `allowed_hosts` (`example.com`, `*.docs.rs`, `127.0.0.1:8080`), with the
    /// default outbound guard (no internal network allowed).
    pub fn new(allowed_hosts: Vec<String>) -> Self {
        Self::with_guard(allowed_hosts, aios_core::outbound::OutboundGuard::default())
    }

    /// As [`WebFetch::new`], with `guard` for hosts that match only a wildcard.
    pub fn with_guard(
        allowed_hosts: Vec<String>,
        guard: aios_core::outbound::OutboundGuard,
    ) -> Self {
        let hosts = allowed_hosts.clone();
        let on_list = std::sync::Arc::new(move |url: &reqwest::Url| {
            let ok = matches!(url.scheme(), "http" | "https")
                && url
                    .host_str()
                    .is_some_and(|h| host_allowed(&hosts, h, url.port()));
            if ok {
                Ok(())
            } else {
                Err("redirect to a host not on this tool's allow-list".to_string())
            }
        });
        let exact = allowed_hosts.clone();
        // The trusted client follows redirects only to hosts named exactly; one to a
        // wildcard host is refused (fetch it directly, through the guard).
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= REDIRECTS_MAX {
                return attempt.error("too many redirects");
            }
            let url = attempt.url();
            let ok = matches!(url.scheme(), "http" | "https")
                && url
                    .host_str()
                    .is_some_and(|h| host_named(&exact, h, url.port()));
            if ok {
                attempt.follow()
            } else {
                attempt.error("redirect to a host not named on this tool's allow-list")
            }
        });
        let client = reqwest::Client::builder().redirect(policy).build().ok();
        let guarded = guard.client(reqwest::Client::builder(), Some(on_list)).ok();
        Self {
            allowed_hosts,
            client,
            guarded,
            guard,
        }
    }

    /// Its manifest.
    pub fn manifest() -> ToolManifest {
        manifest(
            r#"
name = "web_fetch"
version = "1.0.0"
description = "Fetches a web page over HTTP(S) from an allowed host and returns its status and text."
timeout = "30s"
concurrency_max = 8
input_schema = { type = "object", properties = { url = { type = "string", pattern = "^https?://" } }, required = ["url"], additionalProperties = false }
output_schema = { type = "object", properties = { status = { type = "integer" }, body = { type = "string" }, truncated = { type = "boolean" } }, required = ["status", "body"] }
capabilities = [{ name = "web" }]
"#,
        )
    }

    fn allowed(&self, host: &str, port: Option<u16>) -> bool {
        host_allowed(&self.allowed_hosts, host, port)
    }
}

#[async_trait::async_trait]
impl Tool for WebFetch {
    fn spec(&self) -> ToolSpec {
        Self::manifest().spec()
    }

    async fn call(&self, args: Value, _: &ToolContext) -> Result<Value, ToolError> {
        let url = args["url"].as_str().unwrap_or_default();
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad url: {e}"))?;
        let host = parsed.host_str().unwrap_or_default();
        if !matches!(parsed.scheme(), "http" | "https") || !self.allowed(host, parsed.port()) {
            return Err(format!("host {host} is not on this tool's allow-list").into());
        }
        let client = if host_named(&self.allowed_hosts, host, parsed.port()) {
            self.client.as_ref()
        } else {
            self.guard.check_url(&parsed).map_err(|e| e.to_string())?;
            self.guarded.as_ref()
        }
        .ok_or("the HTTP client could not be built")?;
        let mut response = client
            .get(parsed)
            .send()
            .await
            .map_err(|e| format!("fetch failed: {}", aios_core::outbound::error_chain(&e)))?;
        let status = response.status().as_u16();
        // Read at most FETCH_BODY_MAX bytes, whatever the server sends.
        let mut bytes = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the body failed: {e}"))?
        {
            let room = FETCH_BODY_MAX - bytes.len();
            if chunk.len() > room {
                bytes.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = String::from_utf8_lossy(&bytes).into_owned();
        Ok(json!({"status": status, "body": body, "truncated": truncated}))
    }
}

/// `files`: read and write files inside a sandbox directory of the calling agent instance:
/// `<root>/<tenant>/<agent>/<instance>`, each part percent-encoded, so no tenant, agent or
/// instance reaches another's files by path, link or name.
#[derive(Debug)]
pub struct Files {
    root: PathBuf,
}

/// One path component for `name`: bytes other than `A-Z a-z 0-9 - _` percent-encoded (so
/// `..` is `%2E%2E` and `/` cannot split it), the empty name `%`. Distinct names give
/// distinct components.
fn component(name: &str) -> String {
    if name.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Files {
    /// A sandbox rooted at `root` (created if missing).
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, String> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let root = root
            .canonicalize()
            .map_err(|e| format!("{}: {e}", root.display()))?;
        Ok(Self { root })
    }

    /// Its manifest.
    pub fn manifest() -> ToolManifest {
        manifest(
            r#"
name = "files"
version = "1.0.0"
description = "Reads or writes a text file inside the agent's sandbox directory (relative paths only)."
timeout = "10s"
concurrency_max = 4
input_schema = { type = "object", properties = { op = { enum = ["read", "write"] }, path = { type = "string", minLength = 1 }, content = { type = "string" } }, required = ["op", "path"], additionalProperties = false }
output_schema = { type = "object" }
capabilities = [{ name = "files" }]
[[examples]]
name = "write a note"
input = { op = "write", path = "examples/note.txt", content = "hello" }
output = { written = 5 }
[[examples]]
name = "read it back"
input = { op = "read", path = "examples/note.txt" }
output = { content = "hello" }
"#,
        )
    }

    /// The sandbox of the caller of `ctx`: its tenant's, agent's and instance's directory.
    pub fn sandbox_of(&self, ctx: &ToolContext) -> PathBuf {
        let (agent, instance) = ctx
            .agent
            .as_ref()
            .map_or(("", ""), |a| (a.name.as_str(), a.key.as_str()));
        self.root
            .join(component(&ctx.tenant))
            .join(component(agent))
            .join(component(instance))
    }

    /// Resolves `rel` inside the sandbox of `ctx`'s caller, refusing absolute paths, `..` and
    /// symlinks out.
    fn resolve(&self, ctx: &ToolContext, rel: &str) -> Result<PathBuf, String> {
        let root = self.sandbox_of(ctx);
        std::fs::create_dir_all(&root).map_err(|e| format!("the sandbox: {e}"))?;
        Self::resolve_in(&root, rel)
    }

    fn resolve_in(root: &Path, rel: &str) -> Result<PathBuf, String> {
        let rel = Path::new(rel);
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err("path must be relative, without '..'".into());
        }
        let path = root.join(rel);
        // No component below the root may be a symbolic link (dangling ones included): a
        // link could point anywhere, now or after this check.
        let mut at = root.to_path_buf();
        for c in rel.components() {
            if let Component::Normal(part) = c {
                at.push(part);
                match std::fs::symlink_metadata(&at) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err("path goes through a symbolic link".into());
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        Ok(path)
    }
}

#[async_trait::async_trait]
impl Tool for Files {
    fn spec(&self) -> ToolSpec {
        Self::manifest().spec()
    }

    async fn call(&self, args: Value, ctx: &ToolContext) -> Result<Value, ToolError> {
        let path = self.resolve(ctx, args["path"].as_str().unwrap_or_default())?;
        match args["op"].as_str() {
            Some("read") => {
                let meta = tokio::fs::metadata(&path)
                    .await
                    .map_err(|e| format!("cannot read: {e}"))?;
                if meta.len() as usize > FILE_LEN_MAX {
                    return Err(format!("file larger than {FILE_LEN_MAX} bytes").into());
                }
                let text = tokio::fs::read_to_string(&path)
                    .await
                    .map_err(|e| format!("cannot read: {e}"))?;
                Ok(json!({"content": text}))
            }
            Some("write") => {
                let content = args["content"].as_str().unwrap_or_default();
                if content.len() > FILE_LEN_MAX {
                    return Err(format!("content larger than {FILE_LEN_MAX} bytes").into());
                }
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| format!("cannot write: {e}"))?;
                }
                tokio::fs::write(&path, content)
                    .await
                    .map_err(|e| format!("cannot write: {e}"))?;
                Ok(json!({"written": content.len()}))
            }
            _ => Err("op must be read or write".into()),
        }
    }
}

/// `memory_save` and `memory_search` over the node's memory.
#[derive(Debug)]
pub struct MemoryTool {
    store: MemoryStore,
    search: bool,
    /// Namespaces a save may create per tenant, at most.
    namespaces_max: Option<usize>,
}

impl MemoryTool {
    /// The save tool and the search tool.
    pub fn pair(store: MemoryStore, namespaces_max: Option<usize>) -> (Arc<Self>, Arc<Self>) {
        (
            Arc::new(Self {
                store: store.clone(),
                search: false,
                namespaces_max,
            }),
            Arc::new(Self {
                store,
                search: true,
                namespaces_max,
            }),
        )
    }

    /// The manifests of the save and the search tool.
    pub fn manifests() -> (ToolManifest, ToolManifest) {
        (
            manifest(
                r#"
name = "memory_save"
version = "1.0.0"
description = "Saves a note in one of the caller's tenant's memory namespaces."
input_schema = { type = "object", properties = { namespace = { type = "string" }, text = { type = "string", minLength = 1 }, tags = { type = "array", items = { type = "string" } } }, required = ["namespace", "text"], additionalProperties = false }
capabilities = [{ name = "memory" }]
"#,
            ),
            manifest(
                r#"
name = "memory_search"
version = "1.0.0"
description = "Finds the notes in a memory namespace most related to a query."
input_schema = { type = "object", properties = { namespace = { type = "string" }, query = { type = "string" }, k = { type = "integer", minimum = 1, maximum = 50 } }, required = ["namespace", "query"], additionalProperties = false }
capabilities = [{ name = "memory" }]
"#,
            ),
        )
    }
}

#[async_trait::async_trait]
impl Tool for MemoryTool {
    fn spec(&self) -> ToolSpec {
        let (save, search) = Self::manifests();
        if self.search {
            search.spec()
        } else {
            save.spec()
        }
    }

    async fn call(&self, args: Value, ctx: &ToolContext) -> Result<Value, ToolError> {
        // Each tenant has its own namespaces: `<tenant>.<namespace>`.
        let requested = args["namespace"].as_str().unwrap_or_default();
        let tenant = if ctx.tenant.is_empty() {
            "default"
        } else {
            &ctx.tenant
        };
        let scoped = format!("{tenant}.{requested}");
        let ns = scoped.as_str();
        if self.search {
            let k = args["k"].as_u64().unwrap_or(5) as usize;
            let found = self
                .store
                .search(
                    ns,
                    SearchRequest::text(args["query"].as_str().unwrap_or_default(), k),
                )
                .await
                .map_err(|e| e.to_string())?;
            let hits: Vec<Value> = found
                .hits
                .iter()
                .map(|h| json!({"text": h.text, "similarity": h.similarity}))
                .collect();
            Ok(json!({"hits": hits, "partial": found.partial}))
        } else {
            // A save may create the namespace, within the tenant's limit.
            if let Some(max) = self.namespaces_max {
                let prefix = format!("{tenant}.");
                let names = self.store.namespaces();
                let exists = names.iter().any(|n| n.name == ns);
                let owned = names.iter().filter(|n| n.name.starts_with(&prefix)).count();
                if !exists && owned >= max {
                    return Err(format!(
                        "tenant {tenant} has {owned} memory namespaces, the most it may have"
                    )
                    .into());
                }
            }
            self.store
                .ensure_namespace(ns)
                .await
                .map_err(|e| e.to_string())?;
            let tags = args["tags"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let ids = self
                .store
                .remember(
                    ns,
                    vec![NewMemory {
                        text: args["text"].as_str().unwrap_or_default().to_string(),
                        vector: None,
                        meta: MemoryMeta {
                            agent: ctx.agent.as_ref().map(|a| a.name.clone()),
                            tags,
                            ..MemoryMeta::default()
                        },
                    }],
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({"id": ids.first()}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_manifests_are_valid_and_the_sandbox_holds() {
        let _ = WebFetch::manifest();
        let _ = Files::manifest();
        let _ = MemoryTool::manifests();
        let dir = tempfile::tempdir().expect("dir");
        let files = Files::new(dir.path().join("sandbox")).expect("sandbox");
        let ctx = ToolContext::default();
        assert!(files.resolve(&ctx, "notes/a.txt").is_ok());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/nonexistent/target", files.sandbox_of(&ctx).join("link"))
                .expect("symlink");
            assert!(
                files.resolve(&ctx, "link").is_err(),
                "a dangling link is refused"
            );
            assert!(files.resolve(&ctx, "link/below").is_err());
        }
        assert!(files.resolve(&ctx, "../escape").is_err());
        assert!(files.resolve(&ctx, "/etc/passwd").is_err());
        let fetch = WebFetch::new(vec![
            "example.com".into(),
            "*.docs.rs".into(),
            "127.0.0.1:8080".into(),
        ]);
        assert!(fetch.allowed("example.com", None));
        assert!(fetch.allowed("api.docs.rs", None));
        assert!(fetch.allowed("127.0.0.1", Some(8080)));
        assert!(!fetch.allowed("127.0.0.1", Some(9090)));
        assert!(!fetch.allowed("evil.com", None));
        assert!(!fetch.allowed("docs.rs.evil.com", None));
    }

    fn caller(tenant: &str, agent: &str, instance: &str) -> ToolContext {
        ToolContext {
            agent: Some(aios_core::AgentId {
                name: agent.into(),
                key: instance.into(),
            }),
            tenant: tenant.into(),
            ..ToolContext::default()
        }
    }

    #[tokio::test]
    async fn each_tenant_agent_and_instance_has_a_sandbox_of_its_own() {
        let dir = tempfile::tempdir().expect("dir");
        let files = Files::new(dir.path().join("sandbox")).expect("sandbox");
        let acme = caller("acme", "acme.writer", "main");
        files
            .call(
                json!({"op": "write", "path": "secret.txt", "content": "plans"}),
                &acme,
            )
            .await
            .expect("write");
        let read = |ctx: ToolContext| {
            let files = &files;
            async move {
                files
                    .call(json!({"op": "read", "path": "secret.txt"}), &ctx)
                    .await
            }
        };
        assert_eq!(
            read(acme.clone()).await.expect("its own")["content"],
            "plans"
        );
        // Another tenant's agent of the same name, another agent, another instance, and names
        // made to look like paths: none of them finds the file.
        for other in [
            caller("evil", "acme.writer", "main"),
            caller("evil", "evil.writer", "main"),
            caller("acme", "acme.reader", "main"),
            caller("acme", "acme.writer", "session-2"),
            caller("acme", "..", ".."),
            caller("acme", "acme.writer/main", ""),
            caller("", "", ""),
        ] {
            assert!(read(other.clone()).await.is_err(), "{other:?}");
        }
        // Nor through a path: `..` is refused whatever the caller.
        let evil = caller("evil", "evil.writer", "main");
        let up = files
            .call(
                json!({"op": "read", "path": "../../../acme/acme%2Ewriter/main/secret.txt"}),
                &evil,
            )
            .await;
        assert!(up.is_err());
        assert_ne!(component(".."), component("%2E%2E"));
        assert_eq!(component(".."), "%2E%2E");
        assert_eq!(component("a/b"), "a%2Fb");
    }

    /// A wildcard host that resolves to an internal address is refused before connecting;
    /// the same address named exactly by the operator is fetched.
    #[tokio::test]
    async fn web_fetch_guards_wildcard_hosts_and_trusts_hosts_named_exactly() {
        use aios_core::outbound::{OutboundGuard, StaticResolver};
        use futures_util::FutureExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let guard = OutboundGuard::default().with_resolver(Arc::new(StaticResolver::new(vec![
            ("intranet.corp.test", vec!["10.0.0.7".parse().unwrap()]),
            ("rebind.corp.test", vec!["127.0.0.1".parse().unwrap()]),
            ("meta.corp.test", vec!["169.254.169.254".parse().unwrap()]),
        ])));
        let fetch = WebFetch::with_guard(vec!["*.corp.test".into()], guard.clone());
        let ctx = ToolContext::default();
        for (host, kind) in [
            ("rebind.corp.test", "loopback"),
            ("intranet.corp.test", "private"),
            ("meta.corp.test", "cloud-metadata"),
        ] {
            let e = fetch
                .call(json!({"url": format!("http://{host}:{port}/")}), &ctx)
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains(kind), "{host}: {e}");
        }
        assert!(
            listener.accept().now_or_never().is_none(),
            "a refused fetch connected"
        );
        // Named exactly by the operator: trusted (a local service), and it connects.
        let exact = WebFetch::with_guard(vec![format!("127.0.0.1:{port}")], guard);
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await
                .unwrap();
        });
        let got = exact
            .call(json!({"url": format!("http://127.0.0.1:{port}/")}), &ctx)
            .await
            .expect("fetched");
        assert_eq!(got["body"], "ok");
        server.await.unwrap();
    }
}
