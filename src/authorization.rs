//! What an authorization means for a grant, as plain functions: the link to publish, whether
//! Slack's answer satisfies the grant, and the Secret to write. No I/O.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::{
    api::{
        Installation, InstallationStatus, SlackOAuthGrant, SlackOAuthGrantSpec, TokenKind,
        annotations, labels, reasons,
    },
    record::TokenRecord,
    slack::{OAuthAccess, TokenIdentity},
};

/// The link a Slack owner opens: Slack's authorize page with the grant's parameters.
pub fn authorization_url(
    authorize_url: &Url,
    redirect_uri: &Url,
    spec: &SlackOAuthGrantSpec,
    state: &str,
) -> Url {
    let mut url = authorize_url.clone();
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("client_id", &spec.client_id);
        query.append_pair("scope", &spec.bot_scopes.join(","));
        query.append_pair("user_scope", &spec.user_scopes.join(","));
        query.append_pair("redirect_uri", redirect_uri.as_str());
        query.append_pair("state", state);
        if let Some(team) = &spec.team_id {
            query.append_pair("team", team);
        }
    }
    url
}

/// Why Slack's answer does not satisfy the grant. Each becomes a condition reason and a page.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("failed to accept the approval: it came from {got}, but the grant asks for {want}")]
    WrongTeam { want: String, got: String },
    #[error(
        "failed to accept the approval: the app was installed on a single workspace, but the grant asks for an Enterprise Grid organization install"
    )]
    NotOrganizationInstall,
    #[error(
        "failed to accept the approval: the app was installed org-wide, but the grant asks for a workspace install"
    )]
    UnexpectedOrganizationInstall,
    #[error("failed to accept the approval: Slack issued no {0} token")]
    MissingToken(&'static str),
    #[error("failed to accept the approval: Slack did not grant the scopes {missing}")]
    MissingScopes { missing: String },
}

impl Mismatch {
    /// The `Ready` condition reason for this mismatch.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::WrongTeam { .. } => reasons::WRONG_TEAM,
            Self::NotOrganizationInstall | Self::UnexpectedOrganizationInstall => {
                reasons::WRONG_INSTALLATION
            }
            Self::MissingToken(_) | Self::MissingScopes { .. } => reasons::MISSING_SCOPE,
        }
    }
}

/// The token the grant keeps, with what Slack said about it.
#[derive(Debug)]
pub struct Approved {
    pub token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_in: Option<u64>,
    pub installation: InstallationStatus,
}

/// Checks Slack's answer against the grant and picks the token to keep.
pub fn approve(
    spec: &SlackOAuthGrantSpec,
    access: &OAuthAccess,
    now: Timestamp,
) -> Result<Approved, Mismatch> {
    check_installation(spec, access)?;
    let kind = spec.effective_token();
    let (token, refresh_token, expires_in, granted) = pick_token(kind, access)?;
    let requested = match kind {
        TokenKind::User => &spec.user_scopes,
        TokenKind::Bot => &spec.bot_scopes,
    };
    let granted = check_scopes(requested, &granted)?;
    let installation = InstallationStatus {
        team_id: access.team.as_ref().map(|t| t.id.clone()),
        team_name: access.team.as_ref().and_then(|t| t.name.clone()),
        enterprise_id: access.enterprise.as_ref().map(|e| e.id.clone()),
        enterprise_name: access.enterprise.as_ref().and_then(|e| e.name.clone()),
        enterprise_install: access.is_enterprise_install,
        authorized_user_id: access.authed_user.as_ref().map(|u| u.id.clone()),
        scopes: granted,
        token_type: Some(kind),
        authorized_at: Some(Time(now)),
    };
    Ok(Approved {
        token,
        refresh_token,
        expires_in,
        installation,
    })
}

/// The install level and the team are the ones the grant asks for.
fn check_installation(spec: &SlackOAuthGrantSpec, access: &OAuthAccess) -> Result<(), Mismatch> {
    match (spec.installation, access.is_enterprise_install) {
        (Installation::Organization, false) => return Err(Mismatch::NotOrganizationInstall),
        (Installation::Workspace, true) => return Err(Mismatch::UnexpectedOrganizationInstall),
        _ => {}
    }
    let Some(want) = &spec.team_id else {
        return Ok(());
    };
    let team_id = access.team.as_ref().map(|t| t.id.as_str());
    let enterprise_id = access.enterprise.as_ref().map(|e| e.id.as_str());
    if team_id == Some(want.as_str()) || enterprise_id == Some(want.as_str()) {
        return Ok(());
    }
    Err(Mismatch::WrongTeam {
        want: want.clone(),
        got: team_id
            .or(enterprise_id)
            .unwrap_or("an unknown team")
            .to_owned(),
    })
}

/// The token of `kind` in Slack's answer, with its refresh token, lifetime and granted scopes.
type Picked = (SecretString, Option<SecretString>, Option<u64>, String);

fn pick_token(kind: TokenKind, access: &OAuthAccess) -> Result<Picked, Mismatch> {
    match kind {
        TokenKind::User => {
            let user = access
                .authed_user
                .as_ref()
                .ok_or(Mismatch::MissingToken("user"))?;
            let token = user
                .access_token
                .clone()
                .ok_or(Mismatch::MissingToken("user"))?;
            let scope = user.scope.clone().unwrap_or_default();
            Ok((token, user.refresh_token.clone(), user.expires_in, scope))
        }
        TokenKind::Bot => {
            let token = access
                .access_token
                .clone()
                .ok_or(Mismatch::MissingToken("bot"))?;
            let scope = access.scope.clone().unwrap_or_default();
            Ok((
                token,
                access.refresh_token.clone(),
                access.expires_in,
                scope,
            ))
        }
    }
}

/// Every requested scope was granted; returns the granted ones.
fn check_scopes(requested: &[String], granted: &str) -> Result<Vec<String>, Mismatch> {
    let granted: Vec<String> = granted
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let missing: Vec<&str> = requested
        .iter()
        .filter(|s| !granted.contains(s))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(granted)
    } else {
        Err(Mismatch::MissingScopes {
            missing: missing.join(","),
        })
    }
}

/// The name Slack users know the approving team by, for pages and Events.
pub fn team_label(installation: &InstallationStatus) -> String {
    let name = installation
        .team_name
        .as_ref()
        .or(installation.enterprise_name.as_ref());
    let id = installation
        .team_id
        .as_ref()
        .or(installation.enterprise_id.as_ref());
    match (name, id) {
        (Some(name), Some(id)) => format!("{name} ({id})"),
        (None, Some(id)) => id.clone(),
        (Some(name), None) => name.clone(),
        (None, None) => "an unknown team".to_owned(),
    }
}

/// Whether a Secret is one this operator wrote for this grant, and so may be replaced.
pub fn manages(secret: &Secret, grant: &SlackOAuthGrant) -> bool {
    let labelled = secret
        .labels()
        .get(labels::MANAGED_BY)
        .is_some_and(|v| v == labels::OPERATOR);
    let owned = grant.uid().is_some_and(|uid| {
        secret
            .owner_references()
            .iter()
            .any(|o| o.uid == uid && o.kind == SlackOAuthGrant::kind(&()))
    });
    labelled && owned
}

/// Whether `secret` opted in to being read for `grant` (docs/security.md): it carries the
/// `shared-with-grants` label, and its `allowed-grants` annotation, if any, names the grant.
pub fn shared_with(secret: &Secret, grant_name: &str) -> bool {
    let shared = secret
        .labels()
        .get(labels::SHARED_WITH_GRANTS)
        .is_some_and(|v| v == "true");
    let allowed = secret
        .annotations()
        .get(annotations::ALLOWED_GRANTS)
        .is_none_or(|names| names.split(',').any(|n| n.trim() == grant_name));
    shared && allowed
}

/// The consumer Secret of a grant holding `record`'s token: the token under `spec.secret.key`
/// and nothing else secret (the refresh token stays in the record), the spec's labels and
/// annotations, ours (the grant and the token's revision), and an owner reference so it goes
/// away with the grant.
pub fn token_secret(grant: &SlackOAuthGrant, record: &TokenRecord) -> Secret {
    let spec = &grant.spec;
    let data = BTreeMap::from([(
        spec.secret.key.clone(),
        ByteString(record.access_token.expose_secret().as_bytes().to_vec()),
    )]);
    let mut secret_labels = spec.secret.labels.clone();
    secret_labels.insert(labels::MANAGED_BY.to_owned(), labels::OPERATOR.to_owned());
    let mut annotations = spec.secret.annotations.clone();
    annotations.insert(annotations::GRANT.to_owned(), grant.name_any());
    annotations.insert(
        annotations::TOKEN_REVISION.to_owned(),
        record.revision.to_string(),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(spec.secret.name.clone()),
            namespace: grant.namespace(),
            labels: Some(secret_labels),
            annotations: Some(annotations),
            owner_references: grant.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The token under `key` in `secret`, if there is one.
pub fn token_in(secret: &Secret, key: &str) -> Option<SecretString> {
    let bytes = secret.data.as_ref()?.get(key)?;
    let token = String::from_utf8(bytes.0.clone()).ok()?;
    (!token.is_empty()).then(|| SecretString::from(token))
}

/// Whether the consumer Secret holds exactly what `record` says it should: its token, at its
/// revision, with no refresh token or expiry next to it (as versions before the record wrote).
pub fn holds(secret: &Secret, grant: &SlackOAuthGrant, record: &TokenRecord) -> bool {
    let key = &grant.spec.secret.key;
    let token_matches = token_in(secret, key)
        .is_some_and(|t| t.expose_secret() == record.access_token.expose_secret());
    let revision = secret
        .annotations()
        .get(annotations::TOKEN_REVISION)
        .is_some_and(|r| *r == record.revision.to_string());
    let no_legacy = secret.data.as_ref().is_none_or(|d| {
        !d.contains_key(&format!("{key}_REFRESH_TOKEN"))
            && !d.contains_key(&format!("{key}_EXPIRES_AT"))
    });
    token_matches && revision && no_legacy
}

/// Why a token in an existing Secret is not adopted (`spec.secret.adopt`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdoptRefusal {
    #[error("the Secret has no token under key {0}")]
    NoToken(String),
    #[error("Slack does not accept the token ({0})")]
    Refused(String),
    #[error("the token belongs to {got}, but the grant asks for {want}")]
    WrongTeam { want: String, got: String },
    #[error("the token is a {got} token, but the grant asks for a {want} token")]
    WrongKind {
        want: &'static str,
        got: &'static str,
    },
    #[error(
        "the token is from a single-workspace install, but the grant asks for an org-wide install"
    )]
    NotOrganizationInstall,
    #[error("the token is from an org-wide install, but the grant asks for a workspace install")]
    UnexpectedOrganizationInstall,
}

fn kind_name(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::User => "user",
        TokenKind::Bot => "bot",
    }
}

/// The installation of a token to adopt, from what `auth.test` said about it, if it is the
/// token the grant asks for. The scopes are not known (`auth.test` names none), so none are
/// recorded.
pub fn adoptable(
    spec: &SlackOAuthGrantSpec,
    identity: &TokenIdentity,
    now: Timestamp,
) -> Result<InstallationStatus, AdoptRefusal> {
    let want = spec.effective_token();
    let got = if identity.bot_id.is_some() {
        TokenKind::Bot
    } else {
        TokenKind::User
    };
    if want != got {
        return Err(AdoptRefusal::WrongKind {
            want: kind_name(want),
            got: kind_name(got),
        });
    }
    match (spec.installation, identity.is_enterprise_install) {
        (Installation::Organization, false) => return Err(AdoptRefusal::NotOrganizationInstall),
        (Installation::Workspace, true) => {
            return Err(AdoptRefusal::UnexpectedOrganizationInstall);
        }
        _ => {}
    }
    if let Some(want) = &spec.team_id {
        let ids = [&identity.team_id, &identity.enterprise_id];
        if !ids.iter().any(|id| id.as_deref() == Some(want.as_str())) {
            return Err(AdoptRefusal::WrongTeam {
                want: want.clone(),
                got: identity
                    .team_id
                    .clone()
                    .unwrap_or_else(|| "an unknown team".to_owned()),
            });
        }
    }
    let org = identity.is_enterprise_install;
    Ok(InstallationStatus {
        team_id: (!org).then(|| identity.team_id.clone()).flatten(),
        team_name: (!org).then(|| identity.team.clone()).flatten(),
        enterprise_id: identity
            .enterprise_id
            .clone()
            .or_else(|| org.then(|| identity.team_id.clone()).flatten()),
        enterprise_name: org.then(|| identity.team.clone()).flatten(),
        enterprise_install: org,
        authorized_user_id: identity.user_id.clone(),
        scopes: Vec::new(),
        token_type: Some(want),
        authorized_at: Some(Time(now)),
    })
}

/// A token Secret written before the operator kept records: the approval it holds, read so
/// that it can be moved under a record on upgrade.
pub struct Legacy {
    pub generation: i64,
    pub installation: InstallationStatus,
    pub token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_at: Option<Timestamp>,
}

/// The approval in a token Secret written before the operator kept records, if it is one.
pub fn read_legacy(secret: &Secret, key: &str) -> Option<Legacy> {
    let annotations = secret.metadata.annotations.as_ref()?;
    let generation = annotations
        .get(annotations::GRANT_GENERATION)?
        .parse()
        .ok()?;
    let installation = serde_json::from_str(annotations.get(annotations::INSTALLATION)?).ok()?;
    let token = token_in(secret, key)?;
    let refresh_token = token_in(secret, &format!("{key}_REFRESH_TOKEN"));
    let expires_at = token_in(secret, &format!("{key}_EXPIRES_AT"))
        .and_then(|at| at.expose_secret().parse().ok());
    Some(Legacy {
        generation,
        installation,
        token,
        refresh_token,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::{ClientSecretRef, TargetSecret};

    fn spec() -> SlackOAuthGrantSpec {
        serde_json::from_value(json!({
            "clientID": "1234567890.1234567890",
            "clientSecretRef": { "name": "app" },
            "secret": { "name": "slack-token" }
        }))
        .expect("spec")
    }

    fn access(value: serde_json::Value) -> OAuthAccess {
        serde_json::from_value(value).expect("Slack's answer")
    }

    fn user_install() -> OAuthAccess {
        access(json!({
            "ok": true, "app_id": "A1",
            "authed_user": { "id": "U1", "scope": "admin", "access_token": "xoxp-1", "token_type": "user" },
            "team": { "id": "T1", "name": "Acme" }, "enterprise": null, "is_enterprise_install": false
        }))
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("time")
    }

    #[test]
    fn authorization_url_carries_the_grant_parameters() {
        let mut spec = spec();
        spec.team_id = Some("T0123".into());
        spec.bot_scopes = vec!["chat:write".into(), "users:read".into()];
        let authorize = Url::parse("https://slack.com/oauth/v2/authorize").expect("url");
        let redirect = Url::parse("https://op.example.com/oauth/callback").expect("url");
        let url = authorization_url(&authorize, &redirect, &spec, "s1.abc");
        let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(query["client_id"], "1234567890.1234567890");
        assert_eq!(query["scope"], "chat:write,users:read");
        assert_eq!(query["user_scope"], "admin");
        assert_eq!(
            query["redirect_uri"],
            "https://op.example.com/oauth/callback"
        );
        assert_eq!(query["state"], "s1.abc");
        assert_eq!(query["team"], "T0123");
    }

    #[test]
    fn user_token_is_kept_for_a_user_grant() {
        let approved = approve(&spec(), &user_install(), now()).expect("approved");
        assert_eq!(approved.token.expose_secret(), "xoxp-1");
        assert_eq!(approved.installation.team_id.as_deref(), Some("T1"));
        assert_eq!(approved.installation.scopes, vec!["admin"]);
        assert_eq!(approved.installation.token_type, Some(TokenKind::User));
        assert_eq!(team_label(&approved.installation), "Acme (T1)");
    }

    #[test]
    fn bot_token_is_kept_for_a_bot_grant() {
        let mut spec = spec();
        spec.user_scopes = vec![];
        spec.bot_scopes = vec!["chat:write".into()];
        let answer = access(json!({
            "ok": true, "access_token": "xoxb-1", "token_type": "bot", "scope": "chat:write,commands",
            "bot_user_id": "B1", "team": { "id": "T1", "name": "Acme" }, "is_enterprise_install": false,
            "authed_user": { "id": "U1" }
        }));
        let approved = approve(&spec, &answer, now()).expect("approved");
        assert_eq!(approved.token.expose_secret(), "xoxb-1");
        assert_eq!(approved.installation.token_type, Some(TokenKind::Bot));
    }

    #[test]
    fn org_wide_install_is_required_for_an_organization_grant() {
        let mut spec = spec();
        spec.installation = Installation::Organization;
        assert_eq!(
            approve(&spec, &user_install(), now()).err(),
            Some(Mismatch::NotOrganizationInstall)
        );
        let org = access(json!({
            "ok": true, "authed_user": { "id": "U1", "scope": "admin", "access_token": "xoxp-2" },
            "team": null, "enterprise": { "id": "E1", "name": "Acme Grid" }, "is_enterprise_install": true
        }));
        let approved = approve(&spec, &org, now()).expect("org install");
        assert!(approved.installation.enterprise_install);
        assert_eq!(team_label(&approved.installation), "Acme Grid (E1)");
        assert_eq!(
            approve(&self::spec(), &org, now()).err(),
            Some(Mismatch::UnexpectedOrganizationInstall)
        );
    }

    #[test]
    fn team_must_match_the_workspace_or_the_organization() {
        let mut spec = spec();
        spec.team_id = Some("T2".into());
        assert!(matches!(
            approve(&spec, &user_install(), now()),
            Err(Mismatch::WrongTeam { .. })
        ));
        spec.team_id = Some("T1".into());
        assert!(approve(&spec, &user_install(), now()).is_ok());
    }

    #[test]
    fn fewer_scopes_than_requested_are_refused() {
        let mut spec = spec();
        spec.user_scopes = vec!["admin".into(), "users:read".into()];
        assert_eq!(
            approve(&spec, &user_install(), now()).err(),
            Some(Mismatch::MissingScopes {
                missing: "users:read".into()
            })
        );
    }

    #[test]
    fn missing_token_is_refused() {
        let mut spec = spec();
        spec.token = Some(TokenKind::Bot);
        spec.bot_scopes = vec!["chat:write".into()];
        assert_eq!(
            approve(&spec, &user_install(), now()).err(),
            Some(Mismatch::MissingToken("bot"))
        );
    }

    #[test]
    fn mismatch_messages_never_contain_a_token() {
        let mut spec = spec();
        spec.team_id = Some("T9".into());
        let message = approve(&spec, &user_install(), now())
            .expect_err("mismatch")
            .to_string();
        assert!(!message.contains("xoxp"), "{message}");
    }

    #[test]
    fn token_secret_holds_the_token_labels_and_owner() {
        let mut grant = SlackOAuthGrant::new(
            "scim",
            SlackOAuthGrantSpec {
                description: None,
                client_secret_ref: ClientSecretRef {
                    name: "app".into(),
                    key: "clientSecret".into(),
                },
                secret: TargetSecret {
                    name: "slack-token".into(),
                    key: "SLACK_ACCESS_TOKEN".into(),
                    labels: BTreeMap::from([("team".to_owned(), "identity".to_owned())]),
                    annotations: BTreeMap::from([(
                        "note".to_owned(),
                        "for PingFederate".to_owned(),
                    )]),
                    adopt: false,
                    rollout_restart: Vec::new(),
                },
                ..spec()
            },
        );
        grant.metadata.namespace = Some("pf".into());
        grant.metadata.uid = Some("uid-1".into());
        grant.metadata.generation = Some(2);
        let approved = approve(&grant.spec, &user_install(), now()).expect("approved");
        let record = TokenRecord::approved(
            &grant,
            &approved,
            None,
            now(),
            std::time::Duration::from_secs(600),
        );
        let secret = token_secret(&grant, &record);
        let data = secret.data.as_ref().expect("data");
        assert_eq!(data["SLACK_ACCESS_TOKEN"].0, b"xoxp-1");
        assert_eq!(data.len(), 1);
        assert_eq!(secret.labels()[labels::MANAGED_BY], labels::OPERATOR);
        assert_eq!(secret.labels()["team"], "identity");
        assert_eq!(secret.annotations()["note"], "for PingFederate");
        assert_eq!(secret.annotations()[annotations::TOKEN_REVISION], "1");
        let owner = &secret.owner_references()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("uid-1", Some(true))
        );
        assert!(manages(&secret, &grant));
        assert!(holds(&secret, &grant, &record));
        assert!(
            !serde_json::to_string(&secret.metadata)
                .expect("json")
                .contains("xoxp-1")
        );
    }

    #[test]
    fn a_token_is_adopted_only_as_the_kind_team_and_install_the_grant_asks_for() {
        let mut spec = spec();
        spec.team_id = Some("T1".into());
        let user = TokenIdentity {
            team_id: Some("T1".into()),
            team: Some("Acme".into()),
            user_id: Some("U1".into()),
            ..Default::default()
        };
        let installation = adoptable(&spec, &user, now()).expect("adoptable");
        assert_eq!(installation.team_id.as_deref(), Some("T1"));
        assert_eq!(installation.authorized_user_id.as_deref(), Some("U1"));
        assert_eq!(installation.token_type, Some(TokenKind::User));
        let bot = TokenIdentity {
            bot_id: Some("B1".into()),
            ..user.clone()
        };
        assert!(matches!(
            adoptable(&spec, &bot, now()),
            Err(AdoptRefusal::WrongKind { .. })
        ));
        let elsewhere = TokenIdentity {
            team_id: Some("T2".into()),
            ..user.clone()
        };
        assert!(matches!(
            adoptable(&spec, &elsewhere, now()),
            Err(AdoptRefusal::WrongTeam { .. })
        ));
        let org = TokenIdentity {
            team_id: Some("E1".into()),
            enterprise_id: Some("E1".into()),
            is_enterprise_install: true,
            ..user
        };
        assert_eq!(
            adoptable(&spec, &org, now()),
            Err(AdoptRefusal::UnexpectedOrganizationInstall)
        );
        spec.installation = Installation::Organization;
        spec.team_id = Some("E1".into());
        let installation = adoptable(&spec, &org, now()).expect("org-wide");
        assert_eq!(installation.enterprise_id.as_deref(), Some("E1"));
        assert!(installation.enterprise_install);
    }

    #[test]
    fn a_secret_without_our_label_and_owner_is_not_ours() {
        let mut grant = SlackOAuthGrant::new("scim", spec());
        grant.metadata.uid = Some("uid-1".into());
        let foreign = Secret {
            metadata: ObjectMeta {
                name: Some("slack-token".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(!manages(&foreign, &grant));
    }
}
