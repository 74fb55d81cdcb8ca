//! The NATS service API (`wharf.api.<tenant>.tasks.<endpoint>`): the Python example (nats-py)
//! submits and follows a task to its result; tenants connecting through the auth callout use
//! their own tenant's endpoints only, with the same checks and answers as HTTP.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;
use wharf_contract::{TaskStatus, nats_api_subject, tenant_inbox_prefix};
use wharf_gateway::GatewayConfig;
use wharf_gateway::nats_auth::{NatsAuthConfig, new_issuer};
use wharf_testkit::{NatsEvents, Options, Wharf, nats_refusal, tenant_nats};

/// Runs `examples/nats_submit.py` with `args`: its exit status and the JSON lines it printed.
async fn example(w: &Wharf, args: &[&str]) -> (i32, Vec<Value>) {
    let python = std::env::var("WHARF_WIRING_PYTHON").expect(
        "WHARF_WIRING_PYTHON is not set: run the tests with ./test.sh, which installs nats-py",
    );
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nats_submit.py");
    let run = tokio::process::Command::new(python)
        .arg(script)
        .args(["--nats", w.nats.client_url()])
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the example ends within a minute")
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (out.status.code().unwrap_or(-1), lines)
}

#[tokio::test]
async fn the_python_example_submits_and_follows_a_task_to_its_result() {
    let w = Wharf::start().await;
    let (status, lines) = example(&w, &["demo.sleep", r#"{"seconds": 1, "steps": 2}"#]).await;
    assert_eq!(status, 0, "{lines:?}");
    assert_eq!(lines[0]["status"], "202", "{lines:?}");
    let id: Uuid = lines[0]["submitted"].as_str().unwrap().parse().unwrap();
    let kinds: Vec<&str> = lines[1..lines.len() - 1]
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[..2], ["submitted", "started"], "{kinds:?}");
    assert!(kinds.contains(&"progress"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"succeeded"), "{kinds:?}");
    let task = &lines.last().unwrap()["task"];
    assert_eq!(task["id"], id.to_string());
    assert_eq!(task["status"], "succeeded");
    w.wait_recorded(id, TaskStatus::Succeeded).await;

    // Bad input is refused as over HTTP (the same problem document) and enqueues nothing.
    let (status, lines) = example(&w, &["demo.nope", "{}"]).await;
    assert_eq!(status, 2, "{lines:?}");
    assert_eq!(lines[0]["refused"], 422);
    assert_eq!(lines[0]["problem"]["code"], "unknown_tool");
    assert_eq!(lines[0]["problem"]["errors"][0]["pointer"], "/tool");
    let all = w.client().tasks(&Default::default()).await.unwrap();
    assert_eq!(all.tasks.len(), 1);
    w.shutdown().await;
}

/// A tenant connection through the gateway's auth callout: it replies below its own inbox.
async fn connect(w: &Wharf, tenant: &str, key: &str) -> (async_nats::Client, NatsEvents) {
    tenant_nats(w, key, Some(tenant_inbox_prefix(tenant)))
        .await
        .expect("the key connects")
}

/// A request's reply: the status it gives (`Wharf-Status`), whether it is a service error,
/// and its body.
async fn ask(
    nats: &async_nats::Client,
    subject: String,
    headers: async_nats::HeaderMap,
    body: Value,
) -> (u16, bool, Value) {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        nats.request_with_headers(subject, headers, body.to_string().into()),
    )
    .await
    .expect("an answer within 10 s")
    .expect("an answer");
    let headers = reply.headers.unwrap_or_default();
    let status: u16 = headers
        .get("Wharf-Status")
        .unwrap()
        .as_str()
        .parse()
        .unwrap();
    let error = headers.get("Nats-Service-Error-Code").is_some();
    if error {
        assert_eq!(
            headers.get("Nats-Service-Error-Code").unwrap().as_str(),
            status.to_string()
        );
        assert!(
            !headers
                .get("Nats-Service-Error")
                .unwrap()
                .as_str()
                .is_empty()
        );
    }
    (
        status,
        error,
        serde_json::from_slice(&reply.payload).unwrap(),
    )
}

#[tokio::test]
async fn tenants_submit_read_and_cancel_their_own_tasks_only() {
    let (seed, _) = new_issuer();
    let w = Wharf::start_with(Options {
        gateway: GatewayConfig {
            nats_auth: Some(NatsAuthConfig {
                issuer_seed: seed,
                xkey_seed: None,
                account: "$G".into(),
                max_session_secs: 900,
            }),
            ..GatewayConfig::default()
        },
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.sleep").await;
    let (acme, mut acme_errors) = connect(&w, "acme", &w.key("acme", "submitter").await).await;
    let (globex, mut globex_errors) =
        connect(&w, "globex", &w.key("globex", "submitter").await).await;
    let none = async_nats::HeaderMap::new;

    // Submit, with an idempotency key: 202, then 200 with the same task for the same key.
    let mut keyed = none();
    // Header names in any case, as over HTTP.
    keyed.insert("idempotency-KEY", "order-1");
    let sleep = json!({"tool": "demo.sleep", "arguments": {"seconds": 30}});
    let subject = |tenant: &str, endpoint: &str| nats_api_subject(tenant, endpoint);
    let (status, error, task) = ask(
        &acme,
        subject("acme", "submit"),
        keyed.clone(),
        sleep.clone(),
    )
    .await;
    assert_eq!((status, error), (202, false), "{task}");
    assert_eq!(task["tenant"], "acme");
    let (status, _, again) = ask(&acme, subject("acme", "submit"), keyed, sleep.clone()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], task["id"]);
    let id = task["id"].clone();

    // Bad input: 422 with the problem document, nothing enqueued.
    let bad = json!({"tool": "demo.sleep", "arguments": {"seconds": "soon"}});
    let (status, error, problem) = ask(&acme, subject("acme", "submit"), none(), bad).await;
    assert_eq!((status, error), (422, true));
    assert_eq!(problem["errors"][0]["pointer"], "/arguments/seconds");

    // A batch.
    let batch = json!({"tasks": [{"tool": "demo.echo", "arguments": {"message": "a"}},
                                 {"tool": "demo.echo", "arguments": {"message": "b"}}]});
    let (status, _, answered) = ask(&acme, subject("acme", "batch"), none(), batch).await;
    assert_eq!(status, 202, "{answered}");
    assert_eq!(answered["tasks"].as_array().unwrap().len(), 2);

    // globex cannot read or cancel acme's task through its own endpoints: it does not exist
    // there, exactly as over HTTP.
    let (status, _, problem) =
        ask(&globex, subject("globex", "get"), none(), json!({"id": id})).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("task_not_found"))
    );
    let (status, _, _) = ask(
        &globex,
        subject("globex", "cancel"),
        none(),
        json!({"id": id}),
    )
    .await;
    assert_eq!(status, 404);
    // And it may not publish to acme's endpoints at all: NATS refuses the request.
    globex
        .publish(
            subject("acme", "cancel"),
            json!({"id": id}).to_string().into(),
        )
        .await
        .unwrap();
    let said = nats_refusal(&mut globex_errors).await;
    assert!(
        said.contains("Permissions Violation") && said.contains("Publish"),
        "{said}"
    );
    // Nor read replies meant for acme.
    let _sub = globex
        .subscribe(format!("{}.>", tenant_inbox_prefix("acme")))
        .await
        .unwrap();
    let said = nats_refusal(&mut globex_errors).await;
    assert!(said.contains("Subscription"), "{said}");

    // acme reads and cancels its own.
    let (status, _, read) = ask(&acme, subject("acme", "get"), none(), json!({"id": id})).await;
    assert_eq!(status, 200);
    assert_eq!(read["id"], id);
    let (status, _, cancelled) =
        ask(&acme, subject("acme", "cancel"), none(), json!({"id": id})).await;
    assert_eq!(status, 202, "{cancelled}");
    w.wait_recorded(id.as_str().unwrap().parse().unwrap(), TaskStatus::Cancelled)
        .await;
    // Nothing acme did was refused by NATS.
    while let Ok(event) = acme_errors.try_recv() {
        assert!(
            !matches!(event, async_nats::Event::ServerError(_)),
            "{event}"
        );
    }

    // The service is discoverable: every gateway answers $SRV.INFO with its endpoints.
    let info = w
        .bus
        .client()
        .request("$SRV.INFO.wharf", "".into())
        .await
        .unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    let subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert!(subjects.contains(&"wharf.api.*.tasks.submit"), "{info}");
    assert_eq!(subjects.len(), 4, "{info}");
    w.shutdown().await;
}
