//! `/oauth/v2/authorize`: the checks, the consent page, and where Allow and Cancel lead.

use reqwest::StatusCode;
use slack_emulator::{App, Approver, AuthorizeError, Decision};

use crate::support::{CLIENT_ID, CLIENT_SECRET, Fixture, REDIRECT, query_of, reply};

async fn page(f: &Fixture, link: &str) -> (StatusCode, String) {
    let reply = reply(f.http.get(link)).await;
    (reply.status, reply.text)
}

async fn refused(f: &Fixture, query: &[(&str, &str)]) -> String {
    let link = f.link(query);
    let (status, body) = page(f, &link).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    match f.slack.authorize(&link, Decision::Allow).await {
        Err(AuthorizeError::ErrorPage { code }) => {
            assert!(body.contains(&format!(r#"<code id="slack-error">{code}</code>"#)));
            code
        }
        other => panic!("expected an error page, got {other:?}"),
    }
}

#[tokio::test]
async fn consent_page_shows_app_scopes_approver_and_both_buttons() {
    let f = Fixture::with_app(App::new(CLIENT_ID, CLIENT_SECRET, REDIRECT).with_name("SCIM sync"))
        .await;
    let link = f.link(&[
        ("client_id", CLIENT_ID),
        ("scope", "chat:write,channels:read"),
        ("user_scope", "admin"),
        ("redirect_uri", REDIRECT),
        ("state", "s1"),
        ("team", "T0ACME"),
    ]);
    let (status, body) = page(&f, &link).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("SCIM sync is requesting permission"),
        "{body}"
    );
    assert!(body.contains("the Acme workspace (T0ACME)"), "{body}");
    for scope in ["chat:write", "channels:read", "admin"] {
        assert!(
            body.contains(&format!("<code>{scope}</code>")),
            "{scope}: {body}"
        );
    }
    assert!(body.contains(
        r#"<button id="allow" type="submit" name="decision" value="allow">Allow</button>"#
    ));
    assert!(body.contains(
        r#"<button id="cancel" type="submit" name="decision" value="cancel">Cancel</button>"#
    ));
    assert!(
        body.contains(r#"<form id="slack-consent" method="post" action="/oauth/v2/authorize">"#)
    );
    assert!(body.contains(r#"<input type="hidden" name="state" value="s1">"#));
    assert!(
        !body.contains(r#"id="title""#),
        "the operator's pages own id=title"
    );
}

#[tokio::test]
async fn consent_page_names_the_organization_for_an_org_owner() {
    let f = Fixture::start().await;
    f.slack
        .set_approver(Approver::org_owner("E0GRID", "Acme Grid"));
    let (status, body) = page(&f, &f.user_link()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("the Acme Grid organization (E0GRID)"),
        "{body}"
    );
}

#[tokio::test]
async fn consent_page_escapes_everything_it_shows() {
    let f = Fixture::with_app(
        App::new(CLIENT_ID, CLIENT_SECRET, REDIRECT).with_name("<script>alert(1)</script>"),
    )
    .await;
    f.slack
        .set_approver(Approver::workspace_owner("T0ACME", "Acme & \"Sons\""));
    let link = f.link(&[
        ("client_id", CLIENT_ID),
        ("user_scope", "admin"),
        ("state", "\"><img src=x onerror=alert(1)>"),
        ("team", "<b>T</b>"),
    ]);
    let (status, body) = page(&f, &link).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("<script>"), "{body}");
    assert!(!body.contains("<img"), "{body}");
    assert!(!body.contains("<b>T</b>"), "{body}");
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(body.contains("Acme &amp; &quot;Sons&quot;"));
    assert!(body.contains(r#"value="&quot;&gt;&lt;img src=x onerror=alert(1)&gt;""#));
}

#[tokio::test]
async fn unknown_client_id_shows_an_error_page_without_redirect() {
    let f = Fixture::start().await;
    let code = refused(
        &f,
        &[
            ("client_id", "nope"),
            ("user_scope", "admin"),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(code, "invalid_client_id");
    let code = refused(&f, &[("user_scope", "admin")]).await;
    assert_eq!(code, "invalid_client_id");
}

#[tokio::test]
async fn redirect_uri_must_be_a_configured_url_or_a_sub_path_of_one() {
    let f = Fixture::start().await;
    for bad in [
        "http://127.0.0.1:9/oauth",
        "http://127.0.0.1:9/oauth/callbackx",
        "http://127.0.0.1:10/oauth/callback",
        "http://localhost:9/oauth/callback",
        "https://127.0.0.1:9/oauth/callback",
        "http://127.0.0.1:9/oauth/callback#frag",
        "http://evil.example/oauth/callback",
    ] {
        let code = refused(
            &f,
            &[
                ("client_id", CLIENT_ID),
                ("user_scope", "admin"),
                ("redirect_uri", bad),
            ],
        )
        .await;
        assert_eq!(code, "bad_redirect_uri", "{bad}");
    }
    let sub_path = "http://127.0.0.1:9/oauth/callback/grant/a";
    let back = f
        .slack
        .authorize(
            &f.link(&[
                ("client_id", CLIENT_ID),
                ("user_scope", "admin"),
                ("redirect_uri", sub_path),
            ]),
            Decision::Allow,
        )
        .await
        .expect("a sub-path is accepted");
    assert!(back.starts_with(&format!("{sub_path}?code=")), "{back}");
}

#[tokio::test]
async fn plain_http_redirect_urls_are_refused_unless_loopback() {
    let f = Fixture::with_app(App::new(
        CLIENT_ID,
        CLIENT_SECRET,
        "http://operator.example/cb",
    ))
    .await;
    let code = refused(
        &f,
        &[
            ("client_id", CLIENT_ID),
            ("user_scope", "admin"),
            ("redirect_uri", "http://operator.example/cb"),
        ],
    )
    .await;
    assert_eq!(code, "bad_redirect_uri");
    // Not sending one does not help: the configured URL itself is not HTTPS.
    let code = refused(&f, &[("client_id", CLIENT_ID), ("user_scope", "admin")]).await;
    assert_eq!(code, "bad_redirect_uri");
}

#[tokio::test]
async fn omitted_redirect_uri_uses_the_first_configured_url() {
    let app = App::new(CLIENT_ID, CLIENT_SECRET, "https://first.example/cb")
        .with_redirect_url("https://second.example/cb");
    let f = Fixture::with_app(app).await;
    let back = f
        .slack
        .authorize(
            &f.link(&[
                ("client_id", CLIENT_ID),
                ("user_scope", "admin"),
                ("state", "s"),
            ]),
            Decision::Allow,
        )
        .await
        .expect("consent");
    assert!(back.starts_with("https://first.example/cb?code="), "{back}");
    let back = f
        .slack
        .authorize(
            &f.link(&[
                ("client_id", CLIENT_ID),
                ("user_scope", "admin"),
                ("redirect_uri", "https://second.example/cb"),
            ]),
            Decision::Allow,
        )
        .await
        .expect("the second URL when asked for");
    assert!(
        back.starts_with("https://second.example/cb?code="),
        "{back}"
    );
}

#[tokio::test]
async fn malformed_scopes_are_invalid_scope_and_none_at_all_is_no_scopes() {
    let f = Fixture::start().await;
    for (scope, user_scope) in [
        ("chat:write,,x", ""),
        ("", "Admin"),
        ("", "admin users:read"),
        ("admin", ""),
    ] {
        let code = refused(
            &f,
            &[
                ("client_id", CLIENT_ID),
                ("scope", scope),
                ("user_scope", user_scope),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await;
        assert_eq!(
            code, "invalid_scope",
            "scope={scope} user_scope={user_scope}"
        );
    }
    let code = refused(
        &f,
        &[
            ("client_id", CLIENT_ID),
            ("scope", ""),
            ("user_scope", ""),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(code, "no_scopes");
}

#[tokio::test]
async fn allow_redirects_with_a_code_and_the_state_echoed_exactly() {
    let f = Fixture::start().await;
    let state = "s1.abc+/= &ü";
    let link = f.link(&[
        ("client_id", CLIENT_ID),
        ("user_scope", "admin"),
        ("redirect_uri", REDIRECT),
        ("state", state),
    ]);
    let reply = reply(f.http.post(f.link(&[])).form(&[
        ("client_id", CLIENT_ID),
        ("user_scope", "admin"),
        ("redirect_uri", REDIRECT),
        ("state", state),
        ("decision", "allow"),
    ]))
    .await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.text);
    let location = reply.header("location").expect("a redirect").to_owned();
    assert!(
        location.starts_with(&format!("{REDIRECT}?code=")),
        "{location}"
    );
    let query = query_of(&location);
    assert_eq!(query["state"], state);
    assert!(query["code"].len() > 64);

    // The helper does the same as the form.
    let back = f
        .slack
        .authorize(&link, Decision::Allow)
        .await
        .expect("consent");
    assert_eq!(query_of(&back)["state"], state);
    assert_ne!(
        query_of(&back)["code"],
        query["code"],
        "every Allow issues a new code"
    );
}

#[tokio::test]
async fn cancel_redirects_with_access_denied_and_the_state() {
    let f = Fixture::start().await;
    let reply = reply(f.http.post(f.link(&[])).form(&[
        ("client_id", CLIENT_ID),
        ("user_scope", "admin"),
        ("redirect_uri", REDIRECT),
        ("state", "s-9"),
        ("decision", "cancel"),
    ]))
    .await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(
        reply.header("location"),
        Some(format!("{REDIRECT}?error=access_denied&state=s-9").as_str())
    );
    let back = f
        .slack
        .authorize(&f.user_link(), Decision::Cancel)
        .await
        .expect("consent");
    assert_eq!(
        back,
        format!("{REDIRECT}?error=access_denied&state=state-1")
    );
}

#[tokio::test]
async fn a_tampered_consent_form_is_checked_again() {
    let f = Fixture::start().await;
    let reply = reply(f.http.post(f.link(&[])).form(&[
        ("client_id", CLIENT_ID),
        ("user_scope", "admin"),
        ("redirect_uri", "https://evil.example/cb"),
        ("decision", "allow"),
    ]))
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text.contains("bad_redirect_uri"));
    assert!(reply.header("location").is_none());

    let reply = crate::support::reply(f.http.post(f.link(&[])).form(&[
        ("client_id", CLIENT_ID),
        ("user_scope", "admin"),
        ("decision", "maybe"),
    ]))
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn authorize_helper_refuses_urls_of_other_hosts() {
    let f = Fixture::start().await;
    let error = f
        .slack
        .authorize(
            "https://slack.com/oauth/v2/authorize?client_id=x&state=s",
            Decision::Allow,
        )
        .await
        .expect_err("not this emulator");
    assert_eq!(
        error,
        AuthorizeError::NotThisEmulator {
            url: "https://slack.com/oauth/v2/authorize".to_owned()
        }
    );
    let wrong_path = format!("{}/oauth/authorize?client_id={CLIENT_ID}", f.slack.url());
    assert!(matches!(
        f.slack.authorize(&wrong_path, Decision::Allow).await,
        Err(AuthorizeError::NotThisEmulator { .. })
    ));
    assert_eq!(
        f.slack.authorize("::", Decision::Allow).await,
        Err(AuthorizeError::InvalidUrl)
    );
}
