//! Grants as the tests watch them, and the client Secret they read.

use std::{collections::HashSet, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use slack_oauth_operator::api::{DEFAULT_CLIENT_SECRET_KEY, SlackOAuthGrant};

/// The reason of the grant's `Ready` condition.
pub fn ready_reason(grant: &SlackOAuthGrant) -> Option<String> {
    grant
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
}

/// Waits up to 30 s for the grant to satisfy `done`, and returns it.
pub async fn wait_for_grant(
    grants: &Api<SlackOAuthGrant>,
    name: &str,
    done: impl Fn(&SlackOAuthGrant) -> bool,
) -> SlackOAuthGrant {
    wait_for_grant_within(grants, name, Duration::from_secs(30), done).await
}

/// Like [`wait_for_grant`], for up to `limit`.
pub async fn wait_for_grant_within(
    grants: &Api<SlackOAuthGrant>,
    name: &str,
    limit: Duration,
    done: impl Fn(&SlackOAuthGrant) -> bool,
) -> SlackOAuthGrant {
    let mut last = None;
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Ok(grant) = grants.get(name).await {
            if done(&grant) {
                return grant;
            }
            last = Some(grant);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "grant {name} did not reach the expected state within {limit:?}; last seen: {:#?}",
        last.map(|g| g.status)
    );
}

/// Waits up to `within` for every grant in `names` to satisfy `done`, listing them (one request
/// per poll, however many grants).
pub async fn wait_for_grants(
    grants: &Api<SlackOAuthGrant>,
    names: &[String],
    within: Duration,
    done: impl Fn(&SlackOAuthGrant) -> bool,
) {
    let deadline = std::time::Instant::now() + within;
    let mut pending: Vec<&String> = names.iter().collect();
    while std::time::Instant::now() < deadline {
        if let Ok(list) = grants.list(&Default::default()).await {
            let finished: HashSet<String> = list
                .items
                .iter()
                .filter(|g| done(g))
                .map(ResourceExt::name_any)
                .collect();
            pending = names.iter().filter(|n| !finished.contains(*n)).collect();
            if pending.is_empty() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "{} of {} grants did not reach the expected state within {within:?}, e.g. {:?}",
        pending.len(),
        names.len(),
        pending.iter().take(5).collect::<Vec<_>>()
    );
}

/// The label with which a Secret opts in to being read by the grants of its namespace.
pub const SHARED_WITH_GRANTS: &str = "slack-oauth-operator.io/shared-with-grants";

/// A Slack app's client Secret named `name`, holding `value` under the default key, opted in to
/// being read by every grant in its namespace.
pub fn shared_client_secret(name: &str, value: &str) -> Secret {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": { (SHARED_WITH_GRANTS): "true" } },
        "stringData": { (DEFAULT_CLIENT_SECRET_KEY): value }
    }))
    .expect("client secret")
}

/// A browser opening a grant's approval link (`status.authorizationURL`): where the operator
/// sends it, Slack's consent page with a fresh `state`. `http` must not follow redirects.
pub async fn open_link(http: &reqwest::Client, link: &str) -> String {
    let response = http
        .get(link)
        .send()
        .await
        .expect("the approval link answers");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match (status, location) {
        (303, Some(location)) => location,
        (status, _) => panic!(
            "the approval link {link} answered {status} instead of sending the browser to Slack: {}",
            response.text().await.unwrap_or_default()
        ),
    }
}
