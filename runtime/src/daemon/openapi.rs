//! `GET /v1/openapi.json`: an OpenAPI 3.1 document generated from the route table (every
//! route, its method, path parameters, least role and security) and from the request body
//! types (JSON Schemas derived with `schemars`), so it cannot drift from the router. Errors
//! are described once, as RFC 9457 problems. Response bodies are described as JSON objects;
//! their exact schemas are not generated yet.

use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};

use super::http::{RouteSpec, Shared};

/// The JSON Schema of each route's request body, by method and path.
fn request_schema(method: &str, path: &str) -> Option<Value> {
    use schemars::schema_for;
    let schema = match (method, path) {
        ("POST", "/v1/agents") | ("PUT", "/v1/agents/{name}") => {
            schema_for!(aios_actors::agent::AgentDef)
        }
        ("POST", "/v1/agents/{name}/messages") => schema_for!(super::api::MessageBody),
        ("POST", "/v1/chat/completions") => schema_for!(super::openai::ChatRequestIn),
        ("POST", "/v1/tree/restart" | "/v1/tree/stop" | "/v1/tree/kill") => {
            schema_for!(super::api::RestartBody)
        }
        ("POST", "/v1/mcp-servers") => schema_for!(aios_actors::tools::McpServerConfig),
        ("POST", "/v1/cluster/drain") => schema_for!(super::api::DrainBody),
        ("PUT", "/v1/agents/{name}/placement" | "/v1/memory/namespaces/{ns}/placement") => {
            schema_for!(aios_actors::agent::Placement)
        }
        ("POST", "/v1/memory/namespaces") => schema_for!(super::api::NamespaceBody),
        ("POST", "/v1/memory/namespaces/{ns}/items") => schema_for!(super::api::ItemsBody),
        ("POST", "/v1/memory/namespaces/{ns}/search") => schema_for!(super::api::SearchBody),
        ("POST", "/v1/memory/namespaces/{ns}/erase") => schema_for!(super::api::EraseBody),
        ("POST", "/v1/keys") => schema_for!(super::api::NewKeyBody),
        ("POST", "/v1/keys/{id}/rotate") => schema_for!(super::api::RotateBody),
        ("POST", "/v1/webhooks") => schema_for!(super::api::HookBody),
        ("POST", "/v1/runs") => schema_for!(super::runs::RunBody),
        ("POST", "/v1/schedules") => {
            schema_for!(aios_actors::orchestration::schedule::ScheduleSpec)
        }
        ("POST", "/v1/runs/{id}/steps/{step}/decision") => schema_for!(super::runs::DecisionBody),
        ("POST", "/v1/sessions") => schema_for!(super::runs::SessionBody),
        ("POST", "/v1/sessions/{id}/messages") => schema_for!(super::runs::SayBody),
        _ => return None,
    };
    serde_json::to_value(schema).ok()
}

fn params(method: &str, path: &str) -> Vec<Value> {
    let mut out: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
        })
        .collect();
    for (name, ty) in query_params(method, path) {
        out.push(json!({"name": name, "in": "query", "required": false, "schema": {"type": ty}}));
    }
    out
}

/// The query parameters of the routes that take some: name and JSON type.
fn query_params(method: &str, path: &str) -> &'static [(&'static str, &'static str)] {
    match (method, path) {
        ("GET", "/v1/audit") => &[
            ("after", "integer"),
            ("limit", "integer"),
            ("tenant", "string"),
            ("key_id", "string"),
            ("action", "string"),
            ("outcome", "string"),
            ("since_ms", "integer"),
            ("until_ms", "integer"),
            ("node", "string"),
            ("cursor", "string"),
        ],
        ("GET", "/v1/metrics/history") => &[("since_ms", "integer")],
        ("GET", "/v1/usage/disk") => &[("refresh", "boolean")],
        ("GET", "/v1/agents/{name}/history") => &[
            ("session", "string"),
            ("from", "integer"),
            ("limit", "integer"),
        ],
        _ => &[],
    }
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_lowercase();
    for seg in path.trim_start_matches("/v1/").split('/') {
        let seg = seg.trim_start_matches('{').trim_end_matches('}');
        id.push('_');
        id.extend(
            seg.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id
}

/// Moves a schema's `$defs` into `defs` and points its references at
/// `#/components/schemas/…`, where the document keeps them.
fn hoist_defs(schema: &mut Value, defs: &mut Map<String, Value>) {
    if let Some(Value::Object(local)) = schema.as_object_mut().and_then(|o| o.remove("$defs")) {
        for (name, mut def) in local {
            rewrite_refs(&mut def);
            defs.insert(name, def);
        }
    }
    rewrite_refs(schema);
}

fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/$defs/")
            {
                *r = format!("#/components/schemas/{name}");
            }
            o.values_mut().for_each(rewrite_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// The document for `routes`.
pub fn document(routes: &[RouteSpec]) -> Value {
    let problem = json!({"$ref": "#/components/responses/Problem"});
    let mut paths = Map::new();
    let mut defs = Map::new();
    for r in routes {
        let method = r.method.as_str();
        let mut op = json!({
            "operationId": operation_id(method, r.path),
            "x-aios-min-role": r.role.as_str(),
            "security": [{"apiKey": []}],
            "parameters": params(method, r.path),
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                "201": {"description": "Created", "content": {"application/json": {"schema": {"type": "object"}}}},
                "204": {"description": "No content"},
                "400": problem, "401": problem, "403": problem, "404": problem,
                "409": problem, "413": problem, "415": problem, "422": problem,
                "429": problem, "500": problem
            }
        });
        if let Some(mut schema) = request_schema(method, r.path) {
            hoist_defs(&mut schema, &mut defs);
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema}}
            });
        }
        let entry = paths
            .entry(r.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[method.to_lowercase()] = op;
    }
    for probe in ["/healthz", "/readyz", "/metrics"] {
        paths.insert(
            probe.into(),
            json!({"get": {
                "operationId": format!("get_{}", probe.trim_start_matches('/')),
                "security": [],
                "responses": {"200": {"description": "OK"}, "503": problem}
            }}),
        );
    }
    defs.insert(
        "Problem".into(),
        json!({
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string"}, "title": {"type": "string"},
                "status": {"type": "integer"}, "detail": {"type": "string"}
            }
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "AIOS daemon API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "aiosd: agents, runs, sessions, memory, tools, keys, audit, webhooks. Every /v1 route needs an API key (Authorization: Bearer aios_…) with at least the role in x-aios-min-role."
        },
        "security": [{"apiKey": []}],
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": defs,
            "responses": {"Problem": {
                "description": "An RFC 9457 problem",
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
            }}
        },
        "paths": paths
    })
}

static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();

/// `GET /v1/openapi.json`.
pub async fn openapi(State(_): State<Shared>) -> impl IntoResponse {
    axum::Json(
        DOCUMENT
            .get_or_init(|| document(&super::api::routes().into_parts().1))
            .clone(),
    )
}
