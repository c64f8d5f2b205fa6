//! `clew witness`, the C2SP tlog-witness server, over real ledgers made by
//! the `clew` binary: it cosigns a log's checkpoints only when each is
//! consistent with the last it cosigned (kept across restarts), refuses a
//! fork made from a restored copy of the data directory, and answers every
//! malformed or foreign request with the status the spec gives. Every
//! cosignature is checked by Go code Clew did not write
//! (golang.org/x/mod/sumdb/note with transparency-dev/formats' cosignature/v1
//! verifier, tests/witness-check).

use crate::support::{self, ok, Fixture};
use clew_test_witnesses::{ClewWitness, LiteWitness, OmniWitness, Witness};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clew::synthetic;

/// Builds the Go cosignature checker under tests/witness-check.
fn witness_check(out: &Path) -> PathBuf {
    support::go_build("witness-check", out, "witnesscheck")
}

fn size(data: &str) -> u64 {
    ok(&["checkpoint", "--data-dir", data])
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .expect("checkpoint size line")
}

/// `old <old>\n<proof lines>\n\n<checkpoint>`: the add-checkpoint body.
fn request(data: &str, old: u64) -> Vec<u8> {
    let checkpoint = ok(&["checkpoint", "--data-dir", data]);
    let proof = if old == 0 || old == size(data) {
        String::new()
    } else {
        ok(&[
            "proof",
            "consistency",
            "--data-dir",
            data,
            "--old",
            &old.to_string(),
        ])
    };
    format!("old {old}\n{proof}\n{checkpoint}").into_bytes()
}

fn post(base: &str, body: Vec<u8>) -> (u16, String, String) {
    support::block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("{base}/add-checkpoint"))
            .body(body)
            .send()
            .await
            .expect("the witness answers");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, ct, resp.text().await.unwrap_or_default())
    })
}

/// The cosigned checkpoint checked by Go: the log's signature and the witness's cosignature.
fn go_check(bin: &Path, dir: &Path, data: &str, cosignature: &str, witness_vkey: &str) {
    let mut note = ok(&["checkpoint", "--data-dir", data]);
    note.push_str(cosignature);
    let file = dir.join("cosigned-checkpoint");
    std::fs::write(&file, &note).unwrap();
    let ledger_vkey = std::fs::read_to_string(Path::new(data).join("keys/ledger.vkey")).unwrap();
    let out = Command::new(bin)
        .args([
            "-log",
            ledger_vkey.trim(),
            "-witness",
            witness_vkey.trim(),
            "-quorum",
            "1",
        ])
        .arg(&file)
        .output()
        .expect("witnesscheck runs");
    assert!(
        out.status.success(),
        "Go refused the cosigned checkpoint:\n{note}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = witness_vkey.split('+').next().unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("cosigned by {name}")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn append_and_sequence(
    data: &str,
    stream: &Path,
    p: &synthetic::Producers,
    range: std::ops::Range<u64>,
) {
    clew::stream::append(stream, &synthetic::events(p, range, 100)).unwrap();
    ok(&[
        "sequence",
        "--data-dir",
        data,
        "--input",
        stream.to_str().unwrap(),
        "--batch-size",
        "16",
    ]);
}

#[test]
fn clew_witness_cosigns_only_consistent_checkpoints_refuses_a_fork_and_remembers() {
    let f = Fixture::new();
    let data = f.data_str();
    let check = witness_check(f.tmp.path());
    let p = f.producers(2);
    let stream = f.path("events.stream");
    clew::stream::append(&stream, &p.registrations()).unwrap();
    f.put_sample_manifests(100);
    append_and_sequence(data, &stream, &p, 0..40);
    let n1 = size(data);
    // A copy of the data directory (and the stream) as it is now: the fork's start.
    let fork_root = f.path("fork");
    support::copy_dir(&f.data(), &fork_root.join("data"));
    let fork = fork_root.join("data").to_string_lossy().into_owned();
    let fork_stream = fork_root.join("events.stream");
    std::fs::copy(&stream, &fork_stream).unwrap();

    let wdir = f.path("witness");
    let ledger_vkey = f.data().join("keys/ledger.vkey");
    let mut w = ClewWitness::start(
        Path::new(env!("CARGO_BIN_EXE_clew")),
        &wdir,
        "witness.example.org/clew1",
        &[&ledger_vkey],
    );
    let witness_vkey = w.vkey().to_string();
    assert!(
        witness_vkey.starts_with("witness.example.org/clew1+"),
        "{witness_vkey}"
    );
    let again = support::run(&[
        "witness",
        "init",
        "--dir",
        wdir.to_str().unwrap(),
        "--name",
        "x",
    ]);
    assert!(!again.status.success(), "a witness keeps its key");
    let base = w.url();
    // Two witnesses nobody here wrote follow the same log.
    let log_vkey = f.vkey();
    let origin = log_vkey.split('+').next().unwrap().to_string();
    let others: Vec<Box<dyn Witness>> = vec![
        Box::new(LiteWitness::start(
            &f.path("litewitness"),
            "litewitness.example/w1",
            &origin,
            &log_vkey,
        )),
        Box::new(OmniWitness::start(
            &f.path("omniwitness"),
            "omniwitness.example/w1",
            &origin,
            &log_vkey,
        )),
    ];
    // Each cosigns `request`, and Go checks the cosignature.
    let all_cosign = |data: &str, old: u64| {
        for o in &others {
            let (status, _, body) = post(&o.url(), request(data, old));
            assert_eq!(status, 200, "{}: {body}", o.url());
            go_check(&check, f.tmp.path(), data, &body, o.vkey());
        }
    };

    // The first checkpoint of the log: cosigned, and Go agrees.
    let (status, ct, body) = post(&base, request(data, 0));
    assert_eq!(status, 200, "{body}");
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert!(body.starts_with("— witness.example.org/clew1 "), "{body}");
    go_check(&check, f.tmp.path(), data, &body, &witness_vkey);
    all_cosign(data, 0);
    // The same again is the same checkpoint: cosigned again.
    let (status, _, _) = post(&base, request(data, n1));
    assert_eq!(status, 200);

    // The log grows: from the wrong old size a 409 naming the size cosigned…
    append_and_sequence(data, &stream, &p, 40..80);
    let n2 = size(data);
    assert!(n2 > n1);
    let (status, ct, body) = post(&base, request(data, 0));
    assert_eq!(
        (status, ct.as_str(), body.as_str()),
        (409, "text/x.tlog.size", format!("{n1}\n").as_str())
    );
    // … a proof that does not verify is 422, and nothing moves …
    let mut bad = String::from_utf8(request(data, n1)).unwrap();
    let first_hash_at = bad.find('\n').unwrap() + 1;
    bad.replace_range(first_hash_at..first_hash_at + 4, "AAAA");
    let (status, _, body) = post(&base, bad.into_bytes());
    assert_eq!(status, 422, "{body}");
    // … and the right proof from the size it cosigned is cosigned.
    let (status, _, body) = post(&base, request(data, n1));
    assert_eq!(status, 200, "{body}");
    go_check(&check, f.tmp.path(), data, &body, &witness_vkey);
    all_cosign(data, n1);

    // Restarted, it remembers the size it cosigned.
    w.stop();
    w.restart();
    let (status, _, body) = post(&base, request(data, n1));
    assert_eq!((status, body.as_str()), (409, format!("{n2}\n").as_str()));

    // A fork: the restored copy appends other events and reaches past n2.
    let fork_producers = f.producers(2);
    clew::stream::append(
        &fork_stream,
        &synthetic::events(&fork_producers, 40..100, 100),
    )
    .unwrap();
    ok(&[
        "sequence",
        "--data-dir",
        &fork,
        "--input",
        fork_stream.to_str().unwrap(),
        "--batch-size",
        "16",
    ]);
    let nf = size(&fork);
    assert!(
        nf > n2,
        "the fork ({nf}) is longer than what was cosigned ({n2})"
    );
    assert_ne!(
        ok(&["checkpoint", "--data-dir", &fork]),
        ok(&["checkpoint", "--data-dir", data])
    );
    // Its own proof from n2 (consistent with its own history) is refused,
    // by every witness.
    let (status, _, body) = post(&base, request(&fork, n2));
    assert_eq!(status, 422, "the fork is refused: {body}");
    assert!(body.contains(&format!("from size {n2}")), "{body}");
    for o in &others {
        let (status, _, body) = post(&o.url(), request(&fork, n2));
        assert!(
            status != 200 && !body.contains("— "),
            "{} refuses the fork (it answered {status}: {body})",
            o.url()
        );
    }
    // The genuine log carries on, cosigned by all three.
    append_and_sequence(data, &stream, &p, 80..100);
    let (status, _, body) = post(&base, request(data, n2));
    assert_eq!(status, 200, "{body}");
    go_check(&check, f.tmp.path(), data, &body, &witness_vkey);
    all_cosign(data, n2);

    // Another ledger with the same origin but its own key: 403.
    let stranger = Fixture::new();
    let (status, _, body) = post(&base, request(stranger.data_str(), 0));
    assert_eq!(status, 403, "{body}");
    // An origin the witness does not follow: 404.
    let other = format!(
        "old 0\n\n{}",
        ok(&["checkpoint", "--data-dir", data]).replacen(
            "test.clew.example/ledger",
            "elsewhere.example/log",
            1
        )
    );
    let (status, _, body) = post(&base, other.into_bytes());
    assert_eq!(status, 404, "{body}");
    // Malformed requests: 400; an old size above the checkpoint's: 400; a huge body: 413.
    for bad in [
        b"old 1\n".to_vec(),
        b"old 01\n\nx".to_vec(),
        format!(
            "old {}\n\n{}",
            u64::MAX,
            ok(&["checkpoint", "--data-dir", data])
        )
        .into_bytes(),
    ] {
        let (status, _, body) = post(&base, bad);
        assert_eq!(status, 400, "{body}");
    }
    let (status, _, _) = post(&base, vec![b'a'; 100_000]);
    assert_eq!(status, 413);
    // None of that moved it.
    let n3 = size(data);
    let (status, _, body) = post(&base, request(data, 0));
    assert_eq!((status, body.as_str()), (409, format!("{n3}\n").as_str()));
}

/// The served checkpoint (`GET /checkpoint`) and its size.
fn served(base: &str, token: &str) -> (u64, String) {
    let text = support::block_on(async {
        reqwest::Client::new()
            .get(format!("{base}/checkpoint"))
            .bearer_auth(token)
            .send()
            .await
            .expect("the server answers")
            .text()
            .await
            .unwrap_or_default()
    });
    let size = text
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    (size, text)
}

/// Waits until the served checkpoint of at least `min` leaves carries a
/// cosignature from each of `names`; returns it.
fn witnessed(base: &str, token: &str, min: u64, names: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (size, text) = served(base, token);
        if size >= min && names.iter().all(|n| text.contains(&format!("— {n} "))) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the checkpoint was not witnessed by {names:?} at size ≥ {min}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn go_quorum(
    bin: &Path,
    dir: &Path,
    note: &str,
    ledger_vkey: &str,
    witnesses: &[&str],
    quorum: usize,
) -> std::process::Output {
    let file = dir.join("served-checkpoint");
    std::fs::write(&file, note).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(["-log", ledger_vkey.trim()]);
    for w in witnesses {
        cmd.args(["-witness", w]);
    }
    cmd.args(["-quorum", &quorum.to_string()]).arg(&file);
    cmd.output().expect("witnesscheck runs")
}

fn fetch(base: &str, token: &str, path: &str) -> Vec<u8> {
    let (status, body) =
        support::block_on(async { support::server::Api::new(base).get(Some(token), path).await });
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    body
}

/// `clew <verify-receipt|verify-answer> --vkey … --witness … --quorum 2 file`.
fn verify_witnessed(
    command: &str,
    file: &Path,
    ledger_vkey: &Path,
    witnesses: &[&str],
) -> std::process::Output {
    let mut args = vec![
        command.to_string(),
        "--vkey".into(),
        ledger_vkey.to_string_lossy().into_owned(),
    ];
    for w in witnesses {
        args.extend(["--witness".to_string(), w.to_string()]);
    }
    args.extend([
        "--quorum".into(),
        "2".into(),
        file.to_string_lossy().into_owned(),
    ]);
    support::run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn register_sites(base: &str, token: &str, from: usize, n: usize) {
    support::block_on(async {
        let api = support::server::Api::new(base);
        for i in from..from + n {
            api.ok(
                token,
                "mutation($i: SiteInput!) { registerSite(input: $i) { leafIndex } }",
                serde_json::json!({"i": {"siteId": format!("witnessed-{i}"), "name": format!("Witnessed Trust {i}"), "kind": "SITE_KIND_HOSPITAL_TRUST"}}),
            )
            .await;
        }
    });
}

#[test]
fn clew_serve_gets_every_checkpoint_witnessed_by_litewitness_and_clew_witness() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_str = data.to_string_lossy().into_owned();
    ok(&["demo", "--data-dir", &data_str]);
    let ledger_vkey_file = data.join("keys/ledger.vkey");
    let ledger_vkey = std::fs::read_to_string(&ledger_vkey_file).unwrap();
    let origin = ledger_vkey.split('+').next().unwrap().to_string();
    let check = witness_check(tmp.path());

    let mut lite = LiteWitness::start(
        &tmp.path().join("litewitness"),
        "litewitness.example/w1",
        &origin,
        &ledger_vkey,
    );
    let mut own = ClewWitness::start(
        Path::new(env!("CARGO_BIN_EXE_clew")),
        &tmp.path().join("clew-witness"),
        "witness.example.org/clew1",
        &[&ledger_vkey_file],
    );
    // Clew's witness has already cosigned the current checkpoint (as after a
    // restart of the ledger that lost nothing): the first request from old
    // size 0 is answered 409 with that size, which is adopted.
    let (status, _, body) = post(&own.url(), request(&data_str, 0));
    assert_eq!(status, 200, "{body}");
    let start = size(&data_str);

    let server = support::server::Server::start(
        &data,
        &[
            "serve",
            "--witness",
            &lite.flag(),
            "--witness",
            &own.flag(),
            "--witness-quorum",
            "2",
        ],
    );
    let token = server.admin_token();
    let names = ["litewitness.example/w1", "witness.example.org/clew1"];
    let note = witnessed(&server.base, &token, start, &names);
    let out = go_quorum(
        &check,
        tmp.path(),
        &note,
        &ledger_vkey,
        &[lite.vkey(), own.vkey()],
        2,
    );
    assert!(
        out.status.success(),
        "{note}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // /readyz says how far the witnessed checkpoint lags the signed one.
    let readyz = |base: &str| -> String {
        String::from_utf8_lossy(&fetch(base, &token, "/readyz")).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !readyz(&server.base)
        .contains("(0 leaves behind the latest checkpoint; quorum 2 of 2 witnesses)")
    {
        assert!(Instant::now() < deadline, "{}", readyz(&server.base));
        std::thread::sleep(Duration::from_millis(100));
    }

    // A receipt carries the witnessed checkpoint, and still verifies offline.
    let receipt = {
        support::block_on(async {
            let api = support::server::Api::new(&server.base);
            api.get(Some(&token), &format!("/receipt/{}", start - 1))
                .await
        })
    };
    assert_eq!(receipt.0, 200);
    let receipt_text = String::from_utf8_lossy(&receipt.1).into_owned();
    assert!(
        receipt_text.contains("— witness.example.org/clew1 "),
        "{receipt_text}"
    );
    let receipt_file = tmp.path().join("receipt.tlog-proof");
    std::fs::write(&receipt_file, &receipt.1).unwrap();
    ok(&[
        "verify-receipt",
        "--vkey",
        ledger_vkey_file.to_str().unwrap(),
        receipt_file.to_str().unwrap(),
    ]);

    // Events keep coming: every new checkpoint is witnessed by both. A
    // subscriber to checkpoints is told of each as it is signed, and of the
    // same checkpoint again once the witnesses cosigned it.
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let subscriber = {
        let (base, token) = (server.base.clone(), token.clone());
        std::thread::spawn(move || {
            support::block_on(async move {
                let mut sub = support::server::Subscription::start(
                    &base,
                    &token,
                    "subscription { checkpoints { size note } }",
                )
                .await
                .expect("subscribe to checkpoints");
                let _ = ready_tx.send(());
                let mut seen: Vec<(u64, String)> = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    let Some(v) = sub.next(Duration::from_secs(5)).await else {
                        continue;
                    };
                    let size = v["checkpoints"]["size"].as_u64().unwrap_or(0);
                    let note = v["checkpoints"]["note"].as_str().unwrap_or("").to_string();
                    let done = size >= start + 20
                        && names.iter().all(|n| note.contains(&format!("— {n} ")));
                    seen.push((size, note));
                    if done {
                        break;
                    }
                }
                seen
            })
        })
    };
    ready.recv().expect("the subscriber is ready");
    register_sites(&server.base, &token, 0, 20);
    let (grown, _) = served(&server.base, &token);
    assert!(grown >= start + 20);
    let note = witnessed(&server.base, &token, grown, &names);
    let seen = subscriber.join().expect("the subscriber");
    let cosigned = |note: &str| names.iter().all(|n| note.contains(&format!("— {n} ")));
    let (last_size, last_note) = seen.last().cloned().unwrap_or_default();
    assert!(
        last_size >= start + 20 && cosigned(&last_note),
        "the subscription carried the witnessed checkpoint: {seen:?}"
    );
    assert!(
        seen.iter()
            .enumerate()
            .any(|(i, (size, note))| !cosigned(note)
                && seen[i + 1..]
                    .iter()
                    .any(|(again, later)| again == size && cosigned(later))),
        "a checkpoint came first as signed, then again cosigned: {seen:?}"
    );
    let out = go_quorum(
        &check,
        tmp.path(),
        &note,
        &ledger_vkey,
        &[lite.vkey(), own.vkey()],
        2,
    );
    assert!(
        out.status.success(),
        "{note}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The receipt verifiers require the quorum: met now…
    let (lite_vkey, own_vkey) = (lite.vkey().to_string(), own.vkey().to_string());
    let both = [lite_vkey.as_str(), own_vkey.as_str()];
    let receipt = tmp.path().join("witnessed.tlog-proof");
    std::fs::write(
        &receipt,
        fetch(&server.base, &token, &format!("/receipt/{}", grown - 1)),
    )
    .unwrap();
    let out = verify_witnessed("verify-receipt", &receipt, &ledger_vkey_file, &both);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("witnessed: cosigned by litewitness.example/w1"));
    let answer = tmp.path().join("lineage.json");
    std::fs::write(
        &answer,
        fetch(
            &server.base,
            &token,
            "/proofs/lineage?subject=deployment/riverside-cxr-triage&direction=upstream&depth=10",
        ),
    )
    .unwrap();
    let out = verify_witnessed("verify-answer", &answer, &ledger_vkey_file, &both);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // litewitness stops: sequencing does not wait for it, Clew's witness
    // keeps cosigning, and the quorum of two is not met meanwhile.
    lite.stop();
    let t = Instant::now();
    register_sites(&server.base, &token, 20, 10);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "recording waited for a dead witness"
    );
    let (during, _) = served(&server.base, &token);
    let note = witnessed(&server.base, &token, during, &names[1..]);
    assert!(!note.contains("— litewitness.example/w1 "), "{note}");
    let out = go_quorum(
        &check,
        tmp.path(),
        &note,
        &ledger_vkey,
        &[lite.vkey(), own.vkey()],
        2,
    );
    assert!(
        !out.status.success(),
        "a quorum of two with one witness down"
    );
    // (the witness metrics are refreshed every 250 ms)
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz(&server.base).contains("(0 leaves behind") {
        assert!(Instant::now() < deadline, "{}", readyz(&server.base));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The verifiers refuse it, naming the witness that is missing.
    std::fs::write(
        &receipt,
        fetch(&server.base, &token, &format!("/receipt/{}", during - 1)),
    )
    .unwrap();
    let out = verify_witnessed("verify-receipt", &receipt, &ledger_vkey_file, &both);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cosigned by 1 of the 2 witnesses required")
            && err.contains("missing: litewitness.example/w1"),
        "{err}"
    );
    std::fs::write(
        &answer,
        fetch(
            &server.base,
            &token,
            "/proofs/lineage?subject=deployment/riverside-cxr-triage&direction=upstream&depth=10",
        ),
    )
    .unwrap();
    let out = verify_witnessed("verify-answer", &answer, &ledger_vkey_file, &both);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing: litewitness.example/w1"));
    // Back, it is sent the latest checkpoint with a proof from the size it
    // last cosigned, and catches up.
    lite.restart();
    let note = witnessed(&server.base, &token, during, &names);
    let out = go_quorum(
        &check,
        tmp.path(),
        &note,
        &ledger_vkey,
        &[lite.vkey(), own.vkey()],
        2,
    );
    assert!(
        out.status.success(),
        "{note}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The metrics count each witness's outcomes.
    let metrics = String::from_utf8_lossy(&fetch(&server.base, &token, "/metrics")).into_owned();
    let count = |witness: &str, outcome: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("clew_witness_requests_total{")
                    && l.contains(&format!("outcome=\"{outcome}\""))
                    && l.contains(&format!("witness=\"{witness}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        count("witness.example.org/clew1", "conflict") >= 1,
        "{metrics}"
    );
    assert!(count("litewitness.example/w1", "failed") >= 1, "{metrics}");
    assert!(
        count("litewitness.example/w1", "cosigned") >= 2,
        "{metrics}"
    );
    assert!(metrics.contains("clew_witness_quorum 2"), "{metrics}");
    own.stop();
    drop(server);
    // The operator saw both: the adopted size, and the dead witness by name.
    let log = std::fs::read_to_string(data.with_extension("server.log")).unwrap();
    assert!(
        log.contains("adopting the size the witness last cosigned"),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("not cosigned") && l.contains("litewitness.example/w1")),
        "{log}"
    );
}

fn monitor_once(base: &str, vkey: &Path, token_file: &Path, state: &Path) -> std::process::Output {
    support::clew()
        .args(["monitor", "--once", "--url", base, "--vkey"])
        .arg(vkey)
        .arg("--token-file")
        .arg(token_file)
        .arg("--state")
        .arg(state)
        .output()
        .expect("clew monitor runs")
}

#[test]
fn clew_monitor_follows_a_remote_ledger_and_exits_on_a_fork_with_both_checkpoints() {
    let f = Fixture::new();
    let data = f.data_str();
    let p = f.producers(2);
    let stream = f.path("events.stream");
    clew::stream::append(&stream, &p.registrations()).unwrap();
    f.put_sample_manifests(100);
    append_and_sequence(data, &stream, &p, 0..40);
    // The copy a fork will start from.
    let fork_root = f.path("fork");
    support::copy_dir(&f.data(), &fork_root.join("data"));
    let fork_stream = fork_root.join("events.stream");
    std::fs::copy(&stream, &fork_stream).unwrap();
    let vkey = f.data().join("keys/ledger.vkey");
    let state = f.path("monitor.checkpoint");

    let server = support::server::Server::serve(&f.data());
    let token = server.admin_token();
    let token_file = f.path("monitor.token");
    std::fs::write(&token_file, &token).unwrap();
    let out = monitor_once(&server.base, &vkey, &token_file, &state);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("first checkpoint: tree size"));
    register_sites(&server.base, &token, 0, 20);
    let out = monitor_once(&server.base, &vkey, &token_file, &state);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.starts_with("consistent: tree size"), "{said}");

    // Its metric, from a monitor left running.
    let port = support::free_port();
    let mut running = support::clew()
        .args(["monitor", "--url", &server.base, "--vkey"])
        .arg(&vkey)
        .arg("--token-file")
        .arg(&token_file)
        .arg("--state")
        .arg(&state)
        .args([
            "--interval-s",
            "1",
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (seen_size, _) = served(&server.base, &token);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = support::get_text(&format!("http://127.0.0.1:{port}/metrics"));
        if metrics.contains(&format!("clew_monitor_tree_size {seen_size}"))
            && metrics.contains("clew_monitor_forks_total 0")
        {
            break;
        }
        assert!(Instant::now() < deadline, "metrics: {metrics}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = running.kill();
    let _ = running.wait();
    drop(server);

    // The operator restores the earlier copy and appends other events: the
    // same key, the same origin, another history, longer than the one seen.
    clew::stream::append(
        &fork_stream,
        &synthetic::events(&f.producers(2), 40..100, 100),
    )
    .unwrap();
    let fork = fork_root.join("data");
    ok(&[
        "sequence",
        "--data-dir",
        &fork.to_string_lossy(),
        "--input",
        fork_stream.to_str().unwrap(),
        "--batch-size",
        "16",
    ]);
    let forked = support::server::Server::serve(&fork);
    std::fs::write(&token_file, forked.admin_token()).unwrap();
    let (fork_size, _) = served(&forked.base, &forked.admin_token());
    assert!(fork_size > seen_size);
    let out = monitor_once(&forked.base, &vkey, &token_file, &state);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains(&format!(
            "FORK: the tree of {fork_size} leaves does not extend the tree of {seen_size} leaves seen before"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("\n{seen_size}\n")) && err.contains(&format!("\n{fork_size}\n")),
        "both checkpoints: {err}"
    );
    // The checkpoint seen is kept: the fork is reported again, not adopted.
    let out = monitor_once(&forked.base, &vkey, &token_file, &state);
    assert_eq!(out.status.code(), Some(3));
}

/// The distributed deployment: `clew ledger` on a real Kafka broker sends
/// every checkpoint of a 100,000-event run to litewitness, omniwitness and
/// Clew's own witness (quorum 2); omniwitness is stopped for most of the run
/// and catches up when it returns; the cosignatures go out on the checkpoint
/// topic, a replica keeps and serves them, Go's note verifier accepts the
/// replica's checkpoint with all three, and the Python partner — with
/// nothing of Clew but its proto files — verifies every cosignature it read
/// and refuses a quorum a witness never met, naming it.
#[test]
fn a_kafka_run_of_100000_events_is_witnessed_by_three_real_witnesses() {
    use support::kafka::{
        broker, kafka_args, phases, prefix, replica_with, submit_phase, Sequencer,
    };
    let _serial = clew_kafka_broker::serial();
    let broker = broker();
    let fx = Fixture::new();
    let tmp = fx.tmp.path().to_path_buf();
    let check = witness_check(&tmp);
    const PRODUCERS: u64 = 4;
    const EVENTS: u64 = 100_000;
    let (stream, records) = fx.write_stream("witnessed.stream", PRODUCERS as usize, EVENTS);
    let size = 2 + records.len() as u64;
    let ledger_vkey = fx.vkey();
    let ledger_vkey_file = fx.data().join("keys/ledger.vkey");
    let origin = ledger_vkey.split('+').next().unwrap().to_string();

    let lite = LiteWitness::start(
        &tmp.join("lite"),
        "litewitness.example/w1",
        &origin,
        &ledger_vkey,
    );
    let mut omni = OmniWitness::start(
        &tmp.join("omni"),
        "omniwitness.example/w1",
        &origin,
        &ledger_vkey,
    );
    let own = ClewWitness::start(
        Path::new(env!("CARGO_BIN_EXE_clew")),
        &tmp.join("own"),
        "witness.example.org/clew1",
        &[&ledger_vkey_file],
    );
    let names = [
        "litewitness.example/w1",
        "omniwitness.example/w1",
        "witness.example.org/clew1",
    ];
    let flags = |with_urls: bool| -> Vec<String> {
        let mut f = Vec::new();
        for w in [
            &lite as &dyn Witness,
            &omni as &dyn Witness,
            &own as &dyn Witness,
        ] {
            f.push("--witness".to_string());
            f.push(if with_urls {
                w.flag()
            } else {
                w.vkey().to_string()
            });
        }
        f.extend(["--witness-quorum".to_string(), "2".to_string()]);
        f
    };
    let health = format!("127.0.0.1:{}", support::free_port());
    let prefix = prefix("witnessed");
    let kafka = kafka_args(&broker, &prefix);
    let mut extra = flags(true);
    extra.extend(["--health-listen".to_string(), health.clone()]);
    let mut sequencer = Sequencer::start_with(&fx.data(), &kafka, &extra, &[]);
    // The replica takes the same list; it uses the keys only.
    let follower = replica_with(
        &fx,
        &fx.path("replica"),
        &kafka,
        "witnessed-replica",
        &flags(false),
        &[],
    );
    let token = follower.admin_token();

    let ph = phases(PRODUCERS, EVENTS);
    for range in &ph[..3] {
        submit_phase(&stream, &kafka, *range, PRODUCERS);
    }
    // omniwitness goes away for the bulk of the run: nothing waits for it.
    omni.stop();
    let t = Instant::now();
    submit_phase(&stream, &kafka, ph[3], PRODUCERS);
    let bulk = t.elapsed();
    let metrics = support::get_text(&format!("http://{health}/metrics"));
    assert!(
        metrics.contains(&format!("clew_sequencer_tree_size {size}")),
        "every event is sequenced while a witness is down (in {bulk:?}):\n{metrics}"
    );
    // The quorum of two is met without it.
    let during = witnessed(&follower.base, &token, size, &[names[0], names[2]]);
    assert!(!during.contains("— omniwitness.example/w1 "), "{during}");
    omni.restart();

    // Every witness catches up with the last checkpoint; the replica serves
    // it with the three cosignatures, and Go checks them (quorum 3 of 3).
    let note = witnessed(&follower.base, &token, size, &names);
    assert!(note.contains(&format!("\n{size}\n")), "{note}");
    let vkeys = [lite.vkey(), omni.vkey(), own.vkey()];
    let out = go_quorum(&check, &tmp, &note, &ledger_vkey, &vkeys, 3);
    assert!(
        out.status.success(),
        "{note}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The sequencer's and the replica's readiness say the run is witnessed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = format!("witnessed: tree size {size} (0 leaves behind the latest checkpoint; quorum 2 of 3 witnesses)");
    while !support::get_text(&format!("http://{health}/readyz")).contains(&want)
        || !support::get_text(&format!("{}/readyz", follower.base)).contains(&want)
    {
        assert!(
            Instant::now() < deadline,
            "sequencer: {}\nreplica: {}",
            support::get_text(&format!("http://{health}/readyz")),
            support::get_text(&format!("{}/readyz", follower.base))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // (the witness figures are refreshed every 250 ms)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = support::get_text(&format!("http://{health}/metrics"));
        let all = names.iter().all(|name| {
            metrics.contains(&format!(
                "clew_witness_cosigned_tree_size{{witness=\"{name}\"}} {size}"
            ))
        });
        if all {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    sequencer.stop();
    let log = sequencer.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("not cosigned") && l.contains("omniwitness.example/w1")),
        "the operator sees the witness that was down:\n{log}"
    );

    // The partner reads the topics with the witnesses' keys: every
    // cosignature on every checkpoint verifies, and the last is witnessed.
    let root = support::repo_root();
    let partner = |witnesses: &[&str], quorum: usize, timeout_s: u64| {
        let mut cmd = Command::new(support::kafka::partner_python());
        cmd.arg(root.join("tests/partner/partner.py")).args([
            "--bootstrap",
            broker.bootstrap(),
            "--topic-prefix",
            &prefix,
            "--ledger-vkey",
            &ledger_vkey,
            "--proto-dir",
            &root.join("proto").display().to_string(),
            "--expect-leaves",
            &size.to_string(),
            "--timeout-s",
            &timeout_s.to_string(),
            "--quorum",
            &quorum.to_string(),
        ]);
        for w in witnesses {
            cmd.args(["--witness", w]);
        }
        let out = cmd
            .output()
            .expect("the Python partner runs (tests/setup.sh makes its venv)");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
            .unwrap_or_else(|e| {
                panic!(
                    "partner report is not JSON ({e}): {stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        (out.status.success(), report)
    };
    let (passed, report) = partner(&vkeys, 3, 120);
    assert!(passed, "{report}");
    assert_eq!(report["leaves"], size, "{report}");
    assert_eq!(report["latest_witnessed_size"], size, "{report}");
    assert!(
        report["cosignatures_verified"].as_u64().unwrap_or(0) >= 3,
        "{report}"
    );
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    eprintln!(
        "witnessed run: {} of {} checkpoints carried a quorum on the topic; {} cosignatures verified",
        report["witnessed_checkpoints"], report["checkpoints_verified"], report["cosignatures_verified"]
    );
    // A witness that never saw this log: the quorum is refused, naming it.
    let stranger = support::run(&[
        "witness",
        "init",
        "--dir",
        tmp.join("stranger").to_str().unwrap(),
        "--name",
        "stranger.example/w9",
    ]);
    let stranger_vkey = String::from_utf8_lossy(&stranger.stdout).trim().to_string();
    let mut four = vkeys.to_vec();
    four.push(&stranger_vkey);
    let (passed, report) = partner(&four, 4, 20);
    assert!(!passed, "{report}");
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("cosigned by 3 of the 4 witnesses required")
            && problems.contains("missing: stranger.example/w9"),
        "{report}"
    );
}
