//! Clew's checkpoints, tiles, receipts and proofs checked by Go's
//! golang.org/x/mod/sumdb/note and sumdb/tlog — code Clew did not write.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{ok, Fixture};

/// Builds the Go verifier under tests/go-verifier.
fn go_verifier(out_dir: &Path) -> PathBuf {
    support::go_build("go-verifier", out_dir, "goverifier")
}

fn run_go(bin: &Path, vkey: &str, mirror: &Path) -> std::process::Output {
    Command::new(bin)
        .args(["-vkey", vkey, "-dir"])
        .arg(mirror)
        .output()
        .expect("the Go verifier runs")
}

#[test]
fn go_sumdb_verifies_checkpoints_tiles_receipts_and_consistency_proofs() {
    let f = Fixture::new();
    let (stream, _) = f.write_stream("events.stream", 3, 600);
    f.sequence(&stream, 100);
    let size: u64 = ok(&["checkpoint", "--data-dir", f.data_str()])
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(size, 604, "genesis + 3 registrations + 600 events");

    let mirror = f.path("mirror");
    ok(&[
        "tiles",
        "export",
        "--data-dir",
        f.data_str(),
        "--out",
        mirror.to_str().unwrap(),
    ]);
    assert!(mirror.join("tile/0/000").is_file(), "full level-0 tile");
    assert!(
        mirror.join("tile/0/002.p/92").is_file(),
        "partial level-0 tile"
    );
    assert!(
        mirror.join("tile/entries/002.p/92").is_file(),
        "partial entry bundle"
    );

    std::fs::create_dir_all(mirror.join("receipts")).unwrap();
    for index in [0u64, 1, 255, 256, 300, 511, 603] {
        let receipt = ok(&[
            "receipt",
            "--data-dir",
            f.data_str(),
            "--index",
            &index.to_string(),
        ]);
        std::fs::write(mirror.join(format!("receipts/{index}.tlog-proof")), receipt).unwrap();
    }
    let mut sizes: Vec<u64> = std::fs::read_dir(mirror.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    sizes.sort();
    assert!(sizes.len() >= 7, "one checkpoint per batch: {sizes:?}");
    std::fs::create_dir_all(mirror.join("consistency")).unwrap();
    let mut pairs: Vec<(u64, u64)> = sizes.windows(2).map(|w| (w[0], w[1])).collect();
    pairs.push((sizes[0], *sizes.last().unwrap()));
    for (old, new) in pairs {
        let proof = ok(&[
            "proof",
            "consistency",
            "--data-dir",
            f.data_str(),
            "--old",
            &old.to_string(),
            "--new",
            &new.to_string(),
        ]);
        std::fs::write(mirror.join(format!("consistency/{old}-{new}")), proof).unwrap();
    }

    let bin = go_verifier(f.tmp.path());
    let out = run_go(&bin, &f.vkey(), &mirror);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Go verifier failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ok: 604 entries via tiles"), "{stdout}");
    assert!(stdout.contains("7 receipts"), "{stdout}");

    // The outside verifier is not a rubber stamp: tampering is caught.
    let receipt_path = mirror.join("receipts/300.tlog-proof");
    let original = std::fs::read_to_string(&receipt_path).unwrap();
    let proof_line = original.lines().nth(3).unwrap().to_string();
    let swapped = original.replacen(&proof_line, original.lines().nth(4).unwrap(), 1);
    std::fs::write(&receipt_path, swapped).unwrap();
    let out = run_go(&bin, &f.vkey(), &mirror);
    assert!(
        !out.status.success(),
        "a receipt with a swapped proof hash must fail"
    );
    std::fs::write(&receipt_path, &original).unwrap();

    let tile = mirror.join("tile/entries/001");
    let mut bytes = std::fs::read(&tile).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&tile, &bytes).unwrap();
    let out = run_go(&bin, &f.vkey(), &mirror);
    assert!(!out.status.success(), "a flipped entry byte must fail");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("entry 256:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bytes[100] ^= 1;
    std::fs::write(&tile, &bytes).unwrap();

    let other = clew_events::ProducerKey::generate("test.clew.example/ledger")
        .unwrap()
        .verifier()
        .to_text();
    let out = run_go(&bin, &other, &mirror);
    assert!(
        !out.status.success(),
        "another key must not verify the checkpoints"
    );
}

#[test]
fn go_tlog_client_mirrors_a_running_server_over_http_and_reverifies_every_entry() {
    let f = Fixture::new();
    let (stream, _) = f.write_stream("events.stream", 3, 700);
    f.sequence(&stream, 100);
    let vkey = f.vkey();
    let server = support::server::Server::serve(&f.data());
    let admin = server.admin_token();
    let bin = go_verifier(f.tmp.path());
    let mirror = f.path("http-mirror");
    let out = Command::new(&bin)
        .args([
            "-vkey",
            &vkey,
            "-url",
            &server.base,
            "-token",
            &admin,
            "-receipts",
            "40",
            "-dir",
        ])
        .arg(&mirror)
        .output()
        .expect("the Go verifier runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Go mirror/verify failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `clew serve` registered its service key: the tree is the stream plus that.
    let size = 704 + 1;
    assert!(
        stdout.contains(&format!("ok: {size} entries via tiles")),
        "{stdout}"
    );
    assert!(
        stdout.contains("3 entry bundles"),
        "two full, one partial: {stdout}"
    );
    assert!(mirror.join("tile/entries/002.p/193").is_file());
    assert!(
        mirror.join("tile/0/002.p/193").is_file(),
        "partial hash tile"
    );
    assert!(
        mirror.join("tile/1/000.p/2").is_file(),
        "level-1 partial tile"
    );
    // Without governance or admin, entry bundles are not served.
    let denied = Command::new(&bin)
        .args([
            "-vkey",
            &vkey,
            "-url",
            &server.base,
            "-token",
            "not-a-token",
            "-dir",
        ])
        .arg(f.path("denied"))
        .output()
        .expect("the Go verifier runs");
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
}
