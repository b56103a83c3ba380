//! The connection loop both HTTP servers share: the public callback and the internal admin port.
//!
//! Each speaks HTTP/1.1 only (no h2c), with bounded headers, a header-read timeout that starts
//! when the connection is accepted, an idle timeout between requests, and a bounded number of
//! open connections. When the bound is reached, the oldest connection that is not serving a
//! request is closed to make room, so idle or half-open sockets cannot lock out a real client;
//! only when every connection is serving a request is the new one closed at once. A connection
//! serving a request is never closed to make room.
//!
//! The operator raises its open-file limit at start-up ([`raise_open_file_limit`]) and keeps the
//! callback's bound below it ([`Limits::within_open_file_limit`]), so a flood of connections
//! degrades the public callback but never the admin port or the Kubernetes and Slack clients.

use std::{
    collections::{BTreeSet, HashMap},
    convert::Infallible,
    io,
    pin::{Pin, pin},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Bytes};
use hyper::{
    body::{Frame, Incoming, SizeHint},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    time::{Instant, sleep_until},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

use crate::metrics::ConnectionMetrics;

/// Files the process needs besides the callback's connections: the admin server's connections,
/// the Kubernetes and Slack clients, listeners, the runtime's own descriptors, logs.
const OTHER_FILES: u64 = Limits::ADMIN.max_connections as u64 + 256;

/// Linux refuses a soft limit above `fs.nr_open` (2^20 by default) even when the hard limit is
/// unlimited; asking for no more keeps the call from failing there.
const MOST_OPEN_FILES: u64 = 1 << 20;

/// What one server allows its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, counting those that have not sent a byte yet.
    pub max_connections: usize,
    /// How long a client has, from the moment its connection is accepted, to send the headers of
    /// its first request. For later requests hyper starts the same timer when the previous
    /// response is written, so it also ends a keep-alive connection that stays quiet this long.
    pub header_read_timeout: Duration,
    /// The longest a connection that has served a request may go without serving the next one.
    /// A backstop that does not depend on when hyper starts its header timer; it also ends a
    /// connection whose client stopped reading its response.
    pub idle_timeout: Duration,
    /// The longest request line plus headers accepted, in bytes.
    pub max_header_bytes: usize,
}

impl Limits {
    /// The public callback. A person's browser, or the Ingress in front, needs a handful of
    /// connections; the bound is about surviving floods within the pod's memory limit (128 MiB).
    /// A connection that has sent nothing costs about 3 KiB, one holding a partial request up to
    /// 24 KiB (hyper's buffers), so 2048 of those take about 48 MiB.
    pub const CALLBACK: Self = Self {
        max_connections: 2048,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        max_header_bytes: 16 * 1024,
    };

    /// The admin port: the kubelet's probes and Prometheus, a few connections at a time.
    pub const ADMIN: Self = Self {
        max_connections: 128,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        max_header_bytes: 16 * 1024,
    };

    /// These limits with `max_connections` lowered to leave [`OTHER_FILES`] descriptors free
    /// under the soft open-file limit `open_files`: a flood then fills this server's bound (and
    /// closes its idle connections to make room) before the process runs out of descriptors.
    pub fn within_open_file_limit(self, open_files: u64) -> Self {
        let room = usize::try_from(open_files.saturating_sub(OTHER_FILES)).unwrap_or(usize::MAX);
        Self {
            max_connections: self.max_connections.min(room).max(1),
            ..self
        }
    }
}

/// Raises the process's soft limit on open files to its hard limit, and returns the soft limit
/// now in force. Call it once at start-up, before the servers start.
pub fn raise_open_file_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(MOST_OPEN_FILES)
}

/// The process's soft limit on open files, or `u64::MAX` when it cannot be read.
pub fn open_file_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(soft, _hard)| soft)
}

/// Serves `router` on `listener` within `limits` until `shutdown`, then lets requests in flight
/// finish and closes every connection.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: ConnectionMetrics,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Connections::new(limits, metrics));
    let tasks = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, most likely; the connection waits in the backlog.
                    warn!(error = &error as &dyn std::error::Error, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Some(slot) = connections.admit() else {
            debug!(%peer, "closing a new connection: every connection is serving a request");
            continue;
        };
        tasks.spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            slot,
            limits,
            shutdown.clone(),
        ));
    }
    tasks.close();
    tasks.wait().await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    router: Router,
    slot: Arc<Slot>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    // hyper allocates its buffers as soon as it polls the socket; until the client sends
    // something, a connection costs little more than its descriptor.
    let mut first_byte = [0u8; 1];
    tokio::select! {
        // Not `readable()`, which may wake before there is anything to read.
        peeked = stream.peek(&mut first_byte) => if !matches!(peeked, Ok(1..)) { return },
        () = sleep_until(slot.accepted + limits.header_read_timeout) => {
            debug!(%peer, "closing a connection that sent nothing");
            return;
        }
        () = slot.close.cancelled() => return,
        () = shutdown.cancelled() => return,
    }

    let router = TowerToHyperService::new(router);
    let requests = slot.clone();
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let serving = requests.begin_request();
        let response = hyper::service::Service::call(&router, request);
        async move {
            let response = response.await?;
            Ok::<_, Infallible>(response.map(|body| TrackedBody {
                body,
                _serving: serving,
            }))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));

    let mut draining = false;
    loop {
        // While a request is being served there is no deadline; look again after `idle_timeout`.
        let deadline = slot
            .idle_deadline()
            .unwrap_or_else(|| Instant::now() + limits.idle_timeout);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%peer, error = %error, "connection ended with an error");
                }
                return;
            }
            () = sleep_until(deadline) => {
                if slot.idle_deadline().is_some_and(|deadline| deadline <= Instant::now()) {
                    debug!(%peer, "closing an idle connection");
                    return;
                }
            }
            () = slot.close.cancelled(), if !draining => {
                if !slot.is_serving() {
                    debug!(%peer, "closing an idle connection to make room for a new one");
                    return;
                }
                // A request started since it was chosen; it finishes, then the connection closes.
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
            () = shutdown.cancelled(), if !draining => {
                if !slot.is_serving() {
                    return;
                }
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// The open connections of one server, and which of them may be closed to make room.
struct Connections {
    limits: Limits,
    metrics: ConnectionMetrics,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// Connections not serving a request, oldest first: those that may be closed to make room.
    idle: BTreeSet<u64>,
    /// Entries told to close that have not closed yet; they no longer count toward the bound.
    closing: usize,
}

struct Entry {
    /// Requests being served; at most one with HTTP/1.1, as hyper does not pipeline.
    serving: usize,
    /// Whether the connection has served a request.
    served: bool,
    /// Since when the connection has not been serving a request.
    idle_since: Instant,
    /// Told to close to make room.
    closing: bool,
    close: CancellationToken,
}

impl Connections {
    fn new(limits: Limits, metrics: ConnectionMetrics) -> Self {
        Self {
            limits,
            metrics,
            table: Mutex::default(),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while holding the lock, and the table stays consistent if it did.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection, closing the oldest idle one to make room when the bound is
    /// reached; `None` when every connection is serving a request.
    fn admit(self: &Arc<Self>) -> Option<Arc<Slot>> {
        let mut table = self.table();
        if table.entries.len() - table.closing >= self.limits.max_connections {
            let Some(oldest) = table.idle.pop_first() else {
                self.metrics.refused.inc();
                return None;
            };
            table.closing += 1;
            if let Some(entry) = table.entries.get_mut(&oldest) {
                entry.closing = true;
                entry.close.cancel();
            }
            self.metrics.evicted.inc();
        }
        let id = table.next_id;
        table.next_id += 1;
        let accepted = Instant::now();
        let close = CancellationToken::new();
        table.entries.insert(
            id,
            Entry {
                serving: 0,
                served: false,
                idle_since: accepted,
                closing: false,
                close: close.clone(),
            },
        );
        table.idle.insert(id);
        self.metrics.open.set(gauge_value(table.entries.len()));
        Some(Arc::new(Slot {
            id,
            accepted,
            close,
            connections: self.clone(),
        }))
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// One admitted connection's place in [`Connections`]; dropping it frees the place.
struct Slot {
    id: u64,
    accepted: Instant,
    /// Cancelled when the connection is chosen to make room for a new one.
    close: CancellationToken,
    connections: Arc<Connections>,
}

impl Slot {
    fn begin_request(self: &Arc<Self>) -> Serving {
        let mut table = self.connections.table();
        table.idle.remove(&self.id);
        if let Some(entry) = table.entries.get_mut(&self.id) {
            entry.serving += 1;
        }
        Serving(self.clone())
    }

    fn is_serving(&self) -> bool {
        let table = self.connections.table();
        table.entries.get(&self.id).is_some_and(|e| e.serving > 0)
    }

    /// When the connection is to be closed for sending no request, unless one starts first;
    /// `None` while a request is being served.
    fn idle_deadline(&self) -> Option<Instant> {
        let limits = self.connections.limits;
        let table = self.connections.table();
        let entry = table.entries.get(&self.id)?;
        if entry.serving > 0 {
            return None;
        }
        Some(if entry.served {
            entry.idle_since + limits.idle_timeout
        } else {
            entry.idle_since + limits.header_read_timeout
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.connections.table();
        table.idle.remove(&self.id);
        if let Some(entry) = table.entries.remove(&self.id)
            && entry.closing
        {
            table.closing -= 1;
        }
        self.connections
            .metrics
            .open
            .set(gauge_value(table.entries.len()));
    }
}

/// Marks its connection as serving a request until dropped, with the response body.
struct Serving(Arc<Slot>);

impl Drop for Serving {
    fn drop(&mut self) {
        let slot = &self.0;
        let mut table = slot.connections.table();
        let Some(entry) = table.entries.get_mut(&slot.id) else {
            return;
        };
        entry.serving -= 1;
        entry.served = true;
        if entry.serving == 0 {
            entry.idle_since = Instant::now();
            if !entry.closing {
                table.idle.insert(slot.id);
            }
        }
    }
}

/// A response body that keeps its connection marked as serving until hyper has taken all of it.
struct TrackedBody {
    body: axum::body::Body,
    _serving: Serving,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::SocketAddr,
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use axum::routing::get;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
        sync::Semaphore,
    };

    use super::*;

    /// The timeouts of tests about timeouts.
    const TIMEOUT: Duration = Duration::from_millis(300);
    /// Allowance for a busy test machine.
    const SLACK: Duration = Duration::from_secs(1);

    /// Short timeouts, for tests about them.
    fn limits(max_connections: usize) -> Limits {
        Limits {
            max_connections,
            header_read_timeout: TIMEOUT,
            idle_timeout: TIMEOUT * 2,
            max_header_bytes: 16 * 1024,
        }
    }

    /// Timeouts that never fire during a test, for tests about something else.
    fn patient(max_connections: usize) -> Limits {
        Limits {
            max_connections,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
        }
    }

    struct TestServer {
        addr: SocketAddr,
        metrics: ConnectionMetrics,
        shutdown: CancellationToken,
        served: tokio::task::JoinHandle<()>,
        /// Requests to `/slow` wait for a permit.
        slow: Arc<Semaphore>,
        /// Requests to `/slow` that have reached the handler.
        slow_started: Arc<AtomicUsize>,
    }

    async fn start(limits: Limits) -> TestServer {
        let slow = Arc::new(Semaphore::new(0));
        let slow_started = Arc::new(AtomicUsize::new(0));
        let (permits, started) = (slow.clone(), slow_started.clone());
        let router = Router::new().route("/", get(|| async { "ok" })).route(
            "/slow",
            get(move || {
                let (permits, started) = (permits.clone(), started.clone());
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    let _permit = permits.acquire().await;
                    "slow"
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = ConnectionMetrics::default();
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(serve(
            listener,
            router,
            limits,
            metrics.clone(),
            shutdown.clone(),
        ));
        TestServer {
            addr,
            metrics,
            shutdown,
            served,
            slow,
            slow_started,
        }
    }

    impl TestServer {
        async fn connect(&self) -> TcpStream {
            TcpStream::connect(self.addr).await.expect("connect")
        }

        /// Waits until the server has taken `n` connections, so the order of arrival is known.
        async fn wait_open(&self, n: i64) {
            for _ in 0..200 {
                if self.metrics.open.get() == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!(
                "expected {n} open connections, have {}",
                self.metrics.open.get()
            );
        }

        /// Waits until `n` requests to `/slow` are being served.
        async fn wait_slow(&self, n: usize) {
            for _ in 0..200 {
                if self.slow_started.load(Ordering::SeqCst) == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("expected {n} slow requests");
        }
    }

    fn get_request(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
    }

    /// Everything the server sends until it closes the connection, and when it closed it; `None`
    /// if it is still open after `within`.
    async fn read_until_closed(
        stream: &mut TcpStream,
        within: Duration,
    ) -> Option<(String, Instant)> {
        let mut received = Vec::new();
        let read = tokio::time::timeout(within, async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        read.ok().map(|()| {
            (
                String::from_utf8_lossy(&received).into_owned(),
                Instant::now(),
            )
        })
    }

    /// Reads one response whose body is `body` from a connection that stays open.
    async fn read_response(stream: &mut TcpStream, body: &str) -> String {
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), async {
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&received).ends_with(body) {
                let n = stream.read(&mut buf).await.expect("read");
                assert_ne!(n, 0, "closed before the response was complete");
                received.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("a response within 5 s");
        String::from_utf8_lossy(&received).into_owned()
    }

    #[tokio::test]
    async fn socket_that_sends_nothing_is_closed_after_the_header_timeout() {
        let server = start(limits(8)).await;
        let opened = Instant::now();
        let mut idle = server.connect().await;
        let (received, closed) = read_until_closed(&mut idle, TIMEOUT + SLACK)
            .await
            .expect("the server closes the idle socket");
        assert_eq!(received, "");
        let after = closed - opened;
        assert!(after >= TIMEOUT, "closed after {after:?}");
        server.wait_open(0).await;
    }

    #[tokio::test]
    async fn partial_request_is_closed_within_the_header_timeout_from_the_connection_start() {
        let timeout = Duration::from_secs(1);
        let server = start(Limits {
            header_read_timeout: timeout,
            ..patient(8)
        })
        .await;
        let opened = Instant::now();
        let mut partial = server.connect().await;
        // Nothing for most of the timeout, then a request trickling in: had the clock started at
        // the first byte, the connection would last almost twice as long.
        tokio::time::sleep(timeout * 9 / 10).await;
        let closed = tokio::time::timeout(timeout + SLACK, async {
            for byte in b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: ".iter().cycle() {
                if partial.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Instant::now()
        })
        .await
        .expect("the server closes the trickling connection");
        let after = closed - opened;
        assert!(
            after >= timeout && after < timeout * 3 / 2,
            "closed after {after:?}"
        );
    }

    #[tokio::test]
    async fn keep_alive_connection_is_closed_when_idle_between_requests() {
        let server = start(limits(8)).await;
        let mut client = server.connect().await;
        client
            .write_all(get_request("/").as_bytes())
            .await
            .expect("write");
        let response = read_response(&mut client, "ok").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let answered = Instant::now();
        read_until_closed(&mut client, limits(8).idle_timeout + SLACK)
            .await
            .expect("the server closes the idle keep-alive connection");
        assert!(
            answered.elapsed() >= TIMEOUT,
            "closed after {:?}",
            answered.elapsed()
        );
    }

    #[tokio::test]
    async fn oversized_headers_are_refused() {
        let server = start(patient(8)).await;
        let mut client = server.connect().await;
        let request = format!(
            "GET / HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n",
            "a".repeat(20 * 1024)
        );
        let _ = client.write_all(request.as_bytes()).await;
        let (received, _) = read_until_closed(&mut client, SLACK)
            .await
            .expect("the server closes the connection");
        assert!(received.starts_with("HTTP/1.1 431"), "{received}");
    }

    #[tokio::test]
    async fn when_full_of_idle_sockets_the_oldest_makes_room_for_a_real_request() {
        let server = start(patient(4)).await;
        let mut idle = Vec::new();
        for n in 1..=4 {
            idle.push(server.connect().await);
            server.wait_open(n).await;
        }
        let mut client = server.connect().await;
        client
            .write_all(get_request("/").as_bytes())
            .await
            .expect("write");
        let response = read_response(&mut client, "ok").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");

        read_until_closed(&mut idle[0], SLACK)
            .await
            .expect("the oldest idle socket was closed to make room");
        for (n, socket) in idle.iter_mut().enumerate().skip(1) {
            assert!(
                read_until_closed(socket, Duration::from_millis(50))
                    .await
                    .is_none(),
                "idle socket {n} is still open"
            );
        }
        assert_eq!(server.metrics.evicted.get(), 1);
        assert_eq!(server.metrics.open.get(), 4);
    }

    #[tokio::test]
    async fn half_open_requests_make_room_too_but_requests_being_served_never_do() {
        let server = start(patient(3)).await;
        let mut busy = server.connect().await;
        busy.write_all(get_request("/slow").as_bytes())
            .await
            .expect("write");
        server.wait_open(1).await;
        let mut half_open = server.connect().await;
        half_open
            .write_all(b"GET /oauth/callback?state=")
            .await
            .expect("write");
        server.wait_open(2).await;
        let mut second_busy = server.connect().await;
        second_busy
            .write_all(get_request("/slow").as_bytes())
            .await
            .expect("write");
        server.wait_open(3).await;
        server.wait_slow(2).await;

        // Full: the half-open one goes, the busy ones stay.
        let mut client = server.connect().await;
        client
            .write_all(get_request("/").as_bytes())
            .await
            .expect("write");
        let response = read_response(&mut client, "ok").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        read_until_closed(&mut half_open, SLACK)
            .await
            .expect("the half-open connection was closed to make room");

        // Full again, and busy but for `client`, idle again after its answer: it makes room.
        let mut next = server.connect().await;
        next.write_all(get_request("/").as_bytes())
            .await
            .expect("write");
        read_response(&mut next, "ok").await;
        read_until_closed(&mut client, SLACK)
            .await
            .expect("the idle keep-alive connection was closed to make room");

        // Hold `next` busy too: now every connection serves a request, and a new one is closed.
        next.write_all(get_request("/slow").as_bytes())
            .await
            .expect("write");
        server.wait_slow(3).await;
        let mut refused = server.connect().await;
        let (received, _) = read_until_closed(&mut refused, SLACK)
            .await
            .expect("a new connection is closed at once when all are busy");
        assert_eq!(received, "");
        assert_eq!(server.metrics.refused.get(), 1);

        // The busy ones were never touched.
        server.slow.add_permits(3);
        for stream in [&mut busy, &mut second_busy, &mut next] {
            let response = read_response(stream, "slow").await;
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        }
        assert_eq!(server.metrics.evicted.get(), 2);
    }

    #[tokio::test]
    async fn h2c_prior_knowledge_preface_is_refused() {
        let server = start(patient(8)).await;
        let mut client = server.connect().await;
        let started = Instant::now();
        // The preface, then an empty SETTINGS frame.
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .expect("write");
        let (received, closed) = read_until_closed(&mut client, SLACK)
            .await
            .expect("the server closes the connection at once");
        assert!(
            received.is_empty() || received.starts_with("HTTP/1.1 4"),
            "no HTTP/2 answer: {received:?}"
        );
        assert!(closed - started < SLACK);
    }

    #[tokio::test]
    async fn h2c_upgrade_is_ignored() {
        let server = start(patient(8)).await;
        let mut client = server.connect().await;
        client
            .write_all(
                b"GET / HTTP/1.1\r\nHost: test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                  Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
            )
            .await
            .expect("write");
        let response = read_response(&mut client, "ok").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections_and_lets_requests_in_flight_finish() {
        let server = start(patient(8)).await;
        let mut idle = server.connect().await;
        let mut busy = server.connect().await;
        busy.write_all(get_request("/slow").as_bytes())
            .await
            .expect("write");
        server.wait_open(2).await;
        server.wait_slow(1).await;

        server.shutdown.cancel();
        read_until_closed(&mut idle, SLACK)
            .await
            .expect("the idle connection is closed at shutdown");
        assert!(
            !server.served.is_finished(),
            "the request in flight holds it"
        );
        server.slow.add_permits(1);
        let (response, _) = read_until_closed(&mut busy, SLACK)
            .await
            .expect("the busy connection closes after its response");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("slow"), "{response}");
        tokio::time::timeout(Duration::from_secs(2), server.served)
            .await
            .expect("the server stops")
            .expect("the server task");
        assert!(
            TcpStream::connect(server.addr).await.is_err(),
            "the listener is closed"
        );
    }

    #[test]
    fn callback_bound_leaves_descriptors_for_everything_else() {
        assert_eq!(
            Limits::CALLBACK
                .within_open_file_limit(1 << 20)
                .max_connections,
            Limits::CALLBACK.max_connections
        );
        let small = Limits::CALLBACK.within_open_file_limit(1024);
        assert_eq!(small.max_connections, 1024 - OTHER_FILES as usize);
        assert!(OTHER_FILES as usize > Limits::ADMIN.max_connections);
        assert_eq!(
            Limits::CALLBACK.within_open_file_limit(10).max_connections,
            1
        );
    }
}
