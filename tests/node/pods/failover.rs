//! The leader pod goes: another pod takes the Lease, and Slack's callbacks keep being served
//! through the Service the whole time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use kube::{ResourceExt, api::DeleteParams};
use serde_json::json;

use crate::release::{self, Release};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster with a node: run `make test`"]
async fn deleting_the_leader_pod_hands_the_lease_over_and_callbacks_keep_being_served() {
    let r = Arc::new(Release::install("failover", json!({}), &[]).await);
    let mut leader = None;
    for _ in 0..100 {
        leader = r.leader().await;
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leader = leader.expect("a Lease holder");

    // A link published by the leader, approved only after the leader has gone.
    r.apply_grant("before", "token-before").await;
    let before = r.link("before", Duration::from_secs(60)).await;

    // Callbacks arrive the whole time: each is a Slack redirect with a forged state, which the
    // operator refuses with a page of its own; what counts is that a pod answered.
    let stop = Arc::new(AtomicBool::new(false));
    let deleted = Instant::now();
    let probe = {
        let r = r.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut answered, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let url = format!("{}/oauth/callback?code=x&state=forged", r.public_url);
                match r.http.get(&url).send().await {
                    Ok(response) if response.status().as_u16() < 500 => answered += 1,
                    Ok(response) => failed.push(format!(
                        "at {:?}: HTTP {}",
                        deleted.elapsed(),
                        response.status()
                    )),
                    Err(error) => failed.push(format!(
                        "at {:?}: {}",
                        deleted.elapsed(),
                        release::chain(&error)
                    )),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (answered, failed)
        })
    };

    let deleted_at = deleted.elapsed();
    eprintln!("failover: deleting {leader} at {deleted_at:?}");
    r.pods_api
        .delete(&leader, &DeleteParams::default())
        .await
        .expect("delete the leader pod");

    // Another pod takes the Lease.
    let mut next = None;
    while deleted.elapsed() < Duration::from_secs(40) {
        if let Some(holder) = r.leader().await
            && holder != leader
        {
            next = Some(holder);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let next = next.unwrap_or_else(|| panic!("no other pod took the Lease from {leader}"));
    let took = deleted.elapsed();
    eprintln!("failover: {next} took the Lease {took:?} after {leader} was deleted");

    // The link from before the failover completes, and the new leader reconciles a new grant.
    let answer = r.approve(&before).await.expect("the callback is served");
    assert_eq!(answer.status, 200, "{}", answer.body);
    r.apply_grant("after", "token-after").await;
    let after = r.link("after", Duration::from_secs(60)).await;
    let answer = r.approve(&after).await.expect("the callback is served");
    assert_eq!(answer.status, 200, "{}", answer.body);
    for secret in ["token-before", "token-after"] {
        assert!(
            r.token(secret, Duration::from_secs(30)).await.is_some(),
            "{secret} holds its token"
        );
    }

    // Until the Deployment has its two replicas back, callbacks keep arriving.
    let image = release::image_of(&r.pods().await[0]);
    let pods = r.wait_pods(2, &image, Duration::from_secs(120)).await;
    assert!(!pods.iter().any(|p| p.name_any() == leader));
    stop.store(true, Ordering::Relaxed);
    let (answered, failed) = probe.await.expect("the probe ran");
    assert!(answered > 20, "callbacks were sent throughout ({answered})");
    assert!(
        failed.is_empty(),
        "every callback was served during the failover; {} of {} were not: {:?}",
        failed.len(),
        answered as usize + failed.len(),
        failed
    );
}
