//! A real `clew serve` / `clew demo --serve` process, and the two clients
//! the API tests speak with: GraphQL over HTTP (reqwest) and
//! graphql-transport-ws subscriptions (tokio-tungstenite).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::clew;

/// A running server process.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Its data directory.
    pub data: PathBuf,
}

impl Server {
    /// `clew serve` on a free loopback port over `data`.
    pub fn serve(data: &Path) -> Self {
        Self::start(data, &["serve"])
    }

    /// `clew demo --serve` on a free loopback port over `data`.
    pub fn demo(data: &Path) -> Self {
        Self::start(data, &["demo", "--serve"])
    }

    /// [`Server::demo`] from async code (it blocks while the demo records).
    pub async fn demo_async(data: &Path) -> Self {
        let data = data.to_path_buf();
        tokio::task::spawn_blocking(move || Self::demo(&data))
            .await
            .expect("starting clew demo")
    }

    /// `clew <command…> --data-dir <data> --listen 127.0.0.1:0`, once ready.
    pub fn start(data: &Path, command: &[&str]) -> Self {
        Self::start_with(data, command, &[])
    }

    /// [`Server::start`] with environment variables for the process.
    pub fn start_with(data: &Path, command: &[&str], env: &[(String, String)]) -> Self {
        std::fs::create_dir_all(data).expect("data directory");
        let log = std::fs::File::create(data.with_extension("server.log")).expect("log file");
        let mut child = clew()
            .args(command)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args([
                "--data-dir",
                &data.to_string_lossy(),
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start clew");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("Clew is serving http://") {
                    let addr = rest.split('/').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let log =
                    std::fs::read_to_string(data.with_extension("server.log")).unwrap_or_default();
                panic!("clew {command:?} did not start serving within 300 s; its log:\n{log}");
            }
        };
        let server = Server {
            child: Some(child),
            base: format!("http://{addr}"),
            data: data.to_path_buf(),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if get_status(&format!("{}/readyz", self.base)) == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} never became ready", self.base);
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// The server's resident memory, in MiB (from /proc).
    pub fn rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib / 1024)
            .expect("VmRSS")
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The admin bearer token written on first start.
    pub fn admin_token(&self) -> String {
        read_token(&self.data.join("admin.token"))
    }

    /// A demo principal's token.
    pub fn demo_token(&self, principal: &str) -> String {
        read_token(
            &self
                .data
                .join("demo-tokens")
                .join(format!("{principal}.token")),
        )
    }

    /// Stops with SIGTERM (a clean shutdown) and returns the exit status.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("clew did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reads a token file.
pub fn read_token(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Status of a plain GET (std only; used before any async runtime exists).
fn get_status(url: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// A small series manifest in Clew's format, unique to `label`.
pub fn manifest_body(label: &str) -> Vec<u8> {
    json!({
        "format": "clew.dicom-series-manifest/1",
        "series": [{
            "studyInstanceUid": "2.25.7", "seriesInstanceUid": "2.25.7.1",
            "modality": "CT", "bodyPartExamined": "CHEST", "manufacturer": label,
            "manufacturerModelName": "", "sliceThicknessMm": 1.0, "studyDate": "20260101",
            "instanceCount": 1,
            "instances": [{"path": "a/1.dcm", "sopInstanceUid": "2.25.7.1.1",
                           "sha256": "00".repeat(32), "size": 1000}],
        }],
    })
    .to_string()
    .into_bytes()
}

/// A GraphQL client for one base URL.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    /// `http://…`.
    pub base: String,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: base.to_string(),
        }
    }

    /// POST /graphql with a token (or none); returns (HTTP status, JSON body).
    pub async fn post(&self, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("POST /graphql");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("JSON body");
        (status, body)
    }

    /// A query that must succeed; returns `data`.
    pub async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(Some(token), query, variables).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert!(
            body.get("errors").is_none(),
            "{query} failed: {}",
            body["errors"]
        );
        body["data"].clone()
    }

    /// A query that must fail with `code`; returns the body.
    pub async fn fails(&self, token: &str, query: &str, variables: Value, code: &str) -> Value {
        let (_, body) = self.post(Some(token), query, variables).await;
        let got = body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or("");
        assert_eq!(got, code, "{query}: expected {code}, got {body}");
        body
    }

    /// Uploads a small series manifest unique to `label` (PUT
    /// /manifests/{digest}), as a producer does before publishing the
    /// version that cites it; returns its digest.
    pub async fn upload_manifest(&self, token: &str, label: &str) -> String {
        let body = manifest_body(label);
        let digest = clew_blobs::digest_of(&body);
        let resp = self
            .client
            .put(format!("{}/manifests/{digest}", self.base))
            .bearer_auth(token)
            .body(body)
            .send()
            .await
            .expect("PUT /manifests");
        let status = resp.status().as_u16();
        assert!(
            status == 201 || status == 200,
            "uploading the manifest for {label}: {status} {}",
            resp.text().await.unwrap_or_default()
        );
        digest
    }

    /// GET a path with a token (or none): (status, body bytes).
    pub async fn get(&self, token: Option<&str>, path: &str) -> (u16, Vec<u8>) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("GET");
        let status = resp.status().as_u16();
        (status, resp.bytes().await.expect("body").to_vec())
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One graphql-transport-ws subscription.
pub struct Subscription {
    ws: Ws,
}

impl Subscription {
    /// Connects, authenticates in `connection_init` and subscribes.
    pub async fn start(base: &str, token: &str, query: &str) -> Result<Self, String> {
        let url = format!("{}/graphql/ws", base.replace("http://", "ws://"));
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().expect("header"),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| e.to_string())?;
        let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
        ws.send(Message::text(init.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        let ack = next_json(&mut ws, Duration::from_secs(10)).await?;
        if ack["type"] != "connection_ack" {
            return Err(format!("no connection_ack: {ack}"));
        }
        let sub = json!({"id": "1", "type": "subscribe", "payload": {"query": query}});
        ws.send(Message::text(sub.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self { ws })
    }

    /// The next `next` payload's `data`, or None after `wait` of silence.
    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let msg = next_json(&mut self.ws, wait).await.ok()?;
            match msg["type"].as_str() {
                Some("next") => return Some(msg["payload"]["data"].clone()),
                Some("ping") => {
                    let _ = self
                        .ws
                        .send(Message::text(json!({"type": "pong"}).to_string()))
                        .await;
                }
                Some("error") => panic!("subscription error: {msg}"),
                _ => return None,
            }
        }
    }

    /// Everything that arrives until `wait` passes with nothing new.
    pub async fn drain(&mut self, wait: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(v) = self.next(wait).await {
            out.push(v);
        }
        out
    }
}

/// Opens a graphql-transport-ws connection, sends `first` (if any), and
/// returns the close code the server ends it with within `wait` (None if it
/// stays open or closes without a code).
pub async fn ws_close_code(base: &str, first: Option<Value>, wait: Duration) -> Option<u16> {
    ws_close(base, first, wait).await.map(|(code, _)| code)
}

/// [`ws_close_code`] with the reason the server gave.
pub async fn ws_close(base: &str, first: Option<Value>, wait: Duration) -> Option<(u16, String)> {
    let mut ws = connect_ws(base).await?;
    if let Some(m) = first {
        ws.send(Message::text(m.to_string())).await.ok()?;
    }
    close_frame(&mut ws, wait).await
}

/// A graphql-transport-ws connection to `base`, not yet initialised.
async fn connect_ws(base: &str) -> Option<Ws> {
    let url = format!("{}/graphql/ws", base.replace("http://", "ws://"));
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    Some(tokio_tungstenite::connect_async(request).await.ok()?.0)
}

async fn close_code(ws: &mut Ws, wait: Duration) -> Option<u16> {
    close_frame(ws, wait).await.map(|(code, _)| code)
}

/// The code and reason of the close frame the server ends `ws` with.
async fn close_frame(ws: &mut Ws, wait: Duration) -> Option<(u16, String)> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => {
                return frame.map(|f| (u16::from(f.code), f.reason.to_string()))
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

impl Subscription {
    /// Reads until the server closes the connection; its close code.
    pub async fn closed_with(&mut self, wait: Duration) -> Option<u16> {
        close_code(&mut self.ws, wait).await
    }
}

/// Connects without a token; returns the reason the server gave when it
/// closed the connection (None if it did not close it).
pub async fn subscription_refusal_without_token(base: &str) -> Option<String> {
    let mut ws = connect_ws(base).await?;
    let init = json!({"type": "connection_init", "payload": {}});
    ws.send(Message::text(init.to_string())).await.ok()?;
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Close(frame)))) => {
            Some(frame.map(|f| f.reason.to_string()).unwrap_or_default())
        }
        _ => None,
    }
}

async fn next_json(ws: &mut Ws, wait: Duration) -> Result<Value, String> {
    loop {
        let msg = tokio::time::timeout(wait, ws.next())
            .await
            .map_err(|_| "timed out".to_string())?
            .ok_or("closed")?
            .map_err(|e| e.to_string())?;
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).map_err(|e| e.to_string()),
            Message::Close(f) => return Err(format!("closed: {f:?}")),
            _ => continue,
        }
    }
}
