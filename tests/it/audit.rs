//! The audit log: what changed state, and who was refused, in an (encrypted) JSON Lines file
//! and the database.

use std::time::Duration;

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};
use wharf_gateway::{AuditConfig, AuthConfig, AuthMode, GatewayConfig};
use wharf_testkit::{Options, Wharf, WsClient, eventually, wharf_bin};

#[tokio::test]
async fn changes_and_refusals_are_audited_to_an_encrypted_file_and_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let w = Wharf::start_with(Options {
        gateway: GatewayConfig {
            auth: AuthConfig {
                mode: Some(AuthMode::Required),
                ..AuthConfig::default()
            },
            audit: AuditConfig {
                file: Some(file.clone()),
                encryption_key: Some(key.clone()),
                database: true,
            },
            ..GatewayConfig::default()
        },
        ..Options::default()
    })
    .await;
    let acme_key = w.key("acme", "tenant-admin").await;
    let acme = w.client_with(&acme_key);
    let reader = w.client_for("acme", "reader").await;
    let globex = w.client_for("globex", "tenant-admin").await;
    let root = w.client_for("default", "admin").await;
    wharf_testkit::wait_for_tool_at(&acme, "demo.sleep").await;

    // What acme does, each with a request id of its own.
    let send = |req: reqwest::RequestBuilder, id: &str| {
        let req = req.header("x-request-id", id);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let sleep = json!({"tool": "demo.sleep", "arguments": {"seconds": 30, "steps": 30}});
    let r = acme
        .request(Method::POST, "/api/v1/tasks")
        .json(&sleep)
        .send()
        .await
        .unwrap();
    let task: Value = r.json().await.unwrap();
    let task_id = task["id"].as_str().unwrap().to_owned();
    assert_eq!(
        send(
            acme.request(Method::POST, &format!("/api/v1/tasks/{task_id}/cancel")),
            "req-cancel"
        )
        .await,
        202
    );
    assert_eq!(
        send(
            acme.request(Method::POST, "/api/v1/tasks")
                .json(&json!({"tool": "demo.nope"})),
            "req-bad"
        )
        .await,
        422
    );
    assert_eq!(
        send(
            reader.request(Method::POST, "/api/v1/tasks").json(&sleep),
            "req-forbidden"
        )
        .await,
        403
    );
    assert_eq!(
        send(
            w.client().request(Method::GET, "/api/v1/tasks"),
            "req-anonymous"
        )
        .await,
        401
    );
    assert_eq!(
        send(acme.request(Method::GET, "/api/v1/tasks"), "req-read").await,
        200
    );
    let mut ws = WsClient::connect_as(&w, &acme_key).await;
    ws.send(json!({"type": "task:submit", "ref": "w1", "task": {"tool": "demo.echo", "arguments": {"message": "hi"}}}))
        .await;
    let accepted = ws.next().await;
    assert_eq!(accepted["type"], "task:accepted", "{accepted}");

    // The database: acme's own entries, newest first, with who, what, where from.
    let entries = eventually(
        "the audit entries in the database",
        Duration::from_secs(10),
        || async {
            let list: Value = acme
                .request(Method::GET, "/api/v1/audit")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let entries = list["entries"].as_array()?.clone();
            (entries.len() >= 5).then_some(entries)
        },
    )
    .await;
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("task.submit", "ok"),
            ("auth.forbidden", "denied"),
            ("task.submit", "refused"),
            ("task.cancel", "ok"),
            ("task.submit", "ok"),
        ],
        "newest first; the read and the anonymous request are not acme's"
    );
    let submitted = &entries[4];
    assert_eq!(submitted["target"], format!("/api/v1/tasks/{task_id}"));
    assert_eq!(submitted["tenant"], "acme");
    assert_eq!(submitted["ip"], "127.0.0.1");
    assert!(submitted["actor"].as_str().unwrap().starts_with("key:"));
    assert_eq!(entries[3]["request_id"], "req-cancel");
    assert_eq!(entries[1]["request_id"], "req-forbidden");
    assert!(
        entries[1]["detail"]
            .as_str()
            .unwrap()
            .contains("tasks:submit")
    );
    assert!(entries[2]["detail"].as_str().unwrap().contains("demo.nope"));
    assert!(
        entries[0]["target"]
            .as_str()
            .unwrap()
            .starts_with("/api/v1/tasks/"),
        "the WebSocket submission"
    );
    assert!(
        !entries.iter().any(|e| e["request_id"] == "req-read"),
        "reads are not audited"
    );

    // Another tenant sees none of it; an admin of every tenant sees the anonymous refusal.
    let theirs: Value = globex
        .request(Method::GET, "/api/v1/audit")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["entries"], json!([]));
    let all: Value = root
        .request(
            Method::GET,
            "/api/v1/audit?tenant=*&action=auth.unauthenticated",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let anonymous = &all["entries"][0];
    assert_eq!(anonymous["request_id"], "req-anonymous");
    assert_eq!(
        (anonymous["actor"].as_str(), anonymous["tenant"].as_str()),
        (Some("unknown"), Some(""))
    );

    // The file: every line sealed, and `wharf audit --file --key` opens them.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.lines().count() >= 6, "{text}");
    assert!(text.lines().all(|l| l.starts_with("enc:v1:")), "{text}");
    assert!(!text.contains("task.submit") && !text.contains("req-cancel"));
    let out = tokio::process::Command::new(wharf_bin())
        .args([
            "audit",
            "--file",
            file.to_str().unwrap(),
            "--action",
            "task.cancel",
        ])
        .env("WHARF_AUDIT_KEY", &key)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["request_id"], "req-cancel");
    assert_eq!(
        lines[0]["id"], entries[3]["id"],
        "the file and the database hold the same entry"
    );
    let wrong = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
    let out = tokio::process::Command::new(wharf_bin())
        .args(["audit", "--file", file.to_str().unwrap(), "--key", &wrong])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "a wrong key opens nothing");
}
