//! The two hops every task makes, measured raw: no HTTP, no database, no Wharf code.

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
    let nats = wharf_bus::local::LocalNats::start(dir.path()).await?;
    let producer = async_nats::connect(nats.url()).await?;
    let worker = async_nats::connect(nats.url()).await?;
    let pjs = jetstream::new(producer.clone());
    let wjs = jetstream::new(worker.clone());
    pjs.create_stream(stream::Config {
        name: "BENCH_TASKS".into(),
        subjects: vec!["bench.tasks".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    pjs.create_stream(stream::Config {
        name: "BENCH_RESULTS".into(),
        subjects: vec!["bench.results".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let tasks = wjs.get_stream("BENCH_TASKS").await?;
    let consumer = tasks
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench-worker".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await?;

    // The worker: many tasks in flight, like a Wharf worker with its slots.
    let worker_js = wjs.clone();
    let worker_task = tokio::spawn(async move {
        let messages = consumer.messages().await?;
        messages
            .for_each_concurrent(512, |m| {
                let js = worker_js.clone();
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
    });

    let mut results = producer.subscribe("bench.results").await?;
    producer.flush().await?;
    if window == 1 {
        let cpu = CpuTimes::now();
        let start = Instant::now();
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
        let elapsed = start.elapsed().as_secs_f64();
        let busy = CpuTimes::now().busy_since(&cpu, elapsed);
        worker_task.abort();
        nats.stop().await;
        return Ok(merge(
            json!({ "tasks": n, "window": 1, "seconds": elapsed, "per_sec": n as f64 / elapsed, "cpu": busy }),
            latencies.summary(),
        ));
    }
    // Publish times, as nanoseconds after `start` (+1, so 0 means not yet sent).
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();
    let cpu = CpuTimes::now();
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
    let elapsed = start.elapsed().as_secs_f64();
    let busy = CpuTimes::now().busy_since(&cpu, elapsed);
    publisher.await??;
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
        latencies.summary(),
    ))
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
