//! The HTML Slack shows: the consent page and its error page. Every value is HTML-escaped.
//!
//! Element IDs other than the buttons (`allow`, `cancel`) start with `slack-`, so a browser test
//! that waits for an element of the operator's page never matches one of Slack's.

use std::fmt::Write as _;

use crate::slack::{Consent, PageError};

/// The consent page: what the app asks for, where it is installed, and Allow/Cancel in a POST
/// form whose hidden fields carry the authorize request.
pub(crate) fn page(consent: &Consent) -> String {
    let approver = &consent.approver;
    let (target_id, target_name) = approver.install_target();
    let target = if approver.enterprise_install {
        format!(
            "the {} organization ({})",
            escape(target_name),
            escape(target_id)
        )
    } else {
        format!(
            "the {} workspace ({})",
            escape(target_name),
            escape(target_id)
        )
    };
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<h1 id="slack-consent-title">{app} is requesting permission to access {target}</h1>
<p id="slack-approver">Signed in as {user} ({user_id})"#,
        app = escape(&consent.app_name),
        user = escape(&approver.user_name),
        user_id = escape(&approver.user_id),
    );
    if let Some(enterprise) = &approver.enterprise {
        let _ = write!(
            body,
            r#", in the Enterprise Grid organization <span id="slack-enterprise">{} ({})</span>"#,
            escape(&enterprise.name),
            escape(&enterprise.id)
        );
    }
    body.push_str(".</p>\n");
    if let Some(team) = &consent.request.team {
        let _ = writeln!(
            body,
            r#"<p id="slack-team-hint">Requested workspace: {}</p>"#,
            escape(team)
        );
    }
    scope_list(
        &mut body,
        "slack-bot-scopes",
        "What the app's bot will be able to do",
        &consent.bot_scopes,
    );
    scope_list(
        &mut body,
        "slack-user-scopes",
        "What the app will be able to do on your behalf",
        &consent.user_scopes,
    );
    body.push_str("<form id=\"slack-consent\" method=\"post\" action=\"/oauth/v2/authorize\">\n");
    let request = &consent.request;
    let hidden = [
        ("client_id", &request.client_id),
        ("scope", &request.scope),
        ("user_scope", &request.user_scope),
        ("redirect_uri", &request.redirect_uri),
        ("state", &request.state),
        ("team", &request.team),
    ];
    for (name, value) in hidden {
        if let Some(value) = value {
            let _ = writeln!(
                body,
                r#"<input type="hidden" name="{name}" value="{}">"#,
                escape(value)
            );
        }
    }
    body.push_str(
        r#"<button id="cancel" type="submit" name="decision" value="cancel">Cancel</button>
<button id="allow" type="submit" name="decision" value="allow">Allow</button>
</form>
"#,
    );
    document(&format!("Authorize {}", consent.app_name), &body)
}

/// The page Slack shows instead of redirecting.
pub(crate) fn error_page(error: PageError) -> String {
    let body = format!(
        r#"<h1 id="slack-error-title">Something went wrong when authorizing this app.</h1>
<p>Error: <code id="slack-error">{}</code></p>
<p>{}</p>
"#,
        error.code(),
        escape(error.explanation())
    );
    document("Slack: authorization error", &body)
}

fn scope_list(body: &mut String, id: &str, heading: &str, scopes: &[String]) {
    if scopes.is_empty() {
        return;
    }
    let _ = writeln!(body, r#"<section id="{id}"><h2>{heading}</h2><ul>"#);
    for scope in scopes {
        let _ = writeln!(body, "<li><code>{}</code></li>", escape(scope));
    }
    body.push_str("</ul></section>\n");
}

fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title></head>\n<body>\n{body}</body></html>\n",
        escape(title)
    )
}

/// Escapes text for HTML content and double- or single-quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
