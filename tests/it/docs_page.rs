//! The browsable API page, in a real browser: Swagger UI renders the OpenAPI document, every
//! documented operation is listed, and an operation runs from the page.

use serde_json::Value;
use wharf_testkit::Wharf;

#[tokio::test]
async fn the_api_page_renders_every_operation_and_runs_one() {
    let w = Wharf::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/node/docs-page.mjs");
    let out = tokio::process::Command::new("node")
        .arg(script)
        .arg(&w.api)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/node"))
        .output()
        .await
        .expect("node runs");
    assert!(
        out.status.success(),
        "the browser script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        seen["title"].as_str().unwrap().starts_with("Wharf"),
        "{seen}"
    );
    let document: Value = w.get("/api/v1/openapi.json").await.json().await.unwrap();
    let mut documented: Vec<String> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    let mut listed: Vec<String> = seen["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_owned())
        .collect();
    documented.sort();
    listed.sort();
    assert_eq!(
        listed, documented,
        "the page lists every documented operation"
    );
    // "Try it out" on GET /api/v1/whoami, from the browser (open mode: anonymous).
    assert_eq!(seen["status"], "200", "{seen}");
    assert!(
        seen["body"].as_str().unwrap().contains("anonymous"),
        "{seen}"
    );
    assert_eq!(seen["errors"], serde_json::json!([]), "no script errors");
    assert_eq!(
        seen["offsite"],
        serde_json::json!([]),
        "the page loads nothing from elsewhere"
    );
}
