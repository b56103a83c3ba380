//! The pages a Slack owner sees, in headless Chromium, at a phone's width (375 px) and a
//! desktop's (1280 px): each outcome's heading, what it says, no horizontal scrolling on the
//! phone, no script, and a screenshot of each saved under `target/screenshots/` for people to
//! look at.

use std::{path::PathBuf, time::Duration};

use fantoccini::Locator;
use serde_json::json;
use slack_emulator::Decision;

use crate::{
    scenario::Scenario,
    support::{Browser, BrowserPage},
};

const WIDTHS: [u32; 2] = [375, 1280];

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Opens `url` (or stays on the page shown), then shows the page at each width: checks it fits,
/// saves a screenshot `<outcome>-<width>.png`, and returns it as read.
async fn show(browser: &Browser, outcome: &str, url: Option<&str>) -> BrowserPage {
    let client = &browser.client;
    client
        .set_window_size(WIDTHS[0], 900)
        .await
        .expect("resize");
    if let Some(url) = url {
        client.goto(url).await.expect("open the page");
    }
    let heading = client
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id("title"))
        .await
        .expect("a page with a title")
        .text()
        .await
        .expect("title");
    for width in WIDTHS {
        client.set_window_size(width, 900).await.expect("resize");
        let fit = client
            .execute(
                "return [document.documentElement.scrollWidth, document.documentElement.clientWidth, document.scripts.length];",
                vec![],
            )
            .await
            .expect("measure the page");
        let (scroll, client_width, scripts) = (fit[0].as_u64(), fit[1].as_u64(), fit[2].as_u64());
        assert!(
            scroll <= client_width,
            "{outcome} at {width} px scrolls sideways: {scroll:?} > {client_width:?}"
        );
        assert_eq!(scripts, Some(0), "{outcome}: no script on the page");
        let png = client.screenshot().await.expect("screenshot");
        let path = screenshot_dir().join(format!("{outcome}-{width}.png"));
        std::fs::write(&path, png).expect("save the screenshot");
    }
    browser.page(heading).await
}

fn says(page: &BrowserPage, heading: &str, texts: &[&str]) {
    assert_eq!(page.heading, heading, "{page:#?}");
    for text in texts {
        assert!(
            page.text.contains(text),
            "the page says {text:?}: {page:#?}"
        );
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn every_owner_page_reads_well_on_a_phone_and_a_desktop() {
    let s = Scenario::start("owner-pages").await;
    s.create_client_secret().await;
    s.create_secret_for_grants(
        "wrong-app",
        json!({ "slack-oauth-operator.io/shared-with-grants": "true" }),
        "not-the-apps-client-secret",
    )
    .await;
    let description = "SCIM provisioning of Acme's users by PingFederate, for the identity team";
    let grant = |name: &str, extra: serde_json::Value| {
        let mut spec =
            json!({ "secret": { "name": format!("{name}-token") }, "description": description });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            spec[k] = v;
        }
        spec
    };
    for (name, extra) in [
        ("approve", json!({})),
        ("cancel", json!({})),
        ("wrong-team", json!({ "teamID": "T0OTHER" })),
        (
            "bad-secret",
            json!({ "clientSecretRef": { "name": "wrong-app" } }),
        ),
    ] {
        s.apply_grant(name, grant(name, extra)).await;
    }
    let browser = Browser::start().await;
    let about = [
        "owner-pages-",
        "/approve",
        description,
        s.slack.client_id.as_str(),
        "admin",
    ];

    // Allow, in the browser from the link on: the success page, and a refresh of it.
    let link = s.link("approve").await;
    browser.approve(&link).await;
    let back = browser.client.current_url().await.expect("url").to_string();
    let done = show(&browser, "success", None).await;
    says(
        &done,
        "Slack approval complete",
        &["Acme (T0ACME)", "approve-token"],
    );
    s.wait_ready("approve").await;
    let refreshed = show(&browser, "success-refreshed", Some(&back)).await;
    says(&refreshed, "Slack approval complete", &about);
    let old = show(&browser, "link-no-longer-needed", Some(&link)).await;
    says(
        &old,
        "This link is no longer needed",
        &["Nothing was changed"],
    );
    assert!(
        !old.text.contains("owner-pages-"),
        "names no grant: {old:#?}"
    );

    // Cancel: neutral, and the same link works again.
    let link = s.link("cancel").await;
    let back = s.decide(&link, Decision::Cancel).await;
    let cancelled = show(&browser, "cancelled", Some(&back)).await;
    says(
        &cancelled,
        "Approval cancelled",
        &["open the same approval link again"],
    );
    assert!(cancelled.text.contains("/cancel"), "{cancelled:#?}");
    assert!(
        s.open(&link).await.contains("/oauth/v2/authorize"),
        "the same link works again"
    );

    // The wrong workspace: which one to switch to.
    let back = s.decide(&s.link("wrong-team").await, Decision::Allow).await;
    let wrong = show(&browser, "wrong-workspace", Some(&back)).await;
    says(
        &wrong,
        "Approved from another workspace",
        &["switch to T0OTHER", "open the same approval link again"],
    );

    // Something only the requester can fix: what to tell them.
    let back = s.decide(&s.link("bad-secret").await, Decision::Allow).await;
    let config = show(&browser, "configuration-failure", Some(&back)).await;
    says(
        &config,
        "Approval failed",
        &[
            "bad_client_secret",
            "What to tell the person who asked for it",
        ],
    );

    // A forged link: the generic answer, naming nothing.
    let forged = format!("{}/oauth/start/{}", s.operator.public_url, "A".repeat(43));
    let refused = show(&browser, "link-not-valid", Some(&forged)).await;
    says(&refused, "Link not valid", &["Nothing was changed"]);
    assert!(!refused.text.contains("owner-pages-"), "{refused:#?}");
    browser.close().await;
}
