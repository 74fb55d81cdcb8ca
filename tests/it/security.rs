//! Identity, permissions, tenants and limits at the gateway: every route refuses a caller it
//! should, and lets through the one it should.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;
use wharf_contract::{Permission, TaskStatus};
use wharf_gateway::{AuthConfig, AuthMode, GatewayConfig, LimitsConfig, Rate};
use wharf_testkit::{Options, Wharf, WsClient, call, eventually};

fn required(auth: AuthConfig) -> Options {
    Options {
        gateway: GatewayConfig {
            auth: AuthConfig {
                mode: Some(AuthMode::Required),
                ..auth
            },
            ..GatewayConfig::default()
        },
        ..Options::default()
    }
}

/// Starts a platform that requires credentials, and waits for the demo tools.
async fn closed(auth: AuthConfig) -> Wharf {
    let w = Wharf::start_with(required(auth)).await;
    let admin = w.client_for("default", "admin").await;
    wharf_testkit::wait_for_tool_at(&admin, "demo.sleep").await;
    w
}

/// Every route behind authentication, the permission it needs, and a request to it.
fn routes(task: Uuid, key: Uuid) -> Vec<(Method, String, Option<Value>, Permission)> {
    let submit = json!({"tool": "demo.echo", "arguments": {"message": "hi"}});
    vec![
        (
            Method::POST,
            "/api/v1/tasks".into(),
            Some(submit.clone()),
            Permission::TasksSubmit,
        ),
        (
            Method::POST,
            "/api/v1/tasks/batch".into(),
            Some(json!({"tasks": [submit]})),
            Permission::TasksSubmit,
        ),
        (
            Method::GET,
            "/api/v1/tasks".into(),
            None,
            Permission::TasksRead,
        ),
        (
            Method::GET,
            format!("/api/v1/tasks/{task}"),
            None,
            Permission::TasksRead,
        ),
        (
            Method::GET,
            format!("/api/v1/tasks/{task}/events"),
            None,
            Permission::TasksRead,
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{task}/cancel"),
            None,
            Permission::TasksCancel,
        ),
        (Method::GET, "/api/v1/dlq".into(), None, Permission::DlqRead),
        (
            Method::GET,
            format!("/api/v1/dlq/{task}"),
            None,
            Permission::DlqRead,
        ),
        (
            Method::POST,
            format!("/api/v1/dlq/{task}/replay"),
            None,
            Permission::DlqReplay,
        ),
        (
            Method::GET,
            "/api/v1/tools".into(),
            None,
            Permission::ToolsRead,
        ),
        (
            Method::GET,
            "/api/v1/workers".into(),
            None,
            Permission::OpsRead,
        ),
        (
            Method::GET,
            "/api/v1/queues".into(),
            None,
            Permission::OpsRead,
        ),
        (Method::GET, "/metrics".into(), None, Permission::OpsRead),
        (
            Method::POST,
            "/api/v1/keys".into(),
            Some(json!({"name": "k", "role": "nothing"})),
            Permission::KeysAdmin,
        ),
        (
            Method::GET,
            "/api/v1/keys".into(),
            None,
            Permission::KeysAdmin,
        ),
        (
            Method::GET,
            format!("/api/v1/keys/{key}"),
            None,
            Permission::KeysAdmin,
        ),
        (
            Method::DELETE,
            format!("/api/v1/keys/{key}"),
            None,
            Permission::KeysAdmin,
        ),
        (
            Method::GET,
            "/api/v1/audit".into(),
            None,
            Permission::AuditRead,
        ),
        (
            Method::POST,
            "/api/v1/tools/demo.echo/call?wait=0".into(),
            Some(json!({"arguments": {"message": "hi"}})),
            Permission::TasksSubmit,
        ),
        (
            Method::POST,
            "/api/v1/sessions".into(),
            Some(json!({})),
            Permission::SessionsWrite,
        ),
        (
            Method::GET,
            "/api/v1/sessions".into(),
            None,
            Permission::SessionsRead,
        ),
        (
            Method::GET,
            format!("/api/v1/sessions/{task}"),
            None,
            Permission::SessionsRead,
        ),
        (
            Method::DELETE,
            format!("/api/v1/sessions/{task}"),
            None,
            Permission::SessionsWrite,
        ),
        (
            Method::POST,
            "/api/v1/agents".into(),
            Some(json!({"name": "a", "allowed_tools": ["*"]})),
            Permission::AgentsWrite,
        ),
        (
            Method::GET,
            "/api/v1/agents".into(),
            None,
            Permission::AgentsRead,
        ),
        (
            Method::GET,
            "/api/v1/agents/a".into(),
            None,
            Permission::AgentsRead,
        ),
        (
            Method::PUT,
            "/api/v1/agents/a".into(),
            Some(json!({"allowed_tools": ["*"]})),
            Permission::AgentsWrite,
        ),
        (
            Method::GET,
            "/api/v1/config".into(),
            None,
            Permission::ConfigRead,
        ),
        (
            Method::GET,
            "/api/v1/config/revisions".into(),
            None,
            Permission::ConfigRead,
        ),
        (
            Method::PUT,
            "/api/v1/config".into(),
            // A stale revision: refused (409) by whoever may write, changing nothing.
            Some(json!({"revision": 99, "config": {"session_ttl_secs": 3600}})),
            Permission::ConfigWrite,
        ),
    ]
}

#[tokio::test]
async fn without_credentials_every_route_but_the_health_checks_is_refused() {
    let w = closed(AuthConfig::default()).await;
    let anonymous = w.client();
    for (method, path, body, _) in routes(Uuid::now_v7(), Uuid::now_v7()) {
        let (status, headers, problem) = call(&anonymous, method.clone(), &path, body).await;
        assert_eq!(status, 401, "{method} {path}: {problem}");
        assert_eq!(problem["code"], "unauthenticated", "{method} {path}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert!(headers.contains_key("www-authenticate"), "{method} {path}");
    }
    let mut ws =
        tokio_tungstenite::connect_async(w.client().url("/ws/v1/tasks").replacen("http", "ws", 1))
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string();
    ws.make_ascii_lowercase();
    assert!(ws.contains("401"), "the WebSocket upgrade is refused: {ws}");
    for open in ["/healthz", "/livez", "/readyz"] {
        let (status, _, _) = call(&anonymous, Method::GET, open, None).await;
        assert_eq!(status, 200, "{open} needs no credentials");
    }
    // Credentials that prove nothing are refused with the reason.
    for (credential, reason) in [
        (
            "wharf_0000000000000000000000000000000000000000000000000000000000000000",
            "not known",
        ),
        ("not-a-key-nor-a-token", "takes no tokens"),
    ] {
        let (status, _, problem) = call(
            &w.client_with(credential),
            Method::GET,
            "/api/v1/tasks",
            None,
        )
        .await;
        assert_eq!(status, 401);
        assert!(
            problem["detail"].as_str().unwrap().contains(reason),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn each_permission_opens_exactly_its_routes() {
    // A role per permission, holding only that one.
    let roles: BTreeMap<String, Vec<Permission>> = Permission::ALL
        .iter()
        .map(|p| (format!("only-{}", p.as_str().replace(':', "-")), vec![*p]))
        .collect();
    // A role with no permission at all, which any key admin may hand out.
    let mut configured = roles.clone();
    configured.insert("nothing".into(), Vec::new());
    let w = closed(AuthConfig {
        roles: configured,
        ..AuthConfig::default()
    })
    .await;
    let admin = w.client_for("default", "admin").await;
    let (_, _, task) = call(
        &admin,
        Method::POST,
        "/api/v1/tasks",
        Some(json!({"tool": "demo.sleep", "arguments": {"seconds": 30}})),
    )
    .await;
    let task: Uuid = task["id"].as_str().unwrap().parse().unwrap();
    for (role, perms) in &roles {
        let held = perms[0];
        let client = w.client_for("default", role).await;
        // A key of its own to read and revoke, so revoking never removes the caller's.
        let (_, _, victim) = call(
            &admin,
            Method::POST,
            "/api/v1/keys",
            Some(json!({"name": "victim", "role": "reader"})),
        )
        .await;
        let victim: Uuid = victim["key"]["id"].as_str().unwrap().parse().unwrap();
        for (method, path, body, needs) in routes(task, victim) {
            if needs == Permission::TasksCancel && held == needs {
                continue; // checked below, once the other routes have seen the task
            }
            let (status, _, answer) = call(&client, method.clone(), &path, body).await;
            if needs == held {
                assert_ne!(status, 403, "{role} may {method} {path}: {answer}");
                assert_ne!(status, 401, "{role}: {answer}");
            } else {
                assert_eq!(status, 403, "{role} may not {method} {path}: {answer}");
                assert_eq!(answer["code"], "forbidden");
                assert_eq!(
                    answer["missing_permission"],
                    needs.as_str(),
                    "{method} {path}"
                );
            }
        }
        let mut ws = WsClient::connect_as(&w, &w.key("default", role).await).await;
        ws.send(json!({"type": "system:subscribe"})).await;
        let m = ws.next().await;
        if held == Permission::OpsRead {
            assert_eq!(m["type"], "system:status", "{m}");
        } else {
            assert_eq!(m["type"], "error", "{m}");
            assert_eq!(m["code"], "forbidden");
        }
    }
    let canceller = w.client_for("default", "only-tasks-cancel").await;
    let (status, _, _) = call(
        &canceller,
        Method::POST,
        &format!("/api/v1/tasks/{task}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn a_key_cannot_hand_out_more_than_its_creator_holds() {
    let w = closed(AuthConfig::default()).await;
    let tenant_admin = w.client_for("acme", "tenant-admin").await;
    for (body, pointer, permission) in [
        (json!({"name": "x", "role": "admin"}), "/role", "ops:read"),
        (
            json!({"name": "x", "role": "operator"}),
            "/role",
            "ops:read",
        ),
        (
            json!({"name": "x", "role": "reader", "tenant": "globex"}),
            "/tenant",
            "tenants:admin",
        ),
    ] {
        let (status, _, problem) = call(
            &tenant_admin,
            Method::POST,
            "/api/v1/keys",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 403, "{body}: {problem}");
        assert_eq!(problem["missing_permission"], permission, "{body}");
        assert!(
            problem["detail"].as_str().unwrap().starts_with(pointer),
            "{problem}"
        );
    }
    let (status, _, problem) = call(
        &tenant_admin,
        Method::POST,
        "/api/v1/keys",
        Some(json!({"name": "x", "role": "superuser"})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["pointer"], "/role");
    assert!(
        w.store.keys(Some("acme")).await.unwrap().len() == 1,
        "nothing was created"
    );
}

#[tokio::test]
async fn keys_are_shown_once_stored_hashed_and_revoked_everywhere_at_once() {
    let w = closed(AuthConfig::default()).await;
    let (second_api, _second) = w
        .gateway_with(required(AuthConfig::default()).gateway)
        .await;
    let admin = w.client_for("acme", "tenant-admin").await;
    let (status, headers, created) = call(
        &admin,
        Method::POST,
        "/api/v1/keys",
        Some(json!({"name": "billing", "role": "submitter"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(headers["location"], format!("/api/v1/keys/{id}"));
    assert_eq!(created["key"]["tenant"], "acme");
    assert!(secret.starts_with(created["key"]["prefix"].as_str().unwrap()));

    // Neither the listing nor the database holds the secret.
    let (_, _, list) = call(&admin, Method::GET, "/api/v1/keys", None).await;
    assert!(!list.to_string().contains(&secret[10..]), "{list}");
    use sea_orm::ConnectionTrait;
    let db = w.store.connection();
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT secret_hash FROM api_keys".to_owned(),
        ))
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        let hash: String = row.try_get("", "secret_hash").unwrap();
        assert!(
            !hash.contains(&secret[6..]),
            "the secret is stored only hashed"
        );
    }

    // The key works on both gateways (each now has it cached).
    let billing = w.client_with(&secret);
    for api in [&w.api, &second_api] {
        let (status, _, me) = call(
            &billing.at(api).unwrap(),
            Method::GET,
            "/api/v1/whoami",
            None,
        )
        .await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["tenant"], "acme");
        assert_eq!(me["actor"], format!("key:{id}"));
    }
    // WebSockets opened with the key before it is revoked, on this gateway and the other, and
    // an event stream of one of its tasks.
    let mut ws = WsClient::connect_as(&w, &secret).await;
    ws.send(json!({"type": "task:subscribe", "task_id": Uuid::now_v7()}))
        .await;
    assert_eq!(
        ws.next().await["code"],
        "task_not_found",
        "the socket works"
    );
    let second_ws_url = format!(
        "{}/ws/v1/tasks?access_token={secret}",
        second_api.replacen("http://", "ws://", 1)
    );
    let (mut other_ws, _) = tokio_tungstenite::connect_async(second_ws_url)
        .await
        .unwrap();
    let (status, _, task) = call(
        &billing,
        Method::POST,
        "/api/v1/tasks",
        Some(json!({"tool": "demo.sleep", "arguments": {"seconds": 60}})),
    )
    .await;
    assert_eq!(status, 202, "{task}");
    let events = billing
        .request(
            Method::GET,
            &format!("/api/v1/tasks/{}/events", task["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let (status, _, revoked) =
        call(&admin, Method::DELETE, &format!("/api/v1/keys/{id}"), None).await;
    assert_eq!(status, 200);
    assert!(revoked["revoked_at"].is_string());
    // The open socket is told and closed at once, though its client sends nothing.
    let told = ws.next().await;
    assert_eq!(told["code"], "unauthenticated", "{told}");
    assert!(
        told["message"].as_str().unwrap().contains("revoked"),
        "{told}"
    );
    assert_eq!(ws.close_code(Duration::from_secs(5)).await, Some(1008));
    // So is the one on the other gateway, which heard of it over NATS.
    let closed_there = tokio::time::timeout(Duration::from_secs(5), async {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match other_ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the other gateway's socket closed");
    assert_eq!(closed_there, Some(1008));
    // And the event stream ends, well before its task would.
    let body = tokio::time::timeout(Duration::from_secs(5), events.text())
        .await
        .expect("the event stream ended with its key")
        .unwrap();
    assert!(!body.contains("task:complete"), "{body}");
    assert!(
        body.trim_end().ends_with('}') && body.contains("event: error") && body.contains("revoked"),
        "the stream's last event says why it ended: {body}"
    );
    let (status, _, problem) = call(&billing, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(status, 401);
    assert!(problem["detail"].as_str().unwrap().contains("revoked"));
    // The other gateway hears of it over NATS, well before its 30 s cache would expire.
    eventually(
        "the second gateway refusing the key",
        Duration::from_secs(5),
        || async {
            let (status, _, _) = call(
                &billing.at(&second_api).unwrap(),
                Method::GET,
                "/api/v1/whoami",
                None,
            )
            .await;
            (status == 401).then_some(())
        },
    )
    .await;

    // An expired key is refused with the reason.
    let (info, expired, hash) = wharf_gateway::auth::mint_key(
        "old".into(),
        "acme".into(),
        "reader".into(),
        "test".into(),
        Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
    );
    w.store.create_key(&info, &hash).await.unwrap();
    let (status, _, problem) = call(
        &w.client_with(&expired),
        Method::GET,
        "/api/v1/whoami",
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        problem["detail"].as_str().unwrap().contains("expired"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_tenant_sees_and_touches_nothing_of_another() {
    let w = closed(AuthConfig::default()).await;
    let acme_key = w.key("acme", "tenant-admin").await;
    let globex_key = w.key("globex", "tenant-admin").await;
    let (acme, globex) = (w.client_with(&acme_key), w.client_with(&globex_key));

    // acme: a running task (with an idempotency key) and a dead letter.
    let (status, _, running) = call(
        &acme,
        Method::POST,
        "/api/v1/tasks",
        Some(
            json!({"tool": "demo.sleep", "arguments": {"seconds": 30, "steps": 30},
                    "idempotency_key": "order-1"}),
        ),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(running["tenant"], "acme");
    let running: Uuid = running["id"].as_str().unwrap().parse().unwrap();
    let (_, _, dead) = call(
        &acme,
        Method::POST,
        "/api/v1/tasks",
        Some(
            json!({"tool": "demo.sleep", "arguments": {"seconds": 30, "steps": 1},
                    "timeout_secs": 1, "max_attempts": 1}),
        ),
    )
    .await;
    let dead: Uuid = dead["id"].as_str().unwrap().parse().unwrap();
    w.wait_recorded(dead, TaskStatus::Failed).await;
    eventually(
        "the running task recorded running (the lists below read the database)",
        Duration::from_secs(10),
        || async {
            let t = w.store.task(running).await.unwrap()?;
            (t.status == TaskStatus::Running).then_some(())
        },
    )
    .await;

    // globex: every route on acme's objects is "not found", and lists leave them out.
    for (method, path) in [
        (Method::GET, format!("/api/v1/tasks/{running}")),
        (Method::GET, format!("/api/v1/tasks/{running}/events")),
        (Method::POST, format!("/api/v1/tasks/{running}/cancel")),
        (Method::GET, format!("/api/v1/dlq/{dead}")),
        (Method::POST, format!("/api/v1/dlq/{dead}/replay")),
    ] {
        let (status, _, problem) = call(&globex, method.clone(), &path, None).await;
        assert_eq!(status, 404, "globex {method} {path}: {problem}");
    }
    let (_, _, tasks) = call(&globex, Method::GET, "/api/v1/tasks", None).await;
    assert_eq!(tasks["tasks"], json!([]));
    let (_, _, dlq) = call(&globex, Method::GET, "/api/v1/dlq", None).await;
    assert_eq!(dlq["dead_letters"], json!([]));
    let (_, _, keys) = call(&globex, Method::GET, "/api/v1/keys", None).await;
    assert!(
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["tenant"] == "globex")
    );
    let acme_key_id = w.store.keys(Some("acme")).await.unwrap()[0].id;
    for method in [Method::GET, Method::DELETE] {
        let (status, _, _) = call(
            &globex,
            method,
            &format!("/api/v1/keys/{acme_key_id}"),
            None,
        )
        .await;
        assert_eq!(status, 404);
    }
    let (status, _, _) = call(&globex, Method::GET, "/api/v1/keys?tenant=acme", None).await;
    assert_eq!(status, 403);

    // The same idempotency key is another tenant's own: a new task, not acme's.
    let (status, _, theirs) = call(
        &globex,
        Method::POST,
        "/api/v1/tasks",
        Some(
            json!({"tool": "demo.sleep", "arguments": {"seconds": 30, "steps": 30},
                    "idempotency_key": "order-1"}),
        ),
    )
    .await;
    assert_eq!(status, 202, "{theirs}");
    assert_ne!(theirs["id"], running.to_string());
    assert_eq!(theirs["tenant"], "globex");

    // Over the WebSocket too.
    let mut ws = WsClient::connect_as(&w, &globex_key).await;
    ws.send(json!({"type": "task:subscribe", "task_id": running}))
        .await;
    let m = ws.next().await;
    assert_eq!(
        (m["type"].as_str(), m["code"].as_str()),
        (Some("error"), Some("task_not_found")),
        "{m}"
    );
    ws.send(json!({"type": "task:cancel", "task_id": running}))
        .await;
    let m = ws.next().await;
    assert_eq!(
        (m["type"].as_str(), m["code"].as_str()),
        (Some("error"), Some("task_not_found")),
        "{m}"
    );

    // acme still has all of it: the refusals were about the tenant, not the objects.
    let (_, _, v) = call(
        &acme,
        Method::GET,
        &format!("/api/v1/tasks/{running}"),
        None,
    )
    .await;
    assert_eq!(v["status"], "running", "globex's cancel changed nothing");
    let (_, _, list) = call(&acme, Method::GET, "/api/v1/tasks", None).await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 2);
    let (_, _, dlq) = call(&acme, Method::GET, "/api/v1/dlq", None).await;
    assert_eq!(dlq["dead_letters"].as_array().unwrap().len(), 1);
    let mut ws = WsClient::connect_as(&w, &acme_key).await;
    ws.send(json!({"type": "task:subscribe", "task_id": running}))
        .await;
    assert_eq!(ws.next().await["type"], "task:accepted");
    let (status, _, _) = call(
        &acme,
        Method::POST,
        &format!("/api/v1/tasks/{running}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn rate_limits_answer_429_with_when_to_retry() {
    let mut options = required(AuthConfig::default());
    options.gateway.limits = LimitsConfig {
        // Three at once, then one every five seconds.
        write: Some(Rate {
            per_sec: 0.2,
            burst: Some(3),
        }),
        ..LimitsConfig::default()
    };
    let w = Wharf::start_with(options).await;
    let acme_key = w.key("acme", "submitter").await;
    let acme = w.client_with(&acme_key);
    let globex = w.client_for("globex", "submitter").await;
    wharf_testkit::wait_for_tool_at(&acme, "demo.echo").await;
    let echo = json!({"tool": "demo.echo", "arguments": {"message": "hi"}});
    let mut remaining = Vec::new();
    let mut refused = None;
    // The allowance refills one per five seconds: of five quick requests, some are refused.
    for _ in 0..5 {
        let (status, headers, body) =
            call(&acme, Method::POST, "/api/v1/tasks", Some(echo.clone())).await;
        assert_eq!(headers["ratelimit-limit"], "3");
        if status == 429 {
            refused = Some((headers, body));
            break;
        }
        assert_eq!(status, 202, "{body}");
        remaining.push(headers["ratelimit-remaining"].to_str().unwrap().to_owned());
    }
    let (headers, problem) = refused.expect("a request beyond the burst is refused");
    assert_eq!(problem["code"], "rate_limited");
    assert_eq!(headers["ratelimit-remaining"], "0");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry), "Retry-After {retry}");
    assert_eq!(remaining.first().map(String::as_str), Some("2"));
    // Another tenant has its own allowance; reads are not limited here.
    let (status, _, _) = call(&globex, Method::POST, "/api/v1/tasks", Some(echo.clone())).await;
    assert_eq!(status, 202);
    let (status, _, _) = call(&acme, Method::GET, "/api/v1/tasks", None).await;
    assert_eq!(status, 200);
    // WebSocket submissions draw on the same allowance.
    let mut ws = WsClient::connect_as(&w, &acme_key).await;
    ws.send(json!({"type": "task:submit", "ref": "r1", "task": echo}))
        .await;
    let m = ws.next().await;
    assert_eq!(
        (m["type"].as_str(), m["code"].as_str()),
        (Some("error"), Some("rate_limited")),
        "{m}"
    );
    // After the wait it names, the tenant may submit again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (status, _, body) = call(&acme, Method::POST, "/api/v1/tasks", Some(echo)).await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn addresses_are_limited_before_authentication() {
    let mut options = required(AuthConfig::default());
    options.gateway.limits.per_ip = Some(Rate {
        per_sec: 0.2,
        burst: Some(2),
    });
    let w = Wharf::start_with(options).await;
    let anonymous = w.client();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, _, _) = call(&anonymous, Method::GET, "/api/v1/tasks", None).await;
        statuses.push(status.as_u16());
    }
    assert_eq!(&statuses[..2], [401, 401], "{statuses:?}");
    assert!(
        statuses[2..].contains(&429),
        "guessing keys is throttled: {statuses:?}"
    );
    // The health checks are not counted: load balancers probe them often.
    for _ in 0..3 {
        let (status, _, _) = call(&anonymous, Method::GET, "/healthz", None).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn a_tenant_may_have_only_so_many_unfinished_tasks() {
    let mut options = required(AuthConfig::default());
    options.gateway.limits.tenant_max_unfinished = Some(2);
    let w = Wharf::start_with(options).await;
    let acme = w.client_for("acme", "submitter").await;
    let globex = w.client_for("globex", "submitter").await;
    wharf_testkit::wait_for_tool_at(&acme, "demo.sleep").await;
    let long = json!({"tool": "demo.sleep", "arguments": {"seconds": 30, "steps": 30}});
    let keyed = json!({"tool": "demo.sleep", "arguments": {"seconds": 30, "steps": 30},
                       "idempotency_key": "first"});
    let mut ids = Vec::new();
    for body in [&keyed, &long] {
        let (status, _, v) = call(&acme, Method::POST, "/api/v1/tasks", Some(body.clone())).await;
        assert_eq!(status, 202);
        ids.push(v["id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    let (status, headers, problem) =
        call(&acme, Method::POST, "/api/v1/tasks", Some(long.clone())).await;
    assert_eq!(status, 429, "{problem}");
    assert_eq!(problem["code"], "too_many_tasks");
    // A repeat of an accepted submission is not a new task: the cap does not refuse it.
    let (status, _, again) = call(&acme, Method::POST, "/api/v1/tasks", Some(keyed.clone())).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], ids[0].to_string());
    assert!(headers.contains_key("retry-after"));
    let (status, _, _) = call(
        &acme,
        Method::POST,
        "/api/v1/tasks/batch",
        Some(json!({"tasks": [long.clone()]})),
    )
    .await;
    assert_eq!(status, 429, "a batch counts too");
    // In a batch as alone: the repeat is not new, so a batch of only repeats is answered.
    let (status, _, batch) = call(
        &acme,
        Method::POST,
        "/api/v1/tasks/batch",
        Some(json!({"tasks": [keyed.clone()]})),
    )
    .await;
    assert!(status.is_success(), "{status}: {batch}");
    assert_eq!(batch["tasks"][0]["id"], ids[0].to_string());
    // A refused batch gives back the key it claimed: sent alone later, it is a new task.
    let fresh = json!({"tool": "demo.sleep", "arguments": {"seconds": 30, "steps": 30},
                       "idempotency_key": "second"});
    let (status, _, _) = call(
        &acme,
        Method::POST,
        "/api/v1/tasks/batch",
        Some(json!({"tasks": [keyed.clone(), fresh.clone()]})),
    )
    .await;
    assert_eq!(status, 429, "the new task of the batch is over the cap");
    let (status, _, _) = call(&globex, Method::POST, "/api/v1/tasks", Some(long.clone())).await;
    assert_eq!(status, 202, "the cap is per tenant");
    // Once they end, there is room again.
    for id in &ids {
        call(
            &acme,
            Method::POST,
            &format!("/api/v1/tasks/{id}/cancel"),
            None,
        )
        .await;
    }
    for id in &ids {
        w.wait_recorded(*id, TaskStatus::Cancelled).await;
    }
    eventually("room for a new task", Duration::from_secs(10), || async {
        let (status, _, _) = call(&acme, Method::POST, "/api/v1/tasks", Some(long.clone())).await;
        (status == 202).then_some(())
    })
    .await;
    // The refused batch's key was given back: the task it names is new now.
    let (status, _, v) = call(&acme, Method::POST, "/api/v1/tasks", Some(fresh)).await;
    assert_eq!(status, 202, "{v}");
}

#[tokio::test]
async fn an_open_gateway_still_checks_the_credentials_it_is_given() {
    let w = Wharf::start_with(Options::default()).await;
    let (status, _, me) = call(&w.client(), Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(
        (status.as_u16(), me["actor"].as_str()),
        (200, Some("anonymous"))
    );
    let basic = w
        .client()
        .request(Method::GET, "/api/v1/whoami")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(
        basic.status(),
        401,
        "another scheme is not taken for no credentials"
    );
    let (status, _, _) = call(
        &w.client_with("wharf_00"),
        Method::GET,
        "/api/v1/whoami",
        None,
    )
    .await;
    assert_eq!(status, 401, "an unknown key is refused, not made anonymous");
    let acme = w.client_for("acme", "reader").await;
    let (_, _, me) = call(&acme, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(me["tenant"], "acme");
}

#[tokio::test]
async fn browsers_may_call_from_the_configured_origins_only() {
    let mut options = Options::default();
    options.gateway.cors_origins = vec!["https://console.example".into()];
    let w = Wharf::start_with(options).await;
    let preflight = |origin: &'static str| {
        w.client()
            .request(Method::OPTIONS, "/api/v1/tasks")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let ok = preflight("https://console.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://console.example"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}
