//! How the gateway serves connections: HTTPS with HSTS, bounded request heads, a deadline to
//! send them, and a deadline to answer.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use wharf_gateway::{GatewayConfig, TlsConfig};
use wharf_testkit::{Options, Wharf, certificate};

/// Sends one raw HTTP/1.1 request over `stream` and reads the answer to its end.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the gateway answers and closes")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn https_with_hsts_when_a_certificate_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, cert_file, key_file) = certificate(dir.path());
    let w = Wharf::start_with(Options {
        gateway: GatewayConfig {
            tls: Some(TlsConfig {
                cert_file,
                key_file,
                hsts_max_age_secs: 600,
            }),
            ..GatewayConfig::default()
        },
        ..Options::default()
    })
    .await;
    let addr = w.api.trim_start_matches("http://").to_owned();

    // A client that trusts only the test CA.
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&ca_file).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("the TLS handshake");
    let answer = exchange(
        tls,
        "GET /api/v1/tasks HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("strict-transport-security: max-age=600; includesubdomains"),
        "{answer}"
    );

    // Plain HTTP to the TLS port gets nothing served.
    let plain = exchange(
        TcpStream::connect(&addr).await.unwrap(),
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!plain.contains("200 OK"), "{plain}");
}

#[tokio::test]
async fn oversized_and_slow_request_heads_are_cut_off() {
    let w = Wharf::start_with(Options {
        gateway: GatewayConfig {
            max_header_bytes: 8192,
            header_timeout: Duration::from_secs(1),
            ..GatewayConfig::default()
        },
        ..Options::default()
    })
    .await;
    let big = "x".repeat(10_000);
    let r = w
        .client()
        .request(Method::GET, "/api/v1/tasks")
        .header("x-padding", &big)
        .send()
        .await;
    assert_eq!(r.unwrap().status(), 431);
    let small = w.get("/api/v1/tasks").await;
    assert_eq!(small.status(), 200, "an ordinary request still passes");

    // A client that starts a request head and never finishes it is disconnected.
    let addr = w.api.trim_start_matches("http://").to_owned();
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /api/v1/tasks HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest))
        .await
        .expect("the gateway hangs up on a head that never ends")
        .ok();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "cut off at the 1 s header timeout, not before nor much after: {took:?}"
    );
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_answered_504() {
    let w = Wharf::start_with(Options {
        gateway: GatewayConfig {
            request_timeout: Duration::from_secs(1),
            ..GatewayConfig::default()
        },
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.sleep").await;
    // A key held by a request still in flight: a repeat would wait for it for 5 s.
    w.bus
        .claim_idempotency_key("default/held", uuid::Uuid::now_v7())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let r = w
        .client()
        .request(Method::POST, "/api/v1/tasks")
        .json(
            &json!({"tool": "demo.echo", "arguments": {"message": "x"}, "idempotency_key": "held"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered at the deadline, not after the 5 s wait"
    );
    // A tool call's wait ends before the deadline: 202 with the running task, not 504.
    let r = w
        .client()
        .request(Method::POST, "/api/v1/tools/demo.sleep/call?wait=30s")
        .json(&json!({"arguments": {"seconds": 3, "steps": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Streams are not cut: an SSE subscription outlives the deadline.
    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 3, "steps": 3}}))
        .await;
    let text = w
        .get(&format!("/api/v1/tasks/{id}/events"))
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("event: task:complete"), "{text}");
}
