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

use serde_json::json;
use slack_oauth_operator::server::{self, Limits};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

use crate::scenario::Scenario;

/// Sockets that send nothing.
const IDLE: usize = 2000;
/// Sockets that send the start of a request line and stop.
const PARTIAL_REQUESTS: usize = 1500;
/// Sockets that send the first line of the HTTP/2 preface and stop.
const PARTIAL_H2_PREFACES: usize = 500;
const FLOOD: usize = IDLE + PARTIAL_REQUESTS + PARTIAL_H2_PREFACES;
/// How soon after it is opened every flooding socket must have been closed by the operator.
const CLOSED_WITHIN: Duration = Duration::from_secs(30);

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

    // The flood.
    let addr = format!("127.0.0.1:{}", s.operator.callback_port());
    let started = Instant::now();
    let mut flood = Vec::with_capacity(FLOOD);
    for n in 0..FLOOD {
        let mut stream = TcpStream::connect(&addr)
            .await
            .expect("connect to the callback port");
        let opened = Instant::now();
        if n >= IDLE + PARTIAL_REQUESTS {
            stream
                .write_all(b"PRI * HTTP/2.0\r\n")
                .await
                .expect("write");
        } else if n >= IDLE {
            stream
                .write_all(b"GET /oauth/callback?state=")
                .await
                .expect("write");
        }
        flood.push((stream, opened));
    }
    let flood_opened = started.elapsed();
    // Each socket read until the operator closes it; how long after it was opened.
    let closed = Arc::new(AtomicUsize::new(0));
    let closing: Vec<_> = flood
        .into_iter()
        .map(|(mut stream, opened)| {
            let closed = closed.clone();
            tokio::spawn(async move {
                let read = tokio::time::timeout_at(opened + CLOSED_WITHIN, async {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf).await
                        && n > 0
                    {}
                })
                .await;
                closed.fetch_add(1, Ordering::Relaxed);
                read.ok().map(|()| opened.elapsed())
            })
        })
        .collect();

    // While the flood is open: the operator holds its sockets...
    let expected_open = FLOOD.min(callback_bound);
    let mut held = 0;
    for _ in 0..100 {
        held = callback_connections(&s.operator.metrics().await);
        if held >= expected_open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let files_during = open_files_of(pid);
    println!(
        "flood opened in {flood_opened:?}; held {held} after {:?}",
        started.elapsed()
    );
    assert!(
        held >= expected_open,
        "the operator holds {held} callback connections, expected {expected_open}"
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
        // The real callback's connection may have made room, when the bound is below the flood.
        closed_meanwhile <= FLOOD - expected_open + 5,
        "{closed_meanwhile} flooding sockets were closed before the probes and the callback \
         were checked ({checked_after:?} after the flood began), so they did not face the flood"
    );

    // Every flooding socket is closed by the operator.
    let mut times = Vec::with_capacity(FLOOD);
    for task in closing {
        times.push(task.await.expect("reader task"));
    }
    let still_open = times.iter().filter(|t| t.is_none()).count();
    assert_eq!(
        still_open, 0,
        "{still_open} of {FLOOD} flooding sockets were still open {CLOSED_WITHIN:?} after they were opened"
    );
    let mut times: Vec<Duration> = times.into_iter().flatten().collect();
    times.sort();
    let metrics = s.operator.metrics().await;
    let files_after = open_files_of(pid);
    let peak_memory = peak_memory_kib(pid);
    println!(
        "flood of {FLOOD} opened in {flood_opened:?}; operator open files {files_before} before, \
         {files_during} during, {files_after} after; peak RSS {peak_memory} KiB; callback bound \
         {callback_bound}, evicted {}; slowest /readyz {slowest_probe:?}; callback took \
         {callback_took:?}; flooding sockets closed after {:?} (first), {:?} (median), {:?} (last)",
        metric(
            &metrics,
            "slack_oauth_operator_http_connections_evicted_total{server=\"callback\"}"
        ),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
    );
    assert!(
        files_during >= files_before + expected_open,
        "the operator had the flooding sockets open: {files_before} files before, {files_during} during"
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
