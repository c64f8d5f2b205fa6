//! Fuzz targets for the decoders outside input reaches: the envelope, the
//! checkpoint, the receipt, the search cursor and text, OpenLineage JSON and
//! DICOM headers. Each target mutates real seeds (bit flips, random bytes,
//! insertions, deletions, duplicated and truncated ranges, extreme lengths)
//! for a bounded time and requires that the decoder answers — `Ok` or an
//! error — without panicking. In CI each target runs for
//! `CLEW_FUZZ_SECONDS` (default 8 s); set it higher for a longer run and
//! `CLEW_FUZZ_SEED` to replay one. A failing input is written to
//! `target/fuzz-failures/<target>-<seed>.bin` and named in the failure.

use crate::support;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use clew::datadir::DataDir;
use clew_catalog::{Catalog, SearchRequest};
use clew_events::proto;
use clew_ledger::LedgerOptions;
use prost::Message;

/// xorshift64*: small, fast, and replayable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Values that make length and count fields lie.
const INTERESTING: &[&[u8]] = &[
    &[0xff, 0xff, 0xff, 0xff],
    &[0xff, 0xff, 0xff, 0x7f],
    &[0x00, 0x00, 0x00, 0x80],
    &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0x00],
    b"\"",
    b"\\",
    b"{",
    b"[",
    b"\n\n",
    b"\xe2\x80\x94 ",
];

fn mutate(rng: &mut Rng, seed: &[u8], max_len: usize) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let len = v.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                v.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(256)).min(len);
                let copy = v[a..b].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, copy);
            }
            5 => v.truncate(rng.below(len + 1)),
            6 => {
                let x = INTERESTING[rng.below(INTERESTING.len())];
                let i = rng.below(len + 1);
                let end = (i + x.len()).min(len);
                v.splice(i..end, x.iter().copied());
            }
            _ => {
                let i = rng.below(len + 1);
                let x = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(i..i, x.iter().copied());
            }
        }
    }
    v.truncate(max_len);
    v
}

fn budget() -> Duration {
    let secs = std::env::var("CLEW_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(8);
    Duration::from_secs(secs)
}

thread_local! {
    /// Set while this thread fuzzes: its expected panics print nothing.
    static FUZZING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Silences the panics of the thread that made it, until dropped. The
/// suites share one test binary and run at once, so the panic hook is the
/// whole process's: it is set once, and stays silent only on a fuzzing
/// thread, so another test's failure still prints its message.
struct Quiet;

impl Quiet {
    fn here() -> Self {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !FUZZING.with(|f| f.get()) {
                    previous(info);
                }
            }));
        });
        FUZZING.with(|f| f.set(true));
        Quiet
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        FUZZING.with(|f| f.set(false));
    }
}

/// Runs `target` on mutations of `seeds` until the budget is spent.
fn fuzz(name: &str, seeds: &[Vec<u8>], max_len: usize, target: impl Fn(&[u8])) {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let seed = std::env::var("CLEW_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let mut rng = Rng(seed);
    let deadline = Instant::now() + budget();
    let quiet = Quiet::here();
    let mut runs = 0u64;
    let mut failure = None;
    // Every seed as it is first, then mutations.
    for s in seeds {
        if std::panic::catch_unwind(AssertUnwindSafe(|| target(s))).is_err() {
            failure = Some(s.clone());
            break;
        }
    }
    while failure.is_none() && Instant::now() < deadline {
        let base = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base, max_len);
        runs += 1;
        if std::panic::catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            failure = Some(input);
        }
    }
    drop(quiet);
    if let Some(input) = failure {
        let dir = support::repo_root().join("target/fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{name}-{seed}.bin"));
        let _ = std::fs::write(&path, &input);
        // Run it again without catching, for the panic's own message.
        eprintln!(
            "{name}: input {} (seed {seed}, after {runs} runs) panics:",
            path.display()
        );
        target(&input);
        panic!("{name}: the input panicked only the first time");
    }
    eprintln!("{name}: {runs} mutated inputs, none panicked (seed {seed})");
}

/// A real ledger with the demo recorded: its envelopes, checkpoint and
/// receipts are the seeds.
struct Seeds {
    _tmp: tempfile::TempDir,
    dir: DataDir,
}

fn ledger_seeds() -> Seeds {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    support::ok(&["demo", "--data-dir", &data.to_string_lossy()]);
    Seeds {
        dir: DataDir::new(&data),
        _tmp: tmp,
    }
}

#[test]
fn envelopes_checkpoints_and_receipts_decode_without_panicking() {
    let s = ledger_seeds();
    let ledger = s.dir.open(None, LedgerOptions::default()).expect("ledger");
    let vkey = std::fs::read_to_string(s.dir.ledger_vkey()).expect("vkey");
    let vkey = vkey.trim().to_string();
    let size = ledger.latest_checkpoint().expect("checkpoint").size;
    let leaves: Vec<Vec<u8>> = (0..size.min(40))
        .map(|i| ledger.leaf(i).expect("leaf"))
        .collect();
    fuzz("envelope", &leaves, 1 << 16, |bytes| {
        if let Ok(opened) = clew_events::open(bytes) {
            let _ = opened.signature();
            let _ = opened.kind();
            let _ = opened.signed_message();
            let _ = proto::Envelope::decode(bytes);
        }
    });
    let note = ledger
        .latest_checkpoint()
        .expect("checkpoint")
        .note_text()
        .into_bytes();
    fuzz("checkpoint", &[note], 4096, |bytes| {
        let _ = clew_ledger::checkpoint::parse(bytes, &vkey);
    });
    let receipts: Vec<Vec<u8>> = [0, size / 2, size - 1]
        .iter()
        .map(|i| ledger.receipt(*i).expect("receipt").into_bytes())
        .collect();
    fuzz("receipt", &receipts, 1 << 17, |bytes| {
        let _ = clew_ledger::verify_receipt(&String::from_utf8_lossy(bytes), &vkey);
    });
}

#[test]
fn search_cursors_and_text_decode_without_panicking() {
    let s = ledger_seeds();
    let ledger = s.dir.open(None, LedgerOptions::default()).expect("ledger");
    let catalog: Catalog = s.dir.catalog(&ledger).expect("catalogue");
    let first = catalog
        .search(&SearchRequest {
            limit: 2,
            ..Default::default()
        })
        .expect("search");
    let cursor = first.next_cursor.expect("a second page");
    let decoded =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &cursor)
            .expect("cursor is base64url");
    fuzz(
        "cursor",
        &[decoded, cursor.clone().into_bytes()],
        256,
        |bytes| {
            // Both as the JSON inside and as the text a client sends back.
            let as_sent =
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
            for c in [as_sent, String::from_utf8_lossy(bytes).into_owned()] {
                let _ = catalog.search(&SearchRequest {
                    cursor: Some(c),
                    limit: 5,
                    ..Default::default()
                });
            }
        },
    );
    let texts: Vec<Vec<u8>> = [
        "chest CT siemens",
        "\"chest x-ray\" pneumonia",
        "pneumothorax radiograph",
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .collect();
    fuzz("search-text", &texts, 2048, |bytes| {
        let _ = catalog.search(&SearchRequest {
            text: String::from_utf8_lossy(bytes).into_owned(),
            ..Default::default()
        });
    });
}

#[test]
fn openlineage_events_map_without_panicking() {
    let s = ledger_seeds();
    let ledger = s.dir.open(None, LedgerOptions::default()).expect("ledger");
    let catalog: Catalog = s.dir.catalog(&ledger).expect("catalogue");
    let viewer =
        clew_api::Viewer::resolve(&catalog, Default::default(), "model-team", 0).expect("viewer");
    let run = serde_json::json!({
        "eventType": "COMPLETE", "eventTime": "2026-11-30T10:00:00Z",
        "producer": "https://example.org/pipeline",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/definitions/RunEvent",
        "run": {"runId": "3f9c4e2a-8b1d-4c7e-9a2f-6d5e4c3b2a10",
                "facets": {"executionParameters": {"parameters": [{"key": "lr", "value": "0.1"}]}}},
        "job": {"namespace": "hospital", "name": "train",
                "facets": {"jobType": {"jobType": "TRAINING"},
                           "sourceCodeLocation": {"type": "git", "version": "4f2a9c1e7b3d"}}},
        "inputs": [{"namespace": "clew", "name": "nccid-cxr-train@1.0",
                    "facets": {"datasetRole": {"role": "train"}, "version": {"datasetVersion": "1.0"}}}],
        "outputs": [{"namespace": "clew-model", "name": "fuzz-model-1"}]
    });
    let dataset_event = serde_json::json!({
        "eventTime": "2026-11-30T10:00:00Z", "producer": "p", "schemaURL": "s",
        "dataset": {"namespace": "clew", "name": "nccid-cxr-val", "facets": {"version": {"datasetVersion": "1.0"}}}
    });
    let seeds = [
        run.to_string().into_bytes(),
        dataset_event.to_string().into_bytes(),
    ];
    fuzz("openlineage", &seeds, 1 << 16, |bytes| {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
            let _ = clew_api::openlineage::map_event(&v, &catalog, &viewer);
        }
    });
}

#[test]
fn dicom_headers_scan_without_panicking() {
    let files = support::repo_root().join("target/dicom-files");
    let table = clew_ingest::ConfidentialityTable::standard().expect("table");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&files)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run tests/setup.sh (it installs the real DICOM files)",
                files.display()
            )
        })
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() < 64 * 1024))
        .filter_map(|p| std::fs::read(p).ok())
        .collect();
    seeds.sort();
    seeds.truncate(24);
    fuzz("dicom-header", &seeds, 1 << 16, |bytes| {
        let _ = clew_ingest::scan::scan_bytes(bytes, "fuzz.dcm", &table);
    });
}
