//! The server loop: accepts TCP connections and serves HTTP/1.1 on them,
//! with every connection bounded — how many are open at once, how long a
//! client may take to send a request's head (and how long an idle
//! keep-alive connection is kept), and how long a request may take to
//! arrive and be answered, and how long a client may leave an answer
//! unread (a stalled write ends the connection, a WebSocket's included).
//!
//! At the cap, the connection idle longest is closed to make room for a new
//! one ([`Slots`]); with none idle, a connection past the cap is answered
//! `503` with a JSON error naming the cap and `Retry-After`, then closed:
//! the client learns why instead of waiting in the listen queue. A
//! connection upgraded to a WebSocket keeps its place until the socket
//! closes (the place travels with the socket). What was refused or cut off
//! is counted in the node's metrics and logged (at most once per ten
//! seconds, with the count since). A connection the
//! server closes is half-closed and read from a little longer (a lingering
//! close), so an answer sent before the request was read whole — a `413`
//! for a body too large — reaches the client instead of being lost to a
//! reset.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::respond::error_response;
use crate::ApiError;

/// How the server bounds its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once (WebSockets included); at the cap the
    /// connection idle longest is closed to make room for a new one, and
    /// with none idle one more is answered `503` and closed. Never more
    /// than the process may open files for (its soft limit raised up to the
    /// hard one), less a reserve for its stores ([`FILES_RESERVED`]).
    pub max_open: usize,
    /// Longest a client may take to send a request's head, counted from
    /// when the connection is ready for one: so also how long an idle
    /// keep-alive connection is kept open.
    pub header_timeout: Duration,
    /// Longest from a request's head to its response: a body sent too
    /// slowly, or work too long, is answered `408`.
    pub request_timeout: Duration,
    /// Longest the server waits for a client to read any of what it sends
    /// (an answer, or a WebSocket's messages); then it closes the
    /// connection. A stall timer, restarted by every write that goes
    /// through: a large answer read slowly but steadily is not cut off.
    pub write_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_open: 1024,
            header_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// Files the process keeps for its stores (ledger, catalogue, index) and
/// the rest, out of its open-file limit, before connections are allowed.
pub const FILES_RESERVED: u64 = 256;

/// How many refusals are answered at once; a connection past the cap beyond
/// that is closed without an answer.
const REFUSALS_AT_ONCE: usize = 64;

/// How long a refused connection is given to send its request head and
/// read the answer.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A closed connection is read from until the client closes its side, at
/// most this long in all ...
const LINGER_AT_MOST: Duration = Duration::from_secs(5);

/// ... and no longer than this once the client sends nothing.
const LINGER_QUIET: Duration = Duration::from_secs(1);

/// Where the server counts its connections (Prometheus handles: registered
/// in the node's registry, or free-standing for a server without one).
#[derive(Clone)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: IntGauge,
    /// Connections refused at the cap.
    pub refused: IntCounter,
    /// Connections closed because no request head arrived in time (idle
    /// keep-alive connections included).
    pub header_timeouts: IntCounter,
    /// Requests answered `408`.
    pub request_timeouts: IntCounter,
    /// Idle connections closed to make room for a new one at the cap.
    pub idle_closed: IntCounter,
    /// Connections closed because the client read nothing of what the
    /// server sent for the write timeout.
    pub write_timeouts: IntCounter,
}

impl ConnectionMetrics {
    /// The node's connection metrics.
    pub fn of(m: &clew_node::Metrics) -> Self {
        Self {
            open: m.http_connections_open.clone(),
            refused: m.http_connections_refused.clone(),
            header_timeouts: m.http_header_timeouts.clone(),
            request_timeouts: m.http_request_timeouts.clone(),
            idle_closed: m.http_idle_closed.clone(),
            write_timeouts: m.http_write_timeouts.clone(),
        }
    }

    /// Counters of their own, for a server that exports no metrics.
    pub fn unregistered() -> Self {
        let counter =
            |name: &str| IntCounter::new(name, name).expect("a constant metric name is valid");
        Self {
            open: IntGauge::new("open", "open").expect("a constant metric name is valid"),
            refused: counter("refused"),
            header_timeouts: counter("header_timeouts"),
            request_timeouts: counter("request_timeouts"),
            idle_closed: counter("idle_closed"),
            write_timeouts: counter("write_timeouts"),
        }
    }
}

/// The cap the process can keep: `wanted`, with the open-file limit's soft
/// value raised towards its hard one to make room for it and
/// [`FILES_RESERVED`] (as a server should: the soft default of 1,024 is
/// kept low for programs that still use `select`); lowered, and logged,
/// when even the hard limit leaves less.
fn effective_cap(wanted: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return wanted;
    }
    let needed = (wanted as u64).saturating_add(FILES_RESERVED);
    if limit.rlim_cur < needed {
        let raised = libc::rlimit {
            rlim_cur: needed.min(limit.rlim_max),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given; lowering nothing.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = raised.rlim_cur;
        }
    }
    let files: u64 = limit.rlim_cur;
    let room = files.saturating_sub(FILES_RESERVED).max(1);
    if (wanted as u64) <= room {
        return wanted;
    }
    tracing::warn!(
        wanted,
        open_files_limit = files,
        serving = room,
        "the process may open only {files} files (ulimit -n): serving at most {room} connections at once, not {wanted}"
    );
    room as usize
}

/// Serves `router` on `listener` until `shutdown` completes, within
/// `limits`; then stops accepting, lets requests in flight finish, closes
/// idle connections, and returns once every connection has closed.
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cap = effective_cap(limits.max_open.max(1));
    let places = Arc::new(Semaphore::new(cap));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let deadline = limits.request_timeout;
    let request_timeouts = metrics.request_timeouts.clone();
    let router = router.layer(axum::middleware::from_fn_with_state(
        (deadline, request_timeouts),
        answer_within,
    ));
    // Dropped when shutdown begins: every connection task sees it.
    let (stop_tx, stop_rx) = watch::channel(());
    // Each connection holds a receiver; all dropped when all have closed.
    let (closed_tx, closed_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    let mut accept_errors = Log::default();
    let serving = Arc::new(Serving {
        router,
        limits,
        stalled_since_log: std::sync::Mutex::new(Log::default()),
        metrics,
        slots: Slots::default(),
        cap,
        refused_since_log: std::sync::Mutex::new(Log::default()),
    });
    loop {
        let stream = tokio::select! {
            _ = shutdown.as_mut() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of files or memory: wait a little, as a busy
                    // server must (the listen queue keeps the clients).
                    if let Some(n) = accept_errors.due() {
                        tracing::error!(error = %e, since_last = n, "cannot accept a connection");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (stop, closed) = (stop_rx.clone(), closed_rx.clone());
        if let Ok(place) = places.clone().try_acquire_owned() {
            tokio::spawn(serving.clone().serve(stream, place, stop, closed));
            continue;
        }
        // At the cap. As a server with a connection limit should, the
        // connection idle longest is closed to make room (nothing in flight
        // on it is cut: it closes once its answer is sent); the newcomer
        // waits a moment for the place that frees, or one a closing
        // connection gives back, and is answered 503 if none does.
        if serving.slots.close_the_longest_idle() {
            serving.metrics.idle_closed.inc();
        }
        let Ok(waiting) = refusals.clone().try_acquire_owned() else {
            serving.refused();
            continue;
        };
        let (serving, places) = (serving.clone(), places.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(PLACE_WAIT, places.acquire_owned()).await {
                Ok(Ok(place)) => {
                    drop(waiting);
                    serving.serve(stream, place, stop, closed).await;
                }
                _ => {
                    serving.refused();
                    refuse(stream, serving.cap, waiting).await;
                    drop(closed);
                }
            }
        });
    }
    drop(listener);
    drop(stop_tx);
    drop(closed_rx);
    closed_tx.closed().await;
    Ok(())
}

/// How long a connection past the cap waits for a place (one an idle
/// connection closed for it gives back, or a closing one) before it is
/// answered `503`: longer than a closed connection lingers once its client
/// goes quiet ([`LINGER_QUIET`]), so a client that never closes its side
/// delays the newcomer but does not turn it away.
const PLACE_WAIT: Duration = Duration::from_secs(2);

/// What every connection of one server is served with.
struct Serving {
    router: Router,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    /// When connections ended by the write timeout were last logged.
    stalled_since_log: std::sync::Mutex<Log>,
    slots: Slots,
    cap: usize,
    refused_since_log: std::sync::Mutex<Log>,
}

impl Serving {
    /// Serves `stream` in its `place` until it closes (or, once `stop`
    /// changes, until the request in flight is answered); `closed` is held
    /// until then.
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        place: OwnedSemaphorePermit,
        mut stop: watch::Receiver<()>,
        closed: watch::Receiver<()>,
    ) {
        self.metrics.open.inc();
        let slot = self.slots.open();
        let io = TokioIo::new(Counted {
            stream: Some(stream),
            place: Some(place),
            open: Some(self.metrics.open.clone()),
            stall: Some(WriteStall {
                writes: self.clone(),
                timer: None,
            }),
            activity: Some(slot.clone()),
        });
        let (router, busy) = (self.router.clone(), slot.clone());
        let service = TowerToHyperService::new(tower::service_fn(move |request: Request<_>| {
            let answering = Answering::on(&busy);
            let answer = tower::ServiceExt::oneshot(router.clone(), request);
            async move {
                let answer = answer.await;
                drop(answering);
                answer
            }
        }));
        let mut builder = hyper::server::conn::http1::Builder::new();
        // RFC 9112 §9.3 (persistence): the header timeout also closes a
        // keep-alive connection left idle.
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout);
        let mut connection = pin!(builder.serve_connection(io, service).with_upgrades());
        let mut stopping = false;
        let outcome = loop {
            tokio::select! {
                outcome = connection.as_mut() => break outcome,
                // Each finishes the request in flight, if any, then closes.
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ = slot.make_room.notified(), if !stopping => {
                    stopping = true;
                    tracing::debug!("closing an idle connection to make room for a new one");
                    connection.as_mut().graceful_shutdown();
                }
            }
        };
        if let Err(e) = outcome {
            if e.is_timeout() {
                self.metrics.header_timeouts.inc();
                tracing::debug!("closed a connection whose request head did not arrive in time");
            } else {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        self.slots.close(&slot);
        drop(closed);
    }

    /// Counts and logs a connection refused at the cap.
    fn refused(&self) {
        self.metrics.refused.inc();
        let due = self
            .refused_since_log
            .lock()
            .map(|mut log| log.due())
            .unwrap_or(None);
        if let Some(n) = due {
            let cap = self.cap;
            tracing::warn!(
                cap,
                refused = n,
                "{cap} connections open, as many as the server serves at once: refusing more (503)"
            );
        }
    }
}

/// The connections being served, as the cap sees them: which is idle, and
/// since when.
#[derive(Default)]
struct Slots {
    next: AtomicU64,
    open: std::sync::Mutex<std::collections::HashMap<u64, Arc<Slot>>>,
}

impl Slots {
    /// A slot for a connection now served.
    fn open(&self) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            origin: Instant::now(),
            answering: AtomicUsize::new(0),
            quiet_since_ms: AtomicU64::new(0),
            make_room: tokio::sync::Notify::new(),
            closing: AtomicBool::new(false),
        });
        if let Ok(mut open) = self.open.lock() {
            open.insert(slot.id, slot.clone());
        }
        slot
    }

    /// Forgets a connection no longer served (closed, or upgraded to a
    /// WebSocket, which is never idle in this sense).
    fn close(&self, slot: &Slot) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&slot.id);
        }
    }

    /// Asks the connection idle longest (no request being answered, and
    /// no byte read or written for the longest) to close; false if every
    /// connection is busy or already closing.
    fn close_the_longest_idle(&self) -> bool {
        let Ok(open) = self.open.lock() else {
            return false;
        };
        let idle = open
            .values()
            .filter(|s| {
                s.answering.load(Ordering::Acquire) == 0 && !s.closing.load(Ordering::Acquire)
            })
            .min_by_key(|s| s.quiet_since());
        let Some(idle) = idle else {
            return false;
        };
        idle.closing.store(true, Ordering::Release);
        // A permit is kept if the task is not waiting on it just now.
        idle.make_room.notify_one();
        true
    }
}

/// One connection being served.
struct Slot {
    id: u64,
    origin: Instant,
    /// Requests being answered on it (their handlers running).
    answering: AtomicUsize,
    /// When it last read or wrote a byte or finished answering, ms after
    /// `origin`.
    quiet_since_ms: AtomicU64,
    /// Notified when the connection is to close to make room.
    make_room: tokio::sync::Notify,
    /// Asked to close already.
    closing: AtomicBool,
}

impl Slot {
    /// Notes activity on the connection now.
    fn active(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.quiet_since_ms.store(ms, Ordering::Relaxed);
    }

    /// Since when it has been quiet (comparable across connections).
    fn quiet_since(&self) -> Instant {
        self.origin + Duration::from_millis(self.quiet_since_ms.load(Ordering::Relaxed))
    }
}

/// A request being answered on a connection, until dropped.
struct Answering(Arc<Slot>);

impl Answering {
    fn on(slot: &Arc<Slot>) -> Self {
        slot.answering.fetch_add(1, Ordering::AcqRel);
        slot.active();
        Self(slot.clone())
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::AcqRel);
        self.0.active();
    }
}

/// Answers a connection past the cap with `503` and closes it.
async fn refuse(stream: TcpStream, cap: usize, refusing: OwnedSemaphorePermit) {
    let service = hyper::service::service_fn(move |_request| async move {
        Ok::<_, Infallible>(too_many_connections(cap))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_TIMEOUT)
        .keep_alive(false);
    // Closed lingering like any other (RFC 9112 §9.6), still holding its
    // place among the refusals: a client sending a body to a full server
    // reads the 503 instead of a reset.
    let refused = Counted {
        stream: Some(stream),
        place: Some(refusing),
        open: None,
        // Bounded as a whole by the refusal's timeout below.
        stall: None,
        activity: None,
    };
    let answered = builder.serve_connection(TokioIo::new(refused), service);
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT * 2, answered).await;
}

/// The answer to a connection past the cap.
fn too_many_connections(cap: usize) -> Response {
    let mut r = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &ApiError::Unavailable(format!(
            "the server has {cap} connections open, as many as it serves at once; try again shortly"
        )),
    );
    let headers = r.headers_mut();
    // RFC 9110 §10.2.3.
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Answers `408` for a request not received and answered within its
/// deadline (the work it started is abandoned).
async fn answer_within(
    State((deadline, timeouts)): State<(Duration, IntCounter)>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            timeouts.inc();
            tracing::warn!(%path, seconds = deadline.as_secs(), "request not received and answered in time: answered 408");
            let mut r = error_response(
                StatusCode::REQUEST_TIMEOUT,
                &ApiError::BadInput(format!(
                    "no answer within {} s: the request's body arrived too slowly or its work took too long, and it was abandoned",
                    deadline.as_secs()
                )),
            );
            let headers = r.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            // RFC 9110 §15.5.9: the server closes the connection.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

/// A connection's stream and its place under the cap (or among the
/// refusals): both given back when the stream is dropped, which for an
/// upgraded connection is when the WebSocket closes, after a lingering close
/// ([`linger`]).
struct Counted {
    /// Always there until dropped.
    stream: Option<TcpStream>,
    place: Option<OwnedSemaphorePermit>,
    /// The open connections' gauge, for a connection served.
    open: Option<IntGauge>,
    /// The write timeout, for a connection served.
    stall: Option<WriteStall>,
    /// Where its activity is noted, for a connection served.
    activity: Option<Arc<Slot>>,
}

/// A connection's write timeout: a timer started when a write finds the
/// client's window full, restarted by the next write that goes through.
struct WriteStall {
    /// The server, for the timeout's length and where an ended connection
    /// is counted and logged.
    writes: Arc<Serving>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteStall {
    /// Passes on a write's outcome; a write still waiting once the timer
    /// has run out fails instead (the connection then ends).
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if outcome.is_ready() {
            self.timer = None;
            return outcome;
        }
        let limit = self.writes.limits.write_timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.timer = None;
        self.writes.metrics.write_timeouts.inc();
        let due = self
            .writes
            .stalled_since_log
            .lock()
            .map(|mut log| log.due())
            .unwrap_or(None);
        if let Some(n) = due {
            tracing::warn!(
                seconds = limit.as_secs(),
                closed = n,
                "a client read nothing of what was sent to it for {} s: connection closed",
                limit.as_secs()
            );
        }
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the client read nothing of what was sent to it for {} s",
                limit.as_secs()
            ),
        )))
    }
}

impl Counted {
    /// `poll` on the stream (never gone before the drop).
    fn poll_stream<T>(
        &mut self,
        poll: impl FnOnce(Pin<&mut TcpStream>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match self.stream.as_mut() {
            Some(stream) => poll(Pin::new(stream)),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    /// A write's outcome, through the write timeout if the connection has
    /// one.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if let (Poll::Ready(Ok(_)), Some(slot)) = (&outcome, &self.activity) {
            slot.active();
        }
        match self.stall.as_mut() {
            Some(stall) => stall.watch(cx, outcome),
            None => outcome,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let (stream, place, open) = (self.stream.take(), self.place.take(), self.open.take());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            if let Some(open) = open {
                open.dec();
            }
            return;
        };
        runtime.spawn(async move {
            if let Some(stream) = stream {
                linger(stream).await;
            }
            // The place is held while lingering: closing connections count
            // against the cap too.
            drop(place);
            if let Some(open) = open {
                open.dec();
            }
        });
    }
}

/// RFC 9112 §9.6 (tear-down): a server that closes a connection half-closes
/// it and goes on reading until the client closes too (here at most
/// [`LINGER_AT_MOST`], and [`LINGER_QUIET`] after the client's last byte),
/// since closing a socket with unread bytes resets it, and a reset can
/// destroy the answer before the client has read it.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let until = tokio::time::Instant::now() + LINGER_AT_MOST;
    let mut discard = vec![0u8; 16 * 1024];
    loop {
        let quiet = tokio::time::Instant::now() + LINGER_QUIET;
        match tokio::time::timeout_at(until.min(quiet), stream.read(&mut discard)).await {
            Ok(Ok(read)) if read > 0 => continue,
            _ => return,
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let outcome = self.poll_stream(|stream| stream.poll_read(cx, buf));
        if buf.filled().len() > before {
            if let Some(slot) = &self.activity {
                slot.active();
            }
        }
        outcome
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let outcome = self.poll_stream(|stream| stream.poll_write(cx, buf));
        self.watch_write(cx, outcome)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_stream(|stream| stream.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_stream(|stream| stream.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let outcome = self.poll_stream(|stream| stream.poll_write_vectored(cx, bufs));
        self.watch_write(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(TcpStream::is_write_vectored)
    }
}

/// A log line at most every ten seconds, with how many times it was due.
#[derive(Default)]
struct Log {
    last: Option<Instant>,
    since: u64,
}

impl Log {
    /// Counts one occurrence; the count since the last line, if one is due.
    fn due(&mut self) -> Option<u64> {
        self.since += 1;
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serve_connections` on a loopback port, until [`TestServer::stop`].
    struct TestServer {
        addr: std::net::SocketAddr,
        metrics: ConnectionMetrics,
        stop: tokio::sync::oneshot::Sender<()>,
        serving: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl TestServer {
        async fn start(router: Router, limits: ConnectionLimits) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let metrics = ConnectionMetrics::unregistered();
            let serving = tokio::spawn(serve_connections(
                listener,
                router,
                limits,
                metrics.clone(),
                async move {
                    let _ = stopped.await;
                },
            ));
            Self {
                addr,
                metrics,
                stop,
                serving,
            }
        }

        /// Shuts the server down and waits until every connection closed.
        async fn stop(self) {
            let _ = self.stop.send(());
            self.serving.await.unwrap().unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_sent_before_the_body_was_read_reaches_the_client() {
        // A router that refuses every body unread, as the size limit does.
        let router = Router::new()
            .fallback(|| async { super::super::respond::payload_too_large(256 << 10) });
        let server = TestServer::start(router, ConnectionLimits::default()).await;
        let addr = server.addr;
        for attempt in 0..5 {
            let answer = post_a_large_body(addr, attempt).await;
            assert!(
                answer.starts_with("HTTP/1.1 413") && answer.contains("PAYLOAD_TOO_LARGE"),
                "attempt {attempt}: {answer:?}"
            );
        }
        server.stop().await;
    }

    /// Posts 4 MiB in pieces to `addr`, as an HTTP client does, then reads
    /// the answer to its end. Without the lingering close a server's socket,
    /// closed with the body unread, resets the connection: the client's
    /// sending fails (a broken pipe, where an HTTP client gives up without
    /// reading the answer).
    async fn post_a_large_body(addr: std::net::SocketAddr, attempt: usize) -> String {
        let body = vec![b'x'; 4 << 20];
        let mut client = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /graphql HTTP/1.1\r\nHost: clew\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        client.write_all(head.as_bytes()).await.unwrap();
        let mut sent = Ok(());
        for piece in body.chunks(64 << 10) {
            sent = client.write_all(piece).await;
            if sent.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut answer = Vec::new();
        let read = client.read_to_end(&mut answer).await;
        assert!(
            sent.is_ok() && read.is_ok(),
            "attempt {attempt}: sending the body {sent:?}, reading the answer {read:?}"
        );
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// A router whose `/hold` counts itself in `held` and is answered only
    /// once `release` is notified; everything else at once.
    fn holding(release: Arc<tokio::sync::Notify>, held: Arc<AtomicUsize>) -> Router {
        Router::new()
            .route(
                "/hold",
                axum::routing::get(move || async move {
                    held.fetch_add(1, Ordering::SeqCst);
                    release.notified().await;
                    "held"
                }),
            )
            .fallback(|| async { "served" })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_server_refuses_a_body_with_a_503_the_client_reads() {
        let release = Arc::new(tokio::sync::Notify::new());
        let limits = ConnectionLimits {
            max_open: 1,
            ..ConnectionLimits::default()
        };
        let in_flight = Arc::new(AtomicUsize::new(0));
        let server = TestServer::start(holding(release.clone(), in_flight.clone()), limits).await;
        let addr = server.addr;
        // One connection with a request being answered fills the server:
        // it is not idle, so it is not closed to make room.
        let mut held = TcpStream::connect(addr).await.unwrap();
        held.write_all(b"GET /hold HTTP/1.1\r\nHost: clew\r\n\r\n")
            .await
            .unwrap();
        eventually("the held request in flight", || {
            in_flight.load(Ordering::SeqCst) == 1
        })
        .await;
        for attempt in 0..3 {
            let answer = post_a_large_body(addr, attempt).await;
            assert!(
                answer.starts_with("HTTP/1.1 503") && answer.contains("UNAVAILABLE"),
                "attempt {attempt}: {answer:?}"
            );
        }
        assert_eq!(server.metrics.idle_closed.get(), 0);
        assert_eq!(server.metrics.refused.get(), 3);
        // The held request is answered as if nothing happened.
        release.notify_one();
        let mut answer = [0u8; 64];
        let n = held.read(&mut answer).await.unwrap();
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            &answer[..n]
        );
        drop(held);
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_the_cap_the_connection_idle_longest_is_closed_to_make_room() {
        let limits = ConnectionLimits {
            max_open: 2,
            ..ConnectionLimits::default()
        };
        let server = TestServer::start(holding(Arc::default(), Arc::default()), limits).await;
        let addr = server.addr;
        let ask = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: clew\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut answer = [0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut answer))
                .await
                .expect("an answer within 10 s")
                .unwrap();
            (s, String::from_utf8_lossy(&answer[..n]).into_owned())
        };
        // Two kept-alive connections, answered and left idle: the cap.
        let (mut older, a) = ask("/").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (mut newer, b) = ask("/").await;
        assert!(
            a.starts_with("HTTP/1.1 200") && b.starts_with("HTTP/1.1 200"),
            "{a:?} {b:?}"
        );
        // A third is served, and the one idle longer is closed for it.
        let (_third, c) = ask("/").await;
        assert!(c.starts_with("HTTP/1.1 200"), "{c:?}");
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), older.read_to_end(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(0))),
            "the older idle connection stays open: {closed:?}"
        );
        let mut byte = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(500), newer.read(&mut byte))
                .await
                .is_err(),
            "the newer idle connection was closed too"
        );
        assert_eq!(server.metrics.idle_closed.get(), 1);
        assert_eq!(server.metrics.refused.get(), 0);
        drop((older, newer));
        server.stop().await;
    }

    /// A client whose receive buffer is `bytes` (so the kernel buffers
    /// little of an answer for it), having asked for `/`.
    async fn ask_with_a_receive_buffer(addr: std::net::SocketAddr, bytes: u32) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        let mut client = socket.connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: clew\r\n\r\n")
            .await
            .unwrap();
        client
    }

    /// Waits up to 10 s for `ok`.
    async fn eventually(what: &str, ok: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "not within 10 s: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A server answering every request with `bytes` bytes, with a write
    /// timeout of 1 s.
    async fn answering_with(bytes: usize) -> TestServer {
        let router = Router::new().fallback(move || async move { vec![b'x'; bytes] });
        let limits = ConnectionLimits {
            write_timeout: Duration::from_secs(1),
            ..ConnectionLimits::default()
        };
        TestServer::start(router, limits).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_reads_nothing_of_a_large_answer_is_cut_off_after_the_write_timeout() {
        const BODY: usize = 64 << 20;
        let server = answering_with(BODY).await;
        let metrics = server.metrics.clone();
        let asked = Instant::now();
        let mut client = ask_with_a_receive_buffer(server.addr, 4096).await;
        eventually("a write timeout counted", || {
            metrics.write_timeouts.get() == 1
        })
        .await;
        assert!(
            asked.elapsed() >= Duration::from_millis(900),
            "cut off after {:?}, before the 1 s write timeout",
            asked.elapsed()
        );
        // Its place is given back (after the lingering close).
        eventually("the connection's place given back", || {
            metrics.open.get() == 0
        })
        .await;
        // What the kernel had taken of the answer still arrives; the rest
        // never does.
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            &answer[..answer.len().min(64)]
        );
        assert!(
            answer.len() < BODY,
            "the whole answer arrived: {} bytes",
            answer.len()
        );
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_answer_read_slowly_but_steadily_is_not_cut_off() {
        const BODY: usize = 16 << 20;
        let server = answering_with(BODY).await;
        let started = Instant::now();
        let mut client = ask_with_a_receive_buffer(server.addr, 256 << 10).await;
        // At most 256 KiB every 50 ms: the answer takes longer than the
        // write timeout, but no write waits anywhere near as long.
        let mut received = Vec::with_capacity(BODY + 1024);
        let mut piece = vec![0u8; 256 << 10];
        let whole = loop {
            let n = client.read(&mut piece).await.unwrap();
            assert!(n > 0, "closed after {} bytes", received.len());
            received.extend_from_slice(&piece[..n]);
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                if received.len() >= end + 4 + BODY {
                    break end + 4 + BODY;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(received.len(), whole);
        assert!(
            started.elapsed() > Duration::from_millis(1500),
            "read in {:?}: not slower than the write timeout, so the test shows nothing",
            started.elapsed()
        );
        assert_eq!(server.metrics.write_timeouts.get(), 0);
        drop(client);
        server.stop().await;
    }

    #[test]
    fn a_log_line_is_due_at_most_every_ten_seconds_with_the_count_since() {
        let mut log = Log::default();
        assert_eq!(log.due(), Some(1));
        assert_eq!(log.due(), None);
        assert_eq!(log.due(), None);
        log.last = Some(Instant::now() - Duration::from_secs(11));
        assert_eq!(log.due(), Some(3));
    }

    #[test]
    fn the_cap_stays_within_the_files_the_process_may_open() {
        let limit = || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes the limit into the struct it is given.
            assert_eq!(
                unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
                0
            );
            limit
        };
        let hard = limit().rlim_max;
        let room = hard.saturating_sub(FILES_RESERVED).max(1) as usize;
        // A cap the hard limit allows is kept, the soft limit raised for it.
        let wanted = 64.min(room);
        assert_eq!(effective_cap(wanted), wanted);
        assert!(limit().rlim_cur >= (wanted as u64 + FILES_RESERVED).min(hard));
        // One it does not is lowered to what it leaves.
        assert_eq!(effective_cap(usize::MAX), room);
        assert_eq!(limit().rlim_cur, hard);
    }
}
