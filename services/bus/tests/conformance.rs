//! One conformance suite, run against every bus: the embedded log and a real
//! Apache Kafka broker. A bus passes when every case holds on it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clew_bus::{
    Bus, CheckpointRecord, EmbeddedBus, FollowFrom, InboundRecord, KafkaBus, KafkaConfig, Outgoing,
    RejectedSubmission, SequencedEntry, Stream, Topics,
};

/// Makes fresh, isolated buses (new folder or new topics) and reopens them.
trait Fixture {
    /// A new empty bus named after the case.
    fn fresh(&mut self, case: &str) -> Arc<dyn Bus>;
    /// The same bus as the last `fresh`, opened again from scratch.
    fn reopen(&mut self) -> Arc<dyn Bus>;
}

struct Embedded {
    root: tempfile::TempDir,
    current: Option<(std::path::PathBuf, Arc<EmbeddedBus>)>,
}

impl Fixture for Embedded {
    fn fresh(&mut self, case: &str) -> Arc<dyn Bus> {
        let dir = self.root.path().join(case);
        let bus = Arc::new(EmbeddedBus::open(&dir).expect("open the embedded log"));
        self.current = Some((dir, bus.clone()));
        bus
    }

    fn reopen(&mut self) -> Arc<dyn Bus> {
        let (dir, bus) = self.current.take().expect("a bus to reopen");
        drop(bus);
        let bus = Arc::new(EmbeddedBus::open(&dir).expect("reopen the embedded log"));
        self.current = Some((dir, bus.clone()));
        bus
    }
}

struct Kafka {
    broker: clew_kafka_broker::KafkaBroker,
    config: Option<KafkaConfig>,
}

impl Fixture for Kafka {
    fn fresh(&mut self, case: &str) -> Arc<dyn Bus> {
        let mut config = KafkaConfig::new(self.broker.bootstrap());
        config.topics = Topics::with_prefix(&format!("conf-{case}-{}", uuid::Uuid::now_v7()));
        self.config = Some(config.clone());
        Arc::new(KafkaBus::connect(config).expect("connect to the broker and create topics"))
    }

    fn reopen(&mut self) -> Arc<dyn Bus> {
        let config = self.config.clone().expect("a bus to reopen");
        Arc::new(KafkaBus::connect(config).expect("reconnect"))
    }
}

const WAIT: Duration = Duration::from_secs(20);

fn read_inbound(reader: &mut dyn clew_bus::InboundReader, n: usize) -> Vec<InboundRecord> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        got.extend(
            reader
                .poll(n - got.len(), Duration::from_millis(200))
                .expect("poll"),
        );
    }
    got
}

fn read_published(follower: &mut dyn clew_bus::Follower, n: usize) -> Vec<clew_bus::Published> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        got.extend(
            follower
                .poll(n - got.len(), Duration::from_millis(200))
                .expect("poll"),
        );
    }
    got
}

fn payload(key: &str, i: usize) -> Vec<u8> {
    format!("{key}/{i}").into_bytes()
}

/// Every submission comes back exactly once, each key's records in the order
/// submitted, each source's offsets strictly increasing.
fn case_submit_and_read_in_order(f: &mut dyn Fixture) {
    let bus = f.fresh("order");
    let keys = ["alpha+00000001", "beta+00000002", "gamma+00000003"];
    let mut all = Vec::new();
    for i in 0..60 {
        let key = keys[i % 3];
        all.push((key, payload(key, i)));
    }
    let refs: Vec<(&str, &[u8])> = all.iter().map(|(k, b)| (*k, b.as_slice())).collect();
    bus.submit(&refs[..30]).expect("submit");
    bus.submit(&refs[30..]).expect("submit");
    let mut reader = bus.inbound(&|_| 0).expect("inbound");
    let got = read_inbound(reader.as_mut(), 60);
    assert_eq!(got.len(), 60, "every submission is read once");
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for r in &got {
        if let Some(prev) = last.insert(r.source.clone(), r.offset) {
            assert!(r.offset > prev, "offsets of {} increase", r.source);
        }
    }
    for key in keys {
        let sent: Vec<&Vec<u8>> = all
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, b)| b)
            .collect();
        let read: Vec<&Vec<u8>> = got
            .iter()
            .map(|r| &r.bytes)
            .filter(|b| b.starts_with(key.as_bytes()))
            .collect();
        assert_eq!(read, sent, "records of key {key} keep their order");
    }
    assert!(
        reader
            .poll(10, Duration::from_millis(300))
            .expect("poll")
            .is_empty(),
        "nothing is read twice"
    );
}

/// A reader started at stored positions reads exactly what lies beyond them,
/// also after the bus is reopened.
fn case_inbound_resumes_at_positions(f: &mut dyn Fixture) {
    let bus = f.fresh("resume");
    let records: Vec<Vec<u8>> = (0..40).map(|i| payload("k+00000001", i)).collect();
    let refs: Vec<(&str, &[u8])> = records
        .iter()
        .map(|b| ("k+00000001", b.as_slice()))
        .collect();
    bus.submit(&refs).expect("submit");
    let mut reader = bus.inbound(&|_| 0).expect("inbound");
    let first = read_inbound(reader.as_mut(), 40);
    assert_eq!(first.len(), 40);
    // The consumer stored "next = offset + 1" of the 25th record.
    let cut = &first[24];
    let (source, next) = (cut.source.clone(), cut.offset + 1);
    drop((reader, bus));
    let bus = f.reopen();
    let mut reader = bus
        .inbound(&|s| if s == source { next } else { 0 })
        .expect("inbound");
    let rest = read_inbound(reader.as_mut(), 15);
    assert_eq!(
        rest.iter().map(|r| r.bytes.clone()).collect::<Vec<_>>(),
        records[25..].to_vec(),
        "exactly the records after the stored position"
    );
    assert!(reader
        .poll(5, Duration::from_millis(300))
        .expect("poll")
        .is_empty());
}

fn entry(i: u64) -> SequencedEntry {
    SequencedEntry {
        leaf_index: i,
        envelope: vec![i as u8; 3],
        event_id: format!("event-{i}"),
        kind: 1,
        subject: format!("dataset:{i}"),
        sequenced_at: None,
    }
}

/// Everything published comes back on its stream, in order, decoded equal,
/// with offsets that a follower can resume from.
fn case_publish_and_follow(f: &mut dyn Fixture) {
    let bus = f.fresh("follow");
    let mut writer = bus.outbound().expect("outbound");
    let mut batch = Vec::new();
    for i in 0..20 {
        batch.push(Outgoing::Sequenced(entry(i)));
        if i % 5 == 4 {
            batch.push(Outgoing::Checkpoint(CheckpointRecord {
                tree_size: i + 1,
                root_hash: vec![7; 32],
                origin: "clew.test/ledger".into(),
                signed_note: b"note".to_vec(),
                signed_at: None,
            }));
        }
    }
    batch.push(Outgoing::Rejected(RejectedSubmission {
        rejection_index: 0,
        reason: 1,
        detail: "malformed".into(),
        raw: b"junk".to_vec(),
        ..Default::default()
    }));
    writer.publish(&batch[..10]).expect("publish");
    writer.publish(&batch[10..]).expect("publish");
    let mut follower = bus
        .follow("conformance", FollowFrom::default())
        .expect("follow");
    let got = read_published(follower.as_mut(), batch.len());
    assert_eq!(got.len(), batch.len(), "every published record is followed");
    for stream in Stream::ALL {
        let sent: Vec<&Outgoing> = batch.iter().filter(|r| stream_of(r) == stream).collect();
        let read: Vec<&clew_bus::Published> = got.iter().filter(|p| p.stream == stream).collect();
        assert_eq!(
            read.iter().map(|p| &p.record).collect::<Vec<_>>(),
            sent,
            "{} stream in order",
            stream.name()
        );
        for w in read.windows(2) {
            assert!(
                w[1].offset > w[0].offset,
                "{} offsets increase",
                stream.name()
            );
        }
    }
    // Resume after the 12th sequenced entry and the 2nd checkpoint.
    let seq: Vec<_> = got
        .iter()
        .filter(|p| p.stream == Stream::Sequenced)
        .collect();
    let cps: Vec<_> = got
        .iter()
        .filter(|p| p.stream == Stream::Checkpoints)
        .collect();
    let rej: Vec<_> = got
        .iter()
        .filter(|p| p.stream == Stream::Rejected)
        .collect();
    let from = FollowFrom {
        sequenced: seq[11].offset + 1,
        checkpoints: cps[1].offset + 1,
        rejected: rej[0].offset + 1,
    };
    drop((follower, writer, bus));
    let bus = f.reopen();
    let mut follower = bus.follow("conformance", from).expect("follow");
    let rest = read_published(follower.as_mut(), 8 + 2);
    let leaves: Vec<u64> = rest
        .iter()
        .filter_map(|p| match &p.record {
            Outgoing::Sequenced(e) => Some(e.leaf_index),
            _ => None,
        })
        .collect();
    let sizes: Vec<u64> = rest
        .iter()
        .filter_map(|p| match &p.record {
            Outgoing::Checkpoint(c) => Some(c.tree_size),
            _ => None,
        })
        .collect();
    assert_eq!(
        leaves,
        (12..20).collect::<Vec<_>>(),
        "sequenced resumes after leaf 11"
    );
    assert_eq!(sizes, vec![15, 20], "checkpoints resume after the second");
    assert!(
        follower
            .poll(5, Duration::from_millis(300))
            .expect("poll")
            .is_empty(),
        "the rejected stream resumes after its only record"
    );
}

/// An empty poll returns within its timeout (plus slack), empty.
fn case_empty_poll_times_out(f: &mut dyn Fixture) {
    let bus = f.fresh("empty");
    let mut reader = bus.inbound(&|_| 0).expect("inbound");
    let t = Instant::now();
    assert!(reader
        .poll(10, Duration::from_millis(300))
        .expect("poll")
        .is_empty());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let mut follower = bus
        .follow("conformance", FollowFrom::default())
        .expect("follow");
    let t = Instant::now();
    assert!(follower
        .poll(10, Duration::from_millis(300))
        .expect("poll")
        .is_empty());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

fn stream_of(r: &Outgoing) -> Stream {
    match r {
        Outgoing::Sequenced(_) => Stream::Sequenced,
        Outgoing::Checkpoint(_) => Stream::Checkpoints,
        Outgoing::Rejected(_) => Stream::Rejected,
    }
}

/// One case of the suite.
type Case = fn(&mut dyn Fixture);

fn run_suite(f: &mut dyn Fixture) {
    let cases: [(&str, Case); 4] = [
        ("submit_and_read_in_order", case_submit_and_read_in_order),
        (
            "inbound_resumes_at_positions",
            case_inbound_resumes_at_positions,
        ),
        ("publish_and_follow", case_publish_and_follow),
        ("empty_poll_times_out", case_empty_poll_times_out),
    ];
    for (name, case) in cases {
        eprintln!("conformance case: {name}");
        case(f);
    }
}

macro_rules! conformance {
    ($name:ident, $fixture:expr) => {
        #[test]
        fn $name() {
            let mut fixture = $fixture;
            run_suite(&mut fixture);
        }
    };
}

conformance!(
    embedded_bus_conforms,
    Embedded {
        root: tempfile::tempdir().expect("tempdir"),
        current: None,
    }
);

conformance!(kafka_bus_conforms, {
    let broker = clew_kafka_broker::KafkaBroker::start()
        .unwrap_or_else(|e| panic!("this test needs a Kafka broker: {e}"));
    Kafka {
        broker,
        config: None,
    }
});
