//! Prometheus metrics, served by the admin server at `/metrics`. Labels are condition reasons
//! and outcomes, never names of grants (unbounded) or secret values.

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Reconciles, by `ok` or `error`.
    pub reconciles: Family<OutcomeLabels, Counter>,
    /// Callbacks, by outcome: `Authorized`, a condition reason, or `Refused` (no grant touched).
    pub callbacks: Family<OutcomeLabels, Counter>,
    /// 1 while this replica holds the leader Lease (or runs without leader election).
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("slack_oauth_operator");
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        let callbacks = Family::<OutcomeLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Grant reconciles, by outcome",
            reconciles.clone(),
        );
        registry.register(
            "callbacks",
            "OAuth callbacks, by outcome",
            callbacks.clone(),
        );
        registry.register(
            "leader",
            "Whether this replica reconciles grants",
            leader.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            callbacks,
            leader,
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

    pub fn count_callback(&self, outcome: &str) {
        self.callbacks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
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
}
