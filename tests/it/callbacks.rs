//! Task callbacks: Wharf POSTs a task's end to the URL it names, signed per Standard Webhooks
//! with its tenant's secrets (checked by the reference library from PyPI), retried through a
//! receiver's failures with the same `webhook-id`, every attempt in the delivery log; internal
//! targets refused by the default policy, redirects never followed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;
use wharf_contract::{DeliveryList, DeliveryStatus, TaskStatus};
use wharf_testkit::{Options, Wharf, eventually, send};

const SECRET: &str = "whsec_LNUhPuNf4DD96excS18OjjIKB2NLvcaKaptaiKut2IA=";

/// What the receiver does with one request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Never answers (the sender's timeout ends it).
    Hang,
    /// Closes the connection without a word.
    Drop,
    /// A redirect to `/elsewhere` on the same receiver.
    Redirect,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A receiver on loopback answering its requests by `script`, in order (the last answer
/// repeats), keeping what each request held.
async fn receiver(script: Vec<Answer>) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let Some(request) = read_request(&mut socket).await else {
                continue;
            };
            let n = {
                let mut log = log.lock().unwrap();
                log.push(request);
                log.len()
            };
            let answer = script[(n - 1).min(script.len() - 1)];
            tokio::spawn(async move {
                let text = match answer {
                    Answer::Status(s) => format!("HTTP/1.1 {s} X\r\ncontent-length: 0\r\n\r\n"),
                    Answer::Redirect => {
                        "HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n"
                            .into()
                    }
                    Answer::Hang => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                    Answer::Drop => return,
                };
                let _ = socket.write_all(text.as_bytes()).await;
            });
        }
    });
    (base, seen)
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&data[head_end..]).to_string();
    Some(Received {
        path,
        headers,
        body,
    })
}

/// Whether the Standard Webhooks reference library accepts `request` as signed by `secret`.
async fn verified(request: &Received, secret: &str) -> bool {
    let python = std::env::var("WHARF_WIRING_PYTHON")
        .expect("WHARF_WIRING_PYTHON is not set: run the tests with ./test.sh, which installs it");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/webhooks.py");
    let headers: serde_json::Map<String, Value> = request
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let input = json!({"headers": headers, "body": request.body}).to_string();
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .args(["verify", secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    child.wait().await.unwrap().success()
}

/// A platform whose gateway and recorder may call loopback receivers.
async fn open_platform() -> Wharf {
    open_platform_with(Options::default()).await
}

async fn open_platform_with(mut options: Options) -> Wharf {
    options.gateway.callback_policy.allow_private = true;
    options.callbacks.policy.allow_private = true;
    options.callbacks.timeout = Duration::from_secs(1);
    let w = Wharf::start_with(options).await;
    w.wait_for_tool("demo.sleep").await;
    let change = json!({"revision": 0, "config": {"session_ttl_secs": 86400,
        "callbacks": {"default": {"secrets": [SECRET]}}}});
    let (status, applied) = send(
        w.client()
            .request(Method::PUT, "/api/v1/config")
            .json(&change),
    )
    .await;
    assert_eq!(status, 200, "{applied}");
    w
}

/// Runs the `wharf` CLI against `w`'s gateway: what it printed.
async fn cli(w: &Wharf, args: &[&str]) -> String {
    let mut cmd = w.process(args);
    cmd.env("WHARF_API", &w.api)
        .stdout(std::process::Stdio::piped());
    let out = cmd.output().await.unwrap();
    assert!(out.status.success(), "wharf {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Task `id`'s deliveries once there are at least `n` and every one was delivered.
async fn all_delivered(w: &Wharf, id: Uuid, n: usize) -> DeliveryList {
    eventually(
        &format!("{n} deliveries delivered"),
        Duration::from_secs(30),
        || async {
            let list = deliveries_of(w, id).await;
            (list.deliveries.len() >= n
                && list
                    .deliveries
                    .iter()
                    .all(|d| d.status == DeliveryStatus::Delivered))
            .then_some(list)
        },
    )
    .await
}

async fn deliveries_of(w: &Wharf, id: Uuid) -> DeliveryList {
    let (status, list) = send(
        w.client()
            .request(Method::GET, &format!("/api/v1/tasks/{id}/deliveries")),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    serde_json::from_value(list).unwrap()
}

async fn submit_with_callback(w: &Wharf, url: &str) -> Uuid {
    w.submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "hi"},
                       "callback": {"url": url}}))
        .await
}

#[tokio::test]
async fn a_callback_is_retried_through_failures_with_one_webhook_id_and_logged() {
    let w = open_platform().await;
    let (base, seen) = receiver(vec![
        Answer::Status(503),
        Answer::Hang,
        Answer::Drop,
        Answer::Status(200),
    ])
    .await;
    let id = submit_with_callback(&w, &format!("{base}/hook")).await;
    w.wait_recorded(id, TaskStatus::Succeeded).await;
    let list = eventually(
        "the callback delivered",
        Duration::from_secs(60),
        || async {
            let list = deliveries_of(&w, id).await;
            (list.deliveries.first()?.status == DeliveryStatus::Delivered).then_some(list)
        },
    )
    .await;
    assert_eq!(
        list.deliveries.len(),
        1,
        "only the terminal event by default"
    );
    let d = &list.deliveries[0];
    assert_eq!((d.event.as_str(), d.attempts), ("succeeded", 4), "{d:?}");
    let statuses: Vec<Option<u16>> = d.log.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(503), None, None, Some(200)], "{d:?}");
    assert!(
        d.log[1]
            .error
            .as_deref()
            .unwrap()
            .contains("no answer in time"),
        "{d:?}"
    );

    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 4);
    for r in &requests {
        assert_eq!(r.path, "/hook");
        assert_eq!(
            r.header("webhook-id"),
            Some(d.id.as_str()),
            "one id on every attempt"
        );
    }
    let last = requests.last().unwrap();
    assert!(
        verified(last, SECRET).await,
        "the reference library verifies it"
    );
    assert!(!verified(last, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").await);
    let body: Value = serde_json::from_str(&last.body).unwrap();
    assert_eq!(body["type"], "task.succeeded");
    assert_eq!(body["data"]["task_id"], id.to_string());

    let (status, delivered) = send(
        w.client()
            .request(Method::GET, "/api/v1/deliveries?status=delivered"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(delivered["deliveries"][0]["id"], d.id.as_str());

    // The history's upkeep removes ended deliveries past the retention, with their attempts.
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    assert_eq!(
        w.store
            .prune_deliveries(chrono::Utc::now() - chrono::Duration::days(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(w.store.prune_deliveries(later).await.unwrap(), 1);
    assert!(deliveries_of(&w, id).await.deliveries.is_empty());
    w.shutdown().await;
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_a_failed_delivery_can_be_redelivered() {
    let w = open_platform().await;
    let (base, seen) = receiver(vec![Answer::Redirect, Answer::Status(204)]).await;
    // The callback comes from the task's agent this time.
    let agent = json!({"name": "notifier", "allowed_tools": ["demo.*"],
                       "callback": {"url": format!("{base}/hook")}});
    let (status, created) = send(
        w.client()
            .request(Method::POST, "/api/v1/agents")
            .json(&agent),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = w
        .submit_ok(
            json!({"tool": "demo.echo", "arguments": {"message": "hi"}, "agent": "notifier"}),
        )
        .await;
    let failed = eventually("the delivery failed", Duration::from_secs(30), || async {
        let list = deliveries_of(&w, id).await;
        let d = list.deliveries.into_iter().next()?;
        (d.status == DeliveryStatus::Failed).then_some(d)
    })
    .await;
    assert_eq!(failed.attempts, 1, "a redirect is final: {failed:?}");
    assert!(
        failed
            .last_error
            .as_deref()
            .unwrap()
            .contains("redirects are not followed")
    );
    assert!(
        seen.lock().unwrap().iter().all(|r| r.path == "/hook"),
        "the target was not called"
    );
    let (status, list) = send(
        w.client()
            .request(Method::GET, "/api/v1/deliveries?status=failed"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["deliveries"][0]["id"], failed.id.as_str());

    // The CLI lists it, and redelivers it by hand: the receiver takes it now.
    let listed = cli(&w, &["deliveries", "list", "--status", "failed"]).await;
    assert!(
        listed.contains(&failed.id) && listed.contains("302"),
        "{listed}"
    );
    let again = cli(&w, &["deliveries", "redeliver", &failed.id]).await;
    assert!(again.contains("pending"), "{again}");
    eventually(
        "the redelivery delivered",
        Duration::from_secs(30),
        || async {
            let d = deliveries_of(&w, id).await.deliveries.into_iter().next()?;
            (d.status == DeliveryStatus::Delivered && d.attempts == 2).then_some(())
        },
    )
    .await;
    w.shutdown().await;
}

#[tokio::test]
async fn the_default_policy_refuses_internal_targets_at_submission() {
    let w = Wharf::start().await;
    let change = json!({"revision": 0, "config": {"session_ttl_secs": 86400,
        "callbacks": {"default": {"secrets": [SECRET]}}}});
    let (status, _) = send(
        w.client()
            .request(Method::PUT, "/api/v1/config")
            .json(&change),
    )
    .await;
    assert_eq!(status, 200);
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
    ] {
        let (status, problem) = w
            .submit(json!({"tool": "demo.echo", "arguments": {"message": "x"},
                           "callback": {"url": url}}))
            .await;
        assert_eq!(status, 422, "{url}: {problem}");
        assert_eq!(
            problem["errors"][0]["pointer"], "/callback/url",
            "{problem}"
        );
    }
    // Nor can an agent's default callback point there.
    let agent = json!({"name": "inside", "allowed_tools": ["*"],
                       "callback": {"url": "http://192.168.1.1/hook"}});
    let (status, problem) = send(
        w.client()
            .request(Method::POST, "/api/v1/agents")
            .json(&agent),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["errors"][0]["pointer"], "/callback/url",
        "{problem}"
    );
    // A tenant without secrets cannot have callbacks at all.
    let acme = w.client_for("acme", "submitter").await;
    let (status, problem) = send(acme.request(Method::POST, "/api/v1/tasks").json(&json!({
        "tool": "demo.echo", "arguments": {"message": "x"},
        "callback": {"url": "https://example.com/hook"}})))
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/callback", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("secrets"),
        "{problem}"
    );
    let all = w.client().tasks(&Default::default()).await.unwrap();
    assert!(all.tasks.is_empty(), "nothing was enqueued");
    w.shutdown().await;
}

/// Under load, the recorder delivering the callbacks is killed with SIGKILL mid-delivery and
/// replaced: every task's terminal event still reaches the receiver, and a delivery made twice
/// carries the same `webhook-id` both times.
#[tokio::test]
async fn a_killed_recorder_loses_no_callback() {
    use std::collections::{HashMap, HashSet};
    use wharf_testkit::rig::{Rig, Setup};
    const TASKS: usize = 1000;
    let mut rig = Rig::start_with(Setup {
        workers: 2,
        env: vec![
            ("WHARF_CALLBACKS__ALLOW_PRIVATE".into(), "true".into()),
            ("WHARF_CALLBACKS__TIMEOUT_SECS".into(), "2".into()),
        ],
        ..Setup::default()
    })
    .await;
    let change = json!({"revision": 0, "config": {"session_ttl_secs": 86400,
        "callbacks": {"default": {"secrets": [SECRET]}}}});
    let (status, _) = send(
        rig.http
            .request(Method::PUT, "/api/v1/config")
            .json(&change),
    )
    .await;
    assert_eq!(status, 200);
    let (base, seen) = receiver(vec![Answer::Status(200)]).await;
    let body = json!({"tool": "demo.echo", "arguments": {"message": "x"},
                      "callback": {"url": format!("{base}/hook")}});
    let batch = json!({"tasks": vec![&body; TASKS]});
    let (status, answer) = send(
        rig.http
            .request(Method::POST, "/api/v1/tasks/batch")
            .json(&batch),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let ids: Vec<String> = answer["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    eventually("deliveries under way", Duration::from_secs(60), || async {
        (seen.lock().unwrap().len() >= 150).then_some(())
    })
    .await;
    rig.kill_recorder().await;
    let killed_at = seen.lock().unwrap().len();
    eventually(
        "every callback delivered",
        Duration::from_secs(180),
        || async {
            let delivered = rig
                .store
                .deliveries("default", Some(DeliveryStatus::Delivered), None, 5000)
                .await
                .ok()?;
            (delivered.len() >= TASKS).then_some(())
        },
    )
    .await;
    let requests = seen.lock().unwrap().clone();
    let mut by_task: HashMap<String, HashSet<String>> = HashMap::new();
    for r in &requests {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        let task = body["data"]["task_id"].as_str().unwrap().to_owned();
        let id = r.header("webhook-id").unwrap().to_owned();
        assert!(id.starts_with(&task), "{id} is {task}'s");
        by_task.entry(task).or_default().insert(id);
    }
    for id in &ids {
        let got = by_task
            .get(id)
            .unwrap_or_else(|| panic!("task {id}'s callback never arrived"));
        assert_eq!(
            got.len(),
            1,
            "task {id}: one webhook-id for all its deliveries: {got:?}"
        );
    }
    println!(
        "callbacks: {TASKS} tasks, {} requests received ({} repeated), recorder killed after {killed_at}",
        requests.len(),
        requests.len() - TASKS
    );
}

/// A callback asking for several events gets them in the order they happened, as CloudEvents
/// when it says so.
#[tokio::test]
async fn several_events_arrive_in_order_as_cloudevents() {
    let w = open_platform().await;
    // The first delivery (`started`) is refused once: the later events wait for its retry
    // rather than overtake it.
    let (base, seen) = receiver(vec![Answer::Status(503), Answer::Status(200)]).await;
    let id = w
        .submit_ok(
            json!({"tool": "demo.sleep", "arguments": {"seconds": 1, "steps": 3},
                          "callback": {"url": format!("{base}/ce"), "cloudevents": true,
                                       "events": ["started", "progress", "terminal"]}}),
        )
        .await;
    let list = all_delivered(&w, id, 5).await;
    let events: Vec<&str> = list.deliveries.iter().map(|d| d.event.as_str()).collect();
    assert_eq!(
        events,
        ["started", "progress", "progress", "progress", "succeeded"]
    );
    // The receiver got them in that order: each waited for the one before.
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 6, "the refused first one, then five");
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    let requests = requests[1..].to_vec();
    let types: Vec<String> = requests
        .iter()
        .map(|r| {
            assert_eq!(
                r.header("content-type"),
                Some("application/cloudevents+json")
            );
            let body: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(body["specversion"], "1.0");
            assert_eq!(body["id"], r.header("webhook-id").unwrap());
            assert_eq!(body["subject"], id.to_string());
            body["type"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        types,
        [
            "dev.wharf.task.started",
            "dev.wharf.task.progress",
            "dev.wharf.task.progress",
            "dev.wharf.task.progress",
            "dev.wharf.task.succeeded"
        ]
    );
    assert!(verified(&requests[4], SECRET).await);
    w.shutdown().await;
}

/// With `per_host_per_sec`, one host gets no more attempts a second than that.
/// A short task stores its start with its outcome (docs/delivery.md): a callback asking for
/// `started` still gets it, as a delivery of its own, before the outcome's.
#[tokio::test]
async fn a_start_stored_with_the_outcome_is_delivered_first() {
    let w = open_platform().await;
    // The start is refused once: the outcome, at the same stream sequence, waits for it.
    let (base, seen) = receiver(vec![Answer::Status(503), Answer::Status(200)]).await;
    let id = w
        .submit_ok(
            json!({"tool": "demo.echo", "arguments": {"message": "quick"},
                          "callback": {"url": format!("{base}/hook"),
                                       "events": ["started", "terminal"]}}),
        )
        .await;
    let list = all_delivered(&w, id, 2).await;
    assert_eq!(list.deliveries.len(), 2, "{list:?}");
    let events: Vec<&str> = list.deliveries.iter().map(|d| d.event.as_str()).collect();
    assert_eq!(events, ["started", "succeeded"]);
    let (start, end) = (&list.deliveries[0], &list.deliveries[1]);
    assert_eq!(start.seq, end.seq, "one stored message carried both");
    assert_eq!(start.id, format!("{id}-{}-started", start.seq));
    assert_eq!(end.id, format!("{id}-{}", end.seq));

    let requests = seen.lock().unwrap().clone();
    let order: Vec<(&str, String)> = requests
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(&r.body).unwrap();
            (
                r.header("webhook-id").unwrap(),
                body["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            (start.id.as_str(), "task.started".to_owned()),
            (start.id.as_str(), "task.started".to_owned()),
            (end.id.as_str(), "task.succeeded".to_owned()),
        ]
    );
    let body: Value = serde_json::from_str(&requests[1].body).unwrap();
    assert_eq!(body["data"]["worker"], "test-worker-0");
    let body: Value = serde_json::from_str(&requests[2].body).unwrap();
    assert!(body["data"].get("started").is_none(), "{body}");
    assert!(verified(&requests[2], SECRET).await);
    w.shutdown().await;
}

#[tokio::test]
async fn a_host_rate_spaces_the_attempts() {
    let mut options = Options::default();
    options.callbacks.per_host_per_sec = Some(2.0);
    let w = open_platform_with(options).await;
    let (base, _seen) = receiver(vec![Answer::Status(200)]).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(submit_with_callback(&w, &format!("{base}/hook")).await);
    }
    let mut firsts = Vec::new();
    for id in ids {
        let d = eventually("delivered", Duration::from_secs(30), || async {
            let d = deliveries_of(&w, id).await.deliveries.into_iter().next()?;
            (d.status == DeliveryStatus::Delivered).then_some(d)
        })
        .await;
        firsts.push(d.log[0].at);
    }
    firsts.sort();
    let span = (firsts[4] - firsts[0]).num_milliseconds();
    // Five attempts at two a second: the last at least 2 s after the first (less a margin for
    // the limiter's clock).
    assert!(span >= 1900, "five attempts within {span} ms");
    w.shutdown().await;
}

/// Callbacks are recorded with the projection now; the consumer earlier recorders read them
/// through is deleted when a recorder starts, rather than left keeping a position on the events
/// stream that nothing moves.
#[tokio::test]
async fn a_starting_recorder_deletes_the_retired_callbacks_consumer() {
    use async_nats::jetstream::consumer;
    use wharf_contract::{EVENTS_STREAM, RETIRED_CALLBACKS_CONSUMER};

    let mut w = Wharf::start().await;
    let stream = w.bus.jetstream().get_stream(EVENTS_STREAM).await.unwrap();
    // What an earlier version left behind.
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(RETIRED_CALLBACKS_CONSUMER.into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        stream
            .consumer_info(RETIRED_CALLBACKS_CONSUMER)
            .await
            .is_ok()
    );

    w.start_recorder();
    eventually(
        "the retired consumer deleted by the starting recorder",
        Duration::from_secs(15),
        || {
            let stream = stream.clone();
            async move {
                stream
                    .consumer_info(RETIRED_CALLBACKS_CONSUMER)
                    .await
                    .is_err()
                    .then_some(())
            }
        },
    )
    .await;
    w.shutdown().await;
}

/// A recorder knows the callbacks of the tasks whose `submitted` event it met. One that did not
/// (it started since, as here, or a second recorder took that event) reads a task's callback
/// from the stream only when the task has one: the worker's events say when it has none. The
/// task with a callback still gets its delivery.
#[tokio::test]
async fn a_recorder_that_missed_a_submission_reads_only_callbacks_that_exist() {
    let mut w = open_platform().await;
    let (base, _seen) = receiver(vec![Answer::Status(200)]).await;
    let (status, paused) = send(
        w.client()
            .request(Method::POST, "/api/v1/queues/default/pause"),
    )
    .await;
    assert_eq!(status, 200, "{paused}");
    let with = submit_with_callback(&w, &format!("{base}/hook")).await;
    let without = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "hi"}}))
        .await;
    // Both `submitted` events recorded by the first recorder, which is then replaced.
    w.wait_recorded(with, TaskStatus::Queued).await;
    w.wait_recorded(without, TaskStatus::Queued).await;
    w.recorder.take().expect("a recorder runs").stop().await;
    w.start_recorder();
    let (status, resumed) = send(
        w.client()
            .request(Method::POST, "/api/v1/queues/default/resume"),
    )
    .await;
    assert_eq!(status, 200, "{resumed}");

    let list = all_delivered(&w, with, 1).await;
    assert_eq!(list.deliveries[0].event, "succeeded", "{list:?}");
    w.wait_recorded(without, TaskStatus::Succeeded).await;
    assert!(deliveries_of(&w, without).await.deliveries.is_empty());
    let scrape = crate::metrics::parse(&w.metrics().await);
    let lookups = scrape[&crate::metrics::series("wharf_recorder_callback_lookups_total", &[])];
    assert_eq!(lookups, 1.0, "only the task with a callback was looked up");
    w.shutdown().await;
}
