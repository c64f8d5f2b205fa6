//! Crash safety of the real binary: `clew sequence` is SIGKILLed at random
//! points while sequencing a 50,000-event stream from several producers, and
//! restarted each time. At the end every event is in the ledger exactly once,
//! every acknowledged event is where its acknowledgement said, `clew verify`
//! passes, and every pair of stored checkpoints is consistent.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clew_ledger::{Ledger, LedgerOptions};
use rand::{Rng, SeedableRng};
use support::{clew, ok, Fixture};

const EVENTS: u64 = 50_000;
const KILLS: usize = 10;

#[test]
fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    let f = Fixture::new();
    let (stream, envelopes) = f.write_stream("events.stream", 4, EVENTS);
    let seed: u64 = std::env::var("CLEW_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed {seed} (set CLEW_CRASH_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    // event id -> leaf, as acknowledged across all runs.
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let args = f.sequence_args(&stream, 512);
    for round in 0..=KILLS {
        let mut child = clew()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("clew sequence starts");
        let stdout = child.stdout.take().unwrap();
        let run_acks = Arc::new(Mutex::new(0u64));
        let reader = {
            let (acked, run_acks) = (acked.clone(), run_acks.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let parts: Vec<&str> = line.split('\t').collect();
                    match parts.as_slice() {
                        ["ack", _offset, id, leaf] => {
                            let leaf: u64 = leaf.parse().unwrap();
                            let previous = acked.lock().unwrap().insert(id.to_string(), leaf);
                            assert!(
                                previous.is_none() || previous == Some(leaf),
                                "event {id} acknowledged at two leaves"
                            );
                            *run_acks.lock().unwrap() += 1;
                        }
                        ["reject", ..] => panic!("no event of this stream may be refused: {line}"),
                        _ => {}
                    }
                }
            })
        };
        if round == KILLS {
            let status = child.wait().unwrap();
            reader.join().unwrap();
            assert!(status.success(), "the final run completes");
            break;
        }
        // Let this run acknowledge a random amount of work, then kill it at a
        // random instant (mid-verify, mid-commit, mid-fsync or mid-print).
        let target = rng.gen_range(300..3500u64);
        let started = Instant::now();
        while *run_acks.lock().unwrap() < target {
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: the stream finished before the kill"
            );
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "round {round}: no progress"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..60)));
        assert!(
            child.try_wait().unwrap().is_none(),
            "round {round}: killed mid-run"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
    }

    let verified = ok(&["verify", "--data-dir", f.data_str()]);
    assert!(
        verified.starts_with(&format!("ok: {} leaves", 1 + envelopes.len())),
        "{verified}"
    );

    let key = std::fs::read_to_string(clew::datadir::DataDir::new(f.data()).ledger_key()).unwrap();
    let ledger = Ledger::open(&f.data(), key.trim(), LedgerOptions::default()).unwrap();
    assert_eq!(
        ledger.size(),
        1 + envelopes.len() as u64,
        "no event lost, none appended twice"
    );
    assert_eq!(
        ledger.rejected_count(),
        0,
        "no re-delivery was even seen as a duplicate"
    );
    let mut leaves = HashSet::new();
    for env in &envelopes {
        let id = clew_events::open(env).unwrap().event.event_id;
        let leaf = ledger
            .leaf_index_of(&id)
            .unwrap()
            .unwrap_or_else(|| panic!("event {id} is missing"));
        assert!(leaves.insert(leaf), "leaf {leaf} holds two events");
    }
    let acked = acked.lock().unwrap();
    // A kill between a batch's commit and its printed acknowledgements leaves
    // that batch unacknowledged (but sequenced, as checked above).
    assert!(!acked.is_empty() && acked.len() <= envelopes.len());
    for (id, leaf) in acked.iter() {
        assert_eq!(
            ledger.leaf_index_of(id).unwrap(),
            Some(*leaf),
            "acknowledged event {id} moved"
        );
    }

    let sizes = ledger.checkpoint_sizes().unwrap();
    assert!(sizes.len() > 50);
    let checkpoints: Vec<_> = sizes
        .iter()
        .map(|s| ledger.checkpoint_at(*s).unwrap().unwrap())
        .collect();
    for (i, old) in checkpoints.iter().enumerate() {
        for new in &checkpoints[i + 1..] {
            let proof = ledger.consistency_proof(old.size, new.size).unwrap();
            tlog_tiles::check_tree(&proof, new.size, new.root, old.size, old.root).unwrap_or_else(
                |e| {
                    panic!(
                        "checkpoints {} and {} are inconsistent: {e}",
                        old.size, new.size
                    )
                },
            );
        }
    }
}
