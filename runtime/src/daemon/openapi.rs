//! `GET /v1/openapi.json`: an OpenAPI 3.1 document registered with the routes themselves.
//! `Api::route` hands every handler to `aide`, which reads the operation from the handler's
//! types: request bodies from `ApiJson<T>`, query parameters from `ApiQuery<T>`, tenant-scoped
//! names from `Scoped<T>`, other path parameters from `Path<T>`, and error responses from
//! `Problem`; this module adds each route's least role and security, and renders the document.
//! A handler's types cannot drift from its documentation. Errors are described once, as
//! RFC 9457 problems. Response bodies are described as JSON objects until handlers return
//! typed bodies.

use aide::generate::GenContext;
use aide::openapi::{
    MediaType, Operation, Parameter, ParameterData, ParameterSchemaOrContent, PathStyle,
    RequestBody, SchemaObject,
};
use aide::operation::{OperationInput, OperationOutput, ParamLocation, add_parameters, set_body};
use aide::transform::TransformOperation;
use axum::extract::State;
use axum::http::Method;
use axum::response::IntoResponse;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde_json::{Map, Value, json};

use super::api::{Scoped, ScopedKind};
use super::http::{ApiJson, ApiJsonOptional, ApiQuery, Problem, Reach, RouteSpec, Shared};
use super::keys::Role;

/// A JSON request body, from `T`'s schema.
impl<T: JsonSchema> OperationInput for ApiJson<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        json_body::<T>(ctx, operation, true);
    }
}

/// An optional JSON request body, from `T`'s schema.
impl<T: JsonSchema> OperationInput for ApiJsonOptional<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        json_body::<T>(ctx, operation, false);
    }
}

fn json_body<T: JsonSchema>(ctx: &mut GenContext, operation: &mut Operation, required: bool) {
    let json_schema = ctx.schema.subschema_for::<T>();
    let description = ctx
        .resolve_schema(&json_schema)
        .get("description")
        .and_then(Value::as_str)
        .map(String::from);
    set_body(
        ctx,
        operation,
        RequestBody {
            description,
            content: IndexMap::from_iter([(
                "application/json".into(),
                MediaType {
                    schema: Some(SchemaObject {
                        json_schema,
                        example: None,
                        external_docs: None,
                    }),
                    ..MediaType::default()
                },
            )]),
            required,
            extensions: IndexMap::default(),
        },
    );
}

/// Query parameters, one for each field of `T`.
impl<T: JsonSchema> OperationInput for ApiQuery<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        let schema = ctx.schema.subschema_for::<T>();
        let params = aide::operation::parameters_from_schema(ctx, schema, ParamLocation::Query);
        add_parameters(ctx, operation, params);
    }
}

/// The route's tenant-scoped name (`{name}`, `{ns}`), with the name rule's schema.
impl<T: ScopedKind + JsonSchema> OperationInput for Scoped<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        let json_schema = ctx.schema.subschema_for::<T>();
        let param = Parameter::Path {
            parameter_data: ParameterData {
                name: T::PARAM.into(),
                description: Some("A name of the caller's tenant.".into()),
                required: true,
                format: ParameterSchemaOrContent::Schema(SchemaObject {
                    json_schema,
                    example: None,
                    external_docs: None,
                }),
                extensions: IndexMap::default(),
                deprecated: None,
                example: None,
                examples: IndexMap::default(),
                explode: None,
            },
            style: PathStyle::Simple,
        };
        add_parameters(ctx, operation, [param]);
    }
}

/// Every route can answer with a problem; the codes are listed by [`document`].
impl OperationOutput for Problem {
    type Inner = Self;
}

/// The status codes a `/v1` route may answer with a problem.
const PROBLEM_STATUSES: [&str; 11] = [
    "400", "401", "403", "404", "408", "409", "413", "415", "422", "429", "500",
];

/// Makes `aide` write JSON Schema 2020-12 (what OpenAPI 3.1 declares) into the document's
/// components, for the routes registered on this thread from now on.
pub(crate) fn use_openapi_31_schemas() {
    aide::generate::in_context(|ctx| {
        ctx.schema = schemars::SchemaGenerator::new(
            schemars::generate::SchemaSettings::draft2020_12().with(|s| {
                s.inline_subschemas = false;
                s.definitions_path = "#/components/schemas/".into();
            }),
        );
    });
}

/// What completes the operation of `method path`, for `aide`'s `*_with` routing functions.
pub(crate) fn describer(
    method: Method,
    path: &'static str,
    role: Role,
    reach: Reach,
) -> impl for<'t> FnOnce(TransformOperation<'t>) -> TransformOperation<'t> {
    move |op| describe(op, &method, path, role, reach)
}

/// Completes a route's operation: its id, least role, whose keys, and security.
fn describe<'t>(
    op: TransformOperation<'t>,
    method: &Method,
    path: &str,
    role: Role,
    reach: Reach,
) -> TransformOperation<'t> {
    let mut op = op
        .id(&operation_id(method.as_str(), path))
        .security_requirement("apiKey");
    let extensions = &mut op.inner_mut().extensions;
    extensions.insert("x-aios-min-role".into(), json!(role.as_str()));
    if reach == Reach::Node {
        extensions.insert("x-aios-operator-tenant-only".into(), json!(true));
    }
    op
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

/// The document: the operations registered with `routes`, completed with what every route
/// shares (problems, security, the probes outside `/v1`).
pub fn document(routes: &[RouteSpec], api: &aide::openapi::OpenApi) -> Value {
    let problem = json!({"$ref": "#/components/responses/Problem"});
    let registered = serde_json::to_value(api).unwrap_or(Value::Null);
    let mut paths = registered["paths"].as_object().cloned().unwrap_or_default();
    let mut defs = registered["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for r in routes {
        let method = r.method.as_str().to_lowercase();
        let Some(op) = paths
            .get_mut(r.path)
            .and_then(|item| item.get_mut(&method))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        complete_parameters(op, r.path);
        let mut responses = op
            .remove("responses")
            .and_then(|r| r.as_object().cloned())
            .unwrap_or_default();
        // Until handlers return typed bodies, a success is a JSON object.
        for (code, description) in [("200", "OK"), ("201", "Created")] {
            responses.entry(code).or_insert_with(|| {
                json!({"description": description, "content": {"application/json": {"schema": {"type": "object"}}}})
            });
        }
        responses
            .entry("204")
            .or_insert_with(|| json!({"description": "No content"}));
        for code in PROBLEM_STATUSES {
            responses.insert(code.into(), problem.clone());
        }
        responses.remove("default");
        op.insert("responses".into(), Value::Object(responses));
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

/// Declares the path parameters of `path` that the operation's types did not (a plain
/// `Path<String>` has no field names): each `{param}` as a required string.
fn complete_parameters(op: &mut Map<String, Value>, path: &str) {
    let mut params = op
        .remove("parameters")
        .and_then(|p| p.as_array().cloned())
        .unwrap_or_default();
    let declared = |name: &str| path.contains(&format!("{{{name}}}"));
    params.retain(|p| p["in"] != "path" || declared(p["name"].as_str().unwrap_or_default()));
    // `aide` strips `null` from an optional query parameter's type, which leaves a
    // `"default": null` that the type no longer allows.
    for p in &mut params {
        if let Some(schema) = p.get_mut("schema").and_then(Value::as_object_mut)
            && schema.get("default") == Some(&Value::Null)
        {
            schema.remove("default");
        }
    }
    for name in path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    {
        if !params
            .iter()
            .any(|p| p["in"] == "path" && p["name"] == name)
        {
            params.push(
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}),
            );
        }
    }
    op.insert("parameters".into(), Value::Array(params));
}

static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();

/// `GET /v1/openapi.json`.
pub async fn openapi(State(_): State<Shared>) -> axum::response::Response {
    axum::Json(
        DOCUMENT
            .get_or_init(|| {
                let (_, table, api) = super::api::routes().into_parts();
                document(&table, &api)
            })
            .clone(),
    )
    .into_response()
}
