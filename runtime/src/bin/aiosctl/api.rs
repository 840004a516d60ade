//! The client of `aiosd`'s API and the printing of its answers.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

pub(crate) struct Api {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
    pub(crate) key: Option<String>,
}

impl Api {
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = self.send(req).await?;
        let status = resp.status();
        let text = resp.text().await.context("reading the answer")?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let detail = value["detail"]
                .as_str()
                .or_else(|| value["error"]["message"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            bail!("{method} {path}: {status}: {detail}");
        }
        Ok(value)
    }

    /// Sends `req` (to a path of this API) with the key, for answers read as they come.
    pub(crate) async fn send(
        &self,
        mut req: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        req.send()
            .await
            .with_context(|| format!("cannot reach {} (is aiosd running?)", self.url))
    }

    /// Shows the placement at `path`, or sets it when any of the options is given.
    pub(crate) async fn placement(
        &self,
        path: &str,
        node: Option<String>,
        tags: Vec<String>,
        least_loaded: bool,
        reset: bool,
    ) -> anyhow::Result<()> {
        if node.is_none() && tags.is_empty() && !least_loaded && !reset {
            show(&self.get(path).await?)
        } else {
            let body = json!({"node": node, "tags": tags, "least_loaded": least_loaded});
            show(&self.call(reqwest::Method::PUT, path, Some(body)).await?)
        }
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// Prints a JSON answer, indented.
pub(crate) fn show(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) fn table(rows: &[Value], columns: &[(&str, &str)]) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(columns.iter().map(|(h, _)| *h));
    for r in rows {
        t.add_row(columns.iter().map(|(_, pointer)| match r.pointer(pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "-".into(),
            Some(v) => v.to_string(),
        }));
    }
    println!("{t}");
}

pub(crate) fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

/// Prints an API list: its JSON with `--json`, else its `items` as a table of `columns`
/// (header, JSON pointer).
pub(crate) fn listing(v: &Value, json_out: bool, columns: &[(&str, &str)]) -> anyhow::Result<()> {
    if json_out {
        show(v)
    } else {
        table(&items(v), columns);
        Ok(())
    }
}
