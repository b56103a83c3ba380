//! What waiting grants cost the API server: a grant whose client Secret is missing waits on the
//! operator's label-selected Secret watches, so the number of watches stays a small constant
//! however many grants wait (docs/security.md, "Watches are label-selected"), nothing is left
//! behind when the grants go, and a Secret that appears later still wakes its grant at once.
//! (The same waiting grants through an API server outage: `outage.rs`.)

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

use crate::{
    scenario::Scenario,
    support::{self, ready_reason},
};

/// Grants that wait at once.
const WAITING: usize = 100;
/// The operator's Secret watches in one namespace may not exceed this, whatever waits.
const MAX_SECRET_WATCHES: usize = 4;
/// How soon a grant notices its client Secret appear.
const WAKE_UP: Duration = Duration::from_secs(5);

/// Grants `waiting-<i>`, each naming a client Secret of its own (`app-<i>`) that does not exist,
/// so a watch per waited-for Secret would be a watch per grant.
pub async fn create_waiting_grants(s: &Scenario, count: usize) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..count {
        let name = format!("waiting-{i}");
        s.apply_grant(
            &name,
            json!({
                "clientSecretRef": { "name": format!("app-{i}") },
                "secret": { "name": format!("token-{i}") }
            }),
        )
        .await;
        names.push(name);
    }
    support::wait_for_grants(&s.grants, &names, Duration::from_secs(90), |g| {
        ready_reason(g).as_deref() == Some("ClientSecretMissing")
    })
    .await;
    names
}

/// The operator's watches of Secrets in `namespace`, from the audit log after `from`: request
/// URI by auditID. Only the operator watches Secrets in a test's namespace (the tests read them
/// with gets, and the controller-manager watches cluster-wide).
fn secret_watches(events: &[Value], namespace: &str) -> BTreeMap<String, String> {
    events
        .iter()
        .filter(|e| e["verb"] == "watch")
        .filter(|e| e["objectRef"]["resource"] == "secrets")
        .filter(|e| e["objectRef"]["namespace"] == namespace)
        .filter(|e| e["user"]["username"] != "system:kube-controller-manager")
        .map(|e| {
            (
                e["auditID"].as_str().unwrap_or_default().to_owned(),
                e["requestURI"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Watches that started (`ResponseStarted`) and have not ended (`ResponseComplete`).
fn open_watches(events: &[Value], watches: &BTreeMap<String, String>) -> usize {
    watches
        .keys()
        .filter(|id| {
            !events
                .iter()
                .any(|e| e["auditID"] == id.as_str() && e["stage"] == "ResponseComplete")
        })
        .count()
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn waiting_grants_cost_no_watch_per_grant() {
    let audit = support::audit_log();
    let from = support::audit_offset(&audit);
    let s = Scenario::start("waiting-grants-cost").await;
    let names = create_waiting_grants(&s, WAITING).await;
    // Let the watches a reconcile asks for begin.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut failures = Vec::new();
    let events = support::audit_events_since(&audit, from);
    let watches = secret_watches(&events, &s.ns.name);
    let open = open_watches(&events, &watches);
    println!(
        "{WAITING} waiting grants: the operator started {} Secret watches in their namespace, {open} \
         still open",
        watches.len()
    );
    if watches.is_empty() {
        failures.push(
            "the audit log shows no Secret watch at all, not even the controller's: is the audit \
             policy of hack/cluster.sh, which logs reads, in effect? (a control plane started \
             before it changed must be restarted)"
                .to_owned(),
        );
    }
    if watches.len() > MAX_SECRET_WATCHES {
        failures.push(format!(
            "{WAITING} waiting grants cost {} Secret watches (at most {MAX_SECRET_WATCHES}), e.g. \
             {:#?}",
            watches.len(),
            watches.values().take(5).collect::<Vec<_>>()
        ));
    }

    // The grants go; nothing starts watching on their behalf.
    let before_delete = support::audit_offset(&audit);
    for name in &names {
        s.grants
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete a waiting grant");
    }
    for _ in 0..300 {
        let left = s
            .grants
            .list(&Default::default())
            .await
            .expect("list grants");
        if left.items.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = support::audit_events_since(&audit, before_delete);
    let new_watches: Vec<_> = secret_watches(&after, &s.ns.name)
        .into_iter()
        .filter(|(id, _)| !watches.contains_key(id))
        .map(|(_, uri)| uri)
        .collect();
    let all_events = support::audit_events_since(&audit, from);
    let all_watches = secret_watches(&all_events, &s.ns.name);
    let still_open = open_watches(&all_events, &all_watches);
    println!(
        "after deleting them: {} new Secret watches in 10 s, {still_open} Secret watches open",
        new_watches.len()
    );
    if !new_watches.is_empty() {
        failures.push(format!(
            "deleting the waiting grants started {} Secret watches: {:#?}",
            new_watches.len(),
            new_watches.iter().take(5).collect::<Vec<_>>()
        ));
    }
    if still_open > MAX_SECRET_WATCHES {
        failures.push(format!(
            "{still_open} Secret watches stayed open after their grants were deleted (at most \
             {MAX_SECRET_WATCHES})"
        ));
    }

    // A grant created afterwards still wakes when its client Secret appears.
    s.apply_grant(
        "late",
        json!({
            "clientSecretRef": { "name": "app-late" },
            "secret": { "name": "token-late" }
        }),
    )
    .await;
    s.wait_reason("late", "ClientSecretMissing").await;
    s.secrets
        .create(
            &PostParams::default(),
            &support::shared_client_secret("app-late", &s.slack.client_secret),
        )
        .await
        .expect("create the late grant's client Secret");
    let created = Instant::now();
    let woke = loop {
        let grant = s.grants.get("late").await.expect("read the late grant");
        if ready_reason(&grant).as_deref() == Some("AwaitingAuthorization") {
            break Some(created.elapsed());
        }
        if created.elapsed() > Duration::from_secs(30) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("the late grant reached AwaitingAuthorization {woke:?} after its Secret appeared");
    if woke.is_none_or(|after| after >= WAKE_UP) {
        failures.push(format!(
            "the late grant reached AwaitingAuthorization after {woke:?} (within {WAKE_UP:?} \
             expected; None: not within 30 s)"
        ));
    }

    assert!(
        failures.is_empty(),
        "{} failed checks:\n- {}",
        failures.len(),
        failures.join("\n- ")
    );
}
