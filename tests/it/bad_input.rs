//! Every kind of bad submission gets a problem+json naming what is wrong, and changes nothing.

use serde_json::{Value, json};
use wharf_contract::{EVENTS_STREAM, TASKS_STREAM};
use wharf_testkit::Wharf;

/// Sends a raw body; returns status, content type and the problem document.
async fn post_raw(w: &Wharf, content_type: &str, body: Vec<u8>) -> (u16, String, Value) {
    let r = w
        .http
        .post(w.url("/api/v1/tasks"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    (status, ct, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_submissions_are_refused_and_nothing_is_written() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;
    let json_ct = "application/json";
    // name, content type, body, status, code, a pointer the errors must name
    type Case = (
        &'static str,
        &'static str,
        Vec<u8>,
        u16,
        &'static str,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed json",
            json_ct,
            b"{\"tool\": ".to_vec(),
            400,
            "malformed_body",
            None,
        ),
        (
            "not an object",
            json_ct,
            b"[1,2]".to_vec(),
            422,
            "invalid_field",
            Some(""),
        ),
        (
            "a wrong type deep in metadata keeps its place",
            json_ct,
            br#"{"tool":"demo.echo","arguments":{"message":"x"},"metadata":[1]}"#.to_vec(),
            422,
            "invalid_field",
            Some("/metadata"),
        ),
        (
            "unknown field",
            json_ct,
            br#"{"tool":"demo.echo","arguments":{"message":"x"},"colour":"red"}"#.to_vec(),
            422,
            "invalid_field",
            Some("/colour"),
        ),
        (
            "wrong type of a field",
            json_ct,
            br#"{"tool":"demo.echo","arguments":{"message":"x"},"max_attempts":"three"}"#.to_vec(),
            422,
            "invalid_field",
            Some("/max_attempts"),
        ),
        (
            "missing tool",
            json_ct,
            br#"{"arguments":{}}"#.to_vec(),
            422,
            "invalid_field",
            Some("/tool"),
        ),
        (
            "unknown tool",
            json_ct,
            br#"{"tool":"demo.slep","arguments":{"seconds":1}}"#.to_vec(),
            422,
            "unknown_tool",
            Some("/tool"),
        ),
        (
            "arguments failing the input schema",
            json_ct,
            br#"{"tool":"demo.sleep","arguments":{"seconds":"soon"}}"#.to_vec(),
            422,
            "invalid_arguments",
            Some("/arguments/seconds"),
        ),
        (
            "a required argument missing",
            json_ct,
            br#"{"tool":"demo.echo","arguments":{}}"#.to_vec(),
            422,
            "invalid_arguments",
            Some("/arguments"),
        ),
        (
            "bad queue name",
            json_ct,
            br#"{"tool":"demo.echo","arguments":{"message":"x"},"queue":"a.b"}"#.to_vec(),
            422,
            "invalid_field",
            Some("/queue"),
        ),
        (
            "max_attempts out of range",
            json_ct,
            br#"{"tool":"demo.echo","arguments":{"message":"x"},"max_attempts":0}"#.to_vec(),
            422,
            "invalid_field",
            Some("/max_attempts"),
        ),
        (
            "timeout out of range",
            json_ct,
            br#"{"tool":"demo.echo","arguments":{"message":"x"},"timeout_secs":0}"#.to_vec(),
            422,
            "invalid_field",
            Some("/timeout_secs"),
        ),
        (
            "wrong media type",
            "text/plain",
            br#"{"tool":"demo.echo","arguments":{"message":"x"}}"#.to_vec(),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            "oversized body",
            json_ct,
            format!(
                r#"{{"tool":"demo.echo","arguments":{{"message":"{}"}}}}"#,
                "x".repeat(2 * 1024 * 1024)
            )
            .into_bytes(),
            413,
            "body_too_large",
            None,
        ),
    ];
    for (name, ct, body, status, code, pointer) in cases {
        let (got, content_type, problem) = post_raw(&w, ct, body).await;
        assert_eq!(got, status, "{name}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{name}");
        assert_eq!(problem["status"], status, "{name}");
        assert_eq!(problem["code"], code, "{name}: {problem}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}"
        );
        if let Some(pointer) = pointer {
            let pointers: Vec<&str> = problem["errors"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no errors in {problem}"))
                .iter()
                .map(|e| e["pointer"].as_str().unwrap())
                .collect();
            assert!(pointers.contains(&pointer), "{name}: {pointers:?}");
        }
    }

    // The unknown tool lists close names.
    let (_, _, problem) = post_raw(
        &w,
        json_ct,
        br#"{"tool":"demo.slep","arguments":{}}"#.to_vec(),
    )
    .await;
    let suggestions: Vec<&str> = problem["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(suggestions.first(), Some(&"demo.sleep"));

    // Nothing was enqueued, nothing was written.
    assert_eq!(w.stream_messages(TASKS_STREAM).await, 0);
    assert_eq!(w.stream_messages(EVENTS_STREAM).await, 0);
    assert!(w.store.count_by_status().await.unwrap().is_empty());

    // A good submission still works afterwards.
    let id = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "ok"}}))
        .await;
    w.wait_recorded(id, wharf_contract::TaskStatus::Succeeded)
        .await;
    w.shutdown().await;
}

#[tokio::test]
async fn bad_list_queries_are_refused() {
    let w = Wharf::start().await;
    for (query, param) in [
        ("status=finished", "/query/status"),
        ("limit=0", "/query/limit"),
        ("limit=lots", "/query/limit"),
        ("colour=red", "/query/colour"),
        ("cursor=nope", "/query/cursor"),
    ] {
        let r = w
            .http
            .get(w.url(&format!("/api/v1/tasks?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_query");
        assert_eq!(problem["errors"][0]["pointer"], param, "{query}");
    }
    w.shutdown().await;
}
