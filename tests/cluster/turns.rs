//! `--max-concurrent-reconciles`: reconciles take turns with the API server, and give their turn
//! back while they wait on Slack, so a Slack that hangs keeps no other grant waiting.

use std::time::{Duration, Instant};

use serde_json::json;
use slack_emulator::Fault;

use crate::{scenario::Scenario, support};

/// How long Slack's SCIM API holds each probe: longer than the operator waits for one (15 s).
const HANG: Duration = Duration::from_secs(20);
/// How soon a new grant gets its link while a probe hangs; far less than [`HANG`].
const LINK_WITHIN: Duration = Duration::from_secs(8);

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_slack_that_hangs_keeps_no_new_grant_from_its_link_with_one_turn() {
    let s = Scenario::builder("turns")
        .flags(&["--max-concurrent-reconciles", "1"])
        .start()
        .await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    let link = s.link("scim").await;
    // A new admin token is asked about at SCIM at once: that probe hangs.
    s.slack
        .emulator
        .inject_times("scim.Users", Fault::Delay(HANG), 5);
    assert_eq!(s.approve(&link).await.status, 200);
    // Let the reconcile the approval wakes reach the probe.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let started = Instant::now();
    let names: Vec<String> = (0..3).map(|i| format!("new-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        s.apply_grant(name, json!({ "secret": { "name": format!("token-{i}") } }))
            .await;
    }
    support::wait_for_grants(&s.grants, &names, HANG, |g| {
        g.status
            .as_ref()
            .is_some_and(|st| st.authorization_url.is_some())
    })
    .await;
    let linked = started.elapsed();
    println!("3 new grants linked in {linked:?} while a SCIM probe hung");
    assert!(
        linked < LINK_WITHIN,
        "with one reconcile turn, new grants waited {linked:?} for their links behind a probe \
         Slack held for {HANG:?}"
    );
    // The approved grant turns Ready once the probe gives up; it hung all along.
    s.wait_ready("scim").await;
    assert!(
        s.operator
            .logs()
            .contains("failed to ask Slack's SCIM API about the token"),
        "the SCIM probe did not hang: the test proves nothing"
    );
}
