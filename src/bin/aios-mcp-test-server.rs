//! A small MCP server for tests, benchmarks and as an example of a server AIOS can take
//! tools from: over stdio by default, or over streamable HTTP with `--http 127.0.0.1:PORT`
//! (it prints `listening http://ADDR/mcp` once it accepts connections).
//!
//! Tools: `echo` (text back), `add` (structured output with an output schema), `sleep`
//! (waits, for calls in flight), `pid` (its process id), `fail` (an MCP tool error) and
//! `exit` (the process exits in the middle of the call).

use std::time::Duration;

use anyhow::Context as _;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{Json, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, JsonSchema)]
struct EchoRequest {
    /// The text to send back.
    text: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct AddRequest {
    a: i64,
    b: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
struct AddResult {
    sum: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct SleepRequest {
    /// How long to wait, in milliseconds (at most 60,000).
    ms: u64,
    /// A file created when the call starts (tests wait for it to know a call is in flight).
    #[serde(default)]
    started_file: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct Empty {}

#[derive(Clone)]
struct TestServer {
    #[expect(dead_code, reason = "read by the code #[tool_handler] generates")]
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl TestServer {
    fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "Sends the text back")]
    async fn echo(&self, Parameters(r): Parameters<EchoRequest>) -> String {
        r.text
    }

    #[tool(description = "Adds two integers")]
    async fn add(&self, Parameters(r): Parameters<AddRequest>) -> Result<Json<AddResult>, String> {
        r.a.checked_add(r.b)
            .map(|sum| Json(AddResult { sum }))
            .ok_or_else(|| "overflow".to_string())
    }

    #[tool(description = "Waits, then answers")]
    async fn sleep(&self, Parameters(r): Parameters<SleepRequest>) -> String {
        if let Some(path) = &r.started_file
            && let Err(e) = std::fs::write(path, b"started")
        {
            return format!("cannot write {path}: {e}");
        }
        tokio::time::sleep(Duration::from_millis(r.ms.min(60_000))).await;
        format!("slept {} ms", r.ms)
    }

    #[tool(description = "The server's process id")]
    async fn pid(&self, Parameters(_): Parameters<Empty>) -> String {
        std::process::id().to_string()
    }

    #[tool(description = "Always fails with a tool error")]
    async fn fail(&self, Parameters(_): Parameters<Empty>) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text("it failed on purpose")])
    }

    #[tool(description = "Exits the server process during the call")]
    async fn exit(&self, Parameters(_): Parameters<Empty>) -> String {
        std::process::exit(3)
    }
}

#[tool_handler]
impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("aios-mcp-test-server", env!("CARGO_PKG_VERSION")),
        )
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            let running = TestServer::new()
                .serve(rmcp::transport::stdio())
                .await
                .context("serving MCP on stdio")?;
            running.waiting().await.context("MCP service")?;
            Ok(())
        }
        [flag, addr] if flag == "--http" => {
            use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
            use rmcp::transport::streamable_http_server::{
                StreamableHttpServerConfig, StreamableHttpService,
            };
            let service = StreamableHttpService::new(
                || Ok(TestServer::new()),
                LocalSessionManager::default().into(),
                StreamableHttpServerConfig::default(),
            );
            let router = axum::Router::new().nest_service("/mcp", service);
            let listener = tokio::net::TcpListener::bind(addr.as_str())
                .await
                .with_context(|| format!("binding {addr}"))?;
            println!("listening http://{}/mcp", listener.local_addr()?);
            axum::serve(listener, router)
                .await
                .context("serving HTTP")?;
            Ok(())
        }
        _ => anyhow::bail!("usage: aios-mcp-test-server [--http ADDR]"),
    }
}
