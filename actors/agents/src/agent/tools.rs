//! An agent's view of tools: the [`ToolBox`] of a node (its registered tools, and the plugin
//! tools of a [`ToolSource`]), and two built-in tools. Every tool, plugin tools (manifests,
//! MCP, permissions) included, is an `aios_core` [`Tool`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use aios_core::Capability;

use aios_core::tool::{Schema, ToolRequirement};
pub use aios_core::tool::{
    TOOL_OUTPUT_LEN_MAX, TOOL_TIMEOUT, Tool, ToolContext, ToolError, ToolSource, ToolSpec,
};

/// The tools of a node by name, and the plugin tools of a [`ToolSource`] (the node's tool
/// service).
/// Cheap to clone.
///
/// An agent definition lists tools as `name` or `name@requirement` (`web_fetch@^1.2`). A
/// plain name is looked up among the registered tools first, then among the plugin tools
/// (newest or pinned version); a requirement always goes to the plugin tools, so an agent can
/// stay on a version while newer ones are installed beside it.
#[derive(Clone, Default)]
pub struct ToolBox {
    tools: Arc<BTreeMap<String, Arc<dyn Tool>>>,
    /// Compiled argument schemas, by tool name: arguments are checked before a tool runs.
    schemas: Arc<BTreeMap<String, Arc<Schema>>>,
    plugins: Option<Arc<dyn ToolSource>>,
}

impl std::fmt::Debug for ToolBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tools.keys()).finish()
    }
}

impl ToolBox {
    /// A toolbox with the built-in tools (`calculator`, `clock`).
    pub fn with_builtins() -> Self {
        let mut b = Self::default();
        b.register(Arc::new(Calculator));
        b.register(Arc::new(Clock));
        b
    }

    /// Adds (or replaces) a tool.
    pub fn register(&mut self, tool: Arc<dyn Tool>) {
        let spec = tool.spec();
        match Schema::compile(&spec.parameters) {
            Ok(schema) => {
                Arc::make_mut(&mut self.schemas).insert(spec.name.clone(), Arc::new(schema));
            }
            Err(e) => {
                tracing::warn!(tool = %spec.name, error = %e, "tool argument schema does not compile; arguments go unchecked");
                Arc::make_mut(&mut self.schemas).remove(&spec.name);
            }
        }
        Arc::make_mut(&mut self.tools).insert(spec.name, tool);
    }

    /// Resolves plugin tools (installed at any time, MCP servers' included) through
    /// `source`.
    pub fn with_plugins(mut self, source: impl ToolSource) -> Self {
        self.plugins = Some(Arc::new(source));
        self
    }

    /// The tool an agent's list entry (`name` or `name@requirement`) stands for.
    pub fn get(&self, entry: &str) -> Option<Arc<dyn Tool>> {
        let (name, pinned) = split_entry(entry);
        if !pinned && let Some(t) = self.tools.get(name) {
            return Some(t.clone());
        }
        let source = self.plugins.as_ref()?;
        source.resolve(ToolRequirement::parse(entry).ok()?)
    }

    /// Every tool's name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    /// The specs of the listed tools that exist (entries as in [`ToolBox::get`]).
    pub fn specs(&self, entries: &[String]) -> Vec<ToolSpec> {
        entries
            .iter()
            .filter_map(|e| self.get(e))
            .map(|t| t.spec())
            .collect()
    }

    /// Runs `name` with the model's raw `arguments` if `allowed` lists it, with the timeout;
    /// output longer than [`TOOL_OUTPUT_LEN_MAX`] is cut.
    ///
    /// # Errors
    /// [`ToolError`].
    pub async fn call(
        &self,
        allowed: &[String],
        name: &str,
        arguments: &str,
        ctx: &ToolContext,
    ) -> Result<String, ToolError> {
        // The model names a tool without a version; the agent's entry for it says which.
        let entry = allowed
            .iter()
            .find(|a| split_entry(a).0 == name)
            .ok_or_else(|| ToolError::NotAvailable(name.to_string()))?;
        let tool = self
            .get(entry)
            .ok_or_else(|| ToolError::NotAvailable(name.to_string()))?;
        let args: Value = if arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(arguments).map_err(|e| {
                ToolError::InvalidArguments(format!(
                    "arguments are not valid JSON ({e}): {arguments}"
                ))
            })?
        };
        // Checked before the tool runs: the model gets the violations back and can correct
        // its call.
        // (A pinned plugin tool is checked by the tool service against its own version.)
        if !split_entry(entry).1
            && let Some(schema) = self.schemas.get(name)
        {
            schema
                .check(&args)
                .map_err(|v| ToolError::InvalidArguments(v.to_string()))?;
        }
        let mut out = match tokio::time::timeout(TOOL_TIMEOUT, tool.call(args, ctx))
            .await
            .map_err(|_| ToolError::Timeout(TOOL_TIMEOUT))??
        {
            Value::String(s) => s,
            other => other.to_string(),
        };
        if out.len() > TOOL_OUTPUT_LEN_MAX {
            let mut cut = TOOL_OUTPUT_LEN_MAX;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push_str(" [output cut]");
        }
        Ok(out)
    }
}

/// `web_fetch@^1.2` → (`web_fetch`, true); `calculator` → (`calculator`, false).
fn split_entry(entry: &str) -> (&str, bool) {
    match entry.split_once('@') {
        Some((name, _)) => (name.trim(), true),
        None => (entry.trim(), false),
    }
}

/// `calculator`: evaluates an arithmetic expression (`{"expression": "12 * (3 + 4)"}`).
#[derive(Debug)]
pub struct Calculator;

#[async_trait::async_trait]
impl Tool for Calculator {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "calculator".into(),
            description: "Evaluates an arithmetic expression, e.g. 12 * (3 + 4) / 2.".into(),
            parameters: json!({"type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"]}),
        }
    }

    fn capabilities(&self) -> Vec<Capability> {
        vec![Capability::named("arithmetic").with("cost_class", "free")]
    }

    async fn call(&self, args: Value, _ctx: &ToolContext) -> Result<Value, ToolError> {
        let expr = args
            .get("expression")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ToolError::InvalidArguments("expected {\"expression\": string}".into())
            })?;
        if expr.len() > 1024 {
            return Err(ToolError::InvalidArguments(
                "expression longer than 1024 bytes".into(),
            ));
        }
        // Integers would make 7/2 = 3: evaluate in floating point.
        let float_expr = to_float_literals(expr);
        match evalexpr::eval(&float_expr) {
            Ok(evalexpr::Value::Float(f)) if f.fract() == 0.0 && f.abs() < 1e15 => {
                Ok(Value::String(format!("{}", f as i64)))
            }
            Ok(v) => Ok(Value::String(v.to_string())),
            Err(e) => Err(ToolError::Failed(format!("cannot evaluate {expr:?}: {e}"))),
        }
    }
}

fn to_float_literals(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len() + 8);
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let lit: String = chars[start..i].iter().collect();
            out.push_str(&lit);
            if !lit.contains('.') {
                out.push_str(".0");
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// `clock`: the current UTC time (seconds since the Unix epoch and RFC 3339).
#[derive(Debug)]
pub struct Clock;

#[async_trait::async_trait]
impl Tool for Clock {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "clock".into(),
            description: "Returns the current UTC time.".into(),
            parameters: json!({"type": "object", "properties": {}}),
        }
    }

    async fn call(&self, _args: Value, _ctx: &ToolContext) -> Result<Value, ToolError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        Ok(json!({"unix_s": now.as_secs()}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calculator_and_toolbox_checks() {
        let tb = ToolBox::with_builtins();
        let allowed = vec!["calculator".to_string()];
        let ctx = ToolContext::default();
        assert_eq!(
            tb.call(
                &allowed,
                "calculator",
                r#"{"expression":"12 * (3 + 4)"}"#,
                &ctx
            )
            .await,
            Ok("84".into())
        );
        assert_eq!(
            tb.call(&allowed, "calculator", r#"{"expression":"7/2"}"#, &ctx)
                .await,
            Ok("3.5".into())
        );
        assert!(matches!(
            tb.call(&allowed, "calculator", "{\"expression\": 1+", &ctx)
                .await,
            Err(ToolError::InvalidArguments(_))
        ));
        // Checked against the tool's schema before it runs, with a message the model can use.
        match tb
            .call(&allowed, "calculator", r#"{"expr": "1 + 1"}"#, &ctx)
            .await
        {
            Err(ToolError::InvalidArguments(m)) => assert!(m.contains("expression"), "{m}"),
            other => panic!("expected a schema error, got {other:?}"),
        }
        assert_eq!(
            tb.call(&allowed, "clock", "{}", &ctx).await,
            Err(ToolError::NotAvailable("clock".into()))
        );
        assert!(matches!(
            tb.call(&allowed, "calculator", r#"{"expression":"1 +"}"#, &ctx)
                .await,
            Err(ToolError::Failed(_))
        ));
    }
}
