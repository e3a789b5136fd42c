//! The bus over in-memory links: matching, limits, lag, and the end of a link.

use std::sync::Arc;

use polis_mesh::pb::{self, Frame, frame::Kind};
use tokio::sync::mpsc;

use super::{Bus, MAX_SUBSCRIPTIONS, Port};

fn payload(text: &str) -> pb::Payload {
    pb::Payload {
        content_type: polis_mesh::JSON.into(),
        data: bytes::Bytes::copy_from_slice(text.as_bytes()),
    }
}

async fn next(rx: &mut mpsc::Receiver<Frame>) -> Kind {
    tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await.unwrap().unwrap().kind.unwrap()
}

async fn subscribed(
    port: &Port,
    rx: &mut mpsc::Receiver<Frame>,
    id: u64,
    pattern: &str,
) -> Option<pb::Error> {
    port.subscribe(id, pattern);
    match next(rx).await {
        Kind::Subscribed(s) if s.id == id => s.error,
        other => panic!("expected Subscribed {id}, got {other:?}"),
    }
}

#[tokio::test]
async fn events_reach_every_matching_subscription_once() {
    let bus = Arc::new(Bus::default());
    let (tx, mut rx) = mpsc::channel(16);
    let port = Port::open(&bus, tx);
    assert!(subscribed(&port, &mut rx, 1, "notes.changed").await.is_none());
    assert!(subscribed(&port, &mut rx, 2, "notes.*").await.is_none());
    assert!(subscribed(&port, &mut rx, 3, "*").await.is_none());
    assert!(subscribed(&port, &mut rx, 4, "other").await.is_none());

    assert_eq!(bus.publish("test", false, "notes.changed".into(), payload("1")).unwrap(), 3);
    let mut subs = Vec::new();
    for _ in 0..3 {
        match next(&mut rx).await {
            Kind::Event(e) => {
                assert_eq!(
                    (e.topic.as_str(), &e.payload.unwrap().data[..], e.publisher.as_str()),
                    ("notes.changed", &b"1"[..], "test")
                );
                subs.push(e.subscription);
            }
            other => panic!("{other:?}"),
        }
    }
    subs.sort();
    assert_eq!(subs, [1, 2, 3]);
    assert_eq!(bus.publish("test", false, "nothing.here".into(), payload("2")).unwrap(), 1);
    port.unsubscribe(3);
    assert_eq!(bus.publish("test", false, "nothing.here".into(), payload("3")).unwrap(), 0);
}

#[tokio::test]
async fn refusals_come_as_subscribed_errors() {
    let bus = Arc::new(Bus::default());
    let (tx, mut rx) = mpsc::channel(16);
    let port = Port::open(&bus, tx);
    let e = subscribed(&port, &mut rx, 1, "a*b").await.unwrap();
    assert_eq!(e.code, tonic::Code::InvalidArgument as i32);
    assert!(subscribed(&port, &mut rx, 1, "a").await.is_none());
    let e = subscribed(&port, &mut rx, 1, "b").await.unwrap();
    assert!(e.message.contains("already in use"), "{}", e.message);
}

#[tokio::test]
async fn a_link_holds_a_bounded_number_of_subscriptions() {
    let bus = Arc::new(Bus::default());
    let (tx, mut rx) = mpsc::channel(MAX_SUBSCRIPTIONS + 16);
    let port = Port::open(&bus, tx);
    for id in 0..MAX_SUBSCRIPTIONS as u64 {
        assert!(subscribed(&port, &mut rx, id, &format!("t.{id}")).await.is_none());
    }
    let e = subscribed(&port, &mut rx, 99_999, "t.more").await.unwrap();
    assert_eq!(e.code, tonic::Code::ResourceExhausted as i32);
    assert!(e.message.contains(&MAX_SUBSCRIPTIONS.to_string()), "{}", e.message);
    // Another link is not affected.
    let (tx2, mut rx2) = mpsc::channel(4);
    let other = Port::open(&bus, tx2);
    assert!(subscribed(&other, &mut rx2, 1, "t.more").await.is_none());
    drop(port);
    assert_eq!(bus.count(), 1, "a dropped link's subscriptions end with it");
}

#[tokio::test]
async fn a_stalled_link_lags_and_the_others_get_everything() {
    let bus = Arc::new(Bus::default());
    // The stalled link's writer takes nothing: its forwarder blocks at once.
    let (stalled_tx, mut stalled_rx) = mpsc::channel(1);
    let stalled = Port::open_with(&bus, stalled_tx, 8);
    assert!(subscribed(&stalled, &mut stalled_rx, 1, "*").await.is_none());
    let (tx, mut rx) = mpsc::channel(1024);
    let live = Port::open(&bus, tx);
    assert!(subscribed(&live, &mut rx, 7, "e.*").await.is_none());

    const N: usize = 500;
    for n in 0..N {
        bus.publish("test", false, format!("e.{n}"), payload("0")).unwrap();
    }
    for n in 0..N {
        match next(&mut rx).await {
            Kind::Event(e) => assert_eq!(e.topic, format!("e.{n}"), "in order"),
            other => panic!("{other:?}"),
        }
    }
    // The stalled link: some events, one lag notice, and nothing lost unsaid.
    let (mut got, mut lagged) = (0, 0);
    while got + lagged < N as u64 {
        match next(&mut stalled_rx).await {
            Kind::Event(_) => got += 1,
            Kind::Lagged(l) => {
                assert_eq!(l.subscription, 1);
                lagged += l.count;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(lagged > 0, "a full queue drops and says so");
    assert_eq!(got + lagged, N as u64);
}

#[test]
fn reserved_topics_are_the_routers() {
    let bus = Bus::default();
    let e = bus.publish("m", false, "polis.module.started".into(), payload("{}")).unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(bus.publish("router", true, "polis.module.started".into(), payload("{}")).is_ok());
}
