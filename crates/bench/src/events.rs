//! `polis-bench events`: the event bus, measured on its own (the figures
//! are printed, not written into BENCHMARKS.md's generated part).
//!
//! One publisher and 16 subscribing frontends (`polis_client::Client`),
//! 64-byte payloads: aggregate deliveries per second, published in rounds of
//! [`ROUND`] so that no subscriber lags; publish-to-delivery p50 against a
//! warm call's p50 in the same run; and the same throughput with one more
//! subscriber, a raw frame connection that never reads.

use std::time::{Duration, Instant};

use anyhow::ensure;
use polis_client::{Client, ClientOptions, Notice, Subscription};
use polis_mesh::{
    codec::{FrameCodec, FrameReader, FrameWriter},
    pb::{self, Frame, frame::Kind},
    preamble,
};
use polis_testing::TestMesh;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{PAYLOAD, progress, setup, stats::Samples};

const SUBSCRIBERS: usize = 16;
const ROUND: usize = 1000;
const ROUNDS: usize = 50;
const LATENCY_SAMPLES: usize = 2000;
const STEP: Duration = Duration::from_secs(60);

pub(crate) fn run(build: bool) -> anyhow::Result<()> {
    let bins = setup::polis(build)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(measure(&bins))
}

async fn measure(bins: &setup::Polis) -> anyhow::Result<()> {
    let mesh = TestMesh::new(&bins.polis)?;
    mesh.module("echo", &bins.echo, "");
    let _router = tokio::task::block_in_place(|| mesh.start_router(&["--linger", "5s"]));
    let connect = |name: &str| {
        let options =
            ClientOptions { mesh_dir: Some(mesh.dir.clone()), launch: None, ..ClientOptions::new(name) };
        Client::connect(options)
    };
    let publisher = connect("publisher").await?;
    let mut subscribers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let client = connect(&format!("sub-{i}")).await?;
        let subscription = client.subscribe("bench.*").await?;
        subscribers.push((client, subscription));
    }
    let value = serde_json::Value::String("x".repeat(PAYLOAD - 2));

    progress(&format!("events: {ROUNDS} rounds of {ROUND} events to {SUBSCRIBERS} subscribers"));
    let base = throughput(&publisher, &mut subscribers, &value).await?;
    println!("deliveries/s, {SUBSCRIBERS} subscribers: {base:.0}");

    progress("events: the same with a subscriber that never reads");
    let stalled = stalled_subscriber(&mesh).await?;
    let slowed = throughput(&publisher, &mut subscribers, &value).await?;
    drop(stalled);
    println!(
        "deliveries/s, {SUBSCRIBERS} subscribers + 1 stalled: {slowed:.0} ({:+.1} %)",
        (slowed / base - 1.0) * 100.0
    );

    progress(&format!("events: {LATENCY_SAMPLES} publish-to-delivery round trips, then as many warm calls"));
    let one = connect("latency").await?;
    let mut mine = one.subscribe("latency.tick").await?;
    let mut delivery = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let start = Instant::now();
        publisher.publish("latency.tick", &value)?;
        next_event(&mut mine).await?;
        delivery.push(start.elapsed());
    }
    let payload = bytes::Bytes::from(serde_json::to_vec(&value)?);
    for _ in 0..200 {
        publisher.call("echo", "echo", payload.clone(), Some(STEP)).await?;
    }
    let mut calls = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let start = Instant::now();
        publisher.call("echo", "echo", payload.clone(), Some(STEP)).await?;
        calls.push(start.elapsed());
    }
    let (delivery, calls) = (Samples::new(delivery), Samples::new(calls));
    println!(
        "publish-to-delivery p50 {:?} (p99 {:?}); warm call p50 {:?}: {:.2}x",
        delivery.p50(),
        delivery.pct(99.0),
        calls.p50(),
        delivery.p50().as_secs_f64() / calls.p50().as_secs_f64()
    );
    one.close().await;
    for (client, subscription) in subscribers {
        drop(subscription);
        client.close().await;
    }
    publisher.close().await;
    Ok(())
}

async fn next_event(sub: &mut Subscription) -> anyhow::Result<()> {
    match tokio::time::timeout(STEP, sub.next()).await {
        Ok(Some(Notice::Event(_))) => Ok(()),
        other => anyhow::bail!("expected an event, got {other:?}"),
    }
}

/// Deliveries per second over every round; each round is received in full
/// by every subscriber before the next.
async fn throughput(
    publisher: &Client,
    subscribers: &mut [(Client, Subscription)],
    value: &serde_json::Value,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    for _ in 0..ROUNDS {
        for _ in 0..ROUND {
            publisher.publish("bench.tick", value)?;
        }
        // One after another: each subscriber's events wait in its buffer
        // (larger than a round) while the others are read.
        for (_, sub) in subscribers.iter_mut() {
            for _ in 0..ROUND {
                next_event(sub).await?;
            }
        }
    }
    let elapsed = start.elapsed();
    Ok((ROUNDS * ROUND * subscribers.len()) as f64 / elapsed.as_secs_f64())
}

/// A raw frame connection that subscribes to every bench event and never
/// reads again; dropped, it closes.
async fn stalled_subscriber(mesh: &TestMesh) -> anyhow::Result<polis_mesh::transport::LocalConn> {
    let mut conn = polis_mesh::transport::connect(&mesh.dir.join("router.sock")).await?;
    conn.write_all(&preamble::encode(preamble::VERSION)).await?;
    let mut answer = [0; preamble::LEN];
    conn.read_exact(&mut answer).await?;
    let codec = FrameCodec::default();
    let (read, write) = tokio::io::split(conn);
    let mut writer = FrameWriter::new(write, codec);
    let subscribe = pb::Subscribe { id: 1, pattern: "bench.*".into() };
    writer.write_frame(&Frame { kind: Some(Kind::Subscribe(subscribe)) }).await?;
    let mut reader = FrameReader::new(read, codec);
    let answer = tokio::time::timeout(STEP, reader.read_frame()).await??;
    ensure!(
        matches!(answer.and_then(|f| f.kind), Some(Kind::Subscribed(pb::Subscribed { error: None, .. }))),
        "the stalled subscriber's subscription was refused"
    );
    Ok(reader.into_inner().unsplit(writer.into_inner()))
}
