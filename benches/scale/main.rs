//! Scale, against the local control plane (issue 13): the operator's memory, restart, API
//! requests and latencies with many grants, each time judged as a ratio to a bare client doing
//! the same API work in the same run, because absolute times on a shared machine say little.
//!
//! In one run, with the sizes from `SCALE_*` variables (defaults in [`Params::from_env`]):
//!
//! 1. The operator starts watching 10 namespaces; its idle RSS and its start → ready time.
//! 2. `SCALE_GRANTS` grants are made Ready through the real approval flow, first 1,000 (RSS),
//!    then the rest (RSS).
//! 3. Restart: the bare client LISTs every grant and operator-owned Secret in pages of 500; the
//!    operator starts again, and the bench times until its reconcile counter reaches the number of
//!    grants, while counting its connections to the API server every 200 ms and its requests in
//!    the audit log.
//! 4. Burst: `SCALE_BURST` grants created 64 at a time; each one's time from the create to its
//!    `status.authorizationURL`, against the bare client's create + status update of as many
//!    grants in a namespace the operator does not watch.
//! 5. Callbacks: `SCALE_CALLBACKS` of those grants approved at once; each callback's response
//!    time (the operator answers only once the token Secret is written), against the bare
//!    client's six requests of one callback, as many at once.
//! 6. Idle: `SCALE_IDLE_SECONDS` with nobody acting; the writes to Ready and to waiting grants.
//! 7. `SCALE_UNRELATED` unlabelled 32 KB Secrets in the watched namespaces; the RSS growth.
//! 8. Sizes of the binary and the image; then the namespaces are deleted (the grants'
//!    finalizers need the operator) and the operator stopped.
//!
//! It reports goals as met or not and never asserts on them; it fails only when the setup is
//! broken (no control plane, a grant that never reaches its state) or the run passes
//! `SCALE_DEADLINE_MINUTES`. `make bench` runs it; `docs/benchmarks.md` has the figures, the
//! command and the last results.

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
    runtime::watcher,
};
use serde_json::{Value, json};
use slack_oauth_operator::api::SlackOAuthGrant;

use bare::approve_like_callback;
use common::{
    AuditMark, env_number, is_authorized, metric_sum, minutes_seconds, percentile,
    require_control_plane,
};
use fleet::Fleet;
use observe::{ConnectionSampler, Requests, Rss};
use report::{Row, p50_p99};
use support::Operator;

mod bare;
// Shared with check_load; this binary uses only part of it.
#[path = "../common/mod.rs"]
#[allow(dead_code)]
mod common;
mod fleet;
mod observe;
mod report;
// Shared with the cluster tests; this binary uses only part of them.
#[path = "../../tests/cluster/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

/// The spread: enough namespaces that per-namespace costs show, few enough to list.
const NAMESPACES: usize = 10;
/// The creating client's concurrency in the burst, the operator's and the bare client's alike.
const BURST_CONCURRENCY: usize = 64;
/// The grants whose RSS the first goal names.
const FIRST_CHECKPOINT: usize = 1000;
/// Seconds of RSS samples after each step, once a second.
const SETTLE_SECONDS: u64 = 10;
/// How often the restarted operator's metrics are read: often enough to time a restart of
/// seconds, seldom enough that rendering a series per grant costs the operator little.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How long a shed callback waits before it is sent again: a person reloading the page, not a
/// loop that keeps the operator busy shedding.
const RESEND_AFTER_SHED: Duration = Duration::from_millis(250);
/// The size of each unrelated Secret's data.
const UNRELATED_SECRET_BYTES: usize = 32 * 1024;

/// The run's sizes, from the environment.
#[derive(Clone, Debug, serde::Serialize)]
struct Params {
    grants: usize,
    burst: usize,
    callbacks: usize,
    unrelated: usize,
    idle_seconds: usize,
    deadline_minutes: usize,
}

impl Params {
    fn from_env() -> Self {
        let params = Self {
            grants: env_number("SCALE_GRANTS", 10_000),
            burst: env_number("SCALE_BURST", 1000),
            callbacks: env_number("SCALE_CALLBACKS", 200),
            unrelated: env_number("SCALE_UNRELATED", 10_000),
            idle_seconds: env_number("SCALE_IDLE_SECONDS", 120),
            deadline_minutes: env_number("SCALE_DEADLINE_MINUTES", 45),
        };
        assert!(
            params.callbacks <= params.burst,
            "SCALE_CALLBACKS ({}) approves grants of the burst: at most SCALE_BURST ({})",
            params.callbacks,
            params.burst
        );
        params
    }
}

/// Which phase the run is in, and when each began, for the durations and for the deadline's
/// message (the run's future is dropped when the deadline passes).
#[derive(Clone, Default)]
struct Phases(Arc<Mutex<Vec<(String, Instant)>>>);

impl Phases {
    fn begin(&self, name: &str) {
        let mut phases = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((previous, at)) = phases.last() {
            println!("   ({previous}: {:.0} s)", at.elapsed().as_secs_f64());
        }
        println!("== {name}");
        phases.push((name.to_owned(), Instant::now()));
    }

    /// Each phase with its duration, the last one until now.
    fn durations(&self) -> Vec<(String, Duration)> {
        let phases = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        phases
            .iter()
            .enumerate()
            .map(|(i, (name, at))| {
                let end = phases
                    .get(i + 1)
                    .map_or_else(Instant::now, |(_, next)| *next);
                (name.clone(), end - *at)
            })
            .collect()
    }
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs this binary without `--bench`: a long run is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale runs only under `cargo bench --bench scale` (`make bench`)");
        return;
    }
    let params = Params::from_env();
    let machine = machine();
    println!("scale: machine {machine}; parameters {params:?}");
    require_control_plane("scale").await;

    let started = Instant::now();
    let fleet = Fleet::create(NAMESPACES).await;
    let phases = Phases::default();
    let mut operator = None;
    let deadline = Duration::from_secs(60 * params.deadline_minutes as u64);
    let outcome = AssertUnwindSafe(tokio::time::timeout(
        deadline,
        run(&fleet, &params, &phases, &mut operator),
    ))
    .catch_unwind()
    .await;
    // Results first: deleting thousands of grants takes the operator minutes, and a clean-up
    // that runs out of time must not cost the measurements.
    let durations = phases.durations();
    print_phases(&durations);
    match outcome {
        Ok(Ok((rows, notes, mut raw))) => {
            raw["machine"] = json!(machine);
            raw["parameters"] = json!(params);
            raw["phases_seconds"] = durations
                .iter()
                .map(|(name, took)| (name.clone(), json!(took.as_secs_f64())))
                .collect::<serde_json::Map<_, _>>()
                .into();
            let heading = format!(
                "Machine: {machine}. Parameters: {} grants, burst {}, {} callbacks, {} unrelated \
                 Secrets, idle window {} s; {} watched namespaces.\n",
                params.grants,
                params.burst,
                params.callbacks,
                params.unrelated,
                params.idle_seconds,
                NAMESPACES
            );
            let (markdown, json_path) = report::write(&heading, &rows, &notes, &raw);
            println!();
            println!("{heading}");
            print!("{}", report::table(&rows));
            println!();
            print!("{}", report::notes_list(&notes));
            println!();
            println!(
                "(written to {} and {})",
                markdown.display(),
                json_path.display()
            );
            clean_up(&fleet, operator.as_mut(), &params).await;
            println!("scale took {}", minutes_seconds(started.elapsed()));
        }
        Ok(Err(_)) => {
            clean_up(&fleet, operator.as_mut(), &params).await;
            panic!(
                "scale passed its deadline of {} min (SCALE_DEADLINE_MINUTES) during phase {:?}",
                params.deadline_minutes,
                durations.last().map(|(name, _)| name)
            );
        }
        Err(panic) => {
            clean_up(&fleet, operator.as_mut(), &params).await;
            std::panic::resume_unwind(panic);
        }
    }
}

fn print_phases(durations: &[(String, Duration)]) {
    println!();
    println!("| phase | time |\n| --- | ---: |");
    for (name, took) in durations {
        println!("| {name} | {:.0} s |", took.as_secs_f64());
    }
}

/// `2 cores, 23.6 GiB`.
fn machine() -> String {
    use procfs::Current;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = procfs::Meminfo::current().map_or(0, |m| m.mem_total);
    format!(
        "{cores} cores, {:.1} GiB of memory",
        memory as f64 / f64::from(1 << 30)
    )
}

async fn run(
    fleet: &Fleet,
    p: &Params,
    phases: &Phases,
    slot: &mut Option<Operator>,
) -> (Vec<Row>, Vec<String>, Value) {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut raw = json!({});

    phases.begin("start the operator");
    let started = Instant::now();
    let operator = slot.insert(fleet.spawn_operator("scale"));
    operator.wait_ready().await;
    let start_to_ready = started.elapsed();
    let pid = operator.pid();
    let at_start = Rss::settle(pid, SETTLE_SECONDS).await;
    let heap_at_start = heap_mib(slot.as_ref()).await;

    phases.begin("make grants Ready");
    let first = p.grants.min(FIRST_CHECKPOINT);
    let at_first = make_ready(fleet, 0..first, pid).await;
    let heap_at_first = heap_mib(slot.as_ref()).await;
    let (at_all, heap_at_all) = if p.grants > first {
        let at_all = make_ready(fleet, first..p.grants, pid).await;
        (at_all, heap_mib(slot.as_ref()).await)
    } else {
        (at_first.clone(), heap_at_first)
    };
    rows.push(Row::new(
        "RSS, idle (no grants)",
        format!(
            "{} (heap held {})",
            mib(at_start.last_mib()),
            mib(heap_at_start)
        ),
    ));
    rows.push(rss_row(first, &at_first, heap_at_first));
    if p.grants > first {
        rows.push(rss_row(p.grants, &at_all, heap_at_all));
    }
    raw["rss_kib"] = json!({ "idle": at_start, "first_checkpoint": { "grants": first, "rss": at_first }, "all": { "grants": p.grants, "rss": at_all } });

    phases.begin("restart");
    let restart = restart(fleet, p, slot).await;
    let pid = slot.as_ref().map(Operator::pid).unwrap_or_default();
    restart.rows(p, &at_all, &mut rows);
    if let Some(requests) = &restart.requests {
        notes.push(format!(
            "Restart, API requests from process start until every grant was reconciled (+3 s): {}. \
             By watcher (resource, label selector): {}.",
            requests.summary(1),
            requests.watchers()
        ));
    }
    raw["restart"] = restart.json();

    phases.begin("burst");
    let burst = burst(fleet, p).await;
    burst.rows(&mut rows);
    raw["burst"] = burst.json();

    phases.begin("callbacks");
    let callbacks = callbacks(fleet, p, &burst.links).await;
    callbacks.rows(&mut rows);
    if let Some(requests) = &callbacks.requests {
        notes.push(format!(
            "Callbacks, API requests per callback (from the first callback until 3 s after the \
             last answer, so with the reconciles they trigger): {}.",
            requests.summary(p.callbacks)
        ));
    }
    raw["callbacks"] = callbacks.json();

    phases.begin("idle");
    let idle_writes = idle(fleet, p).await;
    idle_writes.rows(p, &mut rows);
    raw["idle"] = idle_writes.json();

    phases.begin("unrelated Secrets");
    let before = Rss::settle(pid, SETTLE_SECONDS).await;
    create_unrelated(fleet, p.unrelated).await;
    let after = Rss::settle(pid, SETTLE_SECONDS).await;
    rows.push(
        Row::new(
            format!("RSS growth, {} unrelated 32 KB Secrets", p.unrelated),
            format!(
                "{:+.1} MiB ({:.1} → {:.1}; peak after {:.1})",
                after.last_mib() - before.last_mib(),
                before.last_mib(),
                after.last_mib(),
                after.peak_mib()
            ),
        )
        .goal("0", Some(after.last_mib() - before.last_mib() < 1.0)),
    );
    raw["unrelated_secrets_rss_kib"] = json!({ "before": before, "after": after });

    rows.push(
        Row::new(
            "start → ready (`/readyz` 200)",
            format!(
                "{:.1} s (first start, no grants); {:.1} s (restart, {} grants)",
                start_to_ready.as_secs_f64(),
                restart.ready.as_secs_f64(),
                p.grants
            ),
        )
        .goal("report", None),
    );
    raw["start_to_ready_seconds"] =
        json!({ "first": start_to_ready.as_secs_f64(), "restart": restart.ready.as_secs_f64() });
    let sizes = sizes();
    sizes.rows(&mut rows);
    raw["sizes"] = sizes.json();
    (rows, notes, raw)
}

fn mib(value: f64) -> String {
    format!("{value:.1} MiB")
}

/// The heap the operator holds, as its allocator counts it (`heap_allocated_bytes`), in MiB.
async fn heap_mib(operator: Option<&Operator>) -> f64 {
    match operator {
        Some(operator) => {
            metric_sum(&operator.metrics().await, "heap_allocated_bytes", "") / 1024.0 / 1024.0
        }
        None => 0.0,
    }
}

fn rss_row(grants: usize, rss: &Rss, heap: f64) -> Row {
    let goal = match grants {
        1000 => Some(20.0),
        10_000 => Some(60.0),
        _ => None,
    };
    Row::new(
        format!("RSS, {grants} Ready grants"),
        format!(
            "{} (peak {}; heap held {})",
            mib(rss.last_mib()),
            mib(rss.peak_mib()),
            mib(heap)
        ),
    )
    .goal(
        goal.map_or_else(
            || "≤ 20 / 60 MiB at 1,000 / 10,000 (not this size)".to_owned(),
            |g| format!("≤ {g} MiB"),
        ),
        goal.map(|g| rss.last_mib() <= g),
    )
}

/// Creates grants `ready-<i>` for `numbers`, approves each through Slack's consent page and the
/// callback, waits until all are Ready, and returns the operator's RSS then.
async fn make_ready(fleet: &Fleet, numbers: std::ops::Range<usize>, pid: u32) -> Rss {
    let started = Instant::now();
    let count = numbers.len();
    let within = Duration::from_secs(120 + count as u64 / 5);
    let in_range = {
        let numbers = numbers.clone();
        move |g: &SlackOAuthGrant| {
            number_of(&g.name_any(), "ready").is_some_and(|i| numbers.contains(&i))
        }
    };
    fleet.create_grants("ready", numbers.clone()).await;
    let created = started.elapsed();
    let linked = fleet
        .wait_for("linked", count, within, |g| {
            in_range(g)
                && g.status
                    .as_ref()
                    .is_some_and(|st| st.authorization_url.is_some())
        })
        .await;
    let linked_at = started.elapsed();
    fleet.approve(&linked).await;
    let approved = started.elapsed();
    fleet
        .wait_for("Ready", numbers.end, within, |g| {
            number_of(&g.name_any(), "ready").is_some() && is_authorized(g)
        })
        .await;
    println!(
        "   {count} grants created in {:.0} s, linked at {:.0} s, approved at {:.0} s, all {} \
         Ready at {:.0} s",
        created.as_secs_f64(),
        linked_at.as_secs_f64(),
        approved.as_secs_f64(),
        numbers.end,
        started.elapsed().as_secs_f64()
    );
    Rss::settle(pid, SETTLE_SECONDS).await
}

/// `7` for `ready-7` and prefix `ready`.
fn number_of(name: &str, prefix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()
}

struct Restart {
    bare_list: Duration,
    objects_listed: usize,
    ready: Duration,
    /// When the reconcile counter reached the number of grants.
    reached: Duration,
    /// When every grant had been reconciled as Ready.
    reconciled: Duration,
    reconciles_seen: f64,
    requests: Option<Requests>,
    connections: Vec<(f64, usize)>,
    rss: Rss,
}

/// Stops the operator, times the bare client's LIST of what the restart must read, then starts
/// the operator again and watches it until every grant has been reconciled.
async fn restart(fleet: &Fleet, p: &Params, slot: &mut Option<Operator>) -> Restart {
    if let Some(old) = slot.as_mut() {
        old.terminate().await;
    }
    let (bare_list, objects_listed) =
        bare::list_everything(&fleet.client, &fleet.watched_names()).await;
    let port = support::apiserver_port().await;
    let mark = AuditMark::now();
    let started = Instant::now();
    let operator = slot.insert(fleet.spawn_operator("scale-restarted"));
    let sampler = ConnectionSampler::start(operator.pid(), port);
    operator.wait_ready().await;
    let ready = started.elapsed();
    let within = Duration::from_secs(300 + p.grants as u64 / 20);
    // The reconcile counter counts reconciles, not grants (a grant woken by its own watch and
    // by its token Secret's is reconciled twice, and every token's first check after a restart
    // is a reconcile within the first minute), so it reaches the number of grants early. A
    // grant's `grant_ready` series is set by its first reconcile: when every grant has one at
    // 1, every grant has been reconciled and found Ready.
    let mut reached = None;
    let (reconciled, reconciles_seen) = loop {
        let progress = observe::Progress::of(operator).await;
        if progress.reconciles >= p.grants as f64 {
            reached.get_or_insert(started.elapsed());
        }
        if progress.ready_grants >= p.grants {
            break (started.elapsed(), progress.reconciles);
        }
        assert!(
            started.elapsed() < within,
            "the restarted operator had reconciled {} of {} grants as Ready after {within:?}",
            progress.ready_grants,
            p.grants
        );
        tokio::time::sleep(PROGRESS_EVERY).await;
    };
    let reached = reached.unwrap_or(reconciled);
    // Requests in flight when the counter got there still reach the log.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let connections = sampler.stop();
    let requests = mark
        .and_then(|m| m.events_since())
        .map(|events| Requests::from_events(&events, &fleet.namespaces()));
    let rss = Rss::settle(operator.pid(), SETTLE_SECONDS).await;
    println!(
        "   bare LIST of {objects_listed} objects in {:.2} s; operator ready at {:.1} s, \
         {} reconciles at {:.1} s, every grant reconciled at {:.1} s",
        bare_list.as_secs_f64(),
        ready.as_secs_f64(),
        p.grants,
        reached.as_secs_f64(),
        reconciled.as_secs_f64()
    );
    Restart {
        bare_list,
        objects_listed,
        ready,
        reached,
        reconciled,
        reconciles_seen,
        requests,
        connections,
        rss,
    }
}

impl Restart {
    fn peak_connections(&self) -> usize {
        self.connections
            .iter()
            .map(|(_, open)| *open)
            .max()
            .unwrap_or_default()
    }

    fn rows(&self, p: &Params, before: &Rss, rows: &mut Vec<Row>) {
        let ratio = self.rss.last_mib() / before.last_mib().max(f64::MIN_POSITIVE);
        rows.push(
            Row::new(
                format!("RSS after a restart, {} grants", p.grants),
                format!(
                    "{} (before: {})",
                    mib(self.rss.last_mib()),
                    mib(before.last_mib())
                ),
            )
            .goal("same as before (within 10%)", Some(ratio <= 1.1)),
        );
        let ratio = self.reconciled.as_secs_f64() / self.bare_list.as_secs_f64();
        rows.push(
            Row::new(
                format!("restart: every grant reconciled, {} grants", p.grants),
                format!(
                    "{:.2} s (every grant's `grant_ready` series at 1, {} reconciles); \
                     the reconcile counter reached {} at {:.2} s",
                    self.reconciled.as_secs_f64(),
                    self.reconciles_seen,
                    p.grants,
                    self.reached.as_secs_f64()
                ),
            )
            .bare(
                format!(
                    "{:.2} s (paged LIST of {} grants + managed Secrets)",
                    self.bare_list.as_secs_f64(),
                    self.objects_listed
                ),
                ratio,
            )
            .goal("≤ 2 ×", Some(ratio <= 2.0)),
        );
        let Some(requests) = &self.requests else {
            rows.push(Row::new(
                "restart: API requests",
                "not measured (CLUSTER_DIR unset, or the audit log rotated twice)",
            ));
            return;
        };
        let watchers = requests.watches.len();
        // Each watch (resource and label selector, in a namespace) lists once and watches
        // once. Secrets are three watches by design (docs/security.md: only label-selected
        // Secrets are ever listed): the token Secrets, the Secrets shared with grants, and the
        // token records in the operator's namespace.
        let one_each = requests.lists.values().all(|n| *n == 1)
            && requests.watches.values().all(|n| *n == 1)
            && requests.lists.keys().eq(requests.watches.keys());
        rows.push(
            Row::new(
                "restart: API requests (audit log)",
                format!(
                    "{} GET secrets, {} LIST ({} requests with the pages), {} WATCH over {} \
                     watchers in {} namespaces; {} answered 429; {} in all",
                    requests.count("get", "secrets"),
                    requests.lists.values().sum::<usize>(),
                    requests.count("list", "secrets") + requests.count("list", "slackoauthgrants"),
                    requests.watches.values().sum::<usize>(),
                    watchers,
                    NAMESPACES,
                    requests.answered_429,
                    requests.total
                ),
            )
            .goal(
                "one LIST+WATCH per watch (kind and label selector) per watched namespace",
                Some(one_each && requests.answered_429 == 0),
            ),
        );
        let peak = self.peak_connections();
        rows.push(
            Row::new(
                "restart: peak TCP connections to the API server",
                format!("{peak} ({} samples, every 200 ms)", self.connections.len()),
            )
            .goal("a handful (≤ 10)", Some(peak <= 10)),
        );
    }

    fn json(&self) -> Value {
        json!({
            "bare_list_seconds": self.bare_list.as_secs_f64(),
            "objects_listed": self.objects_listed,
            "ready_seconds": self.ready.as_secs_f64(),
            "reconciles_reached_grants_seconds": self.reached.as_secs_f64(),
            "every_grant_reconciled_seconds": self.reconciled.as_secs_f64(),
            "reconciles_counted": self.reconciles_seen,
            "requests": self.requests,
            "connections": self.connections,
            "rss_kib": self.rss,
        })
    }
}

/// Latencies of one kind, in milliseconds, with their percentiles.
fn latency_json(latencies: &[Duration]) -> Value {
    json!({
        "p50_ms": report::ms(percentile(latencies, 0.50)),
        "p90_ms": report::ms(percentile(latencies, 0.90)),
        "p99_ms": report::ms(percentile(latencies, 0.99)),
        "max_ms": report::ms(percentile(latencies, 1.0)),
        "samples_ms": latencies.iter().map(|d| report::ms(*d)).collect::<Vec<_>>(),
    })
}

/// When a burst grant's link first appeared on the watch.
struct Linked {
    at: Instant,
    link: String,
}

struct Burst {
    operator: Vec<Duration>,
    bare: Vec<Duration>,
    /// Every burst grant's link, in the order of their numbers, for the callbacks.
    links: Vec<String>,
}

/// Creates `SCALE_BURST` grants at [`BURST_CONCURRENCY`], timing each from the create to the
/// operator's link appearing on a watch; and as many bare grants, each created and given a
/// status by the bare client.
async fn burst(fleet: &Fleet, p: &Params) -> Burst {
    let bare_grants: Api<SlackOAuthGrant> = fleet.grants_in(&fleet.bare.name);
    let bare: Vec<Duration> = futures::stream::iter(0..p.burst)
        .map(|i| {
            let bare_grants = &bare_grants;
            async move {
                bare::create_and_publish(bare_grants, &fleet.grant(&format!("bare-{i}"))).await
            }
        })
        .buffer_unordered(BURST_CONCURRENCY)
        .collect()
        .await;

    // When each grant's link first appeared, from a watch on every watched namespace that is
    // running before the first create.
    let linked: Arc<Mutex<HashMap<String, Linked>>> = Arc::default();
    let (synced_tx, mut synced) = tokio::sync::mpsc::channel(NAMESPACES);
    let watches: Vec<_> = fleet
        .watched
        .iter()
        .map(|ns| {
            let linked = linked.clone();
            let synced_tx = synced_tx.clone();
            let stream = watcher(fleet.grants_in(&ns.name), watcher::Config::default());
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(watcher::Event::InitDone) => {
                            let _ = synced_tx.send(()).await;
                        }
                        Ok(watcher::Event::Apply(g) | watcher::Event::InitApply(g)) => {
                            let link = g
                                .status
                                .as_ref()
                                .and_then(|st| st.authorization_url.clone());
                            if let (Some(link), true) = (link, g.name_any().starts_with("burst-")) {
                                linked
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .entry(g.name_any())
                                    .or_insert(Linked {
                                        at: Instant::now(),
                                        link,
                                    });
                            }
                        }
                        _ => {}
                    }
                }
            })
        })
        .collect();
    for _ in 0..NAMESPACES {
        synced
            .recv()
            .await
            .expect("every watch lists its namespace");
    }
    let created: HashMap<String, Instant> = futures::stream::iter(0..p.burst)
        .map(|i| async move {
            let name = format!("burst-{i}");
            let at = Instant::now();
            fleet
                .grants_in(fleet.namespace_of(i))
                .create(&PostParams::default(), &fleet.grant(&name))
                .await
                .unwrap_or_else(|e| panic!("create grant {name}: {e}"));
            (name, at)
        })
        .buffer_unordered(BURST_CONCURRENCY)
        .collect()
        .await;
    let within = Duration::from_secs(120 + p.burst as u64 / 10);
    let started = Instant::now();
    loop {
        let seen = linked.lock().unwrap_or_else(PoisonError::into_inner).len();
        if seen >= p.burst {
            break;
        }
        assert!(
            started.elapsed() < within,
            "only {seen} of {} burst grants got a link within {within:?}",
            p.burst
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for watch in watches {
        watch.abort();
    }
    let linked = linked.lock().unwrap_or_else(PoisonError::into_inner);
    let operator = created
        .iter()
        .map(|(name, at)| linked[name].at - *at)
        .collect();
    let links = (0..p.burst)
        .map(|i| linked[&format!("burst-{i}")].link.clone())
        .collect();
    Burst {
        operator,
        bare,
        links,
    }
}

impl Burst {
    fn rows(&self, rows: &mut Vec<Row>) {
        let p99 = percentile(&self.operator, 0.99);
        let bare_p99 = percentile(&self.bare, 0.99);
        let ratio = p99.as_secs_f64() / bare_p99.as_secs_f64();
        rows.push(
            Row::new(
                format!(
                    "apply → `status.authorizationURL`, {}-grant burst ({BURST_CONCURRENCY} at once)",
                    self.operator.len()
                ),
                p50_p99(percentile(&self.operator, 0.50), p99),
            )
            .bare(
                format!(
                    "{} (create + status update)",
                    p50_p99(percentile(&self.bare, 0.50), bare_p99)
                ),
                ratio,
            )
            .goal("p99 ≤ 1.5 ×", Some(ratio <= 1.5)),
        );
    }

    fn json(&self) -> Value {
        json!({
            "concurrency": BURST_CONCURRENCY,
            "operator": latency_json(&self.operator),
            "bare": latency_json(&self.bare),
        })
    }
}

struct Callbacks {
    operator: Vec<Duration>,
    /// Callbacks answered 503 (shed: every custody slot taken) and sent again.
    shed: usize,
    bare: Vec<Duration>,
    requests: Option<Requests>,
}

/// Approves the first `SCALE_CALLBACKS` burst grants at once: every consent is given first,
/// then every callback is sent together and timed until the operator answers (it answers
/// once the token Secret is written). A callback shed with 503 is sent again after
/// [`RESEND_AFTER_SHED`], as a person would reload the page, and its time runs from the first
/// send.
async fn callbacks(fleet: &Fleet, p: &Params, links: &[String]) -> Callbacks {
    let backs: Vec<String> = futures::stream::iter(&links[..p.callbacks])
        .map(|link| fleet.consent(link))
        .buffered(32)
        .collect()
        .await;
    let mark = AuditMark::now();
    let answers = futures::future::join_all(backs.iter().map(|back| async move {
        let started = Instant::now();
        let mut shed = 0;
        loop {
            let answer = fleet
                .http
                .get(back)
                .send()
                .await
                .expect("the callback answers");
            let status = answer.status().as_u16();
            let body = answer.text().await.unwrap_or_default();
            match status {
                503 => {
                    shed += 1;
                    tokio::time::sleep(RESEND_AFTER_SHED).await;
                }
                200 => return (started.elapsed(), shed),
                _ => panic!("a callback failed with {status}: {body}"),
            }
        }
    }))
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests = mark
        .and_then(|m| m.events_since())
        .map(|events| Requests::from_events(&events, &fleet.namespaces()));
    fleet
        .wait_for(
            "Ready after the callbacks",
            p.callbacks,
            Duration::from_secs(300),
            |g| {
                number_of(&g.name_any(), "burst").is_some_and(|i| i < p.callbacks)
                    && is_authorized(g)
            },
        )
        .await;

    let bare_grants = fleet.grants_in(&fleet.bare.name);
    let bare_secrets: Api<Secret> = Api::namespaced(fleet.client.clone(), &fleet.bare.name);
    let bare = futures::future::join_all((0..p.callbacks).map(|i| {
        let (grants, secrets) = (&bare_grants, &bare_secrets);
        async move {
            approve_like_callback(
                grants,
                secrets,
                &format!("bare-{i}"),
                fleet::CLIENT_SECRET_NAME,
            )
            .await
        }
    }))
    .await;
    Callbacks {
        operator: answers.iter().map(|(took, _)| *took).collect(),
        shed: answers.iter().map(|(_, shed)| shed).sum(),
        bare,
        requests,
    }
}

impl Callbacks {
    fn rows(&self, rows: &mut Vec<Row>) {
        let p99 = percentile(&self.operator, 0.99);
        let bare_p99 = percentile(&self.bare, 0.99);
        let ratio = p99.as_secs_f64() / bare_p99.as_secs_f64();
        let per_callback = self.requests.as_ref().map_or_else(
            || "requests not measured".to_owned(),
            |r| {
                format!(
                    "{:.1} API requests per callback",
                    r.total as f64 / self.operator.len().max(1) as f64
                )
            },
        );
        rows.push(
            Row::new(
                format!(
                    "callback → token Secret written, {} at once",
                    self.operator.len()
                ),
                format!(
                    "{}; {} answers were 503 (shed) and sent again; {per_callback}",
                    p50_p99(percentile(&self.operator, 0.50), p99),
                    self.shed
                ),
            )
            .bare(
                format!(
                    "{} (six requests)",
                    p50_p99(percentile(&self.bare, 0.50), bare_p99)
                ),
                ratio,
            )
            .goal("p99 ≤ 1 ×", Some(ratio <= 1.0)),
        );
    }

    fn json(&self) -> Value {
        json!({
            "operator": latency_json(&self.operator),
            "shed_503": self.shed,
            "bare": latency_json(&self.bare),
            "requests": self.requests,
            "requests_per_callback": self.requests.as_ref().map(|r| r.total as f64 / self.operator.len().max(1) as f64),
        })
    }
}

struct Idle {
    seconds: f64,
    ready_grants: usize,
    waiting_grants: usize,
    /// `None` when the audit log could not be read.
    writes: Option<IdleWrites>,
}

#[derive(Default, serde::Serialize)]
struct IdleWrites {
    ready: Vec<String>,
    waiting: Vec<String>,
    other: Vec<String>,
}

/// Nobody acts for `SCALE_IDLE_SECONDS`: the writes to Ready grants (and their Secrets and
/// Events), to grants waiting for approval, and to anything else, but the Lease.
async fn idle(fleet: &Fleet, p: &Params) -> Idle {
    let mark = AuditMark::now();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(p.idle_seconds as u64)).await;
    let seconds = started.elapsed().as_secs_f64();
    let writes = mark.and_then(|m| m.events_since()).map(|events| {
        let mut writes = IdleWrites::default();
        for write in observe::writes(&events, &fleet.namespaces()) {
            let name = write.rsplit('/').next().unwrap_or_default();
            let grant = name.split(['.', '-']).take(2).collect::<Vec<_>>().join("-");
            if number_of(&grant, "ready").is_some()
                || number_of(&grant, "burst").is_some_and(|i| i < p.callbacks)
            {
                writes.ready.push(write);
            } else if number_of(&grant, "burst").is_some() {
                writes.waiting.push(write);
            } else {
                writes.other.push(write);
            }
        }
        writes
    });
    Idle {
        seconds,
        ready_grants: p.grants + p.callbacks,
        waiting_grants: p.burst - p.callbacks,
        writes,
    }
}

impl Idle {
    fn per_grant_hour(&self, writes: usize, grants: usize) -> f64 {
        writes as f64 / grants.max(1) as f64 * 3600.0 / self.seconds
    }

    fn rows(&self, p: &Params, rows: &mut Vec<Row>) {
        let Some(writes) = &self.writes else {
            rows.push(Row::new(
                "writes while idle",
                "not measured (CLUSTER_DIR unset, or the audit log rotated twice)",
            ));
            return;
        };
        let listed = |writes: &[String]| {
            if writes.is_empty() {
                String::new()
            } else {
                format!(": {}", summarize(writes))
            }
        };
        rows.push(
            Row::new(
                format!(
                    "writes per idle Ready grant per hour ({} grants, {:.0} s)",
                    self.ready_grants, self.seconds
                ),
                format!(
                    "{:.3} ({} writes{}; other writes but the Lease: {}{})",
                    self.per_grant_hour(writes.ready.len(), self.ready_grants),
                    writes.ready.len(),
                    listed(&writes.ready),
                    writes.other.len(),
                    listed(&writes.other)
                ),
            )
            .goal("0", Some(writes.ready.is_empty())),
        );
        rows.push(
            Row::new(
                format!(
                    "writes per waiting grant per hour, link expiry ({} grants, {:.0} s, \
                     default `--authorization-ttl`)",
                    p.burst - p.callbacks,
                    self.seconds
                ),
                format!(
                    "{:.3} ({} writes{})",
                    self.per_grant_hour(writes.waiting.len(), self.waiting_grants),
                    writes.waiting.len(),
                    listed(&writes.waiting)
                ),
            )
            .goal("0 while nobody acts", Some(writes.waiting.is_empty())),
        );
    }

    fn json(&self) -> Value {
        json!({
            "seconds": self.seconds,
            "ready_grants": self.ready_grants,
            "waiting_grants": self.waiting_grants,
            "writes": self.writes,
        })
    }
}

/// `3 update slackoauthgrants/status, 1 create events`: writes counted by verb and resource.
fn summarize(writes: &[String]) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for write in writes {
        let what = write.split('/').next().unwrap_or_default();
        *counts.entry(what).or_default() += 1;
    }
    counts
        .iter()
        .map(|(what, count)| format!("{count} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates `count` Secrets of 32 KB that no label shares with the operator, spread over the
/// watched namespaces.
async fn create_unrelated(fleet: &Fleet, count: usize) {
    let data = "x".repeat(UNRELATED_SECRET_BYTES);
    let data = &data;
    futures::stream::iter(0..count)
        .for_each_concurrent(BURST_CONCURRENCY, |i| async move {
            let secret: Secret = serde_json::from_value(json!({
                "metadata": { "name": format!("unrelated-{i}") },
                "stringData": { "data": data }
            }))
            .expect("unrelated Secret");
            Api::<Secret>::namespaced(fleet.client.clone(), fleet.namespace_of(i))
                .create(&PostParams::default(), &secret)
                .await
                .expect("create an unrelated Secret");
        })
        .await;
}

struct Sizes {
    /// The binary under test, as `cargo bench` built it: the bench profile inherits release
    /// (`opt-level = "s"`, fat LTO, stripped) and writes to `<target>/release/`, where
    /// `make build` puts the same binary.
    binary: u64,
    /// The first OCI archive under `<target>/image/`, if `make image` has made one.
    image: Option<(String, u64)>,
}

fn sizes() -> Sizes {
    let size = |path: &std::path::Path| std::fs::metadata(path).ok().map(|m| m.len());
    let target = report::out_dir()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let image = std::fs::read_dir(target.join("image"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.to_string_lossy().ends_with(".oci.tar"))
        .and_then(|path| Some((path.display().to_string(), size(&path)?)));
    Sizes {
        binary: size(std::path::Path::new(env!(
            "CARGO_BIN_EXE_slack-oauth-operator"
        )))
        .unwrap_or_default(),
        image,
    }
}

impl Sizes {
    fn rows(&self, rows: &mut Vec<Row>) {
        let mb = |bytes: u64| bytes as f64 / 1e6;
        rows.push(
            Row::new(
                "binary size (stripped)",
                format!(
                    "{:.1} MB (bench profile = release settings, `target/release/`)",
                    mb(self.binary)
                ),
            )
            .goal("≤ 12 MB", Some(mb(self.binary) <= 12.0)),
        );
        rows.push(match &self.image {
            Some((path, bytes)) => Row::new(
                "image size (OCI archive)",
                format!("{:.1} MB ({path})", mb(*bytes)),
            )
            .goal("≤ 30 MB", Some(mb(*bytes) <= 30.0)),
            None => Row::new(
                "image size (OCI archive)",
                "not built (`IMAGE_BASES=stand-in make image`)",
            )
            .goal("≤ 30 MB", None),
        });
    }

    fn json(&self) -> Value {
        json!({
            "binary_bytes": self.binary,
            "image": self.image.as_ref().map(|(path, bytes)| json!({ "path": path, "bytes": bytes })),
        })
    }
}

/// Deletes every namespace of the run while the operator still runs (the grants' finalizers
/// revoke their tokens at the emulator), then stops the operator. The operator removes
/// finalizers at a pace of its own (under 10 grants a second on the 2-core machine), so the wait
/// grows with the grants; progress is printed every 30 s.
async fn clean_up(fleet: &Fleet, operator: Option<&mut Operator>, p: &Params) {
    println!("== clean up");
    let namespaces = Api::<Namespace>::all(fleet.client.clone());
    let grants = p.grants + p.burst;
    let within = Duration::from_secs(300) + Duration::from_millis(250) * grants as u32;
    let started = Instant::now();
    for name in fleet.namespaces() {
        if let Err(error) = namespaces.delete(&name, &DeleteParams::default()).await {
            eprintln!("cannot delete namespace {name}: {error}");
        }
    }
    let mut left = fleet.namespaces();
    let mut reported = Instant::now();
    while !left.is_empty() && started.elapsed() < within {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut still = Vec::new();
        for name in left {
            if !matches!(namespaces.get_opt(&name).await, Ok(None)) {
                still.push(name);
            }
        }
        left = still;
        if reported.elapsed() >= Duration::from_secs(30) && !left.is_empty() {
            let mut remaining = 0;
            for ns in &fleet.watched {
                remaining += fleet
                    .grants_in(&ns.name)
                    .list_metadata(&Default::default())
                    .await
                    .map_or(0, |list| list.items.len());
            }
            println!(
                "   {:.0} s: {remaining} of {grants} grants left to delete",
                started.elapsed().as_secs_f64()
            );
            reported = Instant::now();
        }
    }
    if let Some(operator) = operator {
        operator.terminate().await;
    }
    if left.is_empty() {
        println!(
            "   namespaces deleted in {:.0} s; operator stopped",
            started.elapsed().as_secs_f64()
        );
    } else {
        eprintln!(
            "clean-up: namespaces {left:?} still exist after {within:?}; operator stopped \
             (delete the grants' finalizers by hand)"
        );
    }
}
