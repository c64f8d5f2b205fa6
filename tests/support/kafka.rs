//! The distributed deployment's processes for tests: a Kafka broker per
//! test (tests/kafka), `clew ledger` as a child process that can be killed
//! and started again, and `clew replica` servers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use clew_bus::{KafkaBus, KafkaConfig, Topics};
use clew_events::sample::STREAM_SITES;
use clew_kafka_broker::KafkaBroker;
use serde_json::{json, Value};

use super::server::{Api, Server};
use super::{clew, Fixture};

pub fn broker() -> KafkaBroker {
    KafkaBroker::start().unwrap_or_else(|e| panic!("this test needs a Kafka broker: {e}"))
}

pub fn prefix(test: &str) -> String {
    format!("{test}-{}", uuid::Uuid::now_v7().simple())
}

/// Arguments naming the bus.
pub fn kafka_args(broker: &KafkaBroker, prefix: &str) -> Vec<String> {
    vec![
        "--kafka".into(),
        broker.bootstrap().into(),
        "--topic-prefix".into(),
        prefix.into(),
    ]
}

pub fn bus(broker: &KafkaBroker, prefix: &str) -> KafkaBus {
    let mut c = KafkaConfig::new(broker.bootstrap());
    c.topics = Topics::with_prefix(prefix);
    KafkaBus::connect(c).expect("connect to the test broker")
}

/// Record ranges of a stream file (producer registrations, then the
/// synthetic events) in the order they may be submitted concurrently: each
/// range only cites entities of earlier ranges, so several producers can
/// send one range at once in any interleaving.
pub fn phases(producers: u64, events: u64) -> Vec<(u64, u64)> {
    let datasets = (events / 5).clamp(1, 20_000);
    // Producer registrations and sites (signed by the admin); datasets (cite
    // sites, signed by the producers just registered); first versions (cite
    // datasets); everything else (cites first versions only).
    let a = producers + STREAM_SITES;
    let b = a + datasets;
    let c = b + datasets;
    vec![(0, a), (a, b), (b, c), (c, producers + events)]
}

/// Runs `clew submit` for one record range from `producers` processes at
/// once (each a shard of the range) and waits for all; returns the summed
/// summary.
pub fn submit_phase(
    stream: &Path,
    kafka: &[String],
    range: (u64, u64),
    producers: u64,
) -> BTreeMap<String, u64> {
    let children: Vec<Child> = (0..producers)
        .map(|k| {
            clew()
                .arg("submit")
                .args(kafka)
                .args([
                    "--input",
                    &stream.display().to_string(),
                    "--records",
                    &format!("{}..{}", range.0, range.1),
                    "--shard",
                    &format!("{k}/{producers}"),
                    "--wait-s",
                    "900",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start clew submit")
        })
        .collect();
    let mut total = BTreeMap::new();
    for c in children {
        let out = c.wait_with_output().expect("clew submit");
        assert!(
            out.status.success(),
            "clew submit failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: Value = serde_json::from_slice(
            out.stdout
                .split(|b| *b == b'\n')
                .find(|l| l.starts_with(b"{"))
                .unwrap_or(b"{}"),
        )
        .expect("summary JSON");
        for (k, v) in summary.as_object().expect("object") {
            *total.entry(k.clone()).or_insert(0) += v.as_u64().unwrap_or(0);
        }
    }
    total
}

/// The partner's interpreter: the venv tests/setup.sh makes, or
/// `CLEW_PARTNER_PYTHON`.
pub fn partner_python() -> PathBuf {
    if let Some(p) = std::env::var_os("CLEW_PARTNER_PYTHON") {
        return PathBuf::from(p);
    }
    let p = super::repo_root().join("target/partner-venv/bin/python");
    assert!(
        p.exists(),
        "the Python partner needs its virtualenv ({}); run tests/setup.sh",
        p.display()
    );
    p
}

/// `clew ledger` as a child process that can be killed and started again.
pub struct Sequencer {
    child: Option<Child>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl Sequencer {
    pub fn start(data: &Path, kafka: &[String]) -> Self {
        Self::start_with(data, kafka, &[], &[])
    }

    /// [`Sequencer::start`] with more arguments and environment variables.
    pub fn start_with(
        data: &Path,
        kafka: &[String],
        extra: &[String],
        env: &[(String, String)],
    ) -> Self {
        let mut args = vec![
            "ledger".into(),
            "--data-dir".into(),
            data.display().to_string(),
        ];
        args.extend(kafka.iter().cloned());
        args.extend(extra.iter().cloned());
        let mut s = Sequencer {
            child: None,
            args,
            env: env.to_vec(),
            log: data.with_extension("ledger.log"),
        };
        s.spawn();
        s.wait_reading();
        s
    }

    /// Waits until the sequencer reads the inbound topic (its data directory,
    /// with the API service key, exists by then).
    pub fn wait_reading(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains("sequencer reading")
        {
            assert!(
                Instant::now() < deadline,
                "clew ledger did not start reading; its log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("sequencer log");
        let child = clew()
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start clew ledger");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and insists on a clean exit (it publishes what it holds first).
    pub fn stop(&mut self) {
        let mut c = self.child.take().expect("running");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "clew ledger exited with {status}; its log:\n{}",
                    self.log_text()
                );
                return;
            }
            assert!(Instant::now() < deadline, "clew ledger did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        let start = bytes.len().saturating_sub(6000);
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

impl Drop for Sequencer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `clew replica` over `data` (its own mirror, catalogue and group).
pub fn replica(fx: &Fixture, data: &Path, kafka: &[String], group: &str) -> Server {
    replica_with(fx, data, kafka, group, &[], &[])
}

/// [`replica`] with more arguments and environment variables.
pub fn replica_with(
    fx: &Fixture,
    data: &Path,
    kafka: &[String],
    group: &str,
    extra: &[String],
    env: &[(String, String)],
) -> Server {
    let vkey = fx.data().join("keys/ledger.vkey").display().to_string();
    let key = fx.data().join("keys/api.key").display().to_string();
    let mut args: Vec<&str> = vec!["replica"];
    args.extend(kafka.iter().map(String::as_str));
    args.extend([
        "--ledger-vkey",
        &vkey,
        "--service-key",
        &key,
        "--group",
        group,
    ]);
    args.extend(extra.iter().map(String::as_str));
    Server::start_with(data, &args, env)
}

/// Waits until a replica's checkpoint has `size` leaves.
pub async fn wait_for_size(api: &Api, token: &str, size: u64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // A replica started moments ago may not hold a checkpoint yet: its
        // answer is an error until the first one arrives.
        let (_, v) = api
            .post(Some(token), "{ checkpoint { size } }", json!({}))
            .await;
        if v["data"]["checkpoint"]["size"].as_u64() == Some(size) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica stuck at {} of {size} leaves",
            v
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
