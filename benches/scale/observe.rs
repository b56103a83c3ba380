//! What the bench reads about the operator from outside: its memory and its connections (from
//! `/proc`), its reconcile counter (from `/metrics`), and its API requests (from the audit log).

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::Value;

use crate::common::{is_write, metric_sum, rss_kib};
use crate::support::{self, Operator};

/// How often the connections are counted.
const CONNECTION_SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// RSS samples, one a second, in KiB.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rss {
    pub samples_kib: Vec<u64>,
}

impl Rss {
    /// Samples `pid` once a second for `seconds`: the memory once what was just done has
    /// settled (the allocator returns little to the kernel, so the last sample is the level).
    pub async fn settle(pid: u32, seconds: u64) -> Self {
        let mut samples_kib = Vec::new();
        for _ in 0..seconds.max(1) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            samples_kib.push(rss_kib(pid));
        }
        Self { samples_kib }
    }

    pub fn last_mib(&self) -> f64 {
        self.samples_kib.last().copied().unwrap_or_default() as f64 / 1024.0
    }

    pub fn peak_mib(&self) -> f64 {
        self.samples_kib.iter().copied().max().unwrap_or_default() as f64 / 1024.0
    }
}

/// How far the operator has got, from its metrics.
pub struct Progress {
    /// Reconciles finished, whatever their outcome.
    pub reconciles: f64,
    /// Grants whose last reconcile found them Ready (`grant_ready` at 1).
    pub ready_grants: usize,
}

impl Progress {
    pub async fn of(operator: &Operator) -> Self {
        let metrics = operator.metrics().await;
        Self {
            reconciles: metric_sum(&metrics, "reconciles_total", ""),
            ready_grants: metrics
                .lines()
                .filter(|l| l.starts_with("slack_oauth_operator_grant_ready{") && l.ends_with(" 1"))
                .count(),
        }
    }
}

/// Counts, every [`CONNECTION_SAMPLE_EVERY`], the process's established TCP connections to the
/// API server's port.
pub struct ConnectionSampler {
    samples: Arc<Mutex<Vec<(f64, usize)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectionSampler {
    pub fn start(pid: u32, apiserver_port: u16) -> Self {
        let samples: Arc<Mutex<Vec<(f64, usize)>>> = Arc::default();
        let recorded = samples.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            loop {
                if let Some(open) = support::connections_to(pid, apiserver_port) {
                    recorded
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((started.elapsed().as_secs_f64(), open));
                }
                tokio::time::sleep(CONNECTION_SAMPLE_EVERY).await;
            }
        });
        Self { samples, task }
    }

    /// Stops sampling; every sample as (seconds since the start, connections).
    pub fn stop(self) -> Vec<(f64, usize)> {
        self.task.abort();
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Requests one audit window logged in the bench's namespaces, by clients other than the control
/// plane's own (whose users start with `system:`): the operator's, and the bench's when it acted.
#[derive(Debug, Default, Serialize)]
pub struct Requests {
    /// By `verb resource[/subresource]`.
    pub by_verb_resource: BTreeMap<String, usize>,
    /// By `verb resource[/subresource] code`.
    pub by_verb_resource_code: BTreeMap<String, usize>,
    pub answered_429: usize,
    /// LISTs that start a list (no continue token), by `resource namespace selector`: a
    /// watcher's initial list, however many pages it takes.
    pub lists: BTreeMap<String, usize>,
    /// WATCHes by `resource namespace selector`.
    pub watches: BTreeMap<String, usize>,
    pub total: usize,
}

impl Requests {
    pub fn from_events(events: &[Value], namespaces: &[String]) -> Self {
        let namespaces: BTreeSet<&str> = namespaces.iter().map(String::as_str).collect();
        let mut requests = Self::default();
        // A watch is logged twice (ResponseStarted, ResponseComplete) under one auditID.
        let mut seen = HashSet::new();
        for event in events {
            let in_scope = event["objectRef"]["namespace"]
                .as_str()
                .is_some_and(|ns| namespaces.contains(ns));
            let by_control_plane = event["user"]["username"]
                .as_str()
                .is_some_and(|user| user.starts_with("system:"));
            if !in_scope || by_control_plane {
                continue;
            }
            if !seen.insert(event["auditID"].as_str().unwrap_or_default().to_owned()) {
                continue;
            }
            let verb = event["verb"].as_str().unwrap_or_default();
            let resource = resource_of(event);
            let code = event["responseStatus"]["code"].as_u64().unwrap_or_default();
            *requests
                .by_verb_resource
                .entry(format!("{verb} {resource}"))
                .or_default() += 1;
            *requests
                .by_verb_resource_code
                .entry(format!("{verb} {resource} {code}"))
                .or_default() += 1;
            if code == 429 {
                requests.answered_429 += 1;
            }
            let uri = event["requestURI"].as_str().unwrap_or_default();
            let watcher = format!(
                "{resource} {} {}",
                event["objectRef"]["namespace"].as_str().unwrap_or_default(),
                query_value(uri, "labelSelector").unwrap_or_default()
            );
            match verb {
                "list" if query_value(uri, "continue").is_none() => {
                    *requests.lists.entry(watcher).or_default() += 1;
                }
                "watch" => *requests.watches.entry(watcher).or_default() += 1,
                _ => {}
            }
            requests.total += 1;
        }
        requests
    }

    /// `secrets (app.kubernetes.io/managed-by=...): 10 LISTs and 10 WATCHes in 10 namespaces;
    /// ...`: each watcher's requests, the namespaces summed.
    pub fn watchers(&self) -> String {
        let mut by_selector = BTreeMap::<String, (BTreeSet<String>, usize, usize)>::new();
        for (counts, is_watch) in [(&self.lists, false), (&self.watches, true)] {
            for (watcher, count) in counts {
                let mut words = watcher.splitn(3, ' ');
                let resource = words.next().unwrap_or_default();
                let namespace = words.next().unwrap_or_default();
                let selector = words.next().unwrap_or_default();
                let entry = by_selector
                    .entry(format!(
                        "{resource} ({})",
                        if selector.is_empty() { "all" } else { selector }
                    ))
                    .or_default();
                entry.0.insert(namespace.to_owned());
                if is_watch {
                    entry.2 += count;
                } else {
                    entry.1 += count;
                }
            }
        }
        by_selector
            .iter()
            .map(|(what, (namespaces, lists, watches))| {
                format!(
                    "{what}: {lists} LISTs and {watches} WATCHes in {} namespaces",
                    namespaces.len()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The requests of `verb` on `resource` (with or without a subresource).
    pub fn count(&self, verb: &str, resource: &str) -> usize {
        self.by_verb_resource
            .iter()
            .filter(|(key, _)| {
                let mut words = key.split(' ');
                words.next() == Some(verb)
                    && words
                        .next()
                        .is_some_and(|r| r.split('/').next() == Some(resource))
            })
            .map(|(_, count)| count)
            .sum()
    }

    /// `12 get secrets, 3 list slackoauthgrants, ...`, busiest first, each count divided by
    /// `per` (the callbacks, for requests per callback).
    pub fn summary(&self, per: usize) -> String {
        let mut counts: Vec<(&String, &usize)> = self.by_verb_resource.iter().collect();
        counts.sort_by(|a, b| b.1.cmp(a.1));
        counts
            .iter()
            .map(|(what, count)| match per {
                1 => format!("{count} {what}"),
                _ => format!("{:.2} {what}", **count as f64 / per as f64),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `resource` or `resource/subresource`.
fn resource_of(event: &Value) -> String {
    let resource = event["objectRef"]["resource"].as_str().unwrap_or_default();
    match event["objectRef"]["subresource"].as_str() {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_owned(),
    }
}

/// The decoded value of query parameter `key` in a request URI.
fn query_value(uri: &str, key: &str) -> Option<String> {
    let url = url::Url::parse(&format!("http://api{uri}")).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The writes of an audit window in `namespaces`, other than to Leases, each as `verb
/// resource/name`.
pub fn writes(events: &[Value], namespaces: &[String]) -> Vec<String> {
    events
        .iter()
        .filter(|e| is_write(e))
        .filter(|e| {
            e["objectRef"]["namespace"]
                .as_str()
                .is_some_and(|ns| namespaces.iter().any(|n| n == ns))
        })
        .filter(|e| e["objectRef"]["resource"] != "leases")
        .map(|e| {
            format!(
                "{} {}/{}",
                e["verb"].as_str().unwrap_or_default(),
                resource_of(e),
                e["objectRef"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}
