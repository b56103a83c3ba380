//! Connection floods against the real operator process: idle and half-open sockets on the public
//! callback port neither stop the probes on the admin port nor lock out a real callback, and the
//! operator closes every one of them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use serde_json::json;
use slack_oauth_operator::server::{self, Limits};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
    time::Instant,
};

use crate::scenario::Scenario;

/// Sockets that send the first line of the HTTP/2 preface and stop: the operator answers 400
/// and closes them at once, as it speaks only HTTP/1.1. They come first, so that the sockets it
/// holds afterwards are known.
const PARTIAL_H2_PREFACES: usize = 500;
/// Sockets that send nothing.
const IDLE: usize = 2000;
/// Sockets that send the start of a request line and stop.
const PARTIAL_REQUESTS: usize = 1500;
const FLOOD: usize = IDLE + PARTIAL_REQUESTS + PARTIAL_H2_PREFACES;
/// How soon after it is opened every flooding socket must have been closed by the operator.
const CLOSED_WITHIN: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flooder {
    Idle,
    PartialRequest,
    PartialH2Preface,
}

impl Flooder {
    /// What flooding socket `n` does.
    fn nth(n: usize) -> Self {
        if n < PARTIAL_H2_PREFACES {
            Self::PartialH2Preface
        } else if n < PARTIAL_H2_PREFACES + IDLE {
            Self::Idle
        } else {
            Self::PartialRequest
        }
    }

    fn sends(self) -> &'static [u8] {
        match self {
            Self::Idle => b"",
            Self::PartialRequest => b"GET /oauth/callback?state=",
            Self::PartialH2Preface => b"PRI * HTTP/2.0\r\n",
        }
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn idle_and_half_open_floods_neither_stop_probes_nor_lock_out_a_callback() {
    // Both ends of every socket are on this machine: ours here, the operator's in its process
    // (which raises its own limit at start-up, up to the hard limit it inherits from us).
    let open_files = server::raise_open_file_limit().expect("raise the open file limit");
    assert!(
        open_files > FLOOD as u64 + 1000,
        "this test opens {FLOOD} sockets, but the open file limit is {open_files}; raise it (ulimit -n)"
    );
    let callback_bound = Limits::CALLBACK
        .within_open_file_limit(open_files)
        .max_connections;

    let s = Scenario::start("connection-flood").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    let link = s.link("scim").await;
    let pid = operator_pid(s.operator.callback_port());
    let files_before = open_files_of(pid);

    // The flood, in batches the operator's accept queue (128, tokio's default backlog) holds: a
    // connection the kernel drops when the queue is full is retried only a second later, and
    // on a busy machine the operator would be timing out the first sockets before the last
    // were open.
    let addr = format!("127.0.0.1:{}", s.operator.callback_port());
    let held = (IDLE + PARTIAL_REQUESTS).min(callback_bound);
    let started = Instant::now();
    let closed = Arc::new(AtomicUsize::new(0));
    let mut closing: Vec<(Flooder, JoinHandle<Option<Duration>>)> = Vec::with_capacity(FLOOD);
    for batch in (0..FLOOD).collect::<Vec<_>>().chunks(100) {
        let opened: Vec<_> = futures::stream::iter(batch.iter().map(|n| Flooder::nth(*n)))
            .map(|flooder| open_flooding_socket(&addr, flooder))
            .buffer_unordered(32)
            .collect()
            .await;
        closing.extend(opened.into_iter().map(|(flooder, stream, opened)| {
            (
                flooder,
                tokio::spawn(closed_after(stream, opened, closed.clone())),
            )
        }));
        let held_so_far = closing.len().saturating_sub(PARTIAL_H2_PREFACES);
        wait_for_callback_connections(&s, held_so_far.min(callback_bound)).await;
    }
    let flood_opened = started.elapsed();
    // While the flood is open: the operator holds its sockets...
    let files_during = open_files_of(pid);
    assert!(
        files_during >= files_before + held,
        "the operator holds the flooding sockets: {files_before} files before, {files_during} during"
    );

    // ...its probes answer at once...
    let probes = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("http");
    let mut slowest_probe = Duration::ZERO;
    for _ in 0..20 {
        let asked = Instant::now();
        let response = probes
            .get(format!("{}/readyz", s.operator.admin_url))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .expect("/readyz answers during the flood");
        assert_eq!(response.status(), 200, "/readyz during the flood");
        slowest_probe = slowest_probe.max(asked.elapsed());
    }

    // ...and a real callback completes.
    let asked = Instant::now();
    let answer = s.approve(&link).await;
    let callback_took = asked.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.body);
    s.wait_ready("scim").await;
    assert!(
        s.stored_token("SLACK_ACCESS_TOKEN").await.is_some(),
        "the token Secret is written"
    );
    let closed_meanwhile = closed.load(Ordering::Relaxed);
    let checked_after = started.elapsed();
    assert!(
        // Those closed to make room, and the HTTP/2 prefaces; the callback's own connection may
        // have made room for itself too.
        closed_meanwhile <= FLOOD - held + 5,
        "{closed_meanwhile} flooding sockets were closed before the probes and the callback \
         were checked ({checked_after:?} after the flood began), so they did not face the flood"
    );

    // Every flooding socket is closed by the operator.
    let mut report = Vec::new();
    for flooder in [
        Flooder::Idle,
        Flooder::PartialRequest,
        Flooder::PartialH2Preface,
    ] {
        let mut times = Vec::new();
        let mut still_open = 0;
        for (_, task) in closing.iter_mut().filter(|(f, _)| *f == flooder) {
            match task.await.expect("reader task") {
                Some(after) => times.push(after),
                None => still_open += 1,
            }
        }
        assert_eq!(
            still_open, 0,
            "{still_open} {flooder:?} sockets were still open {CLOSED_WITHIN:?} after they were opened"
        );
        times.sort();
        report.push(format!(
            "{flooder:?} closed after {:?} (first) {:?} (median) {:?} (last)",
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        ));
        if flooder == Flooder::PartialH2Preface {
            assert!(
                times[times.len() - 1] < Duration::from_secs(2),
                "an HTTP/2 preface is refused at once: {times:?}"
            );
        }
    }
    let files_after = open_files_of(pid);
    let metrics = s.operator.metrics().await;
    let evicted = metric(
        &metrics,
        "slack_oauth_operator_http_connections_evicted_total{server=\"callback\"}",
    );
    println!(
        "flood of {FLOOD} opened in {flood_opened:?}; operator: open files {files_before} before, \
         {files_during} during, {files_after} after; peak RSS {} KiB; callback bound \
         {callback_bound}, evicted {}; slowest /readyz {slowest_probe:?}; callback took \
         {callback_took:?}; {}",
        peak_memory_kib(pid),
        evicted,
        report.join("; "),
    );
    let beyond_the_bound = (IDLE + PARTIAL_REQUESTS).saturating_sub(callback_bound);
    assert!(
        evicted >= beyond_the_bound as u64,
        "{beyond_the_bound} sockets beyond the bound of {callback_bound}, {evicted} closed to make room"
    );
    assert!(
        files_after < files_before + 50,
        "the operator's sockets were closed: {files_before} files before, {files_after} after"
    );
    assert!(
        slowest_probe < Duration::from_secs(1),
        "slowest /readyz during the flood: {slowest_probe:?}"
    );
}

/// Connects to the callback port and sends what `flooder` sends; when it was opened.
async fn open_flooding_socket(addr: &str, flooder: Flooder) -> (Flooder, TcpStream, Instant) {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the callback port");
    let opened = Instant::now();
    stream.write_all(flooder.sends()).await.expect("write");
    (flooder, stream, opened)
}

/// Reads `stream` until the operator closes it, and returns how long after `opened` that was;
/// `None` if it was still open [`CLOSED_WITHIN`] after.
async fn closed_after(
    mut stream: TcpStream,
    opened: Instant,
    closed: Arc<AtomicUsize>,
) -> Option<Duration> {
    let read = tokio::time::timeout_at(opened + CLOSED_WITHIN, async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stream.read(&mut buf).await
            && n > 0
        {}
    })
    .await;
    closed.fetch_add(1, Ordering::Relaxed);
    read.ok().map(|()| opened.elapsed())
}

/// Waits until the operator holds at least `n` callback connections, by its metrics.
async fn wait_for_callback_connections(s: &Scenario, n: usize) {
    let mut held = 0;
    for _ in 0..500 {
        held = callback_connections(&s.operator.metrics().await);
        if held >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the operator holds {held} callback connections, expected {n}");
}

/// The operator process listening for callbacks on `port`, by its command line.
fn operator_pid(port: u16) -> u32 {
    let wanted = format!("--callback-addr\0127.0.0.1:{port}\0");
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&wanted))
        })
        .expect("the operator process")
}

fn open_files_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the operator's open files")
        .count()
}

fn peak_memory_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_default()
}

fn metric(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_default()
}

fn callback_connections(metrics: &str) -> usize {
    usize::try_from(metric(
        metrics,
        "slack_oauth_operator_http_connections{server=\"callback\"}",
    ))
    .unwrap_or_default()
}
