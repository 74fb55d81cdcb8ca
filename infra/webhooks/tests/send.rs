//! The sender against a real HTTP receiver on loopback: what each kind of answer makes of an
//! attempt, and what the default policy refuses before any connection is made.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_webhooks::{Sender, TargetPolicy};

/// A receiver answering by path: `/ok` 204, `/busy` 503 with Retry-After, `/moved` a 302 to
/// `/ok`, `/bad` 400 with a large body, `/slow` never.
async fn receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = vec![0u8; 8192];
                let n = socket.read(&mut head).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&head[..n]).to_string();
                let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
                let answer = match path.as_str() {
                    "/ok" => "HTTP/1.1 204 No Content\r\n\r\n".to_owned(),
                    "/busy" => "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\ncontent-length: 4\r\n\r\nbusy".to_owned(),
                    "/moved" => "HTTP/1.1 302 Found\r\nLocation: /ok\r\ncontent-length: 0\r\n\r\n".to_owned(),
                    "/bad" => format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 100000\r\n\r\n{}", "x".repeat(100_000)),
                    _ => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                };
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn answers_decide_whether_to_retry() {
    wharf_telemetry::install_crypto();
    let base = receiver().await;
    let open = TargetPolicy {
        allow_private: true,
        ..TargetPolicy::default()
    };
    let sender = Sender::new(open, Duration::from_secs(1)).unwrap();
    let post = |path: &str| {
        let url = format!("{base}{path}");
        let sender = sender.clone();
        async move { sender.post(&url, http::HeaderMap::new(), "{}".into()).await }
    };
    let ok = post("/ok").await;
    assert!(ok.delivered(), "{ok:?}");
    let busy = post("/busy").await;
    assert_eq!((busy.status, busy.retry), (Some(503), true));
    assert_eq!(busy.retry_after, Some(Duration::from_secs(7)));
    let moved = post("/moved").await;
    assert_eq!((moved.status, moved.retry), (Some(302), false), "{moved:?}");
    assert!(moved.error.unwrap().contains("redirects are not followed"));
    let bad = post("/bad").await;
    assert_eq!((bad.status, bad.retry), (Some(400), false));
    assert!(
        bad.error.unwrap().len() < 4200,
        "only a bounded part of the answer is kept"
    );
    let slow = post("/slow").await;
    assert_eq!((slow.status, slow.retry), (None, true), "{slow:?}");
}

#[tokio::test]
async fn the_default_policy_refuses_internal_targets_without_connecting() {
    wharf_telemetry::install_crypto();
    let base = receiver().await;
    let sender = Sender::new(TargetPolicy::default(), Duration::from_secs(1)).unwrap();
    // An address written as such, and a name that resolves to loopback.
    let port = base.rsplit(':').next().unwrap();
    for url in [format!("{base}/ok"), format!("http://localhost:{port}/ok")] {
        let refused = sender.post(&url, http::HeaderMap::new(), "{}".into()).await;
        assert_eq!(refused.status, None, "{url}: {refused:?}");
        assert!(!refused.retry, "a refusal by policy is final: {refused:?}");
        assert!(
            refused
                .error
                .as_deref()
                .unwrap()
                .contains("callback policy"),
            "{refused:?}"
        );
    }
    assert!(Sender::check_url(&TargetPolicy::default(), "http://169.254.169.254/").is_err());
    assert!(Sender::check_url(&TargetPolicy::default(), "ftp://example.com/").is_err());
    assert!(Sender::check_url(&TargetPolicy::default(), "https://u:p@example.com/").is_err());
    assert!(Sender::check_url(&TargetPolicy::default(), "https://example.com/hook").is_ok());
}
