//! Following a task's events on the bus: history by direct get, then live events through the
//! events stream's republish subject, without a JetStream consumer per follower.

use std::time::Duration;

use futures::StreamExt;
use uuid::Uuid;
use wharf_bus::Bus;
use wharf_contract::{EventKind, TaskEvent, live_event_subject};
use wharf_local::LocalNats;

fn started(id: Uuid) -> TaskEvent {
    TaskEvent::new(
        id,
        1,
        EventKind::Started {
            worker: "w".into(),
            tool: "demo.echo".into(),
            queue: "default".into(),
        },
    )
}

async fn publish(bus: &Bus, event: &TaskEvent) -> u64 {
    let ack = bus
        .publish_event("default", event, &Uuid::now_v7().to_string(), None)
        .await
        .unwrap();
    ack.await.unwrap().sequence
}

async fn bus() -> (tempfile::TempDir, LocalNats, Bus) {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(&dir.path().join("nats")).await.unwrap();
    let bus = Bus::connect(nats.url(), "wharf-test", Default::default())
        .await
        .unwrap();
    bus.ensure_topology().await.unwrap();
    (dir, nats, bus)
}

#[tokio::test]
async fn a_follower_gets_the_history_then_live_events_in_order_each_once() {
    let (_dir, _nats, bus) = bus().await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let mut expected = vec![publish(&bus, &started(a)).await];
    publish(&bus, &started(b)).await;
    expected.push(publish(&bus, &started(a)).await);

    let (stored, events) = bus.follow(a).await.unwrap();
    assert_eq!(stored, 2);
    let mut events = std::pin::pin!(events);
    for _ in 0..3 {
        publish(&bus, &started(b)).await;
        expected.push(publish(&bus, &started(a)).await);
    }
    let mut seen = Vec::new();
    // Well inside the 30 s after which a quiet follower re-reads the stream: these must come
    // through the live subscription.
    while seen.len() < expected.len() {
        let (seq, event) = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("live events arrive promptly")
            .expect("the stream goes on")
            .unwrap();
        assert_eq!(event.task_id, a);
        seen.push(seq);
    }
    assert_eq!(seen, expected);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.next())
            .await
            .is_err(),
        "nothing is delivered twice"
    );
}

/// What following relies on: the stream republishes each stored event with its own sequence and
/// the sequence of the previous event of the same task (not of the stream).
#[tokio::test]
async fn republished_events_carry_their_sequence_and_the_tasks_previous_one() {
    let (_dir, nats, bus) = bus().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let a = Uuid::now_v7();
    let mut live = client
        .subscribe(live_event_subject("default", a))
        .await
        .unwrap();
    // A round trip on the same connection: once it is answered the server has processed the
    // subscription (`flush` only writes it out). Events published from the other connection
    // after that reach it.
    async_nats::jetstream::new(client.clone())
        .query_account()
        .await
        .unwrap();
    let first = publish(&bus, &started(a)).await;
    publish(&bus, &started(Uuid::now_v7())).await;
    let second = publish(&bus, &started(a)).await;
    let mut headers = Vec::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .unwrap()
            .unwrap();
        let h = m.headers.unwrap();
        let get = |name: &str| h.get(name).unwrap().as_str().parse::<u64>().unwrap();
        headers.push((get("Nats-Sequence"), get("Nats-Last-Sequence")));
    }
    assert_eq!(headers, vec![(first, 0), (second, first)]);
}

/// An event whose live copy never reached the follower (here: republished elsewhere while it was
/// stored) is read back from the stream as soon as the next live event shows the gap.
#[tokio::test]
async fn a_follower_reads_back_an_event_it_missed_live() {
    let (_dir, _nats, bus) = bus().await;
    let a = Uuid::now_v7();
    let first = publish(&bus, &started(a)).await;
    let (_, events) = bus.follow(a).await.unwrap();
    let mut events = std::pin::pin!(events);
    let next = async |events: &mut std::pin::Pin<&mut _>| {
        let item: Option<Result<(u64, TaskEvent), wharf_bus::Error>> =
            tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(events))
                .await
                .expect("an event within 5 s (well before the 30 s quiet re-read)");
        item.unwrap().unwrap().0
    };
    assert_eq!(next(&mut events).await, first);

    // Store the second event while the stream republishes somewhere else.
    let js = bus.jetstream();
    let mut stream = js.get_stream(wharf_contract::EVENTS_STREAM).await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    let normal = config.republish.clone();
    config.republish = Some(async_nats::jetstream::stream::Republish {
        source: wharf_contract::EVENTS_SUBJECTS.into(),
        destination: "elsewhere.>".into(),
        headers_only: false,
    });
    js.update_stream(&config).await.unwrap();
    let missed = publish(&bus, &started(a)).await;
    config.republish = normal;
    js.update_stream(&config).await.unwrap();
    let third = publish(&bus, &started(a)).await;

    assert_eq!(next(&mut events).await, missed);
    assert_eq!(next(&mut events).await, third);
}
