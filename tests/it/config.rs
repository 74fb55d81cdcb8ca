//! `/api/v1/config`: runtime settings changed through the API reach every gateway, with a
//! revision history, and a stale or bad change changes nothing.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use wharf_gateway::GatewayConfig;
use wharf_testkit::{Wharf, eventually, send};

#[tokio::test]
async fn a_change_reaches_every_gateway_and_is_kept_with_who_made_it() {
    let w = Wharf::start().await;
    let (second, _part) = w.gateway_with(GatewayConfig::default()).await;
    let http = &w.client();

    // Revision 0: the configuration file's settings.
    let (status, now) = send(http.request(Method::GET, "/api/v1/config")).await;
    assert_eq!(status, 200);
    assert_eq!(now["revision"], 0);
    assert_eq!(now["config"]["session_ttl_secs"], 86400);

    // A bad change is refused, naming the field, and changes nothing.
    let (status, problem) = send(http.request(Method::PUT, "/api/v1/config").json(&json!({
        "revision": 0,
        "config": {"session_ttl_secs": 3600, "queues": {"emails": {"max_attempts": 0}}}
    })))
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["errors"][0]["pointer"],
        "/config/queues/emails/max_attempts"
    );
    let (status, problem) = send(http.request(Method::PUT, "/api/v1/config").json(&json!({
        "revision": 0,
        "config": {"session_ttl_secs": 3600, "limits": {"write": {"per_sec": 0}}}
    })))
    .await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["pointer"], "/config/limits/write");

    // A good one: a write limit, queue defaults, a shorter session life.
    let change = json!({
        "revision": 0,
        "config": {
            "limits": {"write": {"per_sec": 0.02, "burst": 2}},
            "queues": {"emails": {"max_attempts": 9, "priority": "low"}},
            "session_ttl_secs": 3600
        }
    });
    let (status, applied) = send(http.request(Method::PUT, "/api/v1/config").json(&change)).await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["revision"], 1);
    assert_eq!(applied["updated_by"], "anonymous");

    // The same change again names a revision that is no longer current.
    let (status, problem) = send(http.request(Method::PUT, "/api/v1/config").json(&change)).await;
    assert_eq!(status, 409);
    assert_eq!(problem["code"], "config_conflict");

    // The other gateway has it within moments (announced on NATS, not its 30 s check).
    eventually(
        "the second gateway at revision 1",
        Duration::from_secs(5),
        || async {
            let (_, v) = send(
                http.at(&second)
                    .unwrap()
                    .request(Method::GET, "/api/v1/config"),
            )
            .await;
            (v["revision"] == 1).then_some(())
        },
    )
    .await;
    // And acts on it: its write allowance is 2 at once.
    w.wait_for_tool("demo.echo").await;
    let echo = json!({"tool": "demo.echo", "arguments": {"message": "x"}, "queue": "emails"});
    let mut statuses = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..3 {
        let (status, answer) = send(
            http.at(&second)
                .unwrap()
                .request(Method::POST, "/api/v1/tasks")
                .json(&echo),
        )
        .await;
        statuses.push(status.as_u16());
        answers.push(answer);
    }
    assert_eq!(statuses, [202, 202, 429], "{statuses:?}");
    // Queue defaults and the session life apply to what is made next.
    let task = &answers[0];
    assert_eq!(
        (task["max_attempts"].as_u64(), task["priority"].as_str()),
        (Some(9), Some("low"))
    );
    let (_, session) = send(
        http.request(Method::POST, "/api/v1/sessions")
            .json(&json!({})),
    )
    .await;
    let created: chrono::DateTime<chrono::Utc> =
        session["created_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> =
        session["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!((expires - created).num_seconds(), 3600);

    // The history says who changed what, when.
    let (_, history) = send(http.request(Method::GET, "/api/v1/config/revisions")).await;
    let first = &history["revisions"][0];
    assert_eq!(first["revision"], 1);
    assert_eq!(first["by"], "anonymous");
    assert_eq!(
        first["changed"],
        json!(["limits.write", "queues.emails", "session_ttl_secs"])
    );

    // A gateway started later begins with the newest revision (and, new, whole allowances).
    let (third, _third_part) = w.gateway_with(GatewayConfig::default()).await;
    let (_, v) = send(
        http.at(&third)
            .unwrap()
            .request(Method::GET, "/api/v1/config"),
    )
    .await;
    assert_eq!(v["revision"], 1);

    // A later revision that leaves the limits alone leaves the allowances alone: the second
    // gateway, out of writes, stays so (one comes back every 50 s).
    let mut unchanged_limits = change.clone();
    unchanged_limits["revision"] = json!(1);
    unchanged_limits["config"]["session_ttl_secs"] = json!(7200);
    let (status, applied) = send(
        http.at(&third)
            .unwrap()
            .request(Method::PUT, "/api/v1/config")
            .json(&unchanged_limits),
    )
    .await;
    assert_eq!(status, 200, "{applied}");
    eventually(
        "the second gateway at revision 2",
        Duration::from_secs(5),
        || async {
            let (_, v) = send(
                http.at(&second)
                    .unwrap()
                    .request(Method::GET, "/api/v1/config"),
            )
            .await;
            (v["revision"] == 2).then_some(())
        },
    )
    .await;
    let (status, _) = send(
        http.at(&second)
            .unwrap()
            .request(Method::POST, "/api/v1/tasks")
            .json(&echo),
    )
    .await;
    assert_eq!(status, 429, "the write allowance was not started afresh");
}
