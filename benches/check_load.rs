//! Check load, against the local control plane: how evenly the operator spreads the `auth.test`
//! checks of many Ready grants, and whether Slack failing those checks leaves the grants Ready.
//! A benchmark rather than a timed test, because what it reports (calls a minute, the busiest
//! second, memory) is a measurement to read, not a bound a busy CI machine must always meet.
//!
//! 1. `CHECK_LOAD_GRANTS` grants (1,000) are made Ready through the real approval flow, under an
//!    operator with `--token-check-interval 60s`.
//! 2. The operator is restarted, so that every token was approved before the controller started
//!    and is first checked within the first-check spread; then `auth.test` calls are counted per
//!    second for `CHECK_LOAD_MINUTES` minutes (3).
//! 3. Slack answers every `auth.test` with 503 for 90 s, then with 429 (`Retry-After: 5`) for
//!    90 s, while every grant is sampled and must stay Ready with reason `Authorized`; then
//!    Slack answers again and the checks must succeed.
//!
//! Run with `cargo bench --bench check_load` after `make cluster-up` and `source
//! .cluster/local/env`; `docs/benchmarks.md` has the full command and the last results.

use std::{
    collections::BTreeMap,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, ResourceExt, api::DeleteParams};
use serde_json::json;
use slack_emulator::Fault;
use slack_oauth_operator::api::SlackOAuthGrant;

use common::{
    AuditMark, env_number, is_authorized, metric_sum, minutes_seconds, percentile,
    require_control_plane, rss_kib,
};
use scenario::Scenario;
use support::Operator;

// Shared with the scale bench; this binary uses only part of it.
#[allow(dead_code)]
mod common;
// Shared with the cluster tests; this binary uses only part of them.
#[path = "../tests/cluster/scenario.rs"]
#[allow(dead_code)]
mod scenario;
#[path = "../tests/cluster/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

const FLAGS: &[&str] = &["--token-check-interval", "60s"];
/// Approvals walked through at once while setting up.
const SETUP_CONCURRENCY: usize = 16;
/// How long each Slack fault of phase 2 lasts.
const FAULT_WINDOW: Duration = Duration::from_secs(90);
/// How often the grants are listed while Slack fails.
const SAMPLE_EVERY: Duration = Duration::from_secs(3);
/// After the faults: long enough for every grant's retry (30 s, jittered ±10%) to come due.
const RECOVERY_WINDOW: Duration = Duration::from_secs(45);
/// Faults queued per window: far more than the checks of any window, so none is answered
/// normally; the recorded statuses show that.
const FAULTS_QUEUED: usize = 200_000;

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs this binary without `--bench`: a 10-minute run is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("check_load runs only under `cargo bench --bench check_load`");
        return;
    }
    let grants = env_number("CHECK_LOAD_GRANTS", 1000);
    let minutes = env_number("CHECK_LOAD_MINUTES", 3);
    require_control_plane("check_load").await;

    let started = Instant::now();
    let mut s = Scenario::builder("check-load").flags(FLAGS).start().await;
    println!(
        "check_load: {grants} grants, {minutes} min of checks, namespace {}",
        s.ns.name
    );
    let outcome = AssertUnwindSafe(run(&mut s, grants, minutes))
        .catch_unwind()
        .await;
    clean_up(&mut s).await;
    println!("check_load took {}", minutes_seconds(started.elapsed()));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn run(s: &mut Scenario, count: usize, minutes: usize) {
    let names = make_ready(s, count).await;

    // Proxied from here on: the emulator records calls but not when they came.
    let api = TimedApi::start(&s.slack.url()).await;
    let port = s.operator.callback_port();
    s.operator.terminate().await;
    let t0 = Instant::now();
    let audit_from = AuditMark::now();
    s.operator = Operator::start_on(
        "check-load-restarted",
        &s.ns.name,
        port,
        &s.slack.url(),
        &api.url(),
        FLAGS,
    )
    .await;
    println!(
        "operator restarted (ready {:.1} s after the old one stopped); measuring {minutes} min",
        t0.elapsed().as_secs_f64()
    );
    let pid = s.operator.pid();
    let cpu_before = support::cpu_seconds(pid);
    let window = Duration::from_secs(60 * minutes as u64);
    let mut peak_rss = 0;
    while t0.elapsed() < window {
        peak_rss = peak_rss.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_secs(5).min(window.saturating_sub(t0.elapsed()))).await;
    }
    let cpu = support::cpu_seconds(pid) - cpu_before;
    let rss = rss_kib(pid);
    peak_rss = peak_rss.max(rss);
    let per_second = api.per_second("auth.test", t0, window);
    let writes = audit_from
        .and_then(|from| from.writes_since(&s.ns.name))
        .map(|writes| write_summary(&writes));
    print_load_table(count, &per_second);
    let csv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("check_load-seconds.csv");
    let lines: Vec<String> = per_second
        .iter()
        .enumerate()
        .map(|(second, calls)| format!("{second},{calls}"))
        .collect();
    std::fs::write(
        &csv,
        format!("second,auth_test_calls\n{}\n", lines.join("\n")),
    )
    .expect("write the per-second counts");
    println!("(per-second counts: {})", csv.display());
    println!();
    println!(
        "Operator: {cpu:.1} s CPU in {minutes} min ({:.1}% of one core); RSS {} MiB at the end, \
         {} MiB at most (sampled every 5 s); API writes in the namespace meanwhile: {}",
        100.0 * cpu / window.as_secs_f64(),
        rss / 1024,
        peak_rss / 1024,
        writes.unwrap_or_else(|| {
            "not measured (CLUSTER_DIR unset, or the audit log rotated twice)".to_owned()
        }),
    );
    let unready = not_ready(&s.grants, &names).await;
    assert!(
        unready.is_empty(),
        "grants went not-Ready while Slack answered every check: {unready:?}"
    );

    let mut windows = Vec::new();
    for (label, fault) in [
        ("503 for every auth.test", Fault::ServerError(503)),
        (
            "429, Retry-After: 5, for every auth.test",
            Fault::RateLimited {
                retry_after_secs: 5,
            },
        ),
    ] {
        windows.push(fault_window(s, &api, &names, label, fault).await);
    }
    let recovered_from = Instant::now();
    tokio::time::sleep(RECOVERY_WINDOW).await;
    let recovered = api
        .arrivals()
        .iter()
        .filter(|a| a.method == "auth.test" && a.at >= recovered_from && a.status == 200)
        .count();
    print_fault_table(&windows);
    println!();
    println!(
        "After the faults: {recovered} auth.test calls answered 200 in {} s; operator RSS {} MiB",
        RECOVERY_WINDOW.as_secs(),
        rss_kib(pid) / 1024
    );

    let failures: Vec<String> = windows
        .iter()
        .flat_map(|w| w.not_ready.iter().cloned())
        .collect();
    assert!(
        failures.is_empty(),
        "grants went not-Ready while Slack failed: {failures:?}"
    );
    for w in &windows {
        assert!(w.calls > 0, "no checks were attempted during {}", w.label);
        assert_eq!(
            w.answered_normally, 0,
            "the fault queue ran out during {}",
            w.label
        );
    }
    assert!(
        recovered >= count * 9 / 10,
        "only {recovered} of {count} grants' checks succeeded after Slack recovered"
    );
    let unready = not_ready(&s.grants, &names).await;
    assert!(
        unready.is_empty(),
        "grants not Ready after Slack recovered: {unready:?}"
    );
}

/// Creates `count` grants, each with a token Secret of its own and all with the scenario's
/// client Secret, and approves every one through Slack's consent page and the callback.
async fn make_ready(s: &Scenario, count: usize) -> Vec<String> {
    let started = Instant::now();
    s.create_client_secret().await;
    let names: Vec<String> = (0..count).map(|i| format!("grant-{i}")).collect();
    futures::stream::iter(names.iter().enumerate())
        .for_each_concurrent(SETUP_CONCURRENCY, |(i, name)| async move {
            s.apply_grant(name, json!({ "secret": { "name": format!("token-{i}") } }))
                .await;
        })
        .await;
    let applied = started.elapsed();
    support::wait_for_grants(&s.grants, &names, Duration::from_secs(600), |g| {
        g.status
            .as_ref()
            .is_some_and(|st| st.authorization_url.is_some())
    })
    .await;
    let linked = started.elapsed();
    let links: Vec<String> = s
        .grants
        .list(&Default::default())
        .await
        .expect("list the grants")
        .items
        .into_iter()
        .filter_map(|g| g.status.and_then(|st| st.authorization_url))
        .collect();
    assert_eq!(links.len(), count, "every grant has a link");
    futures::stream::iter(&links)
        .for_each_concurrent(SETUP_CONCURRENCY, |link| async move {
            let answer = s.approve(link).await;
            assert_eq!(answer.status, 200, "the callback succeeds: {}", answer.body);
        })
        .await;
    let approved = started.elapsed();
    support::wait_for_grants(&s.grants, &names, Duration::from_secs(600), is_authorized).await;
    println!(
        "setup: {count} grants applied in {:.0} s, all linked at {:.0} s, approved at {:.0} s, \
         all Ready at {:.0} s",
        applied.as_secs_f64(),
        linked.as_secs_f64(),
        approved.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    names
}

/// What one phase-2 window saw.
struct FaultWindow {
    label: &'static str,
    /// `auth.test` calls the operator made.
    calls: usize,
    /// Checks the operator counted as `unavailable` (each may be several calls: it retries
    /// within the check's deadline).
    checks: f64,
    busiest_second: u32,
    /// Calls answered without the fault: the queue ran out.
    answered_normally: usize,
    samples: usize,
    /// Grants seen not Ready (name: reason), deduplicated.
    not_ready: Vec<String>,
}

async fn fault_window(
    s: &Scenario,
    api: &TimedApi,
    names: &[String],
    label: &'static str,
    fault: Fault,
) -> FaultWindow {
    let expected_status = match fault {
        Fault::ServerError(status) => status,
        Fault::RateLimited { .. } => 429,
        _ => unreachable!("phase 2 injects only 503 and 429"),
    };
    let checks_before = unavailable_checks(&s.operator).await;
    s.slack
        .emulator
        .inject_times("auth.test", fault, FAULTS_QUEUED);
    let from = Instant::now();
    let mut samples = 0;
    let mut seen = BTreeMap::new();
    while from.elapsed() < FAULT_WINDOW {
        for (name, reason) in not_ready(&s.grants, names).await {
            seen.entry(name).or_insert(reason);
        }
        samples += 1;
        tokio::time::sleep(SAMPLE_EVERY.min(FAULT_WINDOW.saturating_sub(from.elapsed()))).await;
    }
    s.slack.emulator.clear_faults("auth.test");
    let window = from.elapsed();
    let checks = unavailable_checks(&s.operator).await - checks_before;
    let arrivals = api.arrivals();
    let calls: Vec<&Arrival> = arrivals
        .iter()
        .filter(|a| a.method == "auth.test" && a.at >= from && a.at < from + window)
        .collect();
    FaultWindow {
        label,
        calls: calls.len(),
        checks,
        busiest_second: api
            .per_second("auth.test", from, window)
            .into_iter()
            .max()
            .unwrap_or_default(),
        // A call that reached the proxy just before the faults were cleared may reach the
        // emulator just after: the last second does not count.
        answered_normally: calls
            .iter()
            .filter(|a| a.at + Duration::from_secs(1) < from + window)
            .filter(|a| a.status != expected_status)
            .count(),
        samples,
        not_ready: seen
            .into_iter()
            .map(|(name, reason)| format!("{name}: {reason}"))
            .collect(),
    }
}

/// The grants of `names` that are not Ready with reason `Authorized`, with what they are, from
/// one list. A grant missing from the list counts as not Ready.
async fn not_ready(grants: &Api<SlackOAuthGrant>, names: &[String]) -> Vec<(String, String)> {
    let listed: BTreeMap<String, SlackOAuthGrant> = grants
        .list(&Default::default())
        .await
        .expect("list the grants")
        .items
        .into_iter()
        .map(|g| (g.name_any(), g))
        .collect();
    names
        .iter()
        .filter_map(|name| match listed.get(name) {
            None => Some((name.clone(), "missing".to_owned())),
            Some(g) if is_authorized(g) => None,
            Some(g) => Some((
                name.clone(),
                format!(
                    "{:?}",
                    g.status.as_ref().and_then(|st| st.conditions.first())
                ),
            )),
        })
        .collect()
}

/// The operator's count of token checks Slack could not answer.
async fn unavailable_checks(operator: &Operator) -> f64 {
    metric_sum(
        &operator.metrics().await,
        "token_checks_total",
        "outcome=\"unavailable\"",
    )
}

fn print_load_table(grants: usize, per_second: &[u32]) {
    println!();
    println!(
        "| Minute after restart | `auth.test` calls | Busiest second (calls, at) | \
         Its share of the minute | p50 / p99 calls per second |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (i, minute) in per_second.chunks(60).enumerate() {
        let calls: u32 = minute.iter().sum();
        let (at, busiest) = minute
            .iter()
            .copied()
            .enumerate()
            .max_by_key(|(_, calls)| *calls)
            .unwrap_or_default();
        println!(
            "| {} | {calls} | {busiest}, at {} s | {:.1}% | {} / {} |",
            i + 1,
            60 * i + at,
            100.0 * f64::from(busiest) / f64::from(calls.max(1)),
            percentile(minute, 0.50),
            percentile(minute, 0.99),
        );
    }
    let calls: u32 = per_second.iter().sum();
    let minutes = per_second.len() as f64 / 60.0;
    println!(
        "| all ({grants} grants, 60 s interval) | {:.0} a minute | {} | | {} / {} |",
        f64::from(calls) / minutes,
        per_second.iter().copied().max().unwrap_or_default(),
        percentile(per_second, 0.50),
        percentile(per_second, 0.99),
    );
}

fn print_fault_table(windows: &[FaultWindow]) {
    println!();
    println!(
        "| Slack answers ({} s each) | `auth.test` calls | Checks the operator counted unavailable | \
         Calls per check | Busiest second | Grant lists sampled | Grants not Ready |",
        FAULT_WINDOW.as_secs()
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for w in windows {
        println!(
            "| {} | {} | {:.0} | {:.1} | {} | {} | {} |",
            w.label,
            w.calls,
            w.checks,
            w.calls as f64 / w.checks.max(1.0),
            w.busiest_second,
            w.samples,
            w.not_ready.len()
        );
    }
}

/// Writes (`verb resource/name by agent`) counted by verb and resource: `12 (10 patch leases, ...)`.
fn write_summary(writes: &[String]) -> String {
    let mut counts = BTreeMap::<String, usize>::new();
    for write in writes {
        let mut words = write.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let resource = words
            .next()
            .and_then(|r| r.split('/').next())
            .unwrap_or_default();
        *counts.entry(format!("{verb} {resource}")).or_default() += 1;
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(what, count)| format!("{count} {what}"))
        .collect();
    format!("{} ({})", writes.len(), parts.join(", "))
}

/// Deletes the namespace while the operator still runs (its finalizers revoke the tokens at the
/// emulator), then stops the operator.
async fn clean_up(s: &mut Scenario) {
    let namespaces = Api::<Namespace>::all(s.client.clone());
    let started = Instant::now();
    if let Err(error) = namespaces
        .delete(&s.ns.name, &DeleteParams::default())
        .await
    {
        eprintln!("cannot delete namespace {}: {error}", s.ns.name);
    }
    let mut gone = false;
    while started.elapsed() < Duration::from_secs(600) {
        if matches!(namespaces.get_opt(&s.ns.name).await, Ok(None)) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    s.operator.terminate().await;
    if gone {
        println!(
            "clean-up: namespace {} deleted in {:.0} s; operator stopped",
            s.ns.name,
            started.elapsed().as_secs_f64()
        );
    } else {
        eprintln!(
            "clean-up: namespace {} still exists after 10 min; operator stopped",
            s.ns.name
        );
    }
}

/// One Web API call as it reached the emulator.
#[derive(Clone)]
struct Arrival {
    at: Instant,
    method: String,
    status: u16,
}

/// A pass-through in front of the emulator's Web API that records when each call arrived.
#[derive(Clone)]
struct TimedApi {
    base: String,
    upstream: String,
    http: reqwest::Client,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

impl TimedApi {
    /// Forwards `<url>/api/<method>` to the emulator at `upstream`.
    async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the timing proxy");
        let api = Self {
            base: format!(
                "http://{}",
                listener.local_addr().expect("the proxy's address")
            ),
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            arrivals: Arc::default(),
        };
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(api.clone());
        tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("serve the timing proxy");
        });
        api
    }

    /// For `--slack-api-url`.
    fn url(&self) -> String {
        format!("{}/api", self.base)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arrival>> {
        self.arrivals.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.lock().clone()
    }

    /// Calls of `method` in each second of `window` from `from`.
    fn per_second(&self, method: &str, from: Instant, window: Duration) -> Vec<u32> {
        let mut seconds = vec![0u32; window.as_secs() as usize];
        for arrival in self.lock().iter().filter(|a| a.method == method) {
            let Some(offset) = arrival.at.checked_duration_since(from) else {
                continue;
            };
            if let Some(second) = seconds.get_mut(offset.as_secs() as usize) {
                *second += 1;
            }
        }
        seconds
    }
}

/// Headers that belong to one hop, not to the request.
const HOP_HEADERS: &[&str] = &["host", "content-length", "connection", "transfer-encoding"];

async fn forward(
    axum::extract::State(api): axum::extract::State<TimedApi>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;

    let at = Instant::now();
    let (parts, body) = request.into_parts();
    let method = parts
        .uri
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return axum::http::StatusCode::BAD_REQUEST.into_response();
    };
    let mut headers = parts.headers.clone();
    for name in HOP_HEADERS {
        headers.remove(*name);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let answer = api
        .http
        .request(parts.method, format!("{}{path}", api.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let (status, headers, body) = match answer {
        Ok(answer) => {
            let status = answer.status();
            let mut headers = answer.headers().clone();
            for name in HOP_HEADERS {
                headers.remove(*name);
            }
            let body = answer.bytes().await.unwrap_or_default();
            (status, headers, body)
        }
        Err(_) => (
            axum::http::StatusCode::BAD_GATEWAY,
            axum::http::HeaderMap::new(),
            Default::default(),
        ),
    };
    api.lock().push(Arrival {
        at,
        method,
        status: status.as_u16(),
    });
    (status, headers, body).into_response()
}
