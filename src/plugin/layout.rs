//! How `status` lays a grant out: labelled lines with aligned values, then conditions and
//! Events as aligned tables. No I/O; nothing here can see a token, since status holds none.

use k8s_openapi::{api::core::v1::Event, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::pending::{View, phase_name};
use crate::api::SlackOAuthGrant;

/// One Event, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLine {
    pub at: Option<Timestamp>,
    pub type_: String,
    pub reason: String,
    pub count: i32,
    pub message: String,
}

impl EventLine {
    /// From a core/v1 Event, whichever of its time fields its writer filled in (the
    /// events.k8s.io writer sets `eventTime` and a series, the older one `lastTimestamp`).
    pub fn of(event: &Event) -> Self {
        let at = event
            .series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
            .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
            .or_else(|| event.event_time.as_ref().map(|t| t.0))
            .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
            .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let count = event
            .series
            .as_ref()
            .and_then(|s| s.count)
            .or(event.count)
            .unwrap_or(1);
        Self {
            at,
            type_: event.type_.clone().unwrap_or_default(),
            reason: event.reason.clone().unwrap_or_default(),
            count,
            message: event.message.clone().unwrap_or_default(),
        }
    }
}

/// How long ago, as kubectl says it: `45s`, `12m`, `3h`, `5d`.
pub fn age(then: Timestamp, now: Timestamp) -> String {
    let seconds = now.as_second().saturating_sub(then.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn time(at: Option<&Time>, now: Timestamp) -> String {
    match at {
        Some(Time(at)) => format!("{at} ({} ago)", age(*at, now)),
        None => "-".to_owned(),
    }
}

fn until(at: &Time, now: Timestamp) -> String {
    if at.0 <= now {
        format!("{} (expired {} ago)", at.0, age(at.0, now))
    } else {
        format!("{} (in {})", at.0, age(now, at.0))
    }
}

/// Rows of cells as columns, each as wide as its widest cell, two spaces apart.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str("  ");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The whole `status` page.
pub fn render(grant: &SlackOAuthGrant, events: &[EventLine], now: Timestamp) -> String {
    let status = grant.status.clone().unwrap_or_default();
    let installation = status.installation.clone().unwrap_or_default();
    let name = grant.metadata.name.clone().unwrap_or_default();
    let namespace = grant.metadata.namespace.clone().unwrap_or_default();
    let or_dash = |v: Option<String>| v.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into());
    let with_id = |name: Option<String>, id: Option<String>| match (name, id) {
        (Some(name), Some(id)) => format!("{name} ({id})"),
        (name, id) => or_dash(name.or(id)),
    };
    let mut fields: Vec<(&str, String)> = vec![
        ("Grant", format!("{namespace}/{name}")),
        (
            "Phase",
            status
                .phase
                .map_or_else(|| "-".to_owned(), |p| phase_name(p).to_owned()),
        ),
        (
            "Team",
            with_id(installation.team_name.clone(), installation.team_id.clone()),
        ),
        (
            "Enterprise",
            with_id(
                installation.enterprise_name.clone(),
                installation.enterprise_id.clone(),
            ),
        ),
        (
            "Approved by",
            or_dash(installation.authorized_user_id.clone()),
        ),
        (
            "Approved at",
            time(installation.authorized_at.as_ref(), now),
        ),
        (
            "Scopes",
            if installation.scopes.is_empty() {
                "-".to_owned()
            } else {
                installation.scopes.join(", ")
            },
        ),
    ];
    match &status.token {
        Some(token) => {
            let kind = installation
                .token_type
                .map(|k| format!("{k:?} token, "))
                .unwrap_or_default();
            fields.push((
                "Token",
                format!(
                    "{kind}revision {}, issued {}",
                    token.revision,
                    time(Some(&token.issued_at), now)
                ),
            ));
            fields.push((
                "Expires",
                token.expires_at.as_ref().map_or_else(
                    || "never (no token rotation)".to_owned(),
                    |at| until(at, now),
                ),
            ));
            if let Some(refreshed) = &token.refreshed_at {
                fields.push(("Refreshed", time(Some(refreshed), now)));
            }
        }
        None => fields.push(("Token", "none yet".to_owned())),
    }
    fields.push(("Last check", last_check(grant, now)));
    fields.push(("Secret", grant.spec.secret.name.clone()));
    if let Some(link) = &status.authorization_url {
        fields.push(("Link", link.clone()));
        if let Some(expires) = &status.authorization_expires_at {
            fields.push(("Link expires", until(expires, now)));
        }
    }
    let view = View::of(grant);
    fields.push(("Now", format!("{}: {}", view.reason, view.message)));

    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (label, value) in &fields {
        out.push_str(&format!("{:<width$}  {value}\n", format!("{label}:")));
    }

    out.push_str("\nConditions:\n");
    if status.conditions.is_empty() {
        out.push_str("  none yet: the operator has not written a status\n");
    } else {
        let mut rows = vec![vec![
            "TYPE".to_owned(),
            "STATUS".to_owned(),
            "REASON".to_owned(),
            "SINCE".to_owned(),
            "MESSAGE".to_owned(),
        ]];
        rows.extend(status.conditions.iter().map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                age(c.last_transition_time.0, now),
                c.message.clone(),
            ]
        }));
        out.push_str(&table(&rows));
    }

    out.push_str("\nEvents:\n");
    if events.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut rows = vec![vec![
            "AGE".to_owned(),
            "TYPE".to_owned(),
            "REASON".to_owned(),
            "COUNT".to_owned(),
            "MESSAGE".to_owned(),
        ]];
        rows.extend(events.iter().map(|e| {
            vec![
                e.at.map_or_else(|| "-".to_owned(), |at| age(at, now)),
                e.type_.clone(),
                e.reason.clone(),
                e.count.to_string(),
                e.message.clone(),
            ]
        }));
        out.push_str(&table(&rows));
    }
    out
}

/// The status keeps no time of the last `auth.test`: the operator moves condition times only on
/// change. The `ProvisioningReady` condition comes closest (asked with the periodic check).
fn last_check(grant: &SlackOAuthGrant, now: Timestamp) -> String {
    let provisioning = super::pending::condition(grant, crate::api::conditions::PROVISIONING_READY);
    match provisioning {
        Some(c) => format!(
            "{} {} since {}",
            c.type_,
            c.reason,
            time(Some(&c.last_transition_time), now)
        ),
        None => "not recorded in status (see the operator's grant_last_check metric)".to_owned(),
    }
}

/// Events newest last, at most `limit` of them.
pub fn recent(mut events: Vec<EventLine>, limit: usize) -> Vec<EventLine> {
    events.sort_by_key(|e| e.at);
    let skip = events.len().saturating_sub(limit);
    events.split_off(skip)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn now() -> Timestamp {
        "2026-06-01T12:00:00Z".parse().expect("time")
    }

    fn ready_grant() -> SlackOAuthGrant {
        serde_json::from_value(json!({
            "apiVersion": "slack-oauth-operator.io/v1alpha1", "kind": "SlackOAuthGrant",
            "metadata": { "name": "scim", "namespace": "pf", "generation": 1 },
            "spec": { "clientID": "1.2", "clientSecretRef": { "name": "a" }, "secret": { "name": "slack-token" } },
            "status": {
                "phase": "Ready",
                "observedGeneration": 1,
                "installation": {
                    "teamID": "T0ACME", "teamName": "Acme", "authorizedUserID": "U1",
                    "scopes": ["admin", "users:read"], "tokenType": "User",
                    "authorizedAt": "2026-06-01T11:00:00Z"
                },
                "token": { "revision": 2, "issuedAt": "2026-06-01T11:00:00Z", "expiresAt": "2026-06-01T23:00:00Z" },
                "conditions": [
                    { "type": "Ready", "status": "True", "reason": "Authorized", "message": "The token is in the Secret.",
                      "lastTransitionTime": "2026-06-01T11:00:00Z" },
                    { "type": "AuthorizationPending", "status": "False", "reason": "UpToDate", "message": "No link is out.",
                      "lastTransitionTime": "2026-06-01T11:59:30Z" }
                ]
            }
        }))
        .expect("grant")
    }

    #[test]
    fn ages_read_like_kubectls() {
        let now = now();
        let ago = |s: i64| Timestamp::from_second(now.as_second() - s).expect("time");
        assert_eq!(age(ago(5), now), "5s");
        assert_eq!(age(ago(600), now), "10m");
        assert_eq!(age(ago(3 * 3600), now), "3h");
        assert_eq!(age(ago(3 * 86400), now), "3d");
    }

    #[test]
    fn table_columns_line_up() {
        let rows = vec![
            vec!["A".to_owned(), "BB".to_owned(), "x".to_owned()],
            vec!["CCC".to_owned(), "D".to_owned(), "y".to_owned()],
        ];
        assert_eq!(table(&rows), "  A    BB  x\n  CCC  D   y\n");
    }

    #[test]
    fn status_shows_team_approver_scopes_token_and_conditions_aligned() {
        let events = vec![EventLine {
            at: Some("2026-06-01T11:00:00Z".parse().expect("time")),
            type_: "Normal".into(),
            reason: "Authorized".into(),
            count: 1,
            message: "The token approved by Acme is in Secret pf/slack-token.".into(),
        }];
        let page = render(&ready_grant(), &events, now());
        assert!(page.contains("Grant:        pf/scim\n"), "{page}");
        assert!(page.contains("Team:         Acme (T0ACME)\n"), "{page}");
        assert!(page.contains("Approved by:  U1\n"), "{page}");
        assert!(page.contains("Scopes:       admin, users:read\n"), "{page}");
        assert!(page.contains("User token, revision 2"), "{page}");
        assert!(page.contains("(in 11h)"), "{page}");
        assert!(
            page.contains("  Ready                 True    Authorized  60m"),
            "{page}"
        );
        assert!(
            page.contains("  60m  Normal  Authorized  1      The token approved"),
            "{page}"
        );
        // Every labelled value starts in the same column.
        let value_column = |line: &str| {
            let after = line.find(':').expect("a label") + 1;
            after + line[after..].len() - line[after..].trim_start().len()
        };
        let columns: Vec<usize> = page
            .lines()
            .take_while(|l| !l.is_empty())
            .map(value_column)
            .collect();
        assert!(columns.windows(2).all(|w| w[0] == w[1]), "{page}");
    }

    #[test]
    fn only_the_most_recent_events_are_kept_oldest_first() {
        let line = |s: i64| EventLine {
            at: Some(Timestamp::from_second(s).expect("time")),
            type_: "Normal".into(),
            reason: format!("R{s}"),
            count: 1,
            message: String::new(),
        };
        let kept = recent(vec![line(3), line(1), line(2)], 2);
        assert_eq!(
            kept.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            ["R2", "R3"]
        );
    }
}
