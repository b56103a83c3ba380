//! The operator's own record of a grant's tokens: one Secret per grant in the operator's
//! namespace, which only the operator reads (docs/security.md). It holds what the consumer
//! Secret must not: the refresh token, and tokens a new approval replaced that still have to be
//! revoked. The consumer Secret is a projection of it: the access token under `spec.secret.key`
//! and nothing else secret. So a deleted or hand-edited consumer Secret is restored without a new
//! approval, a refresh never loses its single-use refresh token, and deleting the grant knows
//! every token it has to revoke.
//!
//! Everything here is pure: building, reading and deciding from a record. The reads and writes
//! are in [`crate::store`].

use std::{collections::BTreeMap, fmt, time::Duration};

use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::{SignedDuration, Timestamp},
};
use kube::ResourceExt;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::{
    api::{
        InstallationStatus, SlackOAuthGrant, SlackOAuthGrantSpec, TokenStatus, annotations, labels,
    },
    authorization::{Approved, Legacy},
};

/// The data key of the record in its Secret.
const DATA_KEY: &str = "record.json";
/// Labels a record Secret (value `true`), next to the managed-by label.
pub const RECORD_LABEL: &str = "slack-oauth-operator.io/token-record";
/// A token is refreshed once less than this fraction of its lifetime is left: 8 hours into
/// Slack's 12.
const REFRESH_WHEN_LEFT: f64 = 1.0 / 3.0;

/// The name of grant `uid`'s record Secret. The UID, not the name, so that a grant deleted and
/// created again under the same name never inherits the old one's tokens.
pub fn secret_name(uid: &str) -> String {
    format!("slack-oauth-record-{uid}")
}

/// What a grant was approved for: the parts of the spec that Slack's approval covers, and the
/// `reauthorize` annotation's value at the time. A grant whose current values differ needs a new
/// approval; other spec changes (the Secret's name, labels, the deletion policy) do not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovedFor {
    pub client_id: String,
    pub user_scopes: Vec<String>,
    pub bot_scopes: Vec<String>,
    pub installation: String,
    pub team_id: Option<String>,
    pub token: String,
    #[serde(default)]
    pub reauthorize: Option<String>,
}

impl ApprovedFor {
    pub fn of(grant: &SlackOAuthGrant) -> Self {
        let spec: &SlackOAuthGrantSpec = &grant.spec;
        let sorted = |scopes: &[String]| {
            let mut scopes = scopes.to_vec();
            scopes.sort();
            scopes.dedup();
            scopes
        };
        Self {
            client_id: spec.client_id.clone(),
            user_scopes: sorted(&spec.user_scopes),
            bot_scopes: sorted(&spec.bot_scopes),
            installation: format!("{:?}", spec.installation),
            team_id: spec.team_id.clone(),
            token: format!("{:?}", spec.effective_token()),
            reauthorize: grant.annotations().get(annotations::REAUTHORIZE).cloned(),
        }
    }

    /// Why `grant` needs a new approval although it holds this one, if it does.
    pub fn pending_for(&self, grant: &SlackOAuthGrant) -> Option<Pending> {
        let now = Self::of(grant);
        if now.reauthorize != self.reauthorize {
            return Some(Pending::Reauthorize);
        }
        let same_spec = Self {
            reauthorize: None,
            ..now
        } == Self {
            reauthorize: None,
            ..self.clone()
        };
        (!same_spec).then_some(Pending::SpecChanged)
    }
}

/// Why a grant that holds a working token has a new link out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// The scopes, app, team, installation or token kind changed since the approval.
    SpecChanged,
    /// The `slack-oauth-operator.io/reauthorize` annotation has a new value.
    Reauthorize,
}

/// A token a new approval replaced, kept until its consumers have switched and then revoked.
#[derive(Clone)]
pub struct Retired {
    pub token: SecretString,
    pub revoke_after: Timestamp,
}

/// A grant's tokens. `Debug` shows no secret value.
#[derive(Clone)]
pub struct TokenRecord {
    pub namespace: String,
    pub grant: String,
    pub uid: String,
    pub approved_for: ApprovedFor,
    /// Counts the access tokens the consumer Secret has held: 1 for the first approval, one
    /// more for every approval and refresh since. Workloads are restarted on a change of it.
    pub revision: u64,
    pub access_token: SecretString,
    /// The newest refresh token, when Slack rotates the grant's tokens. Single-use.
    pub refresh_token: Option<SecretString>,
    /// When `access_token` was issued (by an approval or a refresh).
    pub issued_at: Timestamp,
    /// When `access_token` expires; `None` for tokens that do not.
    pub expires_at: Option<Timestamp>,
    /// When the token was last refreshed.
    pub refreshed_at: Option<Timestamp>,
    /// Slack refused the refresh token for good: a new approval is needed.
    pub refresh_failed: bool,
    pub installation: InstallationStatus,
    pub retired: Vec<Retired>,
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRecord")
            .field("namespace", &self.namespace)
            .field("grant", &self.grant)
            .field("revision", &self.revision)
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &self.refresh_token.is_some())
            .field("retired", &self.retired.len())
            .finish_non_exhaustive()
    }
}

/// A record as stored: plain strings, only ever inside a Secret's data.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    namespace: String,
    grant: String,
    uid: String,
    approved_for: ApprovedFor,
    revision: u64,
    access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    issued_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refreshed_at: Option<Timestamp>,
    #[serde(default)]
    refresh_failed: bool,
    installation: InstallationStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    retired: Vec<StoredRetired>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredRetired {
    token: String,
    revoke_after: Timestamp,
}

fn after(at: Timestamp, seconds: u64) -> Timestamp {
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
    at.checked_add(SignedDuration::from_secs(seconds))
        .unwrap_or(at)
}

fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

impl TokenRecord {
    /// The record after `approved` was issued for `grant`. The token of `previous` (another
    /// approval's) is retired: revoked `revoke_grace` after the new one is written, so that its
    /// consumers can switch first.
    pub fn approved(
        grant: &SlackOAuthGrant,
        approved: &Approved,
        previous: Option<&TokenRecord>,
        now: Timestamp,
        revoke_grace: Duration,
    ) -> Self {
        let mut retired = previous.map(|p| p.retired.clone()).unwrap_or_default();
        if let Some(previous) = previous
            && previous.access_token.expose_secret() != approved.token.expose_secret()
        {
            retired.push(Retired {
                token: previous.access_token.clone(),
                revoke_after: now + signed(revoke_grace),
            });
        }
        Self {
            namespace: grant.namespace().unwrap_or_default(),
            grant: grant.name_any(),
            uid: grant.uid().unwrap_or_default(),
            approved_for: ApprovedFor::of(grant),
            revision: previous.map_or(0, |p| p.revision) + 1,
            access_token: approved.token.clone(),
            refresh_token: approved.refresh_token.clone(),
            issued_at: now,
            expires_at: approved.expires_in.map(|s| after(now, s)),
            refreshed_at: None,
            refresh_failed: false,
            installation: approved.installation.clone(),
            retired,
        }
    }

    /// The record of a token Secret written before the operator kept records. A Secret
    /// approved for an older generation of the grant stays pending a new approval, as it was.
    pub fn migrated(grant: &SlackOAuthGrant, legacy: &Legacy, now: Timestamp) -> Self {
        let mut approved_for = ApprovedFor::of(grant);
        if Some(legacy.generation) != grant.metadata.generation {
            approved_for.token = "an older generation".to_owned();
        }
        Self {
            namespace: grant.namespace().unwrap_or_default(),
            grant: grant.name_any(),
            uid: grant.uid().unwrap_or_default(),
            approved_for,
            revision: 1,
            access_token: legacy.token.clone(),
            refresh_token: legacy.refresh_token.clone(),
            issued_at: legacy
                .installation
                .authorized_at
                .as_ref()
                .map_or(now, |t| t.0),
            expires_at: legacy.expires_at,
            refreshed_at: None,
            refresh_failed: false,
            installation: legacy.installation.clone(),
            retired: Vec::new(),
        }
    }

    /// The record of a token adopted from an existing Secret (`spec.secret.adopt`), after Slack
    /// confirmed it: treated as approved for the grant as it is now.
    pub fn adopted(
        grant: &SlackOAuthGrant,
        token: SecretString,
        installation: InstallationStatus,
        now: Timestamp,
    ) -> Self {
        Self {
            namespace: grant.namespace().unwrap_or_default(),
            grant: grant.name_any(),
            uid: grant.uid().unwrap_or_default(),
            approved_for: ApprovedFor::of(grant),
            revision: 1,
            access_token: token,
            refresh_token: None,
            issued_at: now,
            expires_at: None,
            refreshed_at: None,
            refresh_failed: false,
            installation,
            retired: Vec::new(),
        }
    }

    /// What the grant's status says about the token.
    /// Times are whole seconds, as the API server stores them: a status planned with
    /// sub-second times would never equal the one read back, and be written on every reconcile.
    pub fn status(&self) -> TokenStatus {
        let second = |at: Timestamp| Time(Timestamp::from_second(at.as_second()).unwrap_or(at));
        TokenStatus {
            revision: self.revision,
            issued_at: second(self.issued_at),
            expires_at: self.expires_at.map(second),
            refreshed_at: self.refreshed_at.map(second),
        }
    }

    /// The record after a refresh issued `token` (and the next refresh token). The old access
    /// token is not retired: Slack keeps it valid until it expires, and consumers still reading
    /// it keep working until then.
    pub fn refreshed(
        &self,
        token: SecretString,
        refresh_token: Option<SecretString>,
        expires_in: Option<u64>,
        now: Timestamp,
    ) -> Self {
        Self {
            revision: self.revision + 1,
            access_token: token,
            refresh_token,
            issued_at: now,
            expires_at: expires_in.map(|s| after(now, s)),
            refreshed_at: Some(now),
            refresh_failed: false,
            ..self.clone()
        }
    }

    /// When the token should be refreshed: once less than a third of its lifetime is left.
    /// `None` when it cannot be (no refresh token, or no expiry).
    pub fn refresh_at(&self) -> Option<Timestamp> {
        let expires_at = self.expires_at?;
        self.refresh_token.as_ref()?;
        if self.refresh_failed {
            return None;
        }
        let lifetime = expires_at.duration_since(self.issued_at);
        let lead = SignedDuration::from_secs_f64(lifetime.as_secs_f64() * REFRESH_WHEN_LEFT);
        Some(expires_at - lead)
    }

    /// The retired tokens that may be revoked at `now`.
    pub fn retired_due(&self, now: Timestamp) -> Vec<SecretString> {
        self.retired
            .iter()
            .filter(|r| r.revoke_after <= now)
            .map(|r| r.token.clone())
            .collect()
    }

    /// When the next retired token may be revoked.
    pub fn next_retirement(&self) -> Option<Timestamp> {
        self.retired.iter().map(|r| r.revoke_after).min()
    }

    /// The record without the retired tokens in `revoked`.
    pub fn without_retired(&self, revoked: &[SecretString]) -> Self {
        let mut next = self.clone();
        next.retired.retain(|r| {
            !revoked
                .iter()
                .any(|t| t.expose_secret() == r.token.expose_secret())
        });
        next
    }

    /// The tokens new approvals replaced that are not revoked yet.
    pub fn retired_tokens(&self) -> Vec<SecretString> {
        self.retired.iter().map(|r| r.token.clone()).collect()
    }

    /// Every token of the record Slack may still accept.
    pub fn live_tokens(&self) -> Vec<SecretString> {
        std::iter::once(self.access_token.clone())
            .chain(self.retired_tokens())
            .collect()
    }

    fn stored(&self) -> Stored {
        Stored {
            namespace: self.namespace.clone(),
            grant: self.grant.clone(),
            uid: self.uid.clone(),
            approved_for: self.approved_for.clone(),
            revision: self.revision,
            access_token: self.access_token.expose_secret().to_owned(),
            refresh_token: self
                .refresh_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            refreshed_at: self.refreshed_at,
            refresh_failed: self.refresh_failed,
            installation: self.installation.clone(),
            retired: self
                .retired
                .iter()
                .map(|r| StoredRetired {
                    token: r.token.expose_secret().to_owned(),
                    revoke_after: r.revoke_after,
                })
                .collect(),
        }
    }

    /// The record Secret, in `namespace` (the operator's own).
    pub fn to_secret(&self, namespace: &str) -> Secret {
        let json = serde_json::to_vec(&self.stored()).unwrap_or_default();
        Secret {
            metadata: ObjectMeta {
                name: Some(secret_name(&self.uid)),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([
                    (labels::MANAGED_BY.to_owned(), labels::OPERATOR.to_owned()),
                    (RECORD_LABEL.to_owned(), "true".to_owned()),
                ])),
                annotations: Some(BTreeMap::from([(
                    annotations::GRANT.to_owned(),
                    format!("{}/{}", self.namespace, self.grant),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(BTreeMap::from([(DATA_KEY.to_owned(), ByteString(json))])),
            ..Secret::default()
        }
    }

    /// The record in `secret`, if it is one and belongs to grant `uid`.
    pub fn from_secret(secret: &Secret, uid: &str) -> Option<Self> {
        let bytes = secret.data.as_ref()?.get(DATA_KEY)?;
        let stored: Stored = serde_json::from_slice(&bytes.0).ok()?;
        (stored.uid == uid).then(|| Self {
            namespace: stored.namespace,
            grant: stored.grant,
            uid: stored.uid,
            approved_for: stored.approved_for,
            revision: stored.revision,
            access_token: SecretString::from(stored.access_token),
            refresh_token: stored.refresh_token.map(SecretString::from),
            issued_at: stored.issued_at,
            expires_at: stored.expires_at,
            refreshed_at: stored.refreshed_at,
            refresh_failed: stored.refresh_failed,
            installation: stored.installation,
            retired: stored
                .retired
                .into_iter()
                .map(|r| Retired {
                    token: SecretString::from(r.token),
                    revoke_after: r.revoke_after,
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn grant() -> SlackOAuthGrant {
        serde_json::from_value(json!({
            "apiVersion": "slack-oauth-operator.io/v1alpha1",
            "kind": "SlackOAuthGrant",
            "metadata": { "name": "scim", "namespace": "pf", "uid": "uid-1", "generation": 1 },
            "spec": {
                "clientID": "1.2",
                "clientSecretRef": { "name": "app" },
                "secret": { "name": "slack-token" }
            }
        }))
        .expect("grant")
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("time")
    }

    fn approved(token: &str, expires_in: Option<u64>) -> Approved {
        Approved {
            token: SecretString::from(token),
            refresh_token: expires_in.map(|_| SecretString::from(format!("{token}-refresh"))),
            expires_in,
            installation: InstallationStatus {
                team_id: Some("T1".into()),
                ..Default::default()
            },
        }
    }

    const GRACE: Duration = Duration::from_secs(600);

    #[test]
    fn a_record_survives_its_secret_and_shows_no_token_in_debug() {
        let record = TokenRecord::approved(
            &grant(),
            &approved("xoxe.xoxp-1", Some(43_200)),
            None,
            at(1_000),
            GRACE,
        );
        let secret = record.to_secret("operator");
        assert_eq!(secret.name_any(), "slack-oauth-record-uid-1");
        assert_eq!(secret.labels()[RECORD_LABEL], "true");
        let read = TokenRecord::from_secret(&secret, "uid-1").expect("record");
        assert_eq!(read.access_token.expose_secret(), "xoxe.xoxp-1");
        assert_eq!(
            read.refresh_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned())
                .as_deref(),
            Some("xoxe.xoxp-1-refresh")
        );
        assert_eq!(read.expires_at, Some(at(1_000 + 43_200)));
        assert_eq!(read.revision, 1);
        assert!(
            TokenRecord::from_secret(&secret, "uid-2").is_none(),
            "another grant's record"
        );
        let debug = format!("{read:?}");
        assert!(!debug.contains("xoxe"), "{debug}");
        let metadata = serde_json::to_string(&secret.metadata).expect("json");
        assert!(!metadata.contains("xoxe"), "{metadata}");
    }

    #[test]
    fn the_status_of_a_record_has_whole_seconds_as_the_api_server_keeps_them() {
        let now = Timestamp::from_second(1_800_000_000)
            .expect("time")
            .checked_add(SignedDuration::from_millis(750))
            .expect("time");
        let record =
            TokenRecord::approved(&grant(), &approved("t", Some(43_200)), None, now, GRACE);
        let status = record.status();
        let read_back: TokenStatus =
            serde_json::from_value(serde_json::to_value(&status).expect("json")).expect("status");
        assert_eq!(read_back, status, "no write on every reconcile");
    }

    #[test]
    fn a_rotating_token_is_refreshed_with_a_third_of_its_lifetime_left() {
        let record =
            TokenRecord::approved(&grant(), &approved("t1", Some(43_200)), None, at(0), GRACE);
        assert_eq!(record.refresh_at(), Some(at(28_800)), "8 h into 12");
        let refreshed = record.refreshed(
            SecretString::from("t2"),
            Some(SecretString::from("r2")),
            Some(43_200),
            at(28_800),
        );
        assert_eq!(refreshed.revision, 2);
        assert_eq!(refreshed.refresh_at(), Some(at(28_800 * 2)));
        assert!(
            refreshed.retired.is_empty(),
            "a refreshed token is left to expire"
        );
        let mut failed = refreshed.clone();
        failed.refresh_failed = true;
        assert_eq!(failed.refresh_at(), None);
        let long_lived =
            TokenRecord::approved(&grant(), &approved("xoxp-1", None), None, at(0), GRACE);
        assert_eq!(long_lived.refresh_at(), None);
    }

    #[test]
    fn a_new_approval_retires_the_old_token_until_the_grace_has_passed() {
        let first = TokenRecord::approved(&grant(), &approved("xoxp-1", None), None, at(0), GRACE);
        let second = TokenRecord::approved(
            &grant(),
            &approved("xoxp-2", None),
            Some(&first),
            at(100),
            GRACE,
        );
        assert_eq!(second.revision, 2);
        assert!(second.retired_due(at(699)).is_empty());
        let due = second.retired_due(at(700));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].expose_secret(), "xoxp-1");
        assert_eq!(second.live_tokens().len(), 2);
        assert!(second.without_retired(&due).retired.is_empty());
        assert_eq!(second.next_retirement(), Some(at(700)));
    }

    #[test]
    fn a_secret_from_before_records_moves_under_one_with_its_refresh_token() {
        use k8s_openapi::ByteString;
        let grant = grant();
        let installation = InstallationStatus {
            team_id: Some("T1".into()),
            authorized_at: Some(Time(at(1_000))),
            ..Default::default()
        };
        let legacy: Secret = serde_json::from_value(json!({
            "metadata": { "name": "slack-token", "annotations": {
                "slack-oauth-operator.io/grant-generation": "1",
                "slack-oauth-operator.io/installation": serde_json::to_string(&installation).expect("json"),
            } }
        }))
        .expect("secret");
        let mut legacy = legacy;
        legacy.data = Some(BTreeMap::from([
            (
                "SLACK_ACCESS_TOKEN".to_owned(),
                ByteString(b"xoxe.xoxp-1".to_vec()),
            ),
            (
                "SLACK_ACCESS_TOKEN_REFRESH_TOKEN".to_owned(),
                ByteString(b"xoxe-1-r".to_vec()),
            ),
            (
                "SLACK_ACCESS_TOKEN_EXPIRES_AT".to_owned(),
                ByteString(at(1_000 + 43_200).to_string().into_bytes()),
            ),
        ]));
        let read =
            crate::authorization::read_legacy(&legacy, "SLACK_ACCESS_TOKEN").expect("legacy");
        let record = TokenRecord::migrated(&grant, &read, at(5_000));
        assert_eq!(record.access_token.expose_secret(), "xoxe.xoxp-1");
        assert_eq!(
            record
                .refresh_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned())
                .as_deref(),
            Some("xoxe-1-r")
        );
        assert_eq!(record.refresh_at(), Some(at(1_000 + 28_800)));
        assert_eq!(
            record.approved_for.pending_for(&grant),
            None,
            "approved for this generation"
        );
        assert!(
            !crate::authorization::holds(&legacy, &grant, &record),
            "rewritten without the old keys"
        );
        let mut newer = grant.clone();
        newer.metadata.generation = Some(2);
        let stale = TokenRecord::migrated(&newer, &read, at(5_000));
        assert_eq!(
            stale.approved_for.pending_for(&newer),
            Some(Pending::SpecChanged)
        );
    }

    #[test]
    fn only_approval_relevant_changes_and_the_annotation_ask_for_a_new_approval() {
        let mut grant = grant();
        let approved_for = ApprovedFor::of(&grant);
        grant
            .spec
            .secret
            .labels
            .insert("team".into(), "identity".into());
        grant.spec.secret.name = "elsewhere".into();
        assert_eq!(approved_for.pending_for(&grant), None);
        grant.spec.user_scopes.push("users:read".into());
        assert_eq!(approved_for.pending_for(&grant), Some(Pending::SpecChanged));
        let mut grant = self::grant();
        grant
            .annotations_mut()
            .insert(annotations::REAUTHORIZE.into(), "2026-12-01".into());
        assert_eq!(approved_for.pending_for(&grant), Some(Pending::Reauthorize));
    }
}
