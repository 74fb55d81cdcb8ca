//! Every NATS name Wharf uses: streams, subjects, consumers, key-value buckets and headers.

use uuid::Uuid;

use crate::task::Priority;

/// The work-queue stream holding submitted tasks until a worker acknowledges them.
pub const TASKS_STREAM: &str = "WHARF_TASKS";
/// Subjects of [`TASKS_STREAM`]: `wharf.tasks.<queue>` for normal tasks, `wharf.tasks.<queue>.high`
/// and `wharf.tasks.<queue>.low` for the other levels (see [`task_subject`]).
pub const TASKS_SUBJECTS: &str = "wharf.tasks.>";
/// The limits-retention stream holding every task's event history.
pub const EVENTS_STREAM: &str = "WHARF_EVENTS";
/// Subjects of [`EVENTS_STREAM`]: `wharf.events.<tenant>.<task id>`, one subject per task so a
/// task's history can be read (and followed live) by subject, under its tenant's so NATS
/// permissions can keep tenants apart (see [`tenant_live_events`]).
pub const EVENTS_SUBJECTS: &str = "wharf.events.>";
/// Where the events stream republishes each event once it is stored
/// (`wharf.live.events.<tenant>.<task id>`), with its stream sequence in the `Nats-Sequence`
/// header. Followers subscribe here: a
/// plain subscription per task, no JetStream consumer.
pub const LIVE_EVENTS_SUBJECTS: &str = "wharf.live.events.>";
/// The durable consumer the recorder projects events from.
pub const RECORDER_CONSUMER: &str = "wharf-recorder";
/// A durable consumer on [`EVENTS_STREAM`] that recorders no longer use: callback deliveries
/// are recorded with the projection now, from [`RECORDER_CONSUMER`]. Recorders delete it at
/// start where an earlier version made it.
pub const RETIRED_CALLBACKS_CONSUMER: &str = "wharf-callbacks";
/// Key-value bucket where workers advertise the MCP tools they serve, one key per server.
pub const TOOLS_BUCKET: &str = "wharf_tools";
/// Key-value bucket of cancellation requests, one key per task id.
pub const CANCEL_BUCKET: &str = "wharf_cancel";
/// Key-value bucket of idempotency keys: one key per submitted key (a UUIDv5 of it), holding the
/// task it created; entries expire after the idempotency window.
pub const IDEMPOTENCY_BUCKET: &str = "wharf_idempotency";
/// Key-value bucket of live workers, one key per worker (see [`worker_key`]), each entry a
/// [`crate::WorkerInfo`] that expires unless the worker announces itself again.
pub const WORKERS_BUCKET: &str = "wharf_workers";
/// Key-value bucket holding the registry of MCP servers from the runtime configuration, under
/// [`REGISTRY_KEY`]; workers watch it.
pub const REGISTRY_BUCKET: &str = "wharf_registry";
/// The one key of [`REGISTRY_BUCKET`].
pub const REGISTRY_KEY: &str = "mcp_servers";
/// Core NATS subject on which a gateway announces a revoked API key (the payload is its id), so
/// every gateway drops it from its cache at once rather than when the cache entry expires.
pub const KEY_REVOKED_SUBJECT: &str = "wharf.control.keys.revoked";
/// Core NATS subject on which a gateway announces a new revision of the runtime configuration
/// (the payload is its number), so every gateway applies it at once.
pub const CONFIG_CHANGED_SUBJECT: &str = "wharf.control.config.changed";
/// Core NATS subject on which a gateway announces an MCP client's `notifications/cancelled`
/// (the caller and the request id), for the gateway running that call to cancel its task.
pub const MCP_CANCELLED_SUBJECT: &str = "wharf.control.mcp.cancelled";
/// HTTP header that may carry a submission's idempotency key (the body field is the other way).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Header carrying the W3C trace context of the task.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Key under which workers pass the task id to MCP servers in a request's `_meta`.
pub const TASK_ID_META: &str = "dev.wharf/task_id";
/// Key under which workers pass the W3C trace context to MCP servers in a request's `_meta`.
pub const TRACEPARENT_META: &str = "traceparent";

/// Header naming the wire type and version of a message body, e.g. `task.v1`.
pub const SCHEMA_HEADER: &str = "Wharf-Schema";
/// Header of a task message put back on its queue by a worker that stopped before running it
/// to the end: how many attempts the task had used before (the delivery count restarts at 1).
pub const ATTEMPTS_USED_HEADER: &str = "Wharf-Attempts-Used";
/// Header of an event whose publisher held the task as submitted and saw it had no callback
/// (value [`NO_CALLBACK`]): a recorder that did not meet the task's `submitted` event then
/// need not read it from the stream to learn that. Absent, the recorder looks.
pub const CALLBACK_HEADER: &str = "Wharf-Callback";
/// The one value of [`CALLBACK_HEADER`]: the task has no callback.
pub const NO_CALLBACK: &str = "none";
/// Schema header value of a [`crate::Task`] message.
pub const TASK_SCHEMA: &str = "task.v1";
/// Schema header value of a [`crate::TaskEvent`] message.
pub const EVENT_SCHEMA: &str = "task-event.v1";

/// The queue a task goes to when the submitter names none.
pub const DEFAULT_QUEUE: &str = "default";

/// Subjects of [`TASKS_STREAM`] holding delayed tasks until they are due: `wharf.schedules.<task
/// id>`, one message schedule per task. Outside every queue consumer's filter, so no worker sees
/// (or deletes) a schedule; when due, the server publishes the task on its queue's subject.
pub const SCHEDULES_SUBJECTS: &str = "wharf.schedules.>";

/// Subject the schedule of delayed task `id` is kept on.
pub fn schedule_subject(id: Uuid) -> String {
    format!("wharf.schedules.{id}")
}

/// Subject a task of `queue` at `priority` is published on. Normal tasks keep the subject queues
/// had before levels existed; the others get a token of their own (queue names have no dots, so
/// no queue's subject is another's level).
pub fn task_subject(queue: &str, priority: Priority) -> String {
    match priority {
        Priority::Normal => format!("wharf.tasks.{queue}"),
        p => format!("wharf.tasks.{queue}.{p}"),
    }
}

/// The queue and level a task subject (see [`task_subject`]) names.
pub fn parse_task_subject(subject: &str) -> Option<(&str, Priority)> {
    let rest = subject.strip_prefix("wharf.tasks.")?;
    match rest.split_once('.') {
        None => Some((rest, Priority::Normal)),
        Some((queue, level)) => Some((queue, level.parse().ok()?)),
    }
}

/// Name of the durable pull consumer serving one level of `queue`; every worker of the queue
/// shares it. `@` cannot appear in a queue name, so `a@high` is never the normal consumer of a
/// queue called `a@high`.
pub fn queue_consumer(queue: &str, priority: Priority) -> String {
    match priority {
        Priority::Normal => format!("wharf-queue-{queue}"),
        p => format!("wharf-queue-{queue}@{p}"),
    }
}

/// The workers-bucket key of worker `id`: a worker id may hold characters a key cannot, so the
/// key is a UUIDv5 of it (the entry holds the id itself).
pub fn worker_key(id: &str) -> String {
    /// Namespace of worker keys (a random UUID, fixed forever).
    const NAMESPACE: Uuid = Uuid::from_u128(0x3b9e_61c4_70d2_4f8a_a5c3_2e91_d04b_86f7);
    Uuid::new_v5(&NAMESPACE, id.as_bytes()).simple().to_string()
}

/// The queue served by a durable consumer named by [`queue_consumer`], and its level.
pub fn parse_queue_consumer(name: &str) -> Option<(&str, Priority)> {
    let rest = name.strip_prefix("wharf-queue-")?;
    match rest.split_once('@') {
        None => Some((rest, Priority::Normal)),
        Some((queue, level)) => Some((queue, level.parse().ok()?)),
    }
}

/// The stream of dead letters: tasks that failed after using every attempt, or whose message
/// could not be read, kept for inspection and replay. One message per task.
pub const DLQ_STREAM: &str = "WHARF_DLQ";
/// Subjects of [`DLQ_STREAM`]: `wharf.dlq.<task id>`.
pub const DLQ_SUBJECTS: &str = "wharf.dlq.>";

/// Subject the dead letter of task `id` is kept on.
pub fn dlq_subject(id: Uuid) -> String {
    format!("wharf.dlq.{id}")
}

/// The tenant token of the events of a task whose tenant cannot be known (its message could
/// not be read, and it has no stored event left): not a tenant name, so no tenant sees them.
pub const UNKNOWN_TENANT: &str = "~";

/// Subject the events of task `id` of `tenant` are published on (an empty tenant, which no
/// task should have, becomes [`UNKNOWN_TENANT`] rather than an invalid subject).
pub fn event_subject(tenant: &str, id: Uuid) -> String {
    format!("wharf.events.{}.{id}", tenant_token(tenant))
}

/// The subject token of `tenant`: itself, or [`UNKNOWN_TENANT`] for none.
fn tenant_token(tenant: &str) -> &str {
    if tenant.is_empty() {
        UNKNOWN_TENANT
    } else {
        tenant
    }
}

/// Filter matching the events of task `id`, whatever its tenant: for reading by id alone.
pub fn event_filter(id: Uuid) -> String {
    format!("wharf.events.*.{id}")
}

/// The tenant an event subject (see [`event_subject`]) names.
pub fn tenant_of_event_subject(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix("wharf.events.")?;
    Some(rest.split_once('.')?.0)
}

/// Subject the stored events of task `id` of `tenant` are republished on (see
/// [`LIVE_EVENTS_SUBJECTS`]).
pub fn live_event_subject(tenant: &str, id: Uuid) -> String {
    format!("wharf.live.events.{}.{id}", tenant_token(tenant))
}

/// Filter matching the republished events of task `id`, whatever its tenant.
pub fn live_event_filter(id: Uuid) -> String {
    format!("wharf.live.events.*.{id}")
}

/// Every republished event of `tenant`'s tasks: what a tenant's own NATS connection may
/// subscribe to, and nothing else (see the gateway's NATS authorization).
pub fn tenant_live_events(tenant: &str) -> String {
    format!("wharf.live.events.{tenant}.>")
}

/// Message ids (`Nats-Msg-Id`): JetStream drops a message whose id it stored within the stream's
/// duplicate window, so each id says which repeats are the same message.
pub mod msg_id {
    use uuid::Uuid;

    /// A task on its queue (or as a schedule): the task id itself.
    pub fn task(id: Uuid) -> String {
        id.to_string()
    }

    /// A task's `submitted` event.
    pub fn submitted(id: Uuid) -> String {
        format!("{id}:submitted")
    }

    /// A task's terminal event, whichever attempt (or the gateway) writes it: the first one
    /// stored is the outcome, every other is dropped.
    pub fn terminal(id: Uuid) -> String {
        format!("{id}:terminal")
    }

    /// A request to cancel a task.
    pub fn cancel_requested(id: Uuid) -> String {
        format!("{id}:cancel_requested")
    }

    /// A task's dead letter.
    pub fn dead_letter(id: Uuid) -> String {
        format!("{id}:dead")
    }

    /// A task message a stopping worker put back, named by the stream sequence of the delivery
    /// it replaces: a retry after a lost ack is the same message.
    pub fn handed_back(seq: u64) -> String {
        format!("handback:{seq}")
    }

    /// An informative event (`started`, progress, a failed attempt) of one delivery of a task
    /// (`delivery`: the delivered message's stream sequence and delivery count), told apart by
    /// `tag`: a task run again still gets every event of its new run stored.
    pub fn attempt_event(id: Uuid, delivery: &str, tag: &str) -> String {
        format!("{id}:{delivery}:{tag}")
    }
}

/// Subject on which nats-server asks its auth callout service to authorize a connection.
pub const AUTH_CALLOUT_SUBJECT: &str = "$SYS.REQ.USER.AUTH";

/// The NATS service (NATS Services API: `$SRV.PING|INFO|STATS.wharf`) that every gateway
/// answers in one queue group: submit, batch, get and cancel over request and reply.
pub const NATS_API_SERVICE: &str = "wharf";
/// The queue group of the gateways' NATS service, so each request is answered once.
pub const NATS_API_QUEUE_GROUP: &str = "wharf-gateways";
/// Endpoints of the NATS service, each a subject `wharf.api.<tenant>.tasks.<endpoint>`.
pub const NATS_API_ENDPOINTS: [&str; 4] = ["submit", "batch", "get", "cancel"];
/// Header of a NATS service reply giving the HTTP status the same request would get over
/// HTTP (`202` for a new task, `200` for the one an idempotency key named).
pub const STATUS_HEADER: &str = "Wharf-Status";

/// The subject of one endpoint of the NATS service for `tenant`.
pub fn nats_api_subject(tenant: &str, endpoint: &str) -> String {
    format!("wharf.api.{tenant}.tasks.{endpoint}")
}

/// What an endpoint of the NATS service listens on: every tenant's subject.
pub fn nats_api_filter(endpoint: &str) -> String {
    nats_api_subject("*", endpoint)
}

/// The tenant a NATS service subject names.
pub fn tenant_of_api_subject(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix("wharf.api.")?;
    let (tenant, rest) = rest.split_once('.')?;
    rest.starts_with("tasks.").then_some(tenant)
}

/// The reply subjects of a tenant's connection: it connects with this inbox prefix, and may
/// subscribe below it only, so no tenant reads another's replies.
pub fn tenant_inbox_prefix(tenant: &str) -> String {
    format!("_INBOX_{tenant}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::valid_name;

    #[test]
    fn names_that_would_break_a_subject_are_refused() {
        assert!(valid_name("default"));
        assert!(valid_name("gpu-heavy_2"));
        for bad in ["", "a.b", "a b", "a*", "a>", "ü", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?} must be refused");
        }
    }

    #[test]
    fn every_level_of_every_queue_has_its_own_subject_and_consumer() {
        let mut subjects = std::collections::HashSet::new();
        let mut consumers = std::collections::HashSet::new();
        for queue in ["a", "a-high", "high", "low"] {
            for p in Priority::ALL {
                let subject = task_subject(queue, p);
                assert_eq!(parse_task_subject(&subject), Some((queue, p)));
                assert!(subjects.insert(subject), "{queue} {p}");
                let consumer = queue_consumer(queue, p);
                assert_eq!(parse_queue_consumer(&consumer), Some((queue, p)));
                assert!(consumers.insert(consumer), "{queue} {p}");
            }
        }
        assert_eq!(parse_task_subject("wharf.tasks.a.urgent"), None);
        assert_eq!(parse_task_subject("wharf.events.a"), None);
    }

    #[test]
    fn api_subjects_name_their_tenant() {
        let subject = nats_api_subject("acme", "submit");
        assert_eq!(subject, "wharf.api.acme.tasks.submit");
        assert_eq!(tenant_of_api_subject(&subject), Some("acme"));
        assert_eq!(tenant_of_api_subject("wharf.api.acme.other.x"), None);
        assert_eq!(nats_api_filter("get"), "wharf.api.*.tasks.get");
    }

    #[test]
    fn event_subjects_name_their_tenant_and_filters_match_any() {
        let id = Uuid::now_v7();
        let subject = event_subject("acme", id);
        assert_eq!(tenant_of_event_subject(&subject), Some("acme"));
        assert_eq!(event_subject("", id), format!("wharf.events.~.{id}"));
        assert_eq!(event_filter(id), format!("wharf.events.*.{id}"));
        assert!(
            live_event_subject("acme", id)
                .starts_with(tenant_live_events("acme").trim_end_matches('>'))
        );
        assert!(
            !live_event_subject("acme-2", id)
                .starts_with(tenant_live_events("acme").trim_end_matches('>'))
        );
    }
}
