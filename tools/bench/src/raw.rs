//! The two hops every task makes, measured raw: no HTTP, no database, no Wharf code; and the
//! cost of the durable history alone, Postgres with nothing else running.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};
use wharf_contract::{EventKind, Task, TaskEvent};

use crate::Options;
use crate::machine::CpuTimes;
use crate::stats::{Samples, merge};

/// (a) A producer publishes N task messages (with acks) to a file-storage work-queue stream; a
/// worker pulls each, publishes a result to a second stream, waits for that ack, then acks the
/// task; the producer waits for every result. Two connections, as a gateway and a worker would
/// have. Latency is publish to result received.
///
/// With `window` 1 the producer sends the next task only after the previous result came back:
/// the hop's latency floor rather than its throughput.
pub async fn jetstream_round_trip(opts: &Options, window: usize) -> anyhow::Result<Value> {
    let n = if window > 1 {
        opts.count(100_000, 2_000)
    } else {
        opts.count(10_000, 1_000)
    };
    let dir = tempfile::tempdir()?;
    let nats = wharf_local::LocalNats::start(dir.path()).await?;
    let producer = async_nats::connect(nats.url()).await?;
    let worker = async_nats::connect(nats.url()).await?;
    let pjs = jetstream::new(producer.clone());
    let worker_task = spawn_worker(jetstream::new(worker)).await?;
    let mut results = producer.subscribe("bench.results").await?;
    producer.flush().await?;
    let cpu = CpuTimes::now();
    let start = Instant::now();
    let latencies = if window == 1 {
        lockstep(&pjs, &mut results, n).await
    } else {
        windowed(pjs, &mut results, n, window, start).await
    };
    let elapsed = start.elapsed().as_secs_f64();
    let busy = CpuTimes::now().busy_since(&cpu, elapsed);
    worker_task.abort();
    nats.stop().await;
    Ok(merge(
        json!({
            "tasks": n,
            "window": window,
            "seconds": elapsed,
            "per_sec": n as f64 / elapsed,
            "cpu": busy,
        }),
        latencies?.summary(),
    ))
}

/// The two streams (tasks, a work queue; results) and, on the worker's connection, its
/// consumer pulling tasks with many in flight, like a Wharf worker with its slots.
async fn spawn_worker(
    wjs: jetstream::Context,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    wjs.create_stream(stream::Config {
        name: "BENCH_TASKS".into(),
        subjects: vec!["bench.tasks".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    wjs.create_stream(stream::Config {
        name: "BENCH_RESULTS".into(),
        subjects: vec!["bench.results".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let consumer = wjs
        .get_stream("BENCH_TASKS")
        .await?
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench-worker".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await?;
    Ok(tokio::spawn(async move {
        let messages = consumer.messages().await?;
        messages
            .for_each_concurrent(512, |m| {
                let js = wjs.clone();
                async move {
                    let Ok(m) = m else { return };
                    let result = m.payload.slice(0..8);
                    if let Ok(ack) = js.publish("bench.results", result).await
                        && ack.await.is_ok()
                    {
                        let _ = m.ack().await;
                    }
                }
            })
            .await;
        anyhow::Ok(())
    }))
}

/// One task at a time: the next is sent only when the previous result came back.
async fn lockstep(
    pjs: &jetstream::Context,
    results: &mut async_nats::Subscriber,
    n: usize,
) -> anyhow::Result<Samples> {
    let mut latencies = Samples::with_capacity(n);
    for i in 0..n {
        let at = Instant::now();
        let mut body = vec![b'x'; 200];
        body[..8].copy_from_slice(&(i as u64).to_be_bytes());
        pjs.publish("bench.tasks", Bytes::from(body)).await?.await?;
        tokio::time::timeout(Duration::from_secs(10), results.next())
            .await
            .context("raw JetStream round trip: a result did not come back")?
            .context("results subscription ended")?;
        latencies.push(at.elapsed());
    }
    Ok(latencies)
}

/// Up to `window` tasks whose publish is not yet acknowledged; latency from each publish to its
/// result.
async fn windowed(
    pjs: jetstream::Context,
    results: &mut async_nats::Subscriber,
    n: usize,
    window: usize,
    start: Instant,
) -> anyhow::Result<Samples> {
    // Publish times, as nanoseconds after `start` (+1, so 0 means not yet sent).
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let publisher = {
        let sent = sent.clone();
        tokio::spawn(async move {
            // Acks are awaited in order by a second task; the bounded channel is the window.
            let (acks, mut pending) = tokio::sync::mpsc::channel(window);
            let waiter = tokio::spawn(async move {
                while let Some(ack) = pending.recv().await {
                    let ack: async_nats::jetstream::context::PublishAckFuture = ack;
                    ack.await?;
                }
                anyhow::Ok(())
            });
            let mut body = vec![b'x'; 200];
            for i in 0..n {
                body[..8].copy_from_slice(&(i as u64).to_be_bytes());
                let at = start.elapsed().as_nanos() as u64 + 1;
                sent[i].store(at, Ordering::Relaxed);
                let ack = pjs
                    .publish("bench.tasks", Bytes::copy_from_slice(&body))
                    .await?;
                if acks.send(ack).await.is_err() {
                    break;
                }
            }
            drop(acks);
            waiter.await?
        })
    };
    let mut latencies = Samples::with_capacity(n);
    let deadline = start + Duration::from_secs(120);
    while latencies.len() < n {
        let m = tokio::time::timeout_at(deadline.into(), results.next())
            .await
            .context("raw JetStream round trip: results stopped arriving")?
            .context("results subscription ended")?;
        let i = u64::from_be_bytes(m.payload[..8].try_into()?) as usize;
        let at = sent[i].load(Ordering::Relaxed);
        if at > 0 {
            latencies.push(start.elapsed().saturating_sub(Duration::from_nanos(at - 1)));
        }
    }
    publisher.await??;
    Ok(latencies)
}

/// (b) An rmcp client calling the demo server's `echo` over stdio, `in_flight` calls at once on
/// one connection, no queue at all.
pub async fn mcp_hop(opts: &Options, in_flight: usize) -> anyhow::Result<Value> {
    let n = if in_flight > 1 {
        opts.count(200_000, 5_000)
    } else {
        opts.count(10_000, 1_000)
    };
    let mut cmd = tokio::process::Command::new(&opts.wharf_bin);
    cmd.arg("mcp-demo").kill_on_drop(true);
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("start the demo MCP server")?;
    let client = ().serve(transport).await?;
    let peer = client.peer().clone();
    let args = json!({ "message": "x".repeat(100) });
    let call = |peer: rmcp::Peer<rmcp::RoleClient>| {
        let args = args.as_object().cloned().unwrap_or_default();
        async move {
            let at = Instant::now();
            let r = peer
                .call_tool(CallToolRequestParams::new("echo").with_arguments(args))
                .await;
            (
                at.elapsed(),
                r.is_ok() && r.as_ref().is_ok_and(|r| r.is_error != Some(true)),
            )
        }
    };
    // Warm up: the connection, the allocator, the server's task pool.
    futures::stream::iter(0..2_000)
        .map(|_| call(peer.clone()))
        .buffer_unordered(in_flight)
        .for_each(|_| async {})
        .await;

    let cpu = CpuTimes::now();
    let start = Instant::now();
    let mut latencies = Samples::with_capacity(n);
    let mut failed = 0usize;
    let mut calls = futures::stream::iter(0..n)
        .map(|_| call(peer.clone()))
        .buffer_unordered(in_flight);
    while let Some((took, ok)) = calls.next().await {
        latencies.push(took);
        if !ok {
            failed += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let busy = CpuTimes::now().busy_since(&cpu, elapsed);
    drop(calls);
    let _ = client.cancel().await;
    anyhow::ensure!(failed == 0, "{failed} of {n} echo calls failed");
    Ok(merge(
        json!({
            "calls": n,
            "in_flight": in_flight,
            "seconds": elapsed,
            "per_sec": n as f64 / elapsed,
            "cpu": busy,
        }),
        latencies.summary(),
    ))
}

/// (c) The history alone: the recorder's own writes (`wharf_store::Store::record`, the same
/// statements and batch size) of N finished tasks' `submitted`, `started` and `succeeded` events
/// into a fresh Postgres database, several batches at once, with no NATS, HTTP or MCP running.
/// Each batch holds all three events of its tasks, so each task row is written once: the
/// cheapest the history can be. What it costs per task bounds what the whole platform can reach.
pub async fn history_floor(opts: &Options) -> anyhow::Result<Value> {
    /// Events per transaction, as the recorder pulls them.
    const BATCH_EVENTS: usize = 2_000;
    /// Transactions at once, as from that many recorders: one alone waits on each commit's
    /// flush to disk and leaves the cores idle; this measures what the machine can store.
    const WRITERS: usize = 4;
    let n = opts.count(100_000, 5_000);
    let db = crate::platform::BenchDatabase::create(opts).await?;
    let measured = async {
        let store = wharf_store::Store::connect(&db.url).await?;
        let message = "x".repeat(100);
        let tasks_per_batch = BATCH_EVENTS / 3;
        let mut batches = Vec::new();
        let mut seq = 1;
        for first in (0..n).step_by(tasks_per_batch) {
            let mut batch = Vec::with_capacity(BATCH_EVENTS);
            for _ in first..(first + tasks_per_batch).min(n) {
                batch.extend(echo_task_events(seq, &message));
                seq += 3;
            }
            batches.push(batch);
        }
        let cpu = CpuTimes::now();
        let start = Instant::now();
        let mut latencies = Samples::with_capacity(batches.len());
        let mut writes = futures::stream::iter(&batches)
            .map(|batch| {
                let store = &store;
                async move {
                    let at = Instant::now();
                    store.record(batch).await.map(|()| at.elapsed())
                }
            })
            .buffer_unordered(WRITERS);
        while let Some(took) = writes.next().await {
            latencies.push(took?);
        }
        drop(writes);
        let elapsed = start.elapsed().as_secs_f64();
        let busy = CpuTimes::now().busy_since(&cpu, elapsed);
        let succeeded = store
            .count_by_status()
            .await?
            .get("succeeded")
            .copied()
            .unwrap_or(0);
        anyhow::ensure!(
            succeeded == n as u64,
            "the history holds {succeeded} succeeded tasks of {n}"
        );
        store.connection().close_by_ref().await?;
        anyhow::Ok(merge(
            json!({
                "tasks": n,
                "events_per_batch": BATCH_EVENTS,
                "writers": WRITERS,
                "seconds": elapsed,
                "per_sec": n as f64 / elapsed,
                "cpu": busy,
            }),
            // Per batch (one transaction), not per task.
            latencies.summary(),
        ))
    }
    .await;
    db.drop_now().await;
    measured
}

/// The events of one finished task at sequences `seq`, `seq + 1` and `seq + 2`, shaped like a
/// `demo.echo` task of the throughput scenario.
fn echo_task_events(seq: u64, message: &str) -> [(u64, TaskEvent); 3] {
    let id = uuid::Uuid::now_v7();
    let task = Task {
        trace_id: None,
        v: wharf_contract::task::TASK_VERSION,
        id,
        tool: "demo.echo".into(),
        arguments: json!({ "message": message })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        queue: "default".into(),
        timeout_secs: None,
        max_attempts: 3,
        idempotency_key: None,
        session_id: None,
        metadata: Default::default(),
        submitted_at: chrono::Utc::now(),
        run_at: None,
        retry: None,
        priority: Default::default(),
        tenant: wharf_contract::DEFAULT_TENANT.into(),
        agent: None,
        callback: None,
    };
    let started = EventKind::Started {
        worker: "bench-worker".into(),
        tool: task.tool.clone(),
        queue: task.queue.clone(),
    };
    let result = json!({ "content": [{ "type": "text", "text": message }], "isError": false });
    let submitted = EventKind::Submitted {
        task: Box::new(task),
    };
    [
        (seq, TaskEvent::new(id, 0, submitted)),
        (seq + 1, TaskEvent::new(id, 1, started)),
        (
            seq + 2,
            TaskEvent::new(id, 1, EventKind::Succeeded { result }),
        ),
    ]
}
