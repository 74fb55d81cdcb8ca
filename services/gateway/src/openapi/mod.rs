//! The OpenAPI 3.1 document of the HTTP API, generated from the code: the operations are listed
//! here, next to the router, and every body's schema is the JSON Schema (2020-12, the dialect of
//! OpenAPI 3.1) that schemars derives from the very contract types serde reads and writes, so
//! the document cannot describe a field the code does not have.
//!
//! Request bodies are described as they are read (fields with defaults are optional) and
//! answers as they are written (fields always written are required). `schemas/openapi.json` is
//! this document, committed; a test fails when the two differ, and another when a route of the
//! router is missing here (or the reverse). Served at `/api/v1/openapi.json`, browsable at
//! `/api/v1/docs`.

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};
use wharf_contract::Problem;

mod links;
mod operations;

use operations::{Op, operations};

/// Generates the schemas of request and answer bodies into one `components.schemas`.
struct Schemas {
    input: SchemaGenerator,
    output: SchemaGenerator,
}

impl Schemas {
    fn new() -> Schemas {
        let settings =
            |s: SchemaSettings| s.with(|s| s.definitions_path = "/components/schemas".into());
        Schemas {
            input: settings(SchemaSettings::draft2020_12())
                .for_deserialize()
                .into_generator(),
            output: settings(SchemaSettings::draft2020_12())
                .for_serialize()
                .into_generator(),
        }
    }

    /// A request body's schema (a `$ref` for named types).
    fn input<T: schemars::JsonSchema>(&mut self) -> Value {
        self.input.subschema_for::<T>().to_value()
    }

    /// An answer's schema.
    fn output<T: schemars::JsonSchema>(&mut self) -> Value {
        self.output.subschema_for::<T>().to_value()
    }

    /// Every named schema. A type read and written differently (its written form has required
    /// fields its read form defaults) keeps its name for the written form; the read form is
    /// `<Name>Input`, and the `$ref`s of request bodies are renamed to match.
    fn components(mut self, paths: &mut Value) -> Map<String, Value> {
        let mut out = self.output.take_definitions(true);
        let input = self.input.take_definitions(true);
        let renamed: Vec<String> = input
            .iter()
            .filter(|(name, schema)| out.get(*name).is_some_and(|o| o != *schema))
            .map(|(name, _)| name.clone())
            .collect();
        let rename = |v: &mut Value| {
            let mut text = v.to_string();
            for name in &renamed {
                text = text.replace(
                    &format!("\"#/components/schemas/{name}\""),
                    &format!("\"#/components/schemas/{name}Input\""),
                );
            }
            *v = serde_json::from_str(&text).expect("still JSON");
        };
        for (name, mut schema) in input {
            rename(&mut schema);
            if renamed.contains(&name) {
                out.insert(format!("{name}Input"), schema);
            } else {
                out.entry(name).or_insert(schema);
            }
        }
        // Only request bodies point at input schemas.
        if let Some(map) = paths.as_object_mut() {
            for item in map.values_mut() {
                for op in item
                    .as_object_mut()
                    .into_iter()
                    .flat_map(|o| o.values_mut())
                {
                    if let Some(body) = op.get_mut("requestBody") {
                        rename(body);
                    }
                }
            }
        }
        out
    }
}

/// The whole document.
pub fn document() -> Value {
    let mut s = Schemas::new();
    let problem = s.output::<Problem>();
    let ops = operations(&mut s);
    let mut paths = Map::new();
    for op in &ops {
        let item = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        item[op.method] = op.to_value(&problem);
    }
    links::add(&mut paths, &ops);
    let mut paths = Value::Object(paths);
    let mut schemas = s.components(&mut paths);
    new_agent(&mut schemas);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Wharf",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A queue-backed worker platform for MCP tools: submit long-running \
                tool calls, follow them, cancel them. Every error is RFC 9457 problem+json \
                with a stable code. The WebSocket API (/ws/v1/tasks) is described in \
                docs/api.md.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`wharf_…`) or a JWT from the configured issuer."
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
            }
        }
    })
}

/// `NewAgent`, the body of `POST /api/v1/agents`: the agent spec a `PUT` takes (its read form),
/// with `name` required, since no path names the agent.
fn new_agent(schemas: &mut Map<String, Value>) {
    let mut spec = schemas
        .get("AgentSpecInput")
        .or_else(|| schemas.get("AgentSpec"))
        .cloned()
        .expect("the agent spec is in the document");
    let required = spec["required"]
        .as_array_mut()
        .expect("a spec has required fields");
    required.push(json!("name"));
    spec["properties"]["name"]["type"] = json!("string");
    spec["description"] = json!("`POST /api/v1/agents` body: an agent spec with its name.");
    schemas.insert("NewAgent".into(), spec);
}

/// The routes the document lists, as `METHOD path`.
#[cfg(test)]
pub fn documented_routes() -> Vec<String> {
    let mut s = Schemas::new();
    operations(&mut s)
        .iter()
        .map(|op| format!("{} {}", op.method.to_uppercase(), op.path))
        .collect()
}

/// `GET /api/v1/openapi.json`
pub async fn serve_document() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(|| {
        serde_json::to_string_pretty(&document()).expect("the document serialises")
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.as_str(),
    )
        .into_response()
}

/// `GET /api/v1/docs`: Swagger UI on the document. Its script and stylesheet are served by the
/// gateway itself (vendored, `assets/`), so the page works with no internet access.
pub async fn docs_page() -> Html<&'static str> {
    Html(include_str!("../../assets/docs.html"))
}

/// `GET /api/v1/docs/{file}`: Swagger UI's files.
pub async fn docs_asset(crate::problem::Segment(file): crate::problem::Segment) -> Response {
    let (body, kind): (&'static [u8], &'static str) = match file.as_str() {
        "swagger-ui-bundle.js" => (
            include_bytes!("../../assets/swagger-ui-bundle.js"),
            "text/javascript; charset=utf-8",
        ),
        "swagger-ui.css" => (
            include_bytes!("../../assets/swagger-ui.css"),
            "text/css; charset=utf-8",
        ),
        _ => {
            return crate::ApiError::new(
                wharf_contract::ErrorCode::NotFound,
                format!("nothing at /api/v1/docs/{file}"),
            )
            .into_response();
        }
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    /// `schemas/openapi.json` is what the code generates. `WHARF_BLESS=1` rewrites it.
    #[test]
    fn the_committed_document_matches_the_code() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/openapi.json");
        let want = serde_json::to_string_pretty(&super::document()).unwrap() + "\n";
        if std::env::var_os("WHARF_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "schemas/openapi.json is out of date: run `WHARF_BLESS=1 cargo test -p wharf-gateway`"
        );
    }

    /// Every route the router serves is documented, and nothing else: the router is read from
    /// its source, `.route("<path>", get(..).post(..))`.
    #[test]
    fn the_document_lists_exactly_the_routes_of_the_router() {
        let source = include_str!("../router.rs");
        let mut routed = BTreeSet::new();
        for chunk in source.split(".route(").skip(1) {
            let Some(chunk) = chunk.trim_start().strip_prefix('"') else {
                continue;
            };
            let (path, rest) = chunk.split_once('"').unwrap();
            let call = &rest[..rest.find("))").map_or(rest.len(), |i| i + 2)];
            for method in ["get", "post", "put", "delete", "patch"] {
                if call.contains(&format!("{method}(")) {
                    routed.insert(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        // Not HTTP request and answer: described in docs/api.md.
        routed.remove("GET /ws/v1/tasks");
        // Swagger UI's own files.
        routed.remove("GET /api/v1/docs/{file}");
        // Inbound webhooks: the body is the sender's own format and the credential its
        // signature; described in docs/wiring.md.
        routed.remove("POST /hooks/{name}");
        let documented: BTreeSet<String> = super::documented_routes().into_iter().collect();
        assert_eq!(routed, documented);
    }

    #[test]
    fn every_reference_resolves() {
        let doc = super::document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"").skip(1) {
            let target = r.split('"').next().unwrap();
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("a reference outside the components: {target}"));
            assert!(schemas.contains_key(name), "{target} is not defined");
        }
    }

    /// Every link names an operation and one of its parameters, and takes its value from the
    /// answer it hangs on.
    #[test]
    fn every_link_fills_a_parameter_of_its_operation() {
        let doc = super::document();
        let mut ops = std::collections::BTreeMap::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                ops.insert(op["operationId"].as_str().unwrap().to_owned(), op.clone());
            }
        }
        for op in ops.values() {
            for answer in op["responses"].as_object().unwrap().values() {
                for link in answer["links"]
                    .as_object()
                    .into_iter()
                    .flat_map(|l| l.values())
                {
                    let target = &ops[link["operationId"].as_str().unwrap()];
                    for (name, value) in link["parameters"].as_object().unwrap() {
                        assert!(
                            target["parameters"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .any(|p| p["name"] == *name),
                            "{} has no parameter {name}",
                            link["operationId"]
                        );
                        let pointer = value.as_str().unwrap();
                        let path = pointer.strip_prefix("$response.body#/").unwrap();
                        let body = &answer["content"]["application/json"]["schema"];
                        assert!(
                            field_of(&doc, body, path).is_some(),
                            "{pointer} names no field of the answer it hangs on"
                        );
                    }
                }
            }
        }
    }

    /// The schema of the field at `path` (`key/id`, `tasks/0/id`) of a body of `schema`.
    fn field_of<'a>(
        doc: &'a serde_json::Value,
        schema: &'a serde_json::Value,
        path: &str,
    ) -> Option<&'a serde_json::Value> {
        let resolve = |s: &'a serde_json::Value| match s["$ref"].as_str() {
            Some(r) => doc.pointer(r.trim_start_matches('#')),
            None => Some(s),
        };
        path.split('/').try_fold(resolve(schema)?, |s, step| {
            let next = if step.parse::<usize>().is_ok() {
                &s["items"]
            } else {
                s["properties"].get(step)?
            };
            resolve(next)
        })
    }
}
