//! What reconciles and approvals ask of the API server, counted in the audit log: a restart
//! reads the grants' Secrets by one list and watch per kind, never per grant (their caches stand
//! in for reads, `src/controller/cache.rs`), and an approval makes the writes custody needs and
//! no read a cache can answer. (What waiting grants cost: `outage_cost.rs`. The same figures at
//! 10,000 grants: `benches/scale.rs`.)

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};

use crate::{
    scenario::Scenario,
    support::{self, Operator, audit_events_since, audit_log, audit_offset},
};

/// Ready grants the restart reloads.
const GRANTS: usize = 12;

/// `verb resource[/subresource]` of every request the audit log shows in `namespace` (reads and
/// writes; a watch once), in order, after byte `from`.
fn requests_in(namespace: &str, from: u64) -> Vec<String> {
    let mut seen_watches = std::collections::HashSet::new();
    audit_events_since(&audit_log(), from)
        .into_iter()
        .filter(|e| e["objectRef"]["namespace"] == namespace)
        .filter(|e| e["user"]["username"] != "system:kube-controller-manager")
        .filter(|e| e["verb"] != "watch" || seen_watches.insert(e["auditID"].to_string()))
        .map(|e| describe(&e))
        .collect()
}

fn describe(event: &Value) -> String {
    let object = &event["objectRef"];
    let resource = match object["subresource"].as_str() {
        Some(sub) => format!("{}/{sub}", object["resource"].as_str().unwrap_or_default()),
        None => object["resource"].as_str().unwrap_or_default().to_owned(),
    };
    format!("{} {resource}", event["verb"].as_str().unwrap_or_default())
}

fn counted(requests: &[String]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for request in requests {
        *counts.entry(request.as_str()).or_default() += 1;
    }
    counts
}

/// A counter of the operator's metrics, summed over its labels matching `label`.
fn metric(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_restart_reads_the_grants_secrets_by_list_and_watch_not_per_grant() {
    let mut s = Scenario::start("restart-reads").await;
    s.create_client_secret().await;
    let names: Vec<String> = (0..GRANTS).map(|i| format!("grant-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        s.apply_grant(name, json!({ "secret": { "name": format!("token-{i}") } }))
            .await;
    }
    for name in &names {
        let answer = s.approve(&s.link(name).await).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    support::wait_for_grants(&s.grants, &names, Duration::from_secs(60), |g| {
        support::ready_reason(g).as_deref() == Some("Authorized")
    })
    .await;
    // Let the last status writes and Events of becoming Ready settle.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let port = s.operator.callback_port();
    s.operator.terminate().await;
    let from = audit_offset(&audit_log());
    s.operator = Operator::start_on(
        "restart-reads-again",
        &s.ns.name,
        port,
        &s.slack.url(),
        &s.slack.api_url(),
        &[],
    )
    .await;
    // Every grant reconciled once after the restart, from the caches.
    let mut cached = 0.0;
    for _ in 0..150 {
        let metrics = s.operator.metrics().await;
        cached = metric(
            &metrics,
            "slack_oauth_operator_reconcile_reads_total",
            "source=\"cache\"",
        );
        if cached >= GRANTS as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        cached >= GRANTS as f64,
        "only {cached} of {GRANTS} grants were reconciled from the caches after the restart:\n{}",
        s.operator.metrics().await
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let requests = requests_in(&s.ns.name, from);
    let counts = counted(&requests);
    println!("after the restart, in the namespace: {counts:#?}");
    let per_grant: Vec<&String> = requests
        .iter()
        .filter(|r| !r.ends_with(" leases") && !r.ends_with(" events"))
        .filter(|r| *r == "get secrets" || r.starts_with("update ") || r.starts_with("patch "))
        .collect();
    // The state key is read by name once at start-up; nothing else is read or written.
    assert!(
        per_grant.len() <= 1,
        "a restart with {GRANTS} Ready grants made per-grant requests: {counts:#?}"
    );
    // One list and one watch per kind (the grants, shared by the approval links and the
    // controller; the Secrets shared with grants, shared by the callback and the controller;
    // the token Secrets; the token records, here in the same namespace).
    for (request, most) in [
        ("list slackoauthgrants", 1),
        ("watch slackoauthgrants", 1),
        ("list secrets", 3),
        ("watch secrets", 3),
    ] {
        let made = counts.get(request).copied().unwrap_or_default();
        assert!(
            (1..=most).contains(&made),
            "{made} × {request} for {GRANTS} grants (expected 1 to {most}): {counts:#?}"
        );
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn an_approval_makes_only_the_writes_custody_needs() {
    let s = Scenario::start("approval-cost").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    let link = s.link("scim").await;
    // Let the grant's first reconciles (finalizer, link) settle before counting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let back = s.decide(&link, slack_emulator::Decision::Allow).await;
    let from = audit_offset(&audit_log());
    let answer = s.callback(&back).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // The reconcile the approval wakes writes Ready; nothing of the test's own runs meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests = requests_in(&s.ns.name, from);
    let counts = counted(&requests);
    println!("one approval, in the namespace: {requests:#?}");
    let grant = s.wait_ready("scim").await;
    assert!(grant.status.is_some_and(|st| st.token.is_some()));

    // The claim, the record, the token Secret, and the Ready status (and Events).
    let expected = BTreeMap::from([
        ("patch slackoauthgrants/status", 1),
        ("create secrets", 2),
        ("update slackoauthgrants/status", 1),
    ]);
    let writes_and_reads: BTreeMap<&str, usize> = counts
        .iter()
        .filter(|(request, _)| !request.ends_with(" events"))
        .map(|(request, count)| (*request, *count))
        .collect();
    assert_eq!(
        writes_and_reads, expected,
        "one approval asked the API server for more than custody needs: {requests:#?}"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_new_grant_costs_its_finalizer_one_read_and_its_link() {
    let s = Scenario::start("new-grant-cost").await;
    s.create_client_secret().await;
    // Let the operator's start-up reads settle before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let from = audit_offset(&audit_log());
    s.apply_grant("scim", json!({})).await;
    s.link("scim").await;
    // Anything a second pass over the grant would write has happened by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests = requests_in(&s.ns.name, from);
    let counts = counted(&requests);
    println!("one new grant, in the namespace: {requests:#?}");
    // The test's apply and the operator's finalizer; the read of the Secret the grant names
    // (someone else's would be in the way, and only the API server knows of those: the client
    // Secret and the record come from the caches); the status with the link.
    let expected = BTreeMap::from([
        ("create secrets", 0),
        ("get secrets", 1),
        ("patch slackoauthgrants", 2),
        ("patch slackoauthgrants/status", 0),
        ("update slackoauthgrants/status", 1),
    ]);
    let made: BTreeMap<&str, usize> = expected
        .keys()
        .map(|request| (*request, counts.get(request).copied().unwrap_or_default()))
        .collect();
    assert_eq!(
        made, expected,
        "a new grant asked the API server for more than its link needs: {requests:#?}"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn watches_and_requests_share_a_handful_of_connections() {
    let s = Scenario::start("connections-to-api").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    s.wait_ready("scim").await;
    // Every watch is open by now (readiness waits for them): the grants and the shared
    // Secrets (each shared by the callback and the controller), the token Secrets and the
    // records; four watches, and the requests beside them.
    let port = support::apiserver_port().await;
    let open = support::connections_to(s.operator.pid(), port).expect("the operator runs");
    println!("the operator holds {open} connections to the API server");
    // HTTP/2: one for the watches, one for the controller's requests, one for the callback's.
    assert!(
        (1..=3).contains(&open),
        "{open} connections to the API server: are watches still one connection each?"
    );
}
