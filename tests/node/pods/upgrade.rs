//! `helm upgrade` to a new image tag: a rolling update, during which real approvals keep
//! completing. Each approval counts only when its token is in its Secret; none may be lost.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use kube::ResourceExt;
use serde_json::json;

use crate::{
    image, node,
    release::{self, Release},
};

/// One approval from start to finish: a grant, its link, Allow, the callback through the
/// Service, the token in the grant's Secret. Err says where it was lost.
async fn approval(r: &Release, n: u32) -> Result<Duration, String> {
    let started = Instant::now();
    let (grant, secret) = (format!("grant-{n}"), format!("token-{n}"));
    r.apply_grant(&grant, &secret).await;
    // The link waits for a leader, which may be changing hands.
    let link = r.link(&grant, Duration::from_secs(90)).await;
    let answer = r
        .approve(&link)
        .await
        .map_err(|e| format!("{grant}: {e}"))?;
    if answer.status != 200 {
        return Err(format!(
            "{grant}: the callback answered {}: {}",
            answer.status, answer.body
        ));
    }
    match r.token(&secret, Duration::from_secs(60)).await {
        Some(_) => Ok(started.elapsed()),
        None => Err(format!(
            "{grant}: no token in {secret} within 60 s of the callback"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster with a node: run `make test`"]
async fn helm_upgrade_to_a_new_image_tag_rolls_the_pods_while_every_approval_completes() {
    let r = Arc::new(Release::install("upgrade", json!({}), &[]).await);
    let old_image = format!("{}:{}", image::NAME, node::load_image());
    let new_image = format!("{}:{}", image::NAME, node::next_tag());
    let old_pods: Vec<String> = r
        .wait_pods(2, &old_image, Duration::from_secs(60))
        .await
        .iter()
        .map(ResourceExt::name_any)
        .collect();

    // Approvals start every 400 ms, each in a task of its own, before, during and after the
    // rollout.
    let stop = Arc::new(AtomicBool::new(false));
    let starter = {
        let r = r.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut approvals = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = r.clone();
                approvals.push(tokio::spawn(async move { approval(&r, n).await }));
                n += 1;
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            approvals
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    let upgrade_started = Instant::now();
    r.helm(
        "upgrade",
        &[
            &crate::support::chart::chart(),
            "--values",
            &r.values.to_string_lossy(),
            "--set",
            &format!("image.tag={}", node::next_tag()),
            "--wait",
            "--timeout",
            "300s",
        ],
    )
    .await;
    let rolled_in = upgrade_started.elapsed();
    let new_pods = r.wait_pods(2, &new_image, Duration::from_secs(120)).await;
    // Approvals keep starting a little longer, on the new pods alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);

    let approvals = starter.await.expect("the starter ran");
    let started = approvals.len();
    let mut lost = Vec::new();
    let mut slowest = Duration::ZERO;
    for approval in approvals {
        match approval.await.expect("the approval ran") {
            Ok(took) => slowest = slowest.max(took),
            Err(why) => lost.push(why),
        }
    }
    eprintln!(
        "upgrade: rolled out in {rolled_in:?}; {started} approvals, {} lost, slowest {slowest:?}",
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} of {started} approvals were lost during the rolling update: {lost:#?}",
        lost.len()
    );
    assert!(started >= 10, "approvals ran throughout ({started})");
    assert!(
        !new_pods.iter().any(|p| old_pods.contains(&p.name_any())),
        "every pod was replaced: {old_pods:?} then {:?}",
        new_pods
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>()
    );
    for pod in &new_pods {
        assert_eq!(release::image_of(pod), new_image);
    }
    assert_eq!(
        r.issued_tokens().len(),
        started,
        "one token per approval, none issued twice"
    );
}
