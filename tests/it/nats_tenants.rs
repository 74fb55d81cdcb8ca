//! Tenants on NATS: with the gateway answering nats-server's auth callout, a tenant's program
//! connects with its own API key and may follow its own tasks' events there, and nothing of
//! another tenant, nor anything of the platform; bad credentials are refused at the door.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::json;
use wharf_contract::{TaskStatus, tenant_live_events};
use wharf_gateway::GatewayConfig;
use wharf_gateway::nats_auth::{NatsAuthConfig, new_issuer, new_xkey};
use wharf_testkit::{NatsEvents, Options, Wharf, nats_refusal, tenant_nats};

/// A tenant connection with `token`.
async fn connect(
    w: &Wharf,
    token: &str,
) -> Result<(async_nats::Client, NatsEvents), async_nats::ConnectError> {
    tenant_nats(w, token, None).await
}

/// Submits an echo of `message` over HTTP with `credential`; the task's id.
async fn submit_as(w: &Wharf, credential: &str, message: &str) -> uuid::Uuid {
    let r = w
        .client_with(credential)
        .request(Method::POST, "/api/v1/tasks")
        .json(&json!({"tool": "demo.echo", "arguments": {"message": message}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let task: serde_json::Value = r.json().await.unwrap();
    task["id"].as_str().unwrap().parse().unwrap()
}

/// A platform whose nats-server sends every other connection to the gateway's callout,
/// encrypted to an xkey or not.
async fn start(encrypted: bool) -> Wharf {
    let (seed, _) = new_issuer();
    Wharf::start_with(Options {
        gateway: GatewayConfig {
            nats_auth: Some(NatsAuthConfig {
                issuer_seed: seed,
                xkey_seed: encrypted.then(|| new_xkey().0),
                account: "$G".into(),
                max_session_secs: 900,
            }),
            ..GatewayConfig::default()
        },
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn a_tenant_follows_its_own_tasks_on_nats_and_nothing_else() {
    let w = start(true).await;
    // The platform itself runs on the secured server, with its password from the URL.
    w.wait_for_tool("demo.echo").await;

    // No credential, an unknown key, a malformed token: refused when connecting.
    for bad in [
        "",
        "wharf_0000000000000000000000000000000000000000000000000000000000000000",
        "not-a-token",
    ] {
        let refused = connect(&w, bad).await;
        assert!(refused.is_err(), "{bad:?} must not connect");
    }
    // Anyone without a credential at all, too.
    assert!(
        async_nats::connect(w.nats.client_url()).await.is_err(),
        "a connection without credentials is refused"
    );

    let acme = w.key("acme", "reader").await;
    let globex = w.key("globex", "submitter").await;
    let (acme_nats, mut acme_errors) = connect(&w, &acme).await.expect("acme's key connects");
    let mut own = acme_nats
        .subscribe(tenant_live_events("acme"))
        .await
        .unwrap();

    // Every way to see another tenant's events, or the platform's subjects, is refused.
    for forbidden in [
        tenant_live_events("globex"),
        "wharf.live.events.>".to_owned(),
        "wharf.live.events.*.*".to_owned(),
        "wharf.events.>".to_owned(),
        "wharf.tasks.>".to_owned(),
        "_INBOX.>".to_owned(),
        ">".to_owned(),
    ] {
        let _sub = acme_nats.subscribe(forbidden.clone()).await.unwrap();
        let said = nats_refusal(&mut acme_errors).await;
        assert!(
            said.contains("Permissions Violation") && said.contains("Subscription"),
            "{forbidden}: {said}"
        );
    }
    // It may publish nothing: not a task, not a JetStream API request.
    acme_nats
        .publish("wharf.tasks.default", "{}".into())
        .await
        .unwrap();
    let said = nats_refusal(&mut acme_errors).await;
    assert!(
        said.contains("Permissions Violation") && said.contains("Publish"),
        "{said}"
    );

    // globex's task ends; acme's own subscription sees none of it. acme's task's events reach it.
    let (globex_nats, mut globex_errors) =
        connect(&w, &globex).await.expect("globex's key connects");
    let mut globex_own = globex_nats
        .subscribe(tenant_live_events("globex"))
        .await
        .unwrap();
    // A flush only writes the subscription out. The server answers a forbidden subscription
    // after it has processed the ones before it, so that refusal proves globex's own
    // subscription is in place (acme's was, before the refusals above).
    let _probe = globex_nats
        .subscribe(tenant_live_events("acme"))
        .await
        .unwrap();
    nats_refusal(&mut globex_errors).await;
    let theirs = submit_as(&w, &globex, "globex").await;
    w.wait_recorded(theirs, TaskStatus::Succeeded).await;
    let mine = submit_as(&w, &w.key("acme", "submitter").await, "acme").await;

    // globex sees its own task's events.
    let first = tokio::time::timeout(Duration::from_secs(10), globex_own.next())
        .await
        .expect("globex's events within 10 s")
        .unwrap();
    assert!(
        first.subject.as_str().ends_with(&theirs.to_string()),
        "{}",
        first.subject
    );

    // acme's subscription gets its own task's events, from the first: its subject holds acme's
    // tasks only (that acme can subscribe to nothing else is what the refusals above show).
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = own.next().await {
            let event: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            let kind = event["type"].as_str().unwrap_or("").to_owned();
            seen.push((m.subject.to_string(), kind.clone()));
            if kind == "succeeded" {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("acme's task to end within 10 s; saw {seen:?}"));
    assert!(
        seen.iter()
            .all(|(subject, _)| subject == &format!("wharf.live.events.acme.{mine}")),
        "acme saw only its own task: {seen:?}"
    );
    assert_eq!(seen[0].1, "submitted", "{seen:?}");

    // A revoked key can no longer connect.
    let info = w
        .store
        .key_by_hash(&wharf_gateway::auth::hash_secret(&acme))
        .await
        .unwrap()
        .unwrap();
    let revoked = w
        .client()
        .request(Method::DELETE, &format!("/api/v1/keys/{}", info.info.id))
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    assert!(
        connect(&w, &acme).await.is_err(),
        "a revoked key must not connect"
    );
    w.shutdown().await;
}

/// Without an xkey the requests travel in the clear, and the same rules hold.
#[tokio::test]
async fn without_an_xkey_the_callout_answers_all_the_same() {
    let w = start(false).await;
    w.wait_for_tool("demo.echo").await;
    assert!(connect(&w, "wharf_not-a-key").await.is_err());
    let key = w.key("acme", "reader").await;
    let (client, mut errors) = connect(&w, &key).await.expect("the key connects");
    let _own = client.subscribe(tenant_live_events("acme")).await.unwrap();
    let _other = client
        .subscribe(tenant_live_events("globex"))
        .await
        .unwrap();
    let said = nats_refusal(&mut errors).await;
    assert!(said.contains("Permissions Violation"), "{said}");
    assert!(
        said.contains("globex"),
        "the refusal is globex's subscription: {said}"
    );
    w.shutdown().await;
}

/// A key that expires ends the NATS session with it, not max_session_secs later.
#[tokio::test]
async fn a_session_ends_when_its_key_expires() {
    let w = start(true).await;
    w.wait_for_tool("demo.echo").await;
    let (info, secret, hash) = wharf_gateway::auth::mint_key(
        "short".into(),
        "acme".into(),
        "reader".into(),
        "test".into(),
        Some(chrono::Utc::now() + chrono::Duration::seconds(3)),
    );
    w.store.create_key(&info, &hash).await.unwrap();
    let (client, mut events) = connect(&w, &secret)
        .await
        .expect("the key connects while it is valid");
    let connected = std::time::Instant::now();
    // The server closes the connection when the authorization expires: with the key, not
    // max_session_secs (900 s) later.
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = events.recv().await {
            let disconnected = matches!(e, async_nats::Event::Disconnected);
            seen.push(e.to_string());
            if disconnected {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the expiring session was not ended; events: {seen:?}"));
    assert!(
        connected.elapsed() >= Duration::from_secs(1),
        "ended by the expiry, not at once: {seen:?}"
    );
    drop(client);
    // And the key, expired, connects no more.
    assert!(connect(&w, &secret).await.is_err());
    w.shutdown().await;
}

/// NATS connection attempts count against the address's allowance (`limits.per_ip`), as HTTP
/// requests do: past it, even a good key is refused.
#[tokio::test]
async fn connection_attempts_count_against_the_address_limit() {
    let w = start(true).await;
    w.wait_for_tool("demo.echo").await;
    let key = w.key("acme", "reader").await;
    // Two attempts at once, then one every 100 s: the third attempt in a row is refused.
    let r = w
        .client()
        .request(Method::PUT, "/api/v1/config")
        .json(&json!({"revision": 0, "config": {
            "session_ttl_secs": 86400,
            "limits": {"per_ip": {"per_sec": 0.01, "burst": 2}}
        }}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        connect(&w, "wharf_unknown").await.is_err(),
        "an unknown key"
    );
    assert!(
        connect(&w, &key).await.is_ok(),
        "the second attempt, within the burst"
    );
    assert!(
        connect(&w, &key).await.is_err(),
        "the third attempt in a row is over the address's allowance"
    );
    // (Read from the database: this address has no HTTP allowance left either.)
    let details = wharf_testkit::eventually(
        "the refusal in the audit log",
        Duration::from_secs(10),
        || async {
            let entries = w
                .store
                .audit(&wharf_store::AuditFilter {
                    tenant: None,
                    action: Some("auth.unauthenticated".into()),
                    before: None,
                    limit: 100,
                })
                .await
                .unwrap();
            let details: Vec<String> = entries.into_iter().filter_map(|e| e.detail).collect();
            details
                .iter()
                .any(|d| d.contains("too many"))
                .then_some(details)
        },
    )
    .await;
    assert!(
        details.iter().any(|d| d.contains("not known")),
        "the unknown key's refusal is there too: {details:?}"
    );
    w.shutdown().await;
}
