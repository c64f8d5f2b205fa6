//! The distributed path on a real Apache Kafka broker, with the real `clew`
//! binaries as separate processes: the sequencer killed at random points, the
//! broker restarted mid-stream, a read replica killed and restarted, hostile
//! messages on the inbound topic, and a partner written in Python.
//!
//! Each test starts its own broker (tests/kafka), or uses `KAFKA_BOOTSTRAP`;
//! without a broker a test fails, saying why.

use crate::support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clew_bus::{Bus, FollowFrom, KafkaBus, Outgoing};
use clew_ledger::{Ledger, LedgerOptions};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use support::kafka::{
    broker, bus, kafka_args, partner_python, phases, prefix, replica, submit_phase, wait_for_size,
    Sequencer,
};
use support::server::Api;
use support::{ok, Fixture};

/// Event ids of every record of a stream file.
fn stream_event_ids(records: &[Vec<u8>]) -> Vec<String> {
    records
        .iter()
        .map(|b| {
            clew_events::open(b)
                .expect("stream record opens")
                .event
                .event_id
        })
        .collect()
}

/// Reads every record of the outbound topics from offset 0 until the
/// sequenced topic holds `size` distinct leaves.
fn read_outbound(bus: &KafkaBus, size: u64) -> Vec<clew_bus::Published> {
    let mut follower = bus
        .follow("kafka-e2e-check", FollowFrom::default())
        .expect("follow");
    let mut got = Vec::new();
    let mut leaves = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while (leaves.len() as u64) < size {
        assert!(
            Instant::now() < deadline,
            "the sequenced topic holds {} of {size} leaves",
            leaves.len()
        );
        for p in follower
            .poll(10_000, Duration::from_millis(300))
            .expect("poll")
        {
            if let Outgoing::Sequenced(e) = &p.record {
                leaves.insert(e.leaf_index);
            }
            got.push(p);
        }
    }
    // Whatever else is already there (late duplicates, last checkpoints).
    loop {
        let more = follower
            .poll(10_000, Duration::from_millis(1500))
            .expect("poll");
        if more.is_empty() {
            break;
        }
        got.extend(more);
    }
    got
}

/// The ledger holds every event id exactly once, `clew verify` passes, every
/// published checkpoint verifies and is a checkpoint of this one tree, and
/// the sequenced topic carries every leaf (re-published copies identical).
fn check_exactly_once(fx: &Fixture, bus: &KafkaBus, expected_ids: &[String], leaves_before: u64) {
    let verified = ok(&["verify", "--data-dir", fx.data_str()]);
    assert!(verified.starts_with("ok:"), "{verified}");
    let ledger = Ledger::open(
        &fx.data(),
        &std::fs::read_to_string(fx.data().join("keys/ledger.key")).expect("ledger key"),
        LedgerOptions::default(),
    )
    .expect("open the ledger");
    let size = ledger.size();
    assert_eq!(
        size,
        leaves_before + expected_ids.len() as u64,
        "every acknowledged event appended once, nothing else"
    );
    let mut seen: HashMap<String, u64> = HashMap::new();
    for i in 0..size {
        let id = clew_events::open(&ledger.leaf(i).expect("leaf"))
            .expect("leaf opens")
            .event
            .event_id;
        if let Some(first) = seen.insert(id.clone(), i) {
            panic!("event {id} is in the ledger twice: leaves {first} and {i}");
        }
    }
    for id in expected_ids {
        assert!(seen.contains_key(id), "acknowledged event {id} is missing");
    }

    let published = read_outbound(bus, size);
    let vkey = fx.vkey();
    let mut checkpoints = 0;
    let mut copies: HashMap<u64, usize> = HashMap::new();
    for p in &published {
        match &p.record {
            Outgoing::Sequenced(e) => {
                assert_eq!(
                    e.envelope,
                    ledger.leaf(e.leaf_index).expect("leaf"),
                    "leaf {} on the topic is the ledger's leaf",
                    e.leaf_index
                );
                *copies.entry(e.leaf_index).or_default() += 1;
            }
            Outgoing::Checkpoint(c) => {
                let cp = clew_ledger::checkpoint::parse(&c.signed_note, &vkey)
                    .expect("published checkpoint verifies");
                assert_eq!(
                    cp.root,
                    ledger.root_at(cp.size).expect("root"),
                    "published checkpoint {} is a checkpoint of this tree",
                    cp.size
                );
                checkpoints += 1;
            }
            Outgoing::Rejected(_) => {}
        }
    }
    assert_eq!(copies.len() as u64, size, "the topic holds every leaf");
    let republished = copies.values().filter(|n| **n > 1).count();
    eprintln!(
        "{size} leaves; {checkpoints} published checkpoints, all of one tree; \
         {republished} leaves published more than once (dropped by readers)"
    );
    assert!(checkpoints > 0);
    // Consecutive stored checkpoints: RFC 6962 consistency proofs verify.
    let sizes = ledger.checkpoint_sizes().expect("sizes");
    for w in sizes.windows(2) {
        let proof = ledger.consistency_proof(w[0], w[1]).expect("proof");
        tlog_tiles::check_tree(
            &proof,
            w[1],
            ledger.root_at(w[1]).expect("root"),
            w[0],
            ledger.root_at(w[0]).expect("root"),
        )
        .unwrap_or_else(|e| panic!("checkpoints {} and {} inconsistent: {e}", w[0], w[1]));
    }
}

#[test]
fn sequencer_killed_ten_times_loses_and_duplicates_nothing() {
    let _serial = clew_kafka_broker::serial();
    let broker = broker();
    let fx = Fixture::new();
    const PRODUCERS: u64 = 4;
    const EVENTS: u64 = 100_000;
    let (stream, records) = fx.write_stream("national.stream", PRODUCERS as usize, EVENTS);
    let ids = stream_event_ids(&records);
    let prefix = prefix("kill");
    let kafka = kafka_args(&broker, &prefix);

    let sequencer = Arc::new(std::sync::Mutex::new(Sequencer::start(&fx.data(), &kafka)));
    // Genesis and the API service key: the two leaves before the stream.
    let leaves_before = 2;
    // A replica follows throughout: it appends a leaf only when a signed
    // checkpoint covers it, so it reaches the end only if every re-published
    // leaf was dropped rather than appended again.
    let follower = replica(&fx, &fx.path("replica"), &kafka, "replica-under-kills");

    let seed: u64 = rand::thread_rng().gen();
    eprintln!("kill schedule seed {seed}");
    let streaming = Arc::new(AtomicBool::new(true));
    let killer = {
        let sequencer = sequencer.clone();
        let streaming = streaming.clone();
        std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut kills = 0;
            while kills < 10 {
                std::thread::sleep(Duration::from_millis(rng.gen_range(700..2500)));
                if !streaming.load(Ordering::SeqCst) {
                    break;
                }
                let mut s = sequencer.lock().expect("sequencer");
                s.kill();
                kills += 1;
                drop(s);
                std::thread::sleep(Duration::from_millis(rng.gen_range(0..600)));
                sequencer.lock().expect("sequencer").spawn();
            }
            kills
        })
    };
    let mut summary = BTreeMap::new();
    for range in phases(PRODUCERS, EVENTS) {
        for (k, v) in submit_phase(&stream, &kafka, range, PRODUCERS) {
            *summary.entry(k).or_insert(0) += v;
        }
    }
    streaming.store(false, Ordering::SeqCst);
    let kills = killer.join().expect("killer");
    eprintln!("producers: {summary:?}; sequencer SIGKILLed {kills} times mid-stream");
    assert_eq!(
        kills, 10,
        "all ten kills happened while the stream was running"
    );
    assert_eq!(
        summary["submitted"],
        records.len() as u64,
        "every record acknowledged"
    );
    assert_eq!(
        summary["sequenced"],
        records.len() as u64,
        "every record sequenced"
    );
    assert_eq!(summary["rejected"] + summary["duplicates"], 0);
    sequencer.lock().expect("sequencer").stop();
    let bus = bus(&broker, &prefix);
    check_exactly_once(&fx, &bus, &ids, leaves_before);
    let size = leaves_before + ids.len() as u64;
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let api = Api::new(&follower.base);
            wait_for_size(&api, &follower.admin_token(), size).await;
        });
}

#[test]
fn broker_restart_mid_stream_loses_and_duplicates_nothing() {
    let _serial = clew_kafka_broker::serial();
    let mut broker = broker();
    assert!(
        !broker.is_external(),
        "this test restarts the broker; unset KAFKA_BOOTSTRAP to let it start its own"
    );
    let fx = Fixture::new();
    const PRODUCERS: u64 = 3;
    const EVENTS: u64 = 20_000;
    let (stream, records) = fx.write_stream("restart.stream", PRODUCERS as usize, EVENTS);
    let ids = stream_event_ids(&records);
    let prefix = prefix("restart");
    let kafka = kafka_args(&broker, &prefix);
    let mut sequencer = Sequencer::start(&fx.data(), &kafka);
    let phases = phases(PRODUCERS, EVENTS);
    let mut summary = BTreeMap::new();
    for (i, range) in phases.iter().enumerate() {
        if i == phases.len() - 1 {
            // Restart the broker while the producers of the last range send.
            let stream2 = stream.clone();
            let kafka2 = kafka.clone();
            let range = *range;
            let producers =
                std::thread::spawn(move || submit_phase(&stream2, &kafka2, range, PRODUCERS));
            std::thread::sleep(Duration::from_millis(1500));
            broker.restart().expect("broker restarts");
            eprintln!("broker restarted mid-stream");
            for (k, v) in producers.join().expect("producers") {
                *summary.entry(k).or_insert(0) += v;
            }
        } else {
            for (k, v) in submit_phase(&stream, &kafka, *range, PRODUCERS) {
                *summary.entry(k).or_insert(0) += v;
            }
        }
    }
    assert_eq!(summary["submitted"], records.len() as u64);
    sequencer.stop();
    assert_eq!(
        summary["sequenced"],
        records.len() as u64,
        "{summary:?}; refused:\n{}",
        ok(&["rejected", "--data-dir", fx.data_str(), "--limit", "5"])
    );
    let bus = bus(&broker, &prefix);
    check_exactly_once(&fx, &bus, &ids, 2);
}

const FIXED_QUERIES: &[&str] = &[
    r#"{ checkpoint { size rootHash note } }"#,
    r#"{ search(input: {text: "chest"}) { total hits { subject title } facets { name values { value count } } } }"#,
    r#"{ search(input: {text: "ct", sort: RECENCY, limit: 20}) { total hits { subject } } }"#,
    r#"{ lineage(subject: "dataset-version/ds-000001@1.0", direction: DOWNSTREAM, depth: 4) { nodes { subject } edges { from relation to } } }"#,
    r#"{ history(subject: "dataset/ds-000002") { leafIndex actor kind } }"#,
    r#"{ impact(datasetVersion: "ds-000003@1.0") { affected { subject } liveDeployments } }"#,
    r#"{ inclusionProof(leafIndex: 100) { leafIndex treeSize hashes } }"#,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard only keeps other Kafka tests of this binary from running at the
// same time; holding it across awaits is the point.
#[allow(clippy::await_holding_lock)]
async fn killed_replica_catches_up_and_answers_like_one_that_never_stopped() {
    let _serial = clew_kafka_broker::serial();
    let broker = broker();
    let fx = Fixture::new();
    const PRODUCERS: u64 = 2;
    const EVENTS: u64 = 6_000;
    let (stream, records) = fx.write_stream("replica.stream", PRODUCERS as usize, EVENTS);
    let prefix = prefix("replica");
    let kafka = kafka_args(&broker, &prefix);
    let mut sequencer = Sequencer::start(&fx.data(), &kafka);
    let steady = replica(&fx, &fx.path("steady"), &kafka, "replica-steady");
    let mut flaky = Some(replica(&fx, &fx.path("flaky"), &kafka, "replica-flaky"));
    let phases = phases(PRODUCERS, EVENTS);
    for (i, range) in phases.iter().enumerate() {
        if i == 2 {
            // Killed (SIGKILL) between ranges; the stream goes on without it.
            drop(flaky.take());
        }
        let (stream, kafka, range) = (stream.clone(), kafka.clone(), *range);
        tokio::task::spawn_blocking(move || submit_phase(&stream, &kafka, range, PRODUCERS))
            .await
            .expect("producers");
    }
    let size = 2 + records.len() as u64;
    let flaky = replica(&fx, &fx.path("flaky"), &kafka, "replica-flaky");
    let (a, b) = (Api::new(&steady.base), Api::new(&flaky.base));
    let (ta, tb) = (steady.admin_token(), flaky.admin_token());
    wait_for_size(&a, &ta, size).await;
    wait_for_size(&b, &tb, size).await;
    for server in [&steady, &flaky] {
        let log =
            std::fs::read_to_string(server.data.with_extension("server.log")).unwrap_or_default();
        for line in log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        {
            eprintln!("{}: {line}", server.data.display());
        }
    }
    for q in FIXED_QUERIES {
        let (x, y) = (a.ok(&ta, q, json!({})).await, b.ok(&tb, q, json!({})).await);
        assert_eq!(x, y, "replicas differ on {q}");
    }
    let total = a.ok(&ta, FIXED_QUERIES[1], json!({})).await;
    assert!(
        total["search"]["total"].as_u64().unwrap_or(0) > 0,
        "the query set finds data"
    );

    // A mutation on a replica goes through Kafka and comes back sequenced;
    // the other replica sees it too.
    let m = r#"mutation { registerSite(input: {siteId: "replica-trust", name: "Replica Trust", kind: SITE_KIND_HOSPITAL_TRUST}) { leafIndex } }"#;
    let leaf = a.ok(&ta, m, json!({})).await["registerSite"]["leafIndex"]
        .as_u64()
        .expect("leaf index");
    assert_eq!(leaf, size);
    wait_for_size(&b, &tb, size + 1).await;
    let site = b
        .ok(
            &tb,
            r#"{ site(id: "replica-trust") { subject } }"#,
            json!({}),
        )
        .await;
    assert_eq!(site["site"]["subject"], "site/replica-trust");
    sequencer.stop();
}

#[test]
fn hostile_messages_on_the_inbound_topic_end_up_rejected_with_reasons() {
    let _serial = clew_kafka_broker::serial();
    let broker = broker();
    let fx = Fixture::new();
    let (stream, records) = fx.write_stream("good.stream", 1, 1000);
    let prefix = prefix("hostile");
    let kafka = kafka_args(&broker, &prefix);
    let health = std::net::SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let mut with_health = kafka.clone();
    with_health.extend(["--health-listen".to_string(), health.to_string()]);
    let mut sequencer = Sequencer::start(&fx.data(), &with_health);
    let bus = bus(&broker, &prefix);
    // Everything the last range cites is sequenced first.
    let ranges = phases(1, 1000);
    for range in &ranges[..3] {
        submit_phase(&stream, &kafka, *range, 1);
    }
    let last = ranges[3];

    // A wrongly signed copy of a good event, and an event from a key nobody registered.
    let good = clew_events::open(&records[10]).expect("opens");
    let mut forged = good.envelope.clone();
    forged.signatures[0].sig[3] ^= 0x55;
    let forged = prost::Message::encode_to_vec(&forged);
    let stranger = clew_events::ProducerKey::generate("stranger").expect("key");
    let unknown = prost::Message::encode_to_vec(
        &clew_events::seal(
            &stranger,
            "stranger",
            clew_events::sample::stream_body(0, 1000),
            None,
            None,
        )
        .expect("seal"),
    );
    let junk = b"\x0a\xffnot an envelope".to_vec();
    let mut sent: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, r) in records[last.0 as usize..last.1 as usize].iter().enumerate() {
        let key = clew_events::open(r).expect("opens").key_id().to_string();
        sent.push((key, r.clone()));
        if i == 50 {
            sent.push(("junk".into(), junk.clone()));
            sent.push(("junk".into(), Vec::new()));
        }
        if i == 120 {
            sent.push((good.key_id().to_string(), forged.clone()));
        }
        if i == 200 {
            sent.push(("stranger".into(), unknown.clone()));
        }
    }
    // Raw producer: the bytes go on the topic exactly as given.
    let refs: Vec<(&str, &[u8])> = sent
        .iter()
        .map(|(k, b)| (k.as_str(), b.as_slice()))
        .collect();
    bus.submit(&refs).expect("raw produce");

    let size = 2 + records.len() as u64;
    let published = read_outbound(&bus, size);
    let rejected: Vec<_> = published
        .iter()
        .filter_map(|p| match &p.record {
            Outgoing::Rejected(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    let reasons: Vec<(String, String)> = rejected
        .iter()
        .map(|r| {
            (
                clew_events::proto::RejectionReason::try_from(r.reason)
                    .map(|x| x.as_str_name().to_string())
                    .unwrap_or_default(),
                r.detail.clone(),
            )
        })
        .collect();
    eprintln!("rejected: {reasons:#?}");
    let count = |name: &str| reasons.iter().filter(|(r, _)| r == name).count();
    assert_eq!(count("REJECTION_REASON_MALFORMED"), 2, "{reasons:?}");
    assert_eq!(count("REJECTION_REASON_BAD_SIGNATURE"), 1, "{reasons:?}");
    assert_eq!(count("REJECTION_REASON_UNKNOWN_KEY"), 1, "{reasons:?}");
    assert_eq!(rejected.len(), 4, "nothing else is refused");
    assert!(
        reasons.iter().all(|(_, d)| !d.is_empty()),
        "each names the problem"
    );
    assert!(
        rejected.iter().any(|r| r.raw == junk),
        "the refused bytes are kept verbatim"
    );
    let unknown_detail = &reasons
        .iter()
        .find(|(r, _)| r == "REJECTION_REASON_UNKNOWN_KEY")
        .expect("unknown key")
        .1;
    assert!(unknown_detail.contains("stranger"), "{unknown_detail}");
    // The sequencer's own endpoints (what probes and Prometheus read).
    assert!(http_get(health, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(http_get(health, "/readyz").starts_with("HTTP/1.1 200"));
    let metrics = http_get(health, "/metrics");
    assert!(
        metrics.contains(&format!("clew_sequencer_tree_size {size}")),
        "{metrics}"
    );
    assert!(
        metrics.contains("clew_sequencer_rejected_total 4"),
        "{metrics}"
    );
    // The stream behind them: every good record sequenced, in order per key.
    sequencer.stop();
    let ids = stream_event_ids(&records);
    check_exactly_once(&fx, &bus, &ids, 2);
}

/// A plain HTTP/1.1 GET; returns the whole response.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut out = String::new();
    conn.read_to_string(&mut out).expect("response");
    out
}

#[test]
fn a_python_partner_verifies_every_signature_and_checkpoint() {
    let _serial = clew_kafka_broker::serial();
    let python = partner_python();
    let broker = broker();
    let fx = Fixture::new();
    const PRODUCERS: u64 = 2;
    const EVENTS: u64 = 2_000;
    let (stream, records) = fx.write_stream("partner.stream", PRODUCERS as usize, EVENTS);
    let prefix = prefix("partner");
    let kafka = kafka_args(&broker, &prefix);
    let mut sequencer = Sequencer::start(&fx.data(), &kafka);
    for range in phases(PRODUCERS, EVENTS) {
        submit_phase(&stream, &kafka, range, PRODUCERS);
    }
    // One refused submission, so the partner reads the rejected topic too.
    let bus = bus(&broker, &prefix);
    bus.submit(&[("junk", b"junk".as_slice())])
        .expect("produce");
    sequencer.stop();
    let size = 2 + records.len() as u64;

    let root = support::repo_root();
    let out = std::process::Command::new(&python)
        .arg(root.join("tests/partner/partner.py"))
        .args([
            "--bootstrap",
            broker.bootstrap(),
            "--topic-prefix",
            &prefix,
            "--ledger-vkey",
            &fx.vkey(),
            "--proto-dir",
            &root.join("proto").display().to_string(),
            "--expect-leaves",
            &size.to_string(),
        ])
        .output()
        .expect("run the Python partner");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the partner failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("partner report is not JSON ({e}): {stdout}"));
    assert_eq!(report["leaves"], size, "{report}");
    assert_eq!(report["signatures_verified"], size, "{report}");
    assert!(
        report["checkpoints_verified"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert_eq!(report["latest_checkpoint_size"], size, "{report}");
    assert_eq!(report["rejected"], 1, "{report}");
    assert_eq!(report["problems"], json!([]), "{report}");
}
