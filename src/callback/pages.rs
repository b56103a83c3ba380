//! The pages a Slack owner sees: when an approval link has nothing to send them to Slack for, and
//! after Slack sends their browser back. maud escapes every value, the pages run no script and
//! never name a token or a code, and they are sent with headers that keep them out of caches,
//! referrers and frames. They are laid out for a phone as well as a desktop.

use std::sync::LazyLock;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use kube::ResourceExt;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use sha2::{Digest, Sha256};

use crate::api::{Installation, SlackOAuthGrant};

const STYLE: &str = "*{box-sizing:border-box}body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;padding:1.25rem;line-height:1.5;color:#1d1c1d;background:#f8f8f8;overflow-wrap:anywhere}main{max-width:40rem;margin:2rem auto;background:#fff;border:1px solid #ddd;border-radius:8px;padding:1.25rem 1.5rem}.brand{margin:0 0 .5rem;font-size:.85rem;color:#616061}h1{font-size:1.4rem;margin:.25rem 0 .75rem}h2{font-size:1rem;margin:1.25rem 0 .5rem}.ok{color:#007a5a}.fail{color:#e01e5a}.neutral{color:#1d1c1d}dl{display:grid;grid-template-columns:minmax(6rem,max-content) 1fr;gap:.35rem 1rem;margin:0}dt{color:#616061}dd{margin:0;min-width:0}code{background:#f4f4f4;padding:.1rem .3rem;border-radius:3px;font-size:.9em}.step{border-left:4px solid #1264a3;padding:.25rem 0 .25rem .75rem}@media(max-width:30rem){body{padding:.5rem}main{margin:.5rem auto;padding:1rem}dl{grid-template-columns:1fr;gap:0}dd{margin-bottom:.5rem}}";

/// The Content-Security-Policy: nothing may load or run; only our one inline style, by hash.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    let policy = format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// How a page reads: done, nothing happened (a cancel, a link no longer needed), or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Success,
    Neutral,
    Failure,
}

/// What an approval is for, as the Slack owner needs to know it: taken from a grant that a
/// genuine link or state led to, never from the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct About {
    pub namespace: String,
    pub name: String,
    pub description: Option<String>,
    pub client_id: String,
    /// Where the app is installed, in words.
    pub install: String,
    pub user_scopes: Vec<String>,
    pub bot_scopes: Vec<String>,
}

impl About {
    pub fn of(grant: &SlackOAuthGrant) -> Self {
        let spec = &grant.spec;
        let install = match (&spec.installation, &spec.team_id) {
            (Installation::Workspace, Some(team)) => format!("the Slack workspace {team}"),
            (Installation::Workspace, None) => "a Slack workspace you choose".to_owned(),
            (Installation::Organization, Some(org)) => {
                format!("the Enterprise Grid organization {org}, org-wide")
            }
            (Installation::Organization, None) => {
                "an Enterprise Grid organization you choose, org-wide".to_owned()
            }
        };
        Self {
            namespace: grant.namespace().unwrap_or_default(),
            name: grant.name_any(),
            description: spec.description.clone().filter(|d| !d.trim().is_empty()),
            client_id: spec.client_id.clone(),
            install,
            user_scopes: spec.user_scopes.clone(),
            bot_scopes: spec.bot_scopes.clone(),
        }
    }

    fn render(&self) -> Markup {
        html! {
            section id="about" {
                h2 { "The approval" }
                dl {
                    dt { "Grant" }
                    dd id="about-grant" { code { (self.namespace) "/" (self.name) } }
                    @if let Some(description) = &self.description {
                        dt { "Purpose" }
                        dd id="about-description" { (description) }
                    }
                    dt { "Slack app" }
                    dd id="about-app" { "Client ID " code { (self.client_id) } }
                    dt { "Installed on" }
                    dd id="about-install" { (self.install) }
                    @if !self.user_scopes.is_empty() {
                        dt { "User scopes" }
                        dd id="about-user-scopes" { (scopes(&self.user_scopes)) }
                    }
                    @if !self.bot_scopes.is_empty() {
                        dt { "Bot scopes" }
                        dd id="about-bot-scopes" { (scopes(&self.bot_scopes)) }
                    }
                }
            }
        }
    }
}

fn scopes(scopes: &[String]) -> Markup {
    html! {
        @for (i, scope) in scopes.iter().enumerate() {
            @if i > 0 { ", " }
            code { (scope) }
        }
    }
}

/// A page to show: its HTTP status, heading, what happened, what to do now and what to tell the
/// person who asked for the approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub status: StatusCode,
    pub tone: Tone,
    pub title: String,
    pub explanation: String,
    pub next_step: String,
    /// What to pass on to whoever manages the grant, when there is something.
    pub tell: Option<String>,
    /// The approval the page is about, once a genuine link or state named it.
    pub about: Option<About>,
    /// The condition reason recorded on the grant, when one was.
    pub reason: Option<&'static str>,
}

impl Page {
    pub fn success(
        title: impl Into<String>,
        explanation: impl Into<String>,
        next_step: impl Into<String>,
    ) -> Self {
        Self {
            tone: Tone::Success,
            ..Self::failure(StatusCode::OK, title, explanation, next_step)
        }
    }

    /// Nothing went wrong, and nothing happened either.
    pub fn neutral(
        status: StatusCode,
        title: impl Into<String>,
        explanation: impl Into<String>,
        next_step: impl Into<String>,
    ) -> Self {
        Self {
            tone: Tone::Neutral,
            ..Self::failure(status, title, explanation, next_step)
        }
    }

    pub fn failure(
        status: StatusCode,
        title: impl Into<String>,
        explanation: impl Into<String>,
        next_step: impl Into<String>,
    ) -> Self {
        Self {
            status,
            tone: Tone::Failure,
            title: title.into(),
            explanation: explanation.into(),
            next_step: next_step.into(),
            tell: None,
            about: None,
            reason: None,
        }
    }

    /// The page with what to tell the requester.
    pub fn tell(mut self, tell: impl Into<String>) -> Self {
        self.tell = Some(tell.into());
        self
    }

    /// The page with the approval it is about.
    pub fn about(mut self, about: Option<About>) -> Self {
        self.about = about;
        self
    }

    /// The page as recorded on the grant with `reason`.
    pub fn recorded(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn is_success(&self) -> bool {
        self.tone == Tone::Success
    }

    fn render(&self) -> Markup {
        let class = match self.tone {
            Tone::Success => "ok",
            Tone::Neutral => "neutral",
            Tone::Failure => "fail",
        };
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="referrer" content="no-referrer";
                    title { (self.title) " · slack-oauth-operator" }
                    style { (PreEscaped(STYLE)) }
                }
                body {
                    main {
                        p class="brand" { "Slack approval · slack-oauth-operator" }
                        h1 class=(class) id="title" { (self.title) }
                        p id="explanation" { (self.explanation) }
                        @if let Some(about) = &self.about { (about.render()) }
                        p class="step" id="next-step" { strong { "What to do now: " } (self.next_step) }
                        @if let Some(tell) = &self.tell {
                            p id="tell" { strong { "What to tell the person who asked for it: " } (tell) }
                        }
                    }
                }
            }
        }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let body = self.render().into_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        // Busy or briefly unavailable: a browser or proxy may try again shortly.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        secure(headers);
        response
    }
}

/// `303 See Other` to Slack's consent page, for a visit to an approval link. With
/// `Referrer-Policy: no-referrer`, Slack never sees the approval link the browser came from.
pub fn redirect(location: &str) -> Response {
    let Ok(value) = HeaderValue::from_str(location) else {
        return Page::failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Approval link not usable",
            "The operator could not build the link to Slack's page. Nothing was changed.",
            "Tell the person who sent you the link; the operator's log says more.",
        )
        .into_response();
    };
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Continuing to Slack" } }
            body { p { a href=(location) { "Continue to Slack to approve" } } }
        }
    };
    let mut response = (StatusCode::SEE_OTHER, body.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, value);
    secure(headers);
    response
}

fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_html_escaped() {
        let page = Page::failure(
            StatusCode::BAD_REQUEST,
            "<script>alert(1)</script>",
            "team \"A&B\" <img src=x>",
            "it's fine",
        );
        let html = page.render().into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("A&amp;B"), "{html}");
    }

    #[test]
    fn pages_are_not_cached_referred_or_framed() {
        let response = Page::success("Done", "ok", "nothing").into_response();
        let headers = response.headers();
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        let csp = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        assert!(
            csp.starts_with("default-src 'none'; style-src 'sha256-"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe"), "{csp}");
    }
}
