//! The pages a person sees after Slack sends their browser back. maud escapes every value, the
//! pages never name a token or a code, and they are sent with headers that keep them out of
//! caches, referrers and frames.

use std::sync::LazyLock;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use sha2::{Digest, Sha256};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;line-height:1.5;color:#1d1c1d}h1{font-size:1.5rem}.ok{color:#007a5a}.fail{color:#e01e5a}code{background:#f4f4f4;padding:.1rem .3rem;border-radius:3px}";

/// The Content-Security-Policy: nothing may load or run; only our one inline style, by hash.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    let policy = format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// A page to show: its HTTP status, heading, what happened and what to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub status: StatusCode,
    pub success: bool,
    pub title: String,
    pub explanation: String,
    pub next_step: String,
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
            success: true,
            ..Self::failure(StatusCode::OK, title, explanation, next_step)
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
            success: false,
            title: title.into(),
            explanation: explanation.into(),
            next_step: next_step.into(),
            reason: None,
        }
    }

    /// A failure recorded on the grant with `reason`.
    pub fn failure_for(
        reason: &'static str,
        status: StatusCode,
        title: impl Into<String>,
        explanation: impl Into<String>,
        next_step: impl Into<String>,
    ) -> Self {
        Self {
            reason: Some(reason),
            ..Self::failure(status, title, explanation, next_step)
        }
    }

    fn render(&self) -> Markup {
        let class = if self.success { "ok" } else { "fail" };
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
                    h1 class=(class) id="title" { (self.title) }
                    p id="explanation" { (self.explanation) }
                    p id="next-step" { strong { "What to do next: " } (self.next_step) }
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
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Busy or briefly unavailable: a browser or proxy may try again shortly.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
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
        response
    }
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
