//! The etcd backend through the `AsyncDiscovery` interface, on a real
//! three-member cluster (`polis_testing::EtcdCluster`).

use std::time::Duration;

use polis_discovery::{AsyncDiscovery, NodeRecord, Office, Role};
use polis_etcd::{Address, Etcd};
use polis_testing::EtcdCluster;
use tokio_stream::StreamExt;

const WAIT: Duration = Duration::from_secs(20);

async fn connect(cluster: &EtcdCluster, prefix: &str) -> Etcd {
    let address: Address = cluster.url(prefix, 2).parse().unwrap();
    Etcd::connect(address).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_live_with_their_lease_and_terms_are_fenced_by_a_growing_epoch() {
    let cluster = EtcdCluster::start(3);
    let (a, b, reader) =
        (connect(&cluster, "t/m").await, connect(&cluster, "t/m").await, connect(&cluster, "t/m").await);
    let mut watch = reader.watch().await.unwrap();

    // A module's record: listed and resolved while its lease lives.
    let mut module = NodeRecord::new(Role::Module, "echo");
    module.services = vec!["echo".into()];
    let guard = a.publish(&module).await.unwrap();
    tokio::time::timeout(WAIT, watch.next()).await.unwrap().unwrap();
    assert_eq!(reader.resolve("echo").await.unwrap().map(|r| r.id), Some(module.id));
    assert_eq!(reader.list().await.unwrap().nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [module.id]);
    drop(guard);
    let gone = async {
        while reader.resolve("echo").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, gone).await.expect("a dropped guard unpublishes");

    // The router office: one holder; the next waits, and gets a greater epoch.
    assert_eq!(reader.resolve("router").await.unwrap(), None);
    let first = NodeRecord::new(Role::Router, "router");
    let term = a.campaign(&first).await.unwrap();
    let resolved = reader.resolve("router").await.unwrap().unwrap();
    assert_eq!((resolved.id, resolved.epoch), (first.id, Some(term.epoch())));
    let second = NodeRecord::new(Role::Router, "router");
    let standby = tokio::spawn({
        let (b, second) = (b.clone(), second.clone());
        async move { b.campaign(&second).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!standby.is_finished(), "a second candidate waits while the office is held");
    let epoch = term.epoch();
    term.resign().await;
    let next = tokio::time::timeout(WAIT, standby).await.unwrap().unwrap();
    assert!(next.epoch() > epoch, "epoch {} after {epoch}", next.epoch());
    assert_eq!(reader.resolve("router").await.unwrap().map(|r| r.id), Some(second.id));
    assert!(!next.lost().is_cancelled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_office_is_lost_when_the_lease_cannot_be_renewed() {
    let mut cluster = EtcdCluster::start(3);
    let etcd = connect(&cluster, "t/lost").await;
    let term = etcd.campaign(&NodeRecord::new(Role::Router, "router")).await.unwrap();
    let lost = term.lost();
    cluster.kill(0);
    cluster.kill(1);
    tokio::time::timeout(WAIT, lost.cancelled()).await.expect("the office is lost without quorum");
    let err = etcd.resolve("router").await.unwrap_err().to_string();
    assert!(err.starts_with("UNAVAILABLE: the mesh's etcd at "), "{err}");
}
