//! Prometheus metrics, served by the admin server at `/metrics`. Labels are condition reasons,
//! outcomes and, for the per-grant gauges, the grant's namespace and name (one series per
//! grant, removed when the grant goes, as cert-manager does per Certificate); never secret
//! values.

use std::sync::{Arc, LazyLock};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    pub namespace: String,
    pub grant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    /// `callback` or `admin`.
    pub server: &'static str,
}

/// The connections of one HTTP server (see [`crate::server`]).
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: Gauge,
    /// Idle connections closed to make room for a new one.
    pub evicted: Counter,
    /// New connections closed at once because every connection was serving a request.
    pub refused: Counter,
}

/// Connection metrics, by server. Process-wide, unlike the others: the resource they watch (open
/// sockets, file descriptors) is the process's, and the callback server is started without a
/// [`Metrics`]. Every [`Metrics`] registry shows them.
struct HttpConnections {
    open: Family<ServerLabels, Gauge>,
    evicted: Family<ServerLabels, Counter>,
    refused: Family<ServerLabels, Counter>,
}

static HTTP_CONNECTIONS: LazyLock<HttpConnections> = LazyLock::new(|| HttpConnections {
    open: Family::default(),
    evicted: Family::default(),
    refused: Family::default(),
});

/// The process-wide connection metrics of the server named `server` (`callback` or `admin`).
pub fn connections(server: &'static str) -> ConnectionMetrics {
    let labels = ServerLabels { server };
    ConnectionMetrics {
        open: HTTP_CONNECTIONS.open.get_or_create(&labels).clone(),
        evicted: HTTP_CONNECTIONS.evicted.get_or_create(&labels).clone(),
        refused: HTTP_CONNECTIONS.refused.get_or_create(&labels).clone(),
    }
}

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Reconciles, by `ok` or `error`.
    pub reconciles: Family<OutcomeLabels, Counter>,
    /// Where reconciles read a grant's token Secret and record: `cache` (the controller's
    /// watches) or `api` (the API server, when the caches show something to act on).
    pub reconcile_reads: Family<SourceLabels, Counter>,
    /// Callbacks, by outcome: `Authorized`, a condition reason, or `Refused` (no grant touched).
    pub callbacks: Family<OutcomeLabels, Counter>,
    /// Visits to approval links, by outcome: `Redirected` (sent on to Slack), `Forged`,
    /// `NoLongerNeeded`, `NotPending`, `InProgress`, `Expired` or `Unavailable`.
    pub link_visits: Family<OutcomeLabels, Counter>,
    /// 1 while this replica holds the leader Lease (or runs without leader election).
    pub leader: Gauge,
    /// `auth.test` checks of Ready grants' tokens, by outcome: `valid`, `revoked`, `invalid`, or
    /// `unavailable` (Slack could not answer; nothing changed).
    pub token_checks: Family<OutcomeLabels, Counter>,
    /// Unix time of the last token check that Slack answered.
    pub last_token_check: Gauge,
    /// Refreshes of rotating tokens, by outcome: `refreshed`, `refused` (a new approval is
    /// needed) or `unavailable` (Slack could not answer; retried).
    pub token_refreshes: Family<OutcomeLabels, Counter>,
    /// Pushes of tokens into PingFederate, by outcome: `synced`, `refused` (waits for a change)
    /// or `unavailable` (retried).
    pub pingfederate_pushes: Family<OutcomeLabels, Counter>,
    /// Per grant: 1 while `Ready` is `True`.
    pub grant_ready: Family<GrantLabels, Gauge>,
    /// Per grant: Unix time the token in the Secret expires (rotating tokens only).
    pub grant_token_expiry: Family<GrantLabels, Gauge>,
    /// Per grant: Unix time of the last check Slack answered about the grant's token.
    pub grant_last_check: Family<GrantLabels, Gauge>,
    /// The allocator's own count of the bytes the process holds, and of the bytes it keeps
    /// resident for them; read at each scrape.
    heap_allocated: Gauge,
    heap_resident: Gauge,
}

fn unix_now() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    i64::try_from(now).unwrap_or_default()
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("slack_oauth_operator");
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        let reconcile_reads = Family::<SourceLabels, Counter>::default();
        let callbacks = Family::<OutcomeLabels, Counter>::default();
        let link_visits = Family::<OutcomeLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Grant reconciles, by outcome",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_reads",
            "Reads of a grant's token Secret and record by reconciles, by source: cache or api",
            reconcile_reads.clone(),
        );
        registry.register(
            "callbacks",
            "OAuth callbacks, by outcome",
            callbacks.clone(),
        );
        registry.register(
            "link_visits",
            "Visits to approval links (/oauth/start/), by outcome",
            link_visits.clone(),
        );
        registry.register(
            "leader",
            "Whether this replica reconciles grants",
            leader.clone(),
        );
        let token_checks = Family::<OutcomeLabels, Counter>::default();
        let last_token_check = Gauge::default();
        registry.register(
            "token_checks",
            "auth.test checks of Ready grants' tokens, by outcome",
            token_checks.clone(),
        );
        registry.register(
            "last_token_check_timestamp_seconds",
            "Unix time of the last token check Slack answered",
            last_token_check.clone(),
        );
        let token_refreshes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "token_refreshes",
            "Refreshes of rotating tokens, by outcome",
            token_refreshes.clone(),
        );
        let pingfederate_pushes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "pingfederate_pushes",
            "Pushes of tokens into PingFederate's SP connection, by outcome",
            pingfederate_pushes.clone(),
        );
        let grant_ready = Family::<GrantLabels, Gauge>::default();
        registry.register(
            "grant_ready",
            "Whether the grant is Ready (1) or not (0)",
            grant_ready.clone(),
        );
        let grant_token_expiry = Family::<GrantLabels, Gauge>::default();
        registry.register(
            "grant_token_expiry_timestamp_seconds",
            "Unix time the token in the grant's Secret expires (rotating tokens only)",
            grant_token_expiry.clone(),
        );
        let grant_last_check = Family::<GrantLabels, Gauge>::default();
        registry.register(
            "grant_last_token_check_timestamp_seconds",
            "Unix time of the last auth.test of the grant's token that Slack answered",
            grant_last_check.clone(),
        );
        registry.register(
            "http_connections",
            "Open HTTP connections, by server",
            HTTP_CONNECTIONS.open.clone(),
        );
        registry.register(
            "http_connections_evicted",
            "Idle HTTP connections closed to make room for new ones, by server",
            HTTP_CONNECTIONS.evicted.clone(),
        );
        registry.register(
            "http_connections_refused",
            "New HTTP connections closed at once because every connection was serving a request, by server",
            HTTP_CONNECTIONS.refused.clone(),
        );
        let heap_allocated = Gauge::default();
        registry.register(
            "heap_allocated_bytes",
            "Bytes of memory the operator holds, as its allocator (jemalloc) counts them",
            heap_allocated.clone(),
        );
        let heap_resident = Gauge::default();
        registry.register(
            "heap_resident_bytes",
            "Bytes of memory the allocator (jemalloc) keeps resident, for what is held and what it has not handed back yet",
            heap_resident.clone(),
        );
        Self {
            registry: Arc::new(registry),
            heap_allocated,
            heap_resident,
            reconciles,
            reconcile_reads,
            callbacks,
            link_visits,
            leader,
            token_checks,
            last_token_check,
            token_refreshes,
            pingfederate_pushes,
            grant_ready,
            grant_token_expiry,
            grant_last_check,
        }
    }
}

impl Metrics {
    pub fn count_reconcile(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" }.to_owned();
        self.reconciles
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn count_read(&self, source: &'static str) {
        self.reconcile_reads
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
            })
            .inc();
    }

    pub fn count_callback(&self, outcome: &str) {
        self.callbacks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn count_visit(&self, outcome: &'static str) {
        self.link_visits
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn count_token_check(&self, outcome: &str) {
        self.token_checks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        if outcome != "unavailable" {
            self.last_token_check.set(unix_now());
        }
    }

    pub fn count_refresh(&self, outcome: &str) {
        self.token_refreshes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn count_push(&self, outcome: &str) {
        self.pingfederate_pushes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records that Slack answered a check of grant `labels`' token just now.
    pub fn grant_checked(&self, labels: &GrantLabels) {
        self.grant_last_check.get_or_create(labels).set(unix_now());
    }

    /// The grant's gauges after a reconcile.
    pub fn grant_observed(&self, labels: &GrantLabels, ready: bool, expires_at: Option<i64>) {
        self.grant_ready.get_or_create(labels).set(i64::from(ready));
        match expires_at {
            Some(at) => {
                self.grant_token_expiry.get_or_create(labels).set(at);
            }
            None => {
                self.grant_token_expiry.remove(labels);
            }
        }
    }

    /// Drops a deleted grant's series.
    pub fn grant_deleted(&self, labels: &GrantLabels) {
        self.grant_ready.remove(labels);
        self.grant_token_expiry.remove(labels);
        self.grant_last_check.remove(labels);
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        // The statistics are a snapshot, taken when the epoch advances. (Zero in a process
        // whose allocator is not jemalloc: the tests'.)
        if tikv_jemalloc_ctl::epoch::advance().is_ok() {
            let read = |value: tikv_jemalloc_ctl::Result<usize>| {
                value.ok().and_then(|v| i64::try_from(v).ok()).unwrap_or(0)
            };
            self.heap_allocated
                .set(read(tikv_jemalloc_ctl::stats::allocated::read()));
            self.heap_resident
                .set(read(tikv_jemalloc_ctl::stats::resident::read()));
        }
        let mut text = String::new();
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_prometheus_text_format() {
        let metrics = Metrics::default();
        metrics.count_reconcile(true);
        metrics.count_callback("Authorized");
        metrics.leader.set(1);
        let text = metrics.render();
        assert!(
            text.contains("slack_oauth_operator_reconciles_total{outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("slack_oauth_operator_callbacks_total{outcome=\"Authorized\"} 1"),
            "{text}"
        );
        assert!(text.contains("slack_oauth_operator_leader 1"), "{text}");
    }

    #[test]
    fn per_grant_series_appear_and_go_with_the_grant() {
        let metrics = Metrics::default();
        let grant = GrantLabels {
            namespace: "pf".into(),
            grant: "scim".into(),
        };
        metrics.grant_observed(&grant, true, Some(1_800_000_000));
        metrics.grant_checked(&grant);
        let text = metrics.render();
        assert!(
            text.contains("slack_oauth_operator_grant_ready{namespace=\"pf\",grant=\"scim\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("slack_oauth_operator_grant_token_expiry_timestamp_seconds{namespace=\"pf\",grant=\"scim\"} 1800000000"),
            "{text}"
        );
        metrics.grant_deleted(&grant);
        assert!(!metrics.render().contains("grant=\"scim\""));
    }

    #[test]
    fn connection_metrics_render_by_server() {
        let metrics = Metrics::default();
        let connections = connections("test");
        connections.open.set(3);
        connections.evicted.inc();
        let text = metrics.render();
        assert!(
            text.contains("slack_oauth_operator_http_connections{server=\"test\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("slack_oauth_operator_http_connections_evicted_total{server=\"test\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("slack_oauth_operator_http_connections_refused_total{server=\"test\"} 0"),
            "{text}"
        );
    }
}
