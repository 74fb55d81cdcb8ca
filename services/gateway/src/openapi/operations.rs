//! The operations of the HTTP API, one entry each: path, method, permission, parameters,
//! body and answers. The route table (`router.rs`) and this list are checked against each
//! other by a test.

use serde_json::{Map, Value, json};
use wharf_contract::rules;
use wharf_contract::{
    Agent, AgentList, AgentSpec, ApiKeyInfo, ApiKeyList, AuditList, CallTool, ConfigHistory,
    ConfigView, CreateKey, CreateSession, CreatedKey, DeadLetter, DeadLetterList, DeletedSession,
    Delivery, DeliveryList, Identity, Permission, QueueInfo, QueueList, Session, SessionList,
    SubmitBatch, SubmitTask, TaskBatch, TaskList, TaskView, ToolList, UpdateConfig, WorkerList,
};

use super::Schemas;

/// One query or path parameter.
fn param(name: &str, at: &str, schema: Value, description: &str) -> Value {
    json!({
        "name": name,
        "in": at,
        "required": at == "path",
        "description": description,
        "schema": schema,
    })
}

fn id_param(what: &str) -> Value {
    param(
        "id",
        "path",
        json!({"type": "string", "format": "uuid"}),
        &format!("The {what}'s id."),
    )
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

/// An operation: its answers beyond the problem every error is.
pub(super) struct Op {
    pub(super) method: &'static str,
    pub(super) path: &'static str,
    pub(super) id: &'static str,
    pub(super) tag: &'static str,
    pub(super) summary: &'static str,
    pub(super) permission: Option<Permission>,
    pub(super) parameters: Vec<Value>,
    pub(super) body: Option<Value>,
    pub(super) responses: Vec<(u16, &'static str, Option<Value>)>,
}

impl Op {
    pub(super) fn to_value(&self, problem: &Value) -> Value {
        let mut responses = Map::new();
        for (status, description, content) in &self.responses {
            let mut r = json!({"description": description});
            if let Some(c) = content {
                r["content"] = c.clone();
            }
            if matches!(status, 201 | 202) {
                r["headers"] = json!({"Location": {
                    "description": "Where the created or accepted resource is read.",
                    "schema": {"type": "string"}
                }});
            }
            responses.insert(status.to_string(), r);
        }
        responses.insert(
            "default".into(),
            json!({
                "description": "Any error: RFC 9457 problem+json with a stable `code` (see the \
                                Problem schema's `code` for the table).",
                "content": {"application/problem+json": {"schema": problem}}
            }),
        );
        let mut op = json!({
            "operationId": self.id,
            "tags": [self.tag],
            "summary": self.summary,
            "responses": responses,
        });
        match self.permission {
            Some(p) => {
                op["description"] = json!(format!("Needs the permission `{p}`."));
                op["x-permission"] = json!(p.as_str());
            }
            None if self.tag == "health" || self.id == "openapi" || self.id == "docs" => {
                op["security"] = json!([]);
            }
            None => op["description"] = json!("Any authenticated caller."),
        }
        if !self.parameters.is_empty() {
            op["parameters"] = json!(self.parameters);
        }
        if let Some(b) = &self.body {
            op["requestBody"] = json!({"required": true, "content": json_content(b.clone())});
        }
        op
    }
}

fn limit_param(size: rules::PageSize) -> Value {
    param(
        "limit",
        "query",
        json!({"type": "integer", "minimum": 1, "maximum": size.max}),
        &format!("Page size (default {}).", size.default),
    )
}

fn cursor_param(schema: Value) -> Value {
    param(
        "cursor",
        "query",
        schema,
        "`next_cursor` of the previous page.",
    )
}

fn tenant_param() -> Value {
    param(
        "tenant",
        "query",
        json!({"type": "string"}),
        "Another tenant's (needs `tenants:admin`).",
    )
}

/// Every operation of the HTTP API. The WebSocket (`/ws/v1/tasks`) is not HTTP request and
/// answer, so it is described in docs/api.md instead.
pub(super) fn operations(s: &mut Schemas) -> Vec<Op> {
    use Permission::*;
    let task = s.output::<TaskView>();
    let name_schema = json!({"type": "string", "pattern": rules::NAME_PATTERN});
    vec![
        Op {
            method: "post",
            path: "/api/v1/tasks",
            id: "submitTask",
            tag: "tasks",
            summary: "Submit a task",
            permission: Some(TasksSubmit),
            parameters: vec![param(
                "Idempotency-Key",
                "header",
                json!({
                    "type": "string",
                    "minLength": rules::KEY_CHARS.start(),
                    "maxLength": rules::KEY_CHARS.end(),
                    "pattern": "^[\\x21-\\x7e]([\\x20-\\x7e]*[\\x21-\\x7e])?$",
                    "not": {"pattern": rules::RESERVED_KEY_PATTERN},
                }),
                "The same as `idempotency_key` in the body (visible ASCII).",
            )],
            body: Some(s.input::<SubmitTask>()),
            responses: vec![
                (202, "Accepted: stored durably, queued.", Some(json_content(task.clone()))),
                (200, "The task this idempotency key already names.", Some(json_content(task.clone()))),
            ],
        },
        Op {
            method: "get",
            path: "/api/v1/tasks",
            id: "listTasks",
            tag: "tasks",
            summary: "List the tenant's tasks, newest first",
            permission: Some(TasksRead),
            parameters: vec![
                param("status", "query", json!({"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"]}), "Only tasks in this state."),
                param("queue", "query", json!({"type": "string"}), "Only this queue's tasks."),
                param("session_id", "query", json!({"type": "string"}), "Only this session's tasks."),
                param("priority", "query", json!({"type": "string", "enum": ["high", "normal", "low"]}), "Only this level."),
                param("agent", "query", json!({"type": "string"}), "Only tasks submitted with this agent."),
                param("tool", "query", json!({"type": "string"}), "Only this tool's tasks (`<server>.<tool>`)."),
                param("created_after", "query", json!({"type": "string", "format": "date-time"}), "Only tasks submitted at or after this time (RFC 3339)."),
                param("created_before", "query", json!({"type": "string", "format": "date-time"}), "Only tasks submitted before this time (RFC 3339)."),
                param("view", "query", json!({"type": "string", "enum": ["summary", "full"], "default": "summary"}), "`summary` leaves each task's `arguments`, `metadata` and `result` out (read one task for them); `full` includes them."),
                limit_param(rules::TASKS_PAGE),
                cursor_param(json!({"type": "string", "format": "uuid"})),
            ],
            body: None,
            responses: vec![(200, "A page of tasks.", Some(json_content(s.output::<TaskList>())))],
        },
        Op {
            method: "post",
            path: "/api/v1/tasks/batch",
            id: "submitBatch",
            tag: "tasks",
            summary: "Submit up to 1,000 tasks at once, all or none",
            permission: Some(TasksSubmit),
            parameters: vec![],
            body: Some(s.input::<SubmitBatch>()),
            responses: vec![(202, "Every task stored durably.", Some(json_content(s.output::<TaskBatch>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/tasks/{id}",
            id: "getTask",
            tag: "tasks",
            summary: "Read a task",
            permission: Some(TasksRead),
            parameters: vec![id_param("task")],
            body: None,
            responses: vec![(200, "The task.", Some(json_content(task.clone())))],
        },
        Op {
            method: "post",
            path: "/api/v1/tasks/{id}/cancel",
            id: "cancelTask",
            tag: "tasks",
            summary: "Cancel a queued or running task",
            permission: Some(TasksCancel),
            parameters: vec![id_param("task")],
            body: None,
            responses: vec![(202, "Cancellation requested; the task ends `cancelled`.", Some(json_content(task.clone())))],
        },
        Op {
            method: "get",
            path: "/api/v1/tasks/{id}/events",
            id: "followTask",
            tag: "tasks",
            summary: "Follow a task's events (Server-Sent Events): history, then live",
            permission: Some(TasksRead),
            parameters: vec![
                id_param("task"),
                param("access_token", "query", json!({"type": "string"}), "An API key or token, for clients that cannot set headers."),
            ],
            body: None,
            responses: vec![(200, "A stream of events, history first, ending after the terminal one.", Some(json!({"text/event-stream": {"schema": {
                "description": "One event: `event` the message type, `id` the event's sequence in the task's history, `data` the message as JSON.",
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"type": "string"},
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": s.output::<wharf_contract::WsServerMessage>()
                    }
                }
            }}})))],
        },
        Op {
            method: "get",
            path: "/api/v1/tasks/{id}/deliveries",
            id: "listTaskDeliveries",
            tag: "callbacks",
            summary: "A task's callback deliveries in order, with every attempt",
            permission: Some(TasksRead),
            parameters: vec![id_param("task")],
            body: None,
            responses: vec![(200, "The task's deliveries.", Some(json_content(s.output::<DeliveryList>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/deliveries",
            id: "listDeliveries",
            tag: "callbacks",
            summary: "The tenant's callback deliveries, newest first",
            permission: Some(TasksRead),
            parameters: vec![
                param("status", "query", json!({"type": "string", "enum": ["pending", "delivered", "failed"]}), "Only deliveries in this state."),
                limit_param(rules::PageSize { default: 100, max: 1000 }),
                cursor_param(json!({"type": "string", "pattern": crate::callbacks::CURSOR_PATTERN})),
            ],
            body: None,
            responses: vec![(200, "A page of deliveries.", Some(json_content(s.output::<DeliveryList>())))],
        },
        Op {
            method: "post",
            path: "/api/v1/deliveries/{id}/redeliver",
            id: "redeliver",
            tag: "callbacks",
            summary: "Deliver a callback again, whatever came of it before",
            permission: Some(TasksSubmit),
            parameters: vec![param("id", "path", json!({"type": "string"}), "The delivery's id (`<task id>-<event sequence>`).")],
            body: None,
            responses: vec![(200, "The delivery, pending again.", Some(json_content(s.output::<Delivery>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/dlq",
            id: "listDeadLetters",
            tag: "dead letters",
            summary: "List the tenant's dead letters, oldest first",
            permission: Some(DlqRead),
            parameters: vec![limit_param(rules::DLQ_PAGE), cursor_param(json!({"type": "string", "pattern": "^[0-9]+$"}))],
            body: None,
            responses: vec![(200, "A page of dead letters.", Some(json_content(s.output::<DeadLetterList>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/dlq/{id}",
            id: "getDeadLetter",
            tag: "dead letters",
            summary: "Read a dead letter",
            permission: Some(DlqRead),
            parameters: vec![id_param("dead task")],
            body: None,
            responses: vec![(200, "The dead letter.", Some(json_content(s.output::<DeadLetter>())))],
        },
        Op {
            method: "post",
            path: "/api/v1/dlq/{id}/replay",
            id: "replayDeadLetter",
            tag: "dead letters",
            summary: "Submit a dead task again, as a new task",
            permission: Some(DlqReplay),
            parameters: vec![id_param("dead task")],
            body: None,
            responses: vec![
                (202, "The new task, queued.", Some(json_content(task.clone()))),
                (200, "The task an earlier replay of this letter made.", Some(json_content(task.clone()))),
            ],
        },
        Op {
            method: "get",
            path: "/api/v1/tools",
            id: "listTools",
            tag: "tools",
            summary: "The tool catalog, from the workers, by name",
            permission: Some(ToolsRead),
            parameters: vec![
                param("server", "query", json!({"type": "string"}), "Only this MCP server's tools."),
                param("q", "query", json!({"type": "string"}), "Only tools whose name or description holds this (any case)."),
            ],
            body: None,
            responses: vec![(200, "The tools workers serve.", Some(json_content(s.output::<ToolList>())))],
        },
        Op {
            method: "post",
            path: "/api/v1/tools/{name}/call",
            id: "callTool",
            tag: "tools",
            summary: "Run a tool through the queue and wait for its result",
            permission: Some(TasksSubmit),
            parameters: vec![
                param("name", "path", json!({"type": "string"}), "The tool, `<server>.<tool>`."),
                param("wait", "query", json!({"type": "string", "pattern": rules::WAIT_PATTERN}), "How long to wait for the end: `30`, `30s` or `1500ms`, at most 50 s (default 30 s)."),
            ],
            body: Some(s.input::<CallTool>()),
            responses: vec![
                (200, "The task ended within the wait: its result or error.", Some(json_content(task.clone()))),
                (202, "Still running after the wait: the task, to follow or read later.", Some(json_content(task.clone()))),
            ],
        },
        Op {
            method: "post",
            path: "/api/v1/sessions",
            id: "createSession",
            tag: "sessions",
            summary: "Create a session (24 h by default)",
            permission: Some(SessionsWrite),
            parameters: vec![],
            body: Some(s.input::<CreateSession>()),
            responses: vec![(201, "The session.", Some(json_content(s.output::<Session>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/sessions",
            id: "listSessions",
            tag: "sessions",
            summary: "The tenant's live sessions, newest first",
            permission: Some(SessionsRead),
            parameters: vec![limit_param(rules::SESSIONS_PAGE), cursor_param(json!({"type": "string", "format": "uuid"}))],
            body: None,
            responses: vec![(200, "A page of sessions.", Some(json_content(s.output::<SessionList>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/sessions/{id}",
            id: "getSession",
            tag: "sessions",
            summary: "Read a session (live, expired or deleted)",
            permission: Some(SessionsRead),
            parameters: vec![id_param("session")],
            body: None,
            responses: vec![(200, "The session.", Some(json_content(s.output::<Session>())))],
        },
        Op {
            method: "delete",
            path: "/api/v1/sessions/{id}",
            id: "deleteSession",
            tag: "sessions",
            summary: "Delete a session, cancelling its queued and running tasks",
            permission: Some(SessionsWrite),
            parameters: vec![id_param("session")],
            body: None,
            responses: vec![(200, "The session and the tasks cancelled.", Some(json_content(s.output::<DeletedSession>())))],
        },
        Op {
            method: "post",
            path: "/api/v1/agents",
            id: "createAgent",
            tag: "agents",
            summary: "Create an agent: allowed tools and defaults for the tasks submitted with it",
            permission: Some(AgentsWrite),
            parameters: vec![],
            // The spec of a `PUT`, with its name required (see `super::new_agent`).
            body: Some(json!({"$ref": "#/components/schemas/NewAgent"})),
            responses: vec![(201, "The agent, revision 1.", Some(json_content(s.output::<Agent>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/agents",
            id: "listAgents",
            tag: "agents",
            summary: "The tenant's agents, by name",
            permission: Some(AgentsRead),
            parameters: vec![],
            body: None,
            responses: vec![(200, "The agents.", Some(json_content(s.output::<AgentList>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/agents/{name}",
            id: "getAgent",
            tag: "agents",
            summary: "Read an agent",
            permission: Some(AgentsRead),
            parameters: vec![param("name", "path", name_schema.clone(), "The agent's name.")],
            body: None,
            responses: vec![(200, "The agent.", Some(json_content(s.output::<Agent>())))],
        },
        Op {
            method: "put",
            path: "/api/v1/agents/{name}",
            id: "updateAgent",
            tag: "agents",
            summary: "Replace an agent's spec (a new revision)",
            permission: Some(AgentsWrite),
            parameters: vec![param("name", "path", name_schema.clone(), "The agent's name.")],
            body: Some(s.input::<AgentSpec>()),
            responses: vec![(200, "The agent, one revision on.", Some(json_content(s.output::<Agent>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/workers",
            id: "listWorkers",
            tag: "operations",
            summary: "Live workers",
            permission: Some(OpsRead),
            parameters: vec![],
            body: None,
            responses: vec![(200, "The workers alive now.", Some(json_content(s.output::<WorkerList>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/queues",
            id: "listQueues",
            tag: "operations",
            summary: "Queues: waiting, in flight, oldest, workers, finished",
            permission: Some(OpsRead),
            parameters: vec![],
            body: None,
            responses: vec![(200, "Every known queue.", Some(json_content(s.output::<QueueList>())))],
        },
        Op {
            method: "post",
            path: "/api/v1/queues/{name}/pause",
            id: "pauseQueue",
            tag: "operations",
            summary: "Pause a queue: it accepts tasks, workers take none",
            permission: Some(OpsWrite),
            parameters: vec![param("name", "path", name_schema.clone(), "The queue's name.")],
            body: None,
            responses: vec![(200, "The queue, paused.", Some(json_content(s.output::<QueueInfo>())))],
        },
        Op {
            method: "post",
            path: "/api/v1/queues/{name}/resume",
            id: "resumeQueue",
            tag: "operations",
            summary: "Resume a paused queue",
            permission: Some(OpsWrite),
            parameters: vec![param("name", "path", name_schema.clone(), "The queue's name.")],
            body: None,
            responses: vec![(200, "The queue, taking tasks again.", Some(json_content(s.output::<QueueInfo>())))],
        },
        Op {
            method: "get",
            path: "/metrics",
            id: "metrics",
            tag: "operations",
            summary: "Prometheus metrics",
            permission: Some(OpsRead),
            parameters: vec![],
            body: None,
            responses: vec![(200, "The Prometheus text format.", Some(json!({"text/plain": {"schema": {"type": "string"}}})))],
        },
        Op {
            method: "post",
            path: "/api/v1/keys",
            id: "createKey",
            tag: "keys",
            summary: "Create an API key (its secret is shown only in this answer)",
            permission: Some(KeysAdmin),
            parameters: vec![],
            body: Some(s.input::<CreateKey>()),
            responses: vec![(201, "The key and its secret.", Some(json_content(s.output::<CreatedKey>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/keys",
            id: "listKeys",
            tag: "keys",
            summary: "List the tenant's API keys, newest first",
            permission: Some(KeysAdmin),
            parameters: vec![tenant_param()],
            body: None,
            responses: vec![(200, "The keys, never their secrets.", Some(json_content(s.output::<ApiKeyList>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/keys/{id}",
            id: "getKey",
            tag: "keys",
            summary: "Read an API key",
            permission: Some(KeysAdmin),
            parameters: vec![id_param("key")],
            body: None,
            responses: vec![(200, "The key.", Some(json_content(s.output::<ApiKeyInfo>())))],
        },
        Op {
            method: "delete",
            path: "/api/v1/keys/{id}",
            id: "revokeKey",
            tag: "keys",
            summary: "Revoke an API key, on every gateway at once",
            permission: Some(KeysAdmin),
            parameters: vec![id_param("key")],
            body: None,
            responses: vec![(200, "The key, with `revoked_at`.", Some(json_content(s.output::<ApiKeyInfo>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/whoami",
            id: "whoami",
            tag: "keys",
            summary: "Who the credentials are",
            permission: None,
            parameters: vec![],
            body: None,
            responses: vec![(200, "The caller.", Some(json_content(s.output::<Identity>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/audit",
            id: "listAudit",
            tag: "audit",
            summary: "The tenant's audit log, newest first",
            permission: Some(AuditRead),
            parameters: vec![
                param("action", "query", json!({"type": "string"}), "Only this action, e.g. `task.submit`."),
                param("tenant", "query", json!({"type": "string", "pattern": format!("^({}|\\*)$", rules::NAME_PATTERN.trim_start_matches('^').trim_end_matches('$'))}), "Another tenant's, or `*` for all (needs `tenants:admin`)."),
                limit_param(rules::AUDIT_PAGE),
                cursor_param(json!({"type": "string", "format": "uuid"})),
            ],
            body: None,
            responses: vec![(200, "A page of entries.", Some(json_content(s.output::<AuditList>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/config",
            id: "getConfig",
            tag: "configuration",
            summary: "The runtime settings in force: rate limits, queue defaults, session life",
            permission: Some(ConfigRead),
            parameters: vec![],
            body: None,
            responses: vec![(200, "The settings and their revision.", Some(json_content(s.output::<ConfigView>())))],
        },
        Op {
            method: "put",
            path: "/api/v1/config",
            id: "updateConfig",
            tag: "configuration",
            summary: "Replace the runtime settings (every gateway applies them at once)",
            permission: Some(ConfigWrite),
            parameters: vec![],
            body: Some(s.input::<UpdateConfig>()),
            responses: vec![(200, "The settings in force, one revision on.", Some(json_content(s.output::<ConfigView>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/config/revisions",
            id: "listConfigRevisions",
            tag: "configuration",
            summary: "Every change of the runtime settings, newest first: who, when, what",
            permission: Some(ConfigRead),
            parameters: vec![limit_param(rules::CONFIG_PAGE)],
            body: None,
            responses: vec![(200, "The revisions.", Some(json_content(s.output::<ConfigHistory>())))],
        },
        Op {
            method: "get",
            path: "/api/v1/openapi.json",
            id: "openapi",
            tag: "documentation",
            summary: "This document",
            permission: None,
            parameters: vec![],
            body: None,
            responses: vec![(200, "OpenAPI 3.1.", Some(json!({"application/json": {"schema": {"type": "object"}}})))],
        },
        Op {
            method: "get",
            path: "/api/v1/docs",
            id: "docs",
            tag: "documentation",
            summary: "This document, browsable (Swagger UI)",
            permission: None,
            parameters: vec![],
            body: None,
            responses: vec![(200, "An HTML page.", Some(json!({"text/html": {"schema": {"type": "string"}}})))],
        },
        Op {
            method: "get",
            path: "/healthz",
            id: "healthz",
            tag: "health",
            summary: "The process is up",
            permission: None,
            parameters: vec![],
            body: None,
            responses: vec![(200, "`ok`.", Some(json!({"text/plain": {"schema": {"type": "string"}}})))],
        },
        Op {
            method: "get",
            path: "/livez",
            id: "livez",
            tag: "health",
            summary: "The process is up (for liveness probes; the same as /healthz)",
            permission: None,
            parameters: vec![],
            body: None,
            responses: vec![(200, "`ok`.", Some(json!({"text/plain": {"schema": {"type": "string"}}})))],
        },
        Op {
            method: "get",
            path: "/readyz",
            id: "readyz",
            tag: "health",
            summary: "NATS and the database both answer",
            permission: None,
            parameters: vec![],
            body: None,
            responses: {
                let ready = json_content(json!({
                    "type": "object",
                    "required": ["nats", "database"],
                    "properties": {"nats": {"type": "boolean"}, "database": {"type": "boolean"}}
                }));
                vec![(200, "Ready.", Some(ready.clone())), (503, "Not ready: which part is down.", Some(ready))]
            },
        },
    ]
    .into_iter()
    .map(|mut op| {
        // Tenants are names; say so where a query takes one.
        for p in &mut op.parameters {
            if p["name"] == "tenant" && op.id != "listAudit" {
                p["schema"] = name_schema.clone();
            }
        }
        op
    })
    .collect()
}
