//! Real witnesses for tests and benchmarks (see the README): litewitness
//! (filippo.io/torchwood, built by tests/setup.sh from the Go module proxy
//! into target/tools/bin, its key in a dedicated ssh-agent), omniwitness
//! (transparency-dev/witness, built the same way) and Clew's own
//! `clew witness`. Each runs on a free loopback port with its own directory
//! and is stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tool(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/tools/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run tests/setup.sh (it builds litewitness, witnessctl and omniwitness from the Go module proxy)",
        path.display()
    );
    path
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What every witness process here has: its directory, loopback port,
/// cosignature/v1 verifier key and, while it runs, its process.
pub struct Served {
    dir: PathBuf,
    port: u16,
    vkey: String,
    child: Option<Child>,
}

impl Served {
    fn new(dir: &Path, vkey: &str) -> Self {
        Served {
            dir: dir.to_path_buf(),
            port: free_port(),
            vkey: vkey.trim().to_string(),
            child: None,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A witness the tests can stop and start again on the same port and state.
pub trait Witness {
    fn served(&self) -> &Served;
    fn served_mut(&mut self) -> &mut Served;
    /// The command that starts it, what it is called, and its log file's name.
    fn command(&self) -> (Command, &'static str, &'static str);
    /// Its cosignature/v1 verifier key.
    fn vkey(&self) -> &str {
        &self.served().vkey
    }
    fn port(&self) -> u16 {
        self.served().port
    }
    fn stop(&mut self) {
        kill(&mut self.served_mut().child);
    }
    /// Starts it (again) on its port and state, and waits until it listens.
    fn restart(&mut self) {
        if self.served().child.is_some() {
            return;
        }
        let (mut cmd, what, log) = self.command();
        let log = self.served().dir.join(log);
        let child = spawn_logged(&mut cmd, &log, self.port(), what);
        self.served_mut().child = Some(child);
    }
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }
    /// `<vkey>@<url>`, as `clew serve --witness` takes it.
    fn flag(&self) -> String {
        format!("{}@{}", self.vkey(), self.url())
    }
}

/// Stops a child process (if running) and reaps it.
fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Spawns `cmd` with its output appended to `log`, and waits for `port`.
fn spawn_logged(cmd: &mut Command, log: &Path, port: u16, what: &str) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let child = cmd
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    wait_for_port(port, what, log);
    child
}

/// litewitness with its key in its own ssh-agent.
pub struct LiteWitness {
    served: Served,
    name: String,
    fingerprint: String,
    agent: Child,
}

impl LiteWitness {
    /// Starts one named `name` that witnesses the log `origin` signed by `log_vkey`.
    pub fn start(dir: &Path, name: &str, origin: &str, log_vkey: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let key = dir.join("witness-key");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "litewitness", "-f"])
                .arg(&key),
            "ssh-keygen",
        );
        let sock = dir.join("agent.sock");
        let agent = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "ssh-agent made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        run_ok(
            Command::new("ssh-add")
                .arg(&key)
                .env("SSH_AUTH_SOCK", &sock),
            "ssh-add",
        );
        let fingerprint = run_ok(
            Command::new("ssh-keygen")
                .args(["-l", "-E", "sha256", "-f"])
                .arg(key.with_extension("pub")),
            "ssh-keygen -l",
        )
        .split_whitespace()
        .nth(1)
        .expect("a fingerprint")
        .to_string();
        // The ssh public key's last 32 bytes are the Ed25519 key.
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let blob = base64::engine::general_purpose::STANDARD
            .decode(public.split_whitespace().nth(1).expect("ssh key blob"))
            .expect("base64 ssh key");
        let raw: [u8; 32] = blob[blob.len() - 32..].try_into().unwrap();
        let vkey = clew_witness::CosignatureVerifier::new(name, &raw)
            .expect("a witness key")
            .vkey();
        let mut w = LiteWitness {
            served: Served::new(dir, &vkey),
            name: name.to_string(),
            fingerprint,
            agent,
        };
        w.restart();
        let db = dir.join("litewitness.db");
        run_ok(
            Command::new(tool("witnessctl"))
                .args(["add-log", "-db"])
                .arg(&db)
                .args(["-origin", origin]),
            "witnessctl add-log",
        );
        run_ok(
            Command::new(tool("witnessctl"))
                .args(["add-key", "-db"])
                .arg(&db)
                .args(["-origin", origin, "-key", log_vkey.trim()]),
            "witnessctl add-key",
        );
        w
    }
}

impl Witness for LiteWitness {
    fn served(&self) -> &Served {
        &self.served
    }
    fn served_mut(&mut self) -> &mut Served {
        &mut self.served
    }
    fn command(&self) -> (Command, &'static str, &'static str) {
        let mut cmd = Command::new(tool("litewitness"));
        cmd.arg("-db")
            .arg(self.served.dir.join("litewitness.db"))
            .args(["-name", &self.name, "-key", &self.fingerprint])
            .arg("-ssh-agent")
            .arg(self.served.dir.join("agent.sock"))
            .args(["-listen", &format!("127.0.0.1:{}", self.served.port)]);
        (cmd, "litewitness", "litewitness.log")
    }
}

impl Drop for LiteWitness {
    fn drop(&mut self) {
        self.stop();
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

/// `clew witness serve`.
pub struct ClewWitness {
    served: Served,
    clew: PathBuf,
    logs: Vec<PathBuf>,
}

impl ClewWitness {
    /// `<clew> witness init` in `dir`, then serving the logs whose keys are in `logs`.
    pub fn start(clew: &Path, dir: &Path, name: &str, logs: &[&Path]) -> Self {
        let vkey = run_ok(
            Command::new(clew)
                .args(["witness", "init", "--dir"])
                .arg(dir)
                .args(["--name", name]),
            "clew witness init",
        )
        .trim()
        .to_string();
        let mut w = ClewWitness {
            served: Served::new(dir, &vkey),
            clew: clew.to_path_buf(),
            logs: logs.iter().map(|p| p.to_path_buf()).collect(),
        };
        w.restart();
        w
    }
}

impl Witness for ClewWitness {
    fn served(&self) -> &Served {
        &self.served
    }
    fn served_mut(&mut self) -> &mut Served {
        &mut self.served
    }
    fn command(&self) -> (Command, &'static str, &'static str) {
        let mut cmd = Command::new(&self.clew);
        cmd.args(["witness", "serve", "--dir"])
            .arg(&self.served.dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.served.port)]);
        for l in &self.logs {
            cmd.arg("--log").arg(l);
        }
        (cmd, "clew witness", "witness.log")
    }
}

/// omniwitness (github.com/transparency-dev/witness), accepting checkpoints
/// pushed to it for one extra log and no others: its built-in logs are all
/// fed by distributors or a bastion, none of which is configured here, so it
/// makes no outbound request.
pub struct OmniWitness {
    served: Served,
}

impl OmniWitness {
    /// Starts one named `name` that witnesses the log `origin` signed by
    /// `log_vkey`; its key is made by the project's `generate_keys`.
    pub fn start(dir: &Path, name: &str, origin: &str, log_vkey: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let printed = run_ok(
            Command::new(tool("omniwitness-generate-keys")).args(["--origin", name, "--print"]),
            "generate_keys",
        );
        let mut lines = printed.lines();
        let (Some(skey), Some(vkey)) = (lines.next(), lines.next()) else {
            panic!("generate_keys printed no key pair: {printed}");
        };
        std::fs::write(dir.join("witness.key"), skey).unwrap();
        // The log, as an additional log of the witness's configuration.
        std::fs::write(
            dir.join("logs.yaml"),
            format!(
                "Logs:\n  - Origin: \"{origin}\"\n    PublicKey: \"{}\"\n    URL: \"http://127.0.0.1/\"\n",
                log_vkey.trim()
            ),
        )
        .unwrap();
        let mut w = OmniWitness {
            served: Served::new(dir, vkey),
        };
        w.restart();
        w
    }
}

impl Witness for OmniWitness {
    fn served(&self) -> &Served {
        &self.served
    }
    fn served_mut(&mut self) -> &mut Served {
        &mut self.served
    }
    fn command(&self) -> (Command, &'static str, &'static str) {
        let dir = &self.served.dir;
        let mut cmd = Command::new(tool("omniwitness"));
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{}", self.served.port))
            // No metrics listener (its default is every interface).
            .arg("--metrics_listen=")
            .arg("--db_file")
            .arg(dir.join("omniwitness.db"))
            .arg("--private_key_path")
            .arg(dir.join("witness.key"))
            .arg("--additional_logs")
            .arg(dir.join("logs.yaml"));
        (cmd, "omniwitness", "omniwitness.log")
    }
}
