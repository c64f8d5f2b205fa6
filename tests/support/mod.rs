//! Shared helpers for the end-to-end tests: every test gets its own temporary
//! directory and runs the real `clew` binary as a child process.

#![allow(dead_code)]

pub mod kafka;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clew::datadir::{DataDir, ADMIN_PRINCIPAL};
use clew::synthetic::{self, Producers};

/// The `clew` binary built for these tests.
pub fn clew() -> Command {
    Command::new(env!("CARGO_BIN_EXE_clew"))
}

/// Runs `clew args…`, returning its output (whatever the exit code).
pub fn run(args: &[&str]) -> Output {
    clew().args(args).output().expect("the clew binary runs")
}

/// Runs `clew args…` and insists it succeeds; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "clew {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The top of the repository.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Copies a directory tree (a data directory restored from a copy, say).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("target directory");
    for e in std::fs::read_dir(from).expect("source directory") {
        let e = e.expect("directory entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

/// Builds the Go program in `tests/<dir>` into `out/<name>`; a missing
/// toolchain or module is a panic that says so.
pub fn go_build(dir: &str, out: &Path, name: &str) -> PathBuf {
    let src = repo_root().join("tests").join(dir);
    let bin = out.join(name);
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the Go toolchain (`go build` in {}): {e}; install Go (see README)",
                src.display()
            )
        });
    assert!(
        built.status.success(),
        "building {} failed (modules come from the Go module proxy; tests/setup.sh downloads them):\n{}",
        src.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    bin
}

/// A free loopback port (for a process the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The body of `GET <url>` without a token (health and metrics endpoints);
/// empty when nothing answers.
pub fn get_text(url: &str) -> String {
    block_on(async {
        match reqwest::get(url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    })
}

/// Runs one future to completion from synchronous test code.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// A fresh ledger created by `clew init` in a temporary directory.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let f = Fixture { tmp };
        ok(&[
            "init",
            "--data-dir",
            f.data_str(),
            "--origin",
            "test.clew.example/ledger",
        ]);
        f
    }

    pub fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    pub fn data_str(&self) -> &str {
        // Leaked once per fixture: keeps call sites short.
        Box::leak(self.data().to_string_lossy().into_owned().into_boxed_str())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn vkey(&self) -> String {
        std::fs::read_to_string(DataDir::new(self.data()).ledger_vkey())
            .expect("ledger.vkey")
            .trim()
            .to_string()
    }

    /// Arguments of `clew sequence` for this ledger and `stream`.
    pub fn sequence_args(&self, stream: &Path, batch_size: usize) -> Vec<String> {
        [
            "sequence",
            "--data-dir",
            self.data_str(),
            "--input",
            &stream.to_string_lossy(),
            "--batch-size",
            &batch_size.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Runs `clew sequence` on `stream` to completion; returns its ack/reject lines.
    pub fn sequence(&self, stream: &Path, batch_size: usize) -> String {
        let args = self.sequence_args(stream, batch_size);
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The synthetic producers, with the admin key of this ledger.
    pub fn producers(&self, n: usize) -> Producers {
        let admin = clew::keyfiles::read_producer(&DataDir::new(self.data()).admin_key())
            .expect("admin key");
        Producers::new(admin, ADMIN_PRINCIPAL, n)
    }

    /// Writes a stream file: producer registrations then `events` synthetic events.
    pub fn write_stream(
        &self,
        name: &str,
        producers: usize,
        events: u64,
    ) -> (PathBuf, Vec<Vec<u8>>) {
        let p = self.producers(producers);
        let mut all = p.registrations();
        all.extend(synthetic::events(&p, 0..events, events));
        let path = self.path(name);
        clew::stream::append(&path, &all).expect("stream written");
        self.put_sample_manifests(events);
        (path, all)
    }

    /// Puts the manifests the versions of a synthetic stream of `events`
    /// cite into this data directory's blob store (the ledger sequences a
    /// version only then).
    pub fn put_sample_manifests(&self, events: u64) {
        let store = DataDir::new(self.data())
            .manifest_store()
            .expect("the data directory's blob store");
        for manifest in clew_events::sample::stream_manifests(events) {
            store
                .put_blocking(manifest.into())
                .expect("sample manifest stored");
        }
    }
}
