//! The chart's Ingress, served by a real Ingress controller (Traefik) on the node: a grant
//! completes in a real browser through it, and it routes nothing but the callback.

use std::time::Duration;

use serde_json::json;

use crate::{ingress::Traefik, release::Release, support};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster with a node: run `make test`"]
async fn a_grant_completes_in_a_real_browser_through_the_charts_ingress_which_routes_only_the_callback()
 {
    let client = support::client().await;
    let traefik = Traefik::deploy(&client).await;
    let r = Release::install_behind("ingress", json!({}), &[], Some(&traefik)).await;
    assert!(
        r.public_url.starts_with("http://localhost:"),
        "{}",
        r.public_url
    );

    r.apply_grant("scim", "slack-token").await;
    let link = r.link("scim", Duration::from_secs(60)).await;
    let support::BrowserPage {
        heading,
        url: landed_on,
        ..
    } = support::approve_in_browser(&link).await;
    assert_eq!(heading, "Slack approval complete");
    assert!(
        landed_on
            .as_str()
            .starts_with(&format!("{}/oauth/callback", r.public_url)),
        "landed on {landed_on}"
    );
    let issued = r.issued_tokens();
    assert_eq!(
        r.token("slack-token", Duration::from_secs(30))
            .await
            .as_deref(),
        issued.first().map(String::as_str)
    );

    // Health and metrics stay inside the cluster: through the Ingress, only the callback is the
    // operator's; every other path is the controller's 404.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/",
        "/oauth",
        "/oauth/callbackx",
    ] {
        let response = r
            .http
            .get(format!("{}{path}", r.public_url))
            .send()
            .await
            .expect("Traefik answers");
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 404, "{path} is not routed: {body}");
        assert_eq!(
            body.trim(),
            "404 page not found",
            "Traefik's own 404 for {path}"
        );
    }
}
