//! The public callback under attack (docs/security.md, "The public callback"): a flood of forged
//! `state`s, whose namespace and name carry query and path characters, is refused at once with a
//! 4xx, before any API call or log line takes anything from them, while real authorizations keep
//! completing quickly beside it.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::{Rng, RngExt};
use serde_json::json;
use slack_emulator::Decision;

use crate::{scenario::Scenario, support};

/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(60);
/// Clients sending forged callbacks at once, each as fast as it is answered.
const FLOOD_CLIENTS: usize = 64;
/// How long a flood client waits for an answer: as long as an attacker who wants to tie up the
/// server holds on, rather than hanging up and so freeing what its request holds.
const FORGED_TIMEOUT: Duration = Duration::from_secs(30);
/// What a forged callback may take, at its slowest: refusing one needs no I/O.
const FORGED_BUDGET: Duration = Duration::from_secs(5);
/// What a real callback may take, at its slowest, during the flood.
const REAL_BUDGET: Duration = Duration::from_secs(2);
/// How long a real callback is waited for before it counts as lost.
const REAL_TIMEOUT: Duration = Duration::from_secs(15);

/// Names (and namespaces) that would change the API request if they reached its path unchecked:
/// query strings, `..`, slashes, escapes, CR LF and terminal escapes.
const INJECTED: &[&str] = &[
    "?watch=true&timeoutSeconds=3600",
    "?limit=500",
    "../../secrets",
    "a/b",
    "%2F",
    "x\r\nINJECT",
    "\u{1b}[31mINJECT\u{1b}[0m",
    "..%2F..%2Fsecrets",
    "real-0/status",
    "real-0?labelSelector=hardening%3Dprobe",
    "real-0#INJECT",
];

/// Texts that only the injected names above carry, never a request the operator means to make.
/// Not `watch=true` or `limit=500` alone, nor `%2F` in a query: the controller's own watches and
/// lists carry those (`?watch=true&timeoutSeconds=290`, `limit=500`, label selectors); their
/// shape is checked instead (`misplaced_request`, `foreign_grant_list`).
const INJECTED_IN_A_REQUEST: &[&str] = &[
    "timeoutSeconds=3600",
    "INJECT",
    "hardening%3Dprobe",
    "hardening=probe",
    "..",
    "/?",
    "#",
    "%0D",
    "%0d",
    "%0A",
    "%0a",
    "%1B",
    "%1b",
    "\u{1b}",
];

/// Texts that only the injected names carry, as they would appear in the operator's JSON log.
const INJECTED_IN_A_LOG: &[&str] = &[
    "timeoutSeconds=3600",
    "?limit=500",
    "../../secrets",
    "\"a/b\"",
    "\"%2F\"",
    "INJECT",
    "hardening%3Dprobe",
    "..%2F",
    "\\u001b",
    "\u{1b}",
];

/// What the flood clients saw.
#[derive(Default)]
struct FloodStats {
    sent: usize,
    statuses: BTreeMap<u16, usize>,
    timeouts: usize,
    transport_errors: usize,
    first_errors: Vec<String>,
    latencies: Vec<Duration>,
}

impl FloodStats {
    fn merge(&mut self, other: Self) {
        self.sent += other.sent;
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.timeouts += other.timeouts;
        self.transport_errors += other.transport_errors;
        self.first_errors.extend(other.first_errors);
        self.first_errors.truncate(5);
        self.latencies.extend(other.latencies);
    }
}

/// One real authorization during the flood.
struct Real {
    name: String,
    link: String,
    state: String,
    /// `None` when the callback was not answered within `REAL_TIMEOUT`.
    latency: Option<Duration>,
    status: Option<u16>,
    token_stored: bool,
}

fn random_b64(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

/// A state in the old, unauthenticated format (`s1.` + base64url(JSON)) naming `namespace/name`.
fn unsigned_payload(namespace: &str, name: &str) -> String {
    let json = json!({
        "ns": namespace,
        "n": name,
        "u": "x",
        "g": 1,
        "e": 9_999_999_999_i64,
        "r": random_b64(32),
    });
    URL_SAFE_NO_PAD.encode(json.to_string())
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Callback queries with forged states, as an attacker who read the operator's source would
/// write them: old-format and `s2.<payload>.<mac>`-shaped states naming injected grants, garbage,
/// overlong states and repeated parameters.
fn forged_queries(namespace: &str) -> Vec<String> {
    let mut namespaces = vec![namespace.to_owned()];
    namespaces.extend(
        [
            "kube-system",
            "?watch=true&timeoutSeconds=3600",
            "../../api/v1/secrets?INJECT",
        ]
        .map(str::to_owned),
    );
    namespaces.push(format!(
        "{namespace}/slackoauthgrants?watch=true&timeoutSeconds=3600#"
    ));
    let mut states = Vec::new();
    for ns in &namespaces {
        for name in INJECTED {
            let payload = unsigned_payload(ns, name);
            states.push(format!("s1.{payload}"));
            states.push(format!("s2.{payload}.{}", random_b64(32)));
            states.push(format!("s2.{payload}.{}", random_b64(64)));
            states.push(format!("s2.{payload}."));
            states.push(format!("s2.{payload}"));
            states.push(format!(
                "s2.{}.{}",
                URL_SAFE_NO_PAD.encode(name),
                random_b64(32)
            ));
        }
    }
    for name in INJECTED {
        states.push((*name).to_owned());
        states.push(format!("s1.{name}"));
        states.push(format!("s2.{name}.{name}"));
    }
    let mut rng = rand::rng();
    for _ in 0..40 {
        let mut garbage = vec![0u8; rng.random_range(1..200)];
        rng.fill_bytes(&mut garbage);
        states.push(String::from_utf8_lossy(&garbage).into_owned());
        states.push(random_b64(rng.random_range(1..300)));
    }
    states.extend([
        String::new(),
        "s1.".to_owned(),
        "s2.".to_owned(),
        "s2..".to_owned(),
        "s2.\0.\0".to_owned(),
        format!("s1.{}", "A".repeat(4000)),
        format!("s2.{}.{}", "A".repeat(3000), "B".repeat(3000)),
        format!(
            "s2.{}.{}",
            unsigned_payload(namespace, &"a".repeat(5000)),
            random_b64(32)
        ),
        "x".repeat(12_000),
    ]);

    let mut queries: Vec<String> = Vec::new();
    for state in &states {
        let state = encode(state);
        queries.push(format!("code=forged&state={state}"));
        queries.push(format!("state={state}&code=forged"));
        queries.push(format!("error=access_denied&state={state}"));
    }
    let some = encode(&format!(
        "s2.{}.{}",
        unsigned_payload(namespace, INJECTED[0]),
        random_b64(32)
    ));
    queries.extend([
        String::new(),
        "code=forged".to_owned(),
        "state=".to_owned(),
        format!("state={some}&state={some}"),
        format!("code=a&code=b&state={some}"),
        format!("state={some}&error=access_denied&error=x"),
        format!("code={}&state={some}", encode(INJECTED[0])),
        format!("{}={some}", encode("state\r\nINJECT")),
        format!("state={some}&{}", "p=1&".repeat(500)),
    ]);
    queries
}

/// One flood client: its own connection, forged callbacks one after another until `until`.
async fn flood_client(url: String, queries: Arc<Vec<String>>, until: Instant) -> FloodStats {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FORGED_TIMEOUT)
        .build()
        .expect("http");
    let mut stats = FloodStats::default();
    let mut next = rand::rng().random_range(0..queries.len());
    while Instant::now() < until {
        let query = &queries[next % queries.len()];
        next += 1;
        stats.sent += 1;
        let started = Instant::now();
        let answer = match http.get(format!("{url}?{query}")).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                response.bytes().await.map(|_| status)
            }
            Err(error) => Err(error),
        };
        match answer {
            Ok(status) => {
                stats.latencies.push(started.elapsed());
                *stats.statuses.entry(status).or_default() += 1;
            }
            Err(error) if error.is_timeout() => stats.timeouts += 1,
            Err(error) => {
                stats.transport_errors += 1;
                if stats.first_errors.len() < 5 {
                    stats.first_errors.push(format!("{error:?}"));
                }
                // A refused or reset connection: do not spin on it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    stats
}

/// One real authorization, timed from the browser's request to the operator's answer.
async fn authorize(s: &Scenario, i: usize) -> Real {
    let name = format!("real-{i}");
    let token_secret = format!("token-{i}");
    s.apply_grant(&name, json!({ "secret": { "name": token_secret } }))
        .await;
    let link = s.open(&s.link(&name).await).await;
    let state = url::Url::parse(&link)
        .expect("the link is a URL")
        .query_pairs()
        .find(|(key, _)| key == "state")
        .map(|(_, value)| value.into_owned())
        .expect("the link carries a state");
    let back = s.decide(&link, Decision::Allow).await;
    let started = Instant::now();
    let answer = s.http.get(&back).timeout(REAL_TIMEOUT).send().await;
    let (latency, status) = match answer {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            (Some(started.elapsed()), Some(status))
        }
        Err(_) => (None, None),
    };
    let token_stored = s
        .secrets
        .get_opt(&token_secret)
        .await
        .expect("read the token Secret")
        .and_then(|secret| secret.data)
        .is_some_and(|data| data.contains_key("SLACK_ACCESS_TOKEN"));
    Real {
        name,
        link,
        state,
        latency,
        status,
        token_stored,
    }
}

/// The `q`-quantile of sorted `values`.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn split_uri(uri: &str) -> (&str, &str) {
    uri.split_once('?').unwrap_or((uri, ""))
}

/// Why a request's path under `/namespaces/<namespace>/` is not one the operator (or the test)
/// would build from valid names: `<resource>[/<DNS name>[/status]]`.
fn misplaced_request(uri: &str, namespace: &str) -> Option<&'static str> {
    let (path, _) = split_uri(uri);
    let marker = format!("/namespaces/{namespace}");
    let (_, rest) = path.split_once(&marker)?;
    // Nothing after the namespace is the namespace itself; anything but a slash, another one.
    let rest = rest.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.len() > 3 {
        return Some("more path segments than resource/name/subresource");
    }
    if segments.iter().any(|s| s.is_empty()) {
        return Some("an empty path segment");
    }
    let lower_alpha = |s: &str| s.chars().all(|c| c.is_ascii_lowercase());
    if !lower_alpha(segments[0]) {
        return Some("a resource that is not a plain word");
    }
    if let Some(name) = segments.get(1) {
        let dns = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !dns || name.contains("..") || name.starts_with('.') {
            return Some("a name that is not a DNS name");
        }
    }
    // Grants and Secrets have no subresource the operator reads or writes but a grant's status.
    if segments.get(2).is_some_and(|sub| *sub != "status") {
        return Some("a subresource other than status");
    }
    None
}

/// Whether a list or watch of grants differs from the controller's own: the collection path of
/// the namespace, and only the parameters kube's watcher sends.
fn foreign_grant_list(uri: &str, namespace: &str) -> bool {
    let (path, query) = split_uri(uri);
    let collection =
        format!("/apis/slack-oauth-operator.io/v1alpha1/namespaces/{namespace}/slackoauthgrants");
    if path != collection {
        return true;
    }
    url::form_urlencoded::parse(query.as_bytes()).any(|(key, value)| match key.as_ref() {
        "watch" | "allowWatchBookmarks" | "sendInitialEvents" => value != "true",
        "timeoutSeconds" => !matches!(value.parse::<u32>(), Ok(t) if t <= 300),
        "limit" => !matches!(value.parse::<u32>(), Ok(l) if l <= 500),
        "resourceVersion" => !value.chars().all(|c| c.is_ascii_digit()),
        "resourceVersionMatch" | "continue" => false,
        _ => true,
    })
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn forged_state_flood_neither_blocks_real_callbacks_nor_reaches_the_api_or_the_log() {
    // From before the operator starts, so that its own watch of grants is in view too.
    let audit = support::audit_log();
    let from = support::audit_offset(&audit);
    let s = Scenario::start("forged-state-flood").await;
    s.create_client_secret().await;

    let queries = Arc::new(forged_queries(&s.ns.name));
    let url = format!("{}/oauth/callback", s.operator.public_url);
    let until = Instant::now() + FLOOD;
    let flood: Vec<_> = (0..FLOOD_CLIENTS)
        .map(|_| tokio::spawn(flood_client(url.clone(), queries.clone(), until)))
        .collect();

    // Real authorizations, one after another, for as long as the flood lasts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut reals = Vec::new();
    while Instant::now() + Duration::from_secs(3) < until {
        reals.push(authorize(&s, reals.len()).await);
    }
    let mut forged = FloodStats::default();
    for client in flood {
        forged.merge(client.await.expect("flood client"));
    }
    // Let the last audit events of requests still in flight be written.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // One not answered at all counts as taking REAL_TIMEOUT, which it took at least.
    let mut real_latencies: Vec<Duration> = reals
        .iter()
        .map(|r| r.latency.unwrap_or(REAL_TIMEOUT))
        .collect();
    real_latencies.sort();
    forged.latencies.sort();
    println!(
        "forged callbacks: {} sent by {FLOOD_CLIENTS} clients in {FLOOD:?}, answers by status {:?}, \
         {} not answered within {FORGED_TIMEOUT:?}, {} transport errors; answered in p50 {:?}, \
         p99 {:?}, max {:?}",
        forged.sent,
        forged.statuses,
        forged.timeouts,
        forged.transport_errors,
        quantile(&forged.latencies, 0.5),
        quantile(&forged.latencies, 0.99),
        quantile(&forged.latencies, 1.0),
    );
    println!(
        "real callbacks: {} run, {} answered within {REAL_TIMEOUT:?}, {} stored their token; \
         p50 {:?}, p99 {:?}, max {:?}",
        reals.len(),
        reals.iter().filter(|r| r.latency.is_some()).count(),
        reals.iter().filter(|r| r.token_stored).count(),
        quantile(&real_latencies, 0.5),
        quantile(&real_latencies, 0.99),
        quantile(&real_latencies, 1.0),
    );

    let mut failures = Vec::new();

    // The forged callbacks: every one answered, quickly, with a 4xx.
    let not_4xx: BTreeMap<_, _> = forged
        .statuses
        .iter()
        .filter(|(status, _)| !(400..500).contains(*status))
        .collect();
    if !not_4xx.is_empty() {
        failures.push(format!(
            "forged callbacks must get a 4xx, never a 5xx; other answers by status: {not_4xx:?}"
        ));
    }
    if forged.timeouts > 0 {
        failures.push(format!(
            "{} of {} forged callbacks were not answered within {FORGED_TIMEOUT:?}",
            forged.timeouts, forged.sent
        ));
    }
    if forged.transport_errors * 100 > forged.sent {
        failures.push(format!(
            "{} of {} forged callbacks failed without an answer, e.g. {:?}",
            forged.transport_errors, forged.sent, forged.first_errors
        ));
    }
    let (forged_p99, forged_max) = (
        quantile(&forged.latencies, 0.99),
        quantile(&forged.latencies, 1.0),
    );
    if forged_p99 >= REAL_BUDGET || forged_max >= FORGED_BUDGET {
        failures.push(format!(
            "forged callbacks were answered in p99 {forged_p99:?}, max {forged_max:?}, not at once \
             (p99 under {REAL_BUDGET:?}, max under {FORGED_BUDGET:?} expected)"
        ));
    }

    // The real ones: each stored its token, none waited behind the flood.
    if reals.len() < 5 {
        failures.push(format!(
            "only {} real authorizations completed their round trip during the flood",
            reals.len()
        ));
    }
    for real in &reals {
        match (real.status, real.latency) {
            (Some(200), Some(latency)) if latency < REAL_BUDGET => {}
            (status, latency) => failures.push(format!(
                "real callback of {} answered {status:?} after {latency:?} (budget {REAL_BUDGET:?}; \
                 None: not within {REAL_TIMEOUT:?})",
                real.name
            )),
        }
        if !real.token_stored {
            failures.push(format!("real callback of {} stored no token", real.name));
        }
    }
    if quantile(&real_latencies, 0.99) >= REAL_BUDGET {
        failures.push(format!(
            "real callbacks took p99 {:?}, over {REAL_BUDGET:?}",
            quantile(&real_latencies, 0.99)
        ));
    }

    // (a) Nothing injected reached the API server.
    let events = support::audit_events_since(&audit, from);
    let mut reached = BTreeMap::<String, String>::new();
    let mut grant_lists = HashSet::new();
    let mut foreign_lists = BTreeMap::<String, String>::new();
    for event in &events {
        let uri = event["requestURI"].as_str().unwrap_or_default();
        let (path, _) = split_uri(uri);
        let why = INJECTED_IN_A_REQUEST
            .iter()
            .find(|text| uri.contains(**text))
            .map(|text| format!("carries {text:?}"))
            .or_else(|| {
                (path.contains("%2F") || path.contains("%2f"))
                    .then(|| "has %2F in its path".to_owned())
            })
            .or_else(|| misplaced_request(uri, &s.ns.name).map(str::to_owned));
        if let Some(why) = why {
            reached.insert(uri.to_owned(), why);
        }
        let in_namespace = event["objectRef"]["namespace"] == s.ns.name.as_str()
            || path.contains(&format!("/namespaces/{}/", s.ns.name));
        let lists_grants = event["objectRef"]["resource"] == "slackoauthgrants"
            && matches!(event["verb"].as_str(), Some("list" | "watch"));
        // The test itself never lists or watches grants, and the controller-manager does not
        // in this namespace: every such request is the operator's.
        let by_controller_manager = event["user"]["username"] == "system:kube-controller-manager";
        if in_namespace && lists_grants && !by_controller_manager {
            grant_lists.insert(event["auditID"].as_str().unwrap_or_default().to_owned());
            if foreign_grant_list(uri, &s.ns.name) {
                foreign_lists.insert(
                    uri.to_owned(),
                    event["userAgent"].as_str().unwrap_or_default().to_owned(),
                );
            }
        }
    }
    println!(
        "audit log: {} events since the operator started; {} list/watch requests of grants in the \
         namespace, {} of them not the controller's",
        events.len(),
        grant_lists.len(),
        foreign_lists.len()
    );
    if grant_lists.is_empty() {
        failures.push(
            "the audit log shows not even the controller's own watch of grants: is the audit \
             policy of hack/cluster.sh, which logs reads, in effect? (`hack/cluster.sh up` writes \
             it; a control plane started before it changed must be restarted)"
                .to_owned(),
        );
    }
    if !reached.is_empty() {
        failures.push(format!(
            "{} API requests carried what a forged state injected, e.g. {:#?}",
            reached.len(),
            reached.iter().take(10).collect::<Vec<_>>()
        ));
    }
    if !foreign_lists.is_empty() {
        failures.push(format!(
            "{} lists or watches of grants were not the controller's own (URI, user agent), e.g. \
             {:#?}",
            foreign_lists.len(),
            foreign_lists.iter().take(10).collect::<Vec<_>>()
        ));
    }

    // (b) Nothing of a link, and nothing injected, reached the operator's log.
    let logs = s.operator.logs();
    for real in &reals {
        if logs.contains(&real.link) {
            failures.push(format!(
                "the operator logged {}'s authorization URL",
                real.name
            ));
        }
        if logs.contains(&real.state) {
            failures.push(format!("the operator logged {}'s state", real.name));
        }
    }
    for prefix in ["state=s1.", "state=s2."] {
        if logs.contains(prefix) {
            failures.push(format!(
                "the operator logged a state parameter ({prefix}...)"
            ));
        }
    }
    let logged: Vec<_> = INJECTED_IN_A_LOG
        .iter()
        .filter(|text| logs.contains(**text))
        .map(|text| {
            let lines = logs.lines().filter(|l| l.contains(*text)).count();
            let example = logs
                .lines()
                .find(|l| l.contains(*text))
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect::<String>();
            format!("{text:?} on {lines} lines, e.g. {example}")
        })
        .collect();
    if !logged.is_empty() {
        failures.push(format!(
            "injected text reached the operator's log ({} lines in all): {logged:#?}",
            logs.lines().count()
        ));
    }

    assert!(
        failures.is_empty(),
        "{} failed checks:\n- {}",
        failures.len(),
        failures.join("\n- ")
    );
}

/// The checks of the request shapes themselves, so a legitimate request is never mistaken for
/// an injected one.
#[test]
fn legitimate_requests_are_not_mistaken_for_injected_ones() {
    let ns = "forged-state-flood-abcdef";
    for uri in [
        format!(
            "/apis/slack-oauth-operator.io/v1alpha1/namespaces/{ns}/slackoauthgrants?allowWatchBookmarks=true&resourceVersion=123&timeoutSeconds=290&watch=true"
        ),
        format!(
            "/apis/slack-oauth-operator.io/v1alpha1/namespaces/{ns}/slackoauthgrants?limit=500"
        ),
    ] {
        assert!(!foreign_grant_list(&uri, ns), "{uri}");
        assert_eq!(misplaced_request(&uri, ns), None, "{uri}");
    }
    for uri in [
        format!(
            "/apis/slack-oauth-operator.io/v1alpha1/namespaces/{ns}/slackoauthgrants/real-0/status"
        ),
        format!(
            "/api/v1/namespaces/{ns}/secrets?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dslack-oauth-operator&limit=500"
        ),
        format!("/apis/events.k8s.io/v1/namespaces/{ns}/events/real-0.18a2b3c4d5e6f7a8"),
        format!("/api/v1/namespaces/{ns}"),
    ] {
        assert_eq!(misplaced_request(&uri, ns), None, "{uri}");
    }
    for name in [
        "?watch=true&timeoutSeconds=3600",
        "?limit=500",
        "../../secrets",
        "a/b",
        "%2F",
    ] {
        let uri = format!(
            "/apis/slack-oauth-operator.io/v1alpha1/namespaces/{ns}/slackoauthgrants/{name}"
        );
        assert!(misplaced_request(&uri, ns).is_some(), "{uri}");
        assert!(foreign_grant_list(&uri, ns), "{uri}");
    }
}

/// Every forged query is one a client can send.
#[test]
fn forged_queries_are_valid_urls() {
    for query in forged_queries("some-namespace") {
        let url = format!("http://127.0.0.1:1/oauth/callback?{query}");
        assert!(url::Url::parse(&url).is_ok(), "{url}");
    }
}
