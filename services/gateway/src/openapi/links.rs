//! OpenAPI links: from each operation that makes something to the operations that read or
//! change it, with where the new thing's id is in the answer. A client generated from the
//! document (and the API fuzz's stateful phase) follows them from an answer to the next request.

use serde_json::{Map, Value, json};

use super::Op;

/// `(from, answer status, to, parameter of "to", where its value is in the answer)`, by
/// operation id.
const LINKS: &[(&str, u16, &str, &str, &str)] = &[
    ("submitTask", 202, "getTask", "id", "$response.body#/id"),
    ("submitTask", 202, "followTask", "id", "$response.body#/id"),
    ("submitTask", 202, "cancelTask", "id", "$response.body#/id"),
    ("submitTask", 200, "getTask", "id", "$response.body#/id"),
    (
        "submitBatch",
        202,
        "getTask",
        "id",
        "$response.body#/tasks/0/id",
    ),
    (
        "submitBatch",
        202,
        "cancelTask",
        "id",
        "$response.body#/tasks/0/id",
    ),
    ("callTool", 200, "getTask", "id", "$response.body#/id"),
    ("callTool", 202, "getTask", "id", "$response.body#/id"),
    ("callTool", 202, "cancelTask", "id", "$response.body#/id"),
    (
        "replayDeadLetter",
        202,
        "getTask",
        "id",
        "$response.body#/id",
    ),
    (
        "createSession",
        201,
        "getSession",
        "id",
        "$response.body#/id",
    ),
    (
        "createSession",
        201,
        "deleteSession",
        "id",
        "$response.body#/id",
    ),
    (
        "createAgent",
        201,
        "getAgent",
        "name",
        "$response.body#/name",
    ),
    (
        "createAgent",
        201,
        "updateAgent",
        "name",
        "$response.body#/name",
    ),
    ("createKey", 201, "getKey", "id", "$response.body#/key/id"),
    (
        "createKey",
        201,
        "revokeKey",
        "id",
        "$response.body#/key/id",
    ),
];

/// Writes [`LINKS`] into the answers of `paths` (`paths[path][method].responses[status]`).
pub(super) fn add(paths: &mut Map<String, Value>, ops: &[Op]) {
    for (from, status, to, parameter, value) in LINKS {
        let op = ops
            .iter()
            .find(|op| op.id == *from)
            .unwrap_or_else(|| panic!("no operation {from}"));
        assert!(
            ops.iter().any(|op| op.id == *to),
            "a link to an unknown operation {to}"
        );
        let answer = &mut paths[op.path][op.method]["responses"][status.to_string()];
        assert!(answer.is_object(), "{from} has no {status} answer");
        answer["links"][*to] = json!({
            "operationId": to,
            "parameters": {*parameter: value},
        });
    }
}
