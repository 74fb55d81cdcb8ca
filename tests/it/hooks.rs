//! Inbound webhooks (`POST /hooks/{name}`): calls signed by the Standard Webhooks reference
//! library (PyPI `standardwebhooks`, installed by `./test.sh`) start a task for the hook's
//! tenant; a redelivery starts nothing new; a bad signature, a replayed timestamp or a body
//! the tool cannot take changes nothing.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;
use wharf_client::{AuditQuery, TaskQuery};
use wharf_contract::TaskStatus;
use wharf_testkit::{Options, Wharf, send};

const OLD_SECRET: &str = "whsec_LNUhPuNf4DD96excS18OjjIKB2NLvcaKaptaiKut2IA=";
const NEW_SECRET: &str = "whsec_EtAzp+PGzVmMsWh/lzrX/wZbcVydOf1KjG+9zbs/8hU=";

/// The `webhook-signature` the reference library gives `body`.
async fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let python = std::env::var("WHARF_WIRING_PYTHON").expect(
        "WHARF_WIRING_PYTHON is not set: run the tests with ./test.sh, which installs the \
         standardwebhooks library",
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/webhooks.py");
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .args(["sign", secret, id, &timestamp.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, body)
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "the signing script failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A delivery of `body` as message `id`, signed with `secret` at `timestamp`.
async fn deliver(
    w: &Wharf,
    hook: &str,
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &Value,
) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let signed = signature(secret, id, timestamp, &bytes).await;
    post(w, hook, id, timestamp, &signed, bytes).await
}

async fn post(
    w: &Wharf,
    hook: &str,
    id: &str,
    timestamp: i64,
    signature: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/hooks/{hook}", w.api))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn signed_calls_start_one_task_each_and_nothing_else_gets_in() {
    let mut options = Options::closed();
    options.gateway.audit.database = true;
    let w = Wharf::start_with(options).await;
    let admin = w.client_for("default", "admin").await;
    let acme = w.client_for("acme", "reader").await;
    let other = w.client_for("default", "reader").await;
    wharf_testkit::wait_for_tool_at(&admin, "demo.echo").await;
    let config = |hook: Value, revision: u64| json!({"revision": revision, "config": {"session_ttl_secs": 86400, "hooks": {"deploy": hook}}});
    let mut hook = json!({
        "tenant": "acme",
        "secrets": [OLD_SECRET],
        "tool": "demo.echo",
        "arguments": {"times": {"value": 2}},
    });

    // Refused when written: the tool's required `message` has no source, or no such tool.
    let (status, problem) = send(
        admin
            .request(Method::PUT, "/api/v1/config")
            .json(&config(hook.clone(), 0)),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["errors"][0]["pointer"],
        "/config/hooks/deploy/arguments"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("message"),
        "{problem}"
    );
    hook["arguments"]["message"] = json!({"from": "/head_commit/message"});
    let mut unknown = hook.clone();
    unknown["tool"] = json!("demo.nope");
    let (status, problem) = send(
        admin
            .request(Method::PUT, "/api/v1/config")
            .json(&config(unknown, 0)),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/config/hooks/deploy/tool");
    let (status, applied) = send(
        admin
            .request(Method::PUT, "/api/v1/config")
            .json(&config(hook.clone(), 0)),
    )
    .await;
    assert_eq!(status, 200, "{applied}");

    // Reads never show a secret; writing back what was read, with a new secret first, keeps
    // the old one (rotation).
    let read = &applied["config"]["hooks"]["deploy"]["secrets"][0];
    assert!(!read.as_str().unwrap().contains("LNUh"), "{applied}");
    hook["secrets"] = json!([NEW_SECRET, read]);
    let (status, applied) = send(
        admin
            .request(Method::PUT, "/api/v1/config")
            .json(&config(hook.clone(), 1)),
    )
    .await;
    assert_eq!(status, 200, "{applied}");

    // A call signed with the old secret starts the tool with the mapped arguments, for acme.
    let body = json!({"ref": "main", "head_commit": {"message": "ship it"}});
    let (status, task) = deliver(&w, "deploy", OLD_SECRET, "msg_1", now(), &body).await;
    assert_eq!(status, 202, "{task}");
    let id: Uuid = task["id"].as_str().unwrap().parse().unwrap();
    let done = w.wait_recorded(id, TaskStatus::Succeeded).await;
    assert_eq!(done.tenant, "acme");
    assert_eq!(done.arguments["message"], "ship it");
    assert_eq!(done.arguments["times"], 2);
    assert_eq!(done.metadata["hook"], "deploy");
    assert_eq!(done.metadata["webhook_id"], "msg_1");
    assert_eq!(acme.task(id).await.unwrap().status, TaskStatus::Succeeded);
    let e = other.task(id).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "another tenant does not see it");

    // The same message again, signed anew with the new secret: the same task, nothing new.
    let (status, again) = deliver(&w, "deploy", NEW_SECRET, "msg_1", now(), &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], task["id"]);

    // Refused and nothing submitted: a body the signature is not of, a signature by no secret
    // of the hook, a replay older than five minutes, no signature at all.
    let signed = signature(OLD_SECRET, "msg_2", now(), b"{}").await;
    let tampered = serde_json::to_vec(&body).unwrap();
    let (status, problem) = post(&w, "deploy", "msg_2", now(), &signed, tampered).await;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem["code"], "bad_signature");
    let stranger = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (status, _) = deliver(&w, "deploy", stranger, "msg_3", now(), &body).await;
    assert_eq!(status, 401);
    let (status, problem) = deliver(&w, "deploy", NEW_SECRET, "msg_4", now() - 600, &body).await;
    assert_eq!(status, 401);
    assert!(
        problem["detail"].as_str().unwrap().contains("old"),
        "{problem}"
    );
    let (status, problem) = post(&w, "deploy", "msg_5", now(), "", b"{}".to_vec()).await;
    assert_eq!(status, 401);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("webhook-signature")
    );

    // Signed, but the body cannot give the tool what it needs: 422 naming the body's fields.
    let (status, problem) = deliver(
        &w,
        "deploy",
        NEW_SECRET,
        "msg_6",
        now(),
        &json!({"ref": "main"}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/head_commit/message");
    let wrong = json!({"head_commit": {"message": 7}});
    let (status, problem) = deliver(&w, "deploy", NEW_SECRET, "msg_7", now(), &wrong).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "invalid_arguments");
    assert_eq!(problem["errors"][0]["pointer"], "/head_commit/message");

    // No such hook.
    let (status, _) = deliver(&w, "nope", NEW_SECRET, "msg_8", now(), &body).await;
    assert_eq!(status, 404);

    let list = acme.tasks(&TaskQuery::default()).await.unwrap();
    assert_eq!(list.tasks.len(), 1, "one task for all those calls");

    // The audit log names the hook as the actor of what it started, in its tenant, and keeps
    // the refusals of callers it could not tell.
    let audit = wharf_testkit::eventually(
        "the hook's calls audited",
        Duration::from_secs(10),
        || async {
            let query = AuditQuery {
                action: Some("hook.receive".into()),
                tenant: Some("*".into()),
                ..AuditQuery::default()
            };
            let list = admin.audit(&query).await.ok()?;
            (list.entries.len() >= 9).then_some(list.entries)
        },
    )
    .await;
    let started = audit
        .iter()
        .find(|e| e.status == 202)
        .expect("the 202 audited");
    assert_eq!(
        (started.actor.as_str(), started.tenant.as_str()),
        ("hook:deploy", "acme")
    );
    assert!(
        audit
            .iter()
            .any(|e| e.status == 401 && e.actor == "unknown")
    );
    w.shutdown().await;
}

/// A sender streaming a body over the limit (no Content-Length) reads a 413, not a reset.
#[tokio::test]
async fn a_streamed_body_over_the_limit_gets_a_413_the_sender_reads() {
    let w = Wharf::start().await;
    let hook = json!({
        "tenant": "default",
        "secrets": [OLD_SECRET],
        "tool": "demo.echo",
        "arguments": {"message": {"from": "/m"}},
    });
    let change =
        json!({"revision": 0, "config": {"session_ttl_secs": 86400, "hooks": {"big": hook}}});
    let (status, applied) = send(
        w.client()
            .request(Method::PUT, "/api/v1/config")
            .json(&change),
    )
    .await;
    assert_eq!(status, 200, "{applied}");
    // 2 MiB in 64 KiB chunks, over the default 1 MiB limit.
    let chunks = (0..32).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024]));
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = reqwest::Client::new()
        .post(format!("{}/hooks/big", w.api))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_big")
        .header("webhook-timestamp", now().to_string())
        .header("webhook-signature", "v1,AAAA")
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the sender reads an answer");
    assert_eq!(r.status(), 413);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "body_too_large");
    w.shutdown().await;
}
