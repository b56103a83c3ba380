//! Deciding what a grant needs, as a pure function of the grant, what was observed, and the time.
//! Tests feed it values; nothing here talks to Kubernetes or Slack, and nothing draws randomness:
//! when a new link is needed the plan says so ([`Link::Mint`]) and the apply step mints it.

use std::time::Duration;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::{SignedDuration, Timestamp},
};
use kube::ResourceExt;

use crate::{
    api::{
        ExchangeStatus, Installation, InstallationStatus, Phase, RolloutStatus, SlackOAuthGrant,
        SlackOAuthGrantStatus, TokenStatus, conditions, labels, reasons,
    },
    authorization::team_label,
    callback::{link::token_in, state::StateKey},
    controller::{checks::TokenCheck, push::Synced},
    events::PlannedEvent,
    record::Pending,
    slack::Provisioning,
};

/// How long an exchange in flight may go without its holder renewing it (it renews every
/// [`EXCHANGE_RENEW_EVERY`]) before the controller decides the holder stopped: the operator was
/// killed between claiming a link and storing or revoking its token.
pub const EXCHANGE_ORPHANED_AFTER: Duration = Duration::from_secs(30);
/// How often the callback renews `status.exchange` while it works.
pub const EXCHANGE_RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often a grant whose Secret name is taken by someone else looks again. Foreign Secrets are
/// not watched (docs/security.md), so this is a poll, of one GET.
pub const CONFLICT_RECHECK: Duration = Duration::from_secs(60);
/// How soon adopting a token is tried again after Slack could not be asked about it.
const ADOPTION_RETRY: Duration = Duration::from_secs(30);

/// The Secret holding the Slack app's Client Secret, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientSecret {
    Present,
    /// Missing, or not shared with this grant: the two look the same to the grant's author.
    SecretMissing,
    /// Shared with the grant, without the key.
    KeyMissing,
}

/// The Secret the token goes to, as observed (after the controller has written it from the
/// grant's record, if it had to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSecret {
    Absent,
    /// Ours: labelled and owned by this grant.
    Managed,
    /// Someone else's.
    Foreign,
}

/// What became of `spec.secret.adopt` for a Secret that is not the operator's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Adoption {
    /// Not asked for, or not for this Secret (the grant already holds another token).
    NotAsked,
    /// Asked for, but the Secret does not opt in.
    NotShared,
    /// Slack refused the token, or it is not the token the grant asks for.
    Refused(String),
    /// Slack could not be asked; retried.
    Unavailable,
    /// Adopted just now: the Secret is the operator's, holding the new record's token.
    Adopted,
}

/// What the operator holds for the grant (its token record), without secret values.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    pub installation: InstallationStatus,
    pub token: TokenStatus,
    /// Why the grant needs a new approval although it holds this one, if it does.
    pub pending: Option<Pending>,
    /// Slack refused the refresh token for good.
    pub refresh_failed: bool,
    /// The controller rewrote the consumer Secret from the record just now, and why
    /// ([`reasons::SECRET_DELETED`] or [`reasons::SECRET_EDITED`]).
    pub restored: Option<&'static str>,
}

/// Everything `plan` decides from.
pub struct Inputs<'a> {
    pub grant: &'a SlackOAuthGrant,
    pub client_secret: ClientSecret,
    pub token_secret: TokenSecret,
    /// What became of `spec.secret.adopt`, when the Secret is someone else's.
    pub adoption: Adoption,
    /// The grant's token record, if it has one.
    pub held: Option<Held>,
    /// The restart of `spec.secret.rolloutRestart` for the current token.
    pub rollout: Option<RolloutStatus>,
    /// Where PingFederate stands (`spec.pingFederate`).
    pub ping_federate: Option<Synced>,
    /// What SCIM last said about the token, for a grant whose token drives SCIM; `None` when it
    /// does not, or nothing was asked yet (the last condition then stands).
    pub provisioning: Option<Provisioning>,
    /// What the last `auth.test` of the token in the Secret said.
    pub token_check: TokenCheck,
    pub now: Timestamp,
    /// `--require-team-id`.
    pub require_team_id: bool,
    /// `--authorization-ttl`: how long a new link lives.
    pub authorization_ttl: Duration,
    /// `<public-url>/oauth/start/`: a published link under another URL (the public URL changed,
    /// or an older version published Slack's URL itself) is replaced.
    pub start_url: &'a url::Url,
    /// The key links are signed with: a link it did not sign (the key was rotated) is replaced.
    pub state_key: &'a StateKey,
}

/// What the apply step does about the authorization link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// No link: the grant is Ready or blocked.
    None,
    /// The published link is still good; `status` already carries it.
    Keep,
    /// Mint a new link valid until `expires_at` and put it in `status` ([`Plan::publish_link`]).
    Mint { expires_at: Timestamp },
}

/// The outcome of planning.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub status: SlackOAuthGrantStatus,
    pub link: Link,
    pub events: Vec<PlannedEvent>,
    pub requeue_after: Option<Duration>,
}

impl Plan {
    /// Puts a freshly minted link into the status.
    pub fn publish_link(&mut self, url: String) {
        if let Link::Mint { expires_at } = self.link {
            self.status.authorization_url = Some(url);
            self.status.authorization_expires_at = Some(Time(expires_at));
        }
    }
}

/// What `Ready` says.
struct Verdict {
    ok: bool,
    reason: &'static str,
    message: String,
}

impl Verdict {
    fn not_ready(reason: &'static str, message: String) -> Self {
        Self {
            ok: false,
            reason,
            message,
        }
    }
}

/// The grant as `plan` reads it.
struct Seen<'a> {
    inputs: &'a Inputs<'a>,
    grant: &'a SlackOAuthGrant,
    generation: i64,
    current: SlackOAuthGrantStatus,
    namespace: String,
}

impl Seen<'_> {
    fn ready(&self) -> Option<&Condition> {
        self.current
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::READY)
    }

    fn reason(&self) -> Option<&str> {
        self.ready().map(|c| c.reason.as_str())
    }

    fn condition(&self, type_: &str) -> Option<&Condition> {
        self.current.conditions.iter().find(|c| c.type_ == type_)
    }

    /// The condition an approval attempt (a claim, a failure) was recorded on: `Ready` while it
    /// is False, `AuthorizationPending` while a working token keeps `Ready` True
    /// ([`crate::status::with_attempt`]).
    fn attempt(&self) -> Option<&Condition> {
        match self.ready() {
            Some(ready) if ready.status == "True" => {
                self.condition(conditions::AUTHORIZATION_PENDING)
            }
            ready => ready,
        }
    }

    /// The exchange in flight, if its holder is still renewing it.
    fn live_exchange(&self) -> Option<&ExchangeStatus> {
        let exchanging = self.attempt().is_some_and(|c| {
            c.reason == reasons::EXCHANGING && c.observed_generation == Some(self.generation)
        });
        self.current.exchange.as_ref().filter(|e| {
            exchanging && self.inputs.now < e.renewed_at.0 + signed(EXCHANGE_ORPHANED_AFTER)
        })
    }

    /// Claimed, and its holder stopped renewing it without storing or revoking a token.
    fn interrupted(&self) -> bool {
        self.live_exchange().is_none()
            && (self.current.exchange.is_some()
                || self.attempt().map(|c| c.reason.as_str()) == Some(reasons::EXCHANGING))
    }

    fn secret(&self) -> String {
        format!("{}/{}", self.namespace, self.grant.spec.secret.name)
    }
}

pub fn plan(inputs: &Inputs<'_>) -> Plan {
    let grant = inputs.grant;
    let seen = Seen {
        inputs,
        grant,
        generation: grant.metadata.generation.unwrap_or_default(),
        current: grant.status.clone().unwrap_or_default(),
        namespace: grant.namespace().unwrap_or_default(),
    };
    let mut plan = Plan {
        status: SlackOAuthGrantStatus {
            observed_generation: Some(seen.generation),
            installation: seen.current.installation.clone(),
            // Kept as they are (the callback prunes them), so that expiring entries never cause
            // a write of their own.
            used_states: seen.current.used_states.clone(),
            rollout: inputs.rollout.clone(),
            ping_federate: inputs.ping_federate.as_ref().map(|p| p.status.clone()),
            ..SlackOAuthGrantStatus::default()
        },
        link: Link::None,
        events: Vec::new(),
        requeue_after: None,
    };
    let mut pending = None;
    let verdict = if inputs.require_team_id && grant.spec.team_id.is_none() {
        team_id_required(&mut plan)
    } else {
        match (&inputs.token_secret, &inputs.held, &inputs.client_secret) {
            (TokenSecret::Foreign, _, _) => foreign(&seen, &mut plan),
            (_, Some(held), _) => holding(&seen, &mut plan, held, &mut pending),
            (_, None, ClientSecret::SecretMissing | ClientSecret::KeyMissing) => {
                plan.status.phase = Some(Phase::Failed);
                Verdict::not_ready(
                    reasons::CLIENT_SECRET_MISSING,
                    client_secret_missing(&seen, &inputs.client_secret),
                )
            }
            _ => awaiting(&seen, &mut plan),
        }
    };
    conclude(&seen, &mut plan, verdict, pending);
    plan
}

/// A grant with a token in its record (and so, by now, in its Secret): Ready unless Slack
/// refused the token or its refresh; a new link out if the grant asks for a new approval.
fn holding(
    seen: &Seen<'_>,
    plan: &mut Plan,
    held: &Held,
    pending_approval: &mut Option<Verdict>,
) -> Verdict {
    plan.status.installation = Some(held.installation.clone());
    plan.status.token = Some(held.token.clone());
    if let Some(reason) = held.restored {
        plan.events.push(PlannedEvent {
            warning: true,
            reason,
            note: restored_message(seen, reason),
        });
    }
    if held.refresh_failed {
        let verdict = awaiting(seen, plan);
        if verdict.reason == reasons::EXCHANGING {
            return verdict;
        }
        let until = held
            .token
            .expires_at
            .as_ref()
            .map(|at| format!(", which expires at {}", at.0))
            .unwrap_or_default();
        return Verdict::not_ready(
            reasons::REFRESH_FAILED,
            format!(
                "Slack refused the refresh token, so the token in Secret {}{until} cannot be renewed. A Slack owner must approve the new link in status.authorizationURL.",
                seen.secret()
            ),
        );
    }
    if let Some(reason) = refused(seen, &held.installation) {
        let verdict = awaiting(seen, plan);
        return token_refused(seen, verdict, reason);
    }
    let verdict = authorized(seen, plan, &held.installation);
    if let Some(pending) = held.pending {
        let attempt = awaiting(seen, plan);
        plan.status.phase = Some(Phase::Ready);
        *pending_approval = Some(pending_condition(seen, pending, attempt));
    }
    verdict
}

fn restored_message(seen: &Seen<'_>, reason: &str) -> String {
    let what = if reason == reasons::SECRET_DELETED {
        "was deleted"
    } else {
        "no longer held the operator's token"
    };
    format!(
        "Secret {} {what}; the operator wrote its token back from its own record, without a new approval.",
        seen.secret()
    )
}

/// `AuthorizationPending` for a grant that keeps a working token while a new approval is
/// asked for: why, or what the last attempt at it did.
fn pending_condition(seen: &Seen<'_>, pending: Pending, attempt: Verdict) -> Verdict {
    if attempt.reason != reasons::AWAITING_AUTHORIZATION {
        return Verdict {
            ok: true,
            ..attempt
        };
    }
    let (reason, why) = match pending {
        Pending::SpecChanged => (
            reasons::SPEC_CHANGED,
            "The grant's scopes, app, team, installation or token changed since it was approved",
        ),
        Pending::Reauthorize => (
            reasons::REAUTHORIZATION_REQUESTED,
            "A new approval was asked for (annotation slack-oauth-operator.io/reauthorize)",
        ),
    };
    Verdict {
        ok: true,
        reason,
        message: format!(
            "{why}: a Slack owner must approve the link in status.authorizationURL. Until then Secret {} keeps the current token, which still works.",
            seen.secret()
        ),
    }
}

/// Whether Slack refused the token in the Secret: by the last check, or (before this process has
/// checked it) by the condition an earlier check left, if that is about this very token.
fn refused(seen: &Seen<'_>, installation: &InstallationStatus) -> Option<&'static str> {
    match seen.inputs.token_check {
        TokenCheck::Revoked => Some(reasons::TOKEN_REVOKED),
        TokenCheck::Invalid => Some(reasons::TOKEN_INVALID),
        TokenCheck::Valid => None,
        TokenCheck::Unchecked => {
            let ready = seen.ready()?;
            let about_this_token = installation
                .authorized_at
                .as_ref()
                .is_none_or(|at| at.0 <= ready.last_transition_time.0);
            [reasons::TOKEN_REVOKED, reasons::TOKEN_INVALID]
                .into_iter()
                .find(|r| *r == ready.reason && about_this_token)
        }
    }
}

/// A token Slack refused: not Ready, a fresh link (from `awaiting`), and the Secret keeps the old
/// value until a new approval replaces it. A new approval pending for another reason (an exchange
/// in flight) keeps its own verdict.
fn token_refused(seen: &Seen<'_>, awaiting: Verdict, reason: &'static str) -> Verdict {
    if awaiting.reason == reasons::EXCHANGING {
        return awaiting;
    }
    let what = if reason == reasons::TOKEN_REVOKED {
        "Slack no longer accepts the token"
    } else {
        "Slack says the token belongs to another team or user than the one that approved it"
    };
    Verdict::not_ready(
        reason,
        format!(
            "{what} in Secret {}. The Secret keeps it until a Slack owner approves the new link in status.authorizationURL.",
            seen.secret()
        ),
    )
}

fn team_id_required(plan: &mut Plan) -> Verdict {
    plan.status.phase = Some(Phase::Failed);
    Verdict::not_ready(
        reasons::TEAM_ID_REQUIRED,
        "This operator requires spec.teamID, the Slack workspace (T...) or Enterprise Grid organization (E...) that must approve: set it to get an authorization link.".to_owned(),
    )
}

/// Someone else's Secret under the grant's name: a conflict, or an adoption that did not happen.
fn foreign(seen: &Seen<'_>, plan: &mut Plan) -> Verdict {
    match &seen.inputs.adoption {
        Adoption::NotAsked | Adoption::Adopted => conflict(seen, plan),
        Adoption::NotShared => {
            let verdict = conflict(seen, plan);
            Verdict::not_ready(
                verdict.reason,
                format!(
                    "Secret {} exists and does not opt in to adoption, so it is left as it is. To have its token adopted (spec.secret.adopt), label it {}=true.",
                    seen.secret(),
                    labels::SHARED_WITH_GRANTS
                ),
            )
        }
        Adoption::Refused(why) => {
            plan.status.phase = Some(Phase::Failed);
            plan.requeue_after = Some(CONFLICT_RECHECK);
            Verdict::not_ready(
                reasons::ADOPTION_REFUSED,
                format!(
                    "The token in Secret {} was not adopted: {why}. The Secret is left as it was. Put a token Slack accepts in it, or delete it (or unset spec.secret.adopt) to get an authorization link instead.",
                    seen.secret()
                ),
            )
        }
        Adoption::Unavailable => {
            plan.status.phase = Some(Phase::AwaitingAuthorization);
            plan.requeue_after = Some(ADOPTION_RETRY);
            Verdict::not_ready(
                reasons::ADOPTION_PENDING,
                format!(
                    "Slack could not be asked about the token in Secret {} yet; the operator tries again shortly and adopts it once Slack accepts it.",
                    seen.secret()
                ),
            )
        }
    }
}

fn conflict(seen: &Seen<'_>, plan: &mut Plan) -> Verdict {
    plan.status.phase = Some(Phase::Failed);
    plan.requeue_after = Some(CONFLICT_RECHECK);
    Verdict::not_ready(
        reasons::SECRET_CONFLICT,
        format!(
            "Secret {} exists and is not managed by slack-oauth-operator, so it is never overwritten. Delete it, or set spec.secret.name to another name.",
            seen.secret()
        ),
    )
}

fn authorized(seen: &Seen<'_>, plan: &mut Plan, installation: &InstallationStatus) -> Verdict {
    plan.status.phase = Some(Phase::Ready);
    plan.status.installation = Some(installation.clone());
    let message = format!(
        "The token approved by {} is in Secret {} under key {}.",
        team_label(installation),
        seen.secret(),
        seen.grant.spec.secret.key
    );
    if seen.reason() != Some(reasons::AUTHORIZED) {
        plan.events.push(PlannedEvent {
            warning: false,
            reason: reasons::AUTHORIZED,
            note: message.clone(),
        });
    }
    Verdict {
        ok: true,
        reason: reasons::AUTHORIZED,
        message,
    }
}

/// Why the client Secret can't be used. A Secret that is not shared with the grant reads exactly
/// like a missing one, so status never tells a grant's author about a Secret they could not read.
fn client_secret_missing(seen: &Seen<'_>, observed: &ClientSecret) -> String {
    let reference = &seen.grant.spec.client_secret_ref;
    let namespace = &seen.namespace;
    let what = if *observed == ClientSecret::KeyMissing {
        format!(
            "Secret {namespace}/{} has no key {}",
            reference.name, reference.key
        )
    } else {
        format!(
            "Secret {namespace}/{} does not exist or is not shared with this grant",
            reference.name
        )
    };
    format!(
        "{what}. Create it with the Slack app's Client Secret under key {}, labelled {}=true; the authorization link is published as soon as it exists.",
        reference.key,
        labels::SHARED_WITH_GRANTS
    )
}

/// Waiting for an owner: keep, mint or (while an exchange is in flight) withhold the link, and
/// say what the grant waits for.
fn awaiting(seen: &Seen<'_>, plan: &mut Plan) -> Verdict {
    plan.status.phase = Some(Phase::AwaitingAuthorization);
    let now = seen.inputs.now;
    let link = usable_link(&seen.current, seen.inputs, now);
    if let Some(exchange) = seen.live_exchange() {
        // The link stays out while an attempt with it is exchanged: if the attempt fails, the
        // owner opens it again.
        if let Some((url, expires_at)) = link {
            plan.link = Link::Keep;
            plan.status.authorization_url = Some(url);
            plan.status.authorization_expires_at = Some(Time(expires_at));
        }
        plan.status.exchange = Some(exchange.clone());
        let orphaned_at = exchange.renewed_at.0 + signed(EXCHANGE_ORPHANED_AFTER);
        plan.requeue_after = Some(until(now, orphaned_at));
        let message = seen
            .attempt()
            .map(|c| c.message.clone())
            .unwrap_or_default();
        return Verdict::not_ready(reasons::EXCHANGING, message);
    }
    match link {
        Some((url, expires_at)) => {
            plan.link = Link::Keep;
            plan.status.authorization_url = Some(url);
            plan.status.authorization_expires_at = Some(Time(expires_at));
            plan.requeue_after = Some(until(now, expires_at));
        }
        None => mint(seen, plan),
    }
    waiting_reason(seen)
}

fn mint(seen: &Seen<'_>, plan: &mut Plan) {
    let ttl = SignedDuration::try_from(seen.inputs.authorization_ttl).unwrap_or_default();
    // Whole seconds, so the expiry in the state and in the status agree exactly.
    let now = seen.inputs.now;
    let expires_at = Timestamp::from_second((now + ttl).as_second()).unwrap_or(now);
    plan.link = Link::Mint { expires_at };
    plan.requeue_after = Some(until(now, expires_at));
    plan.events.push(PlannedEvent {
        warning: false,
        reason: reasons::AWAITING_AUTHORIZATION,
        note: format!(
            "Published an authorization link, valid until {expires_at}: see status.authorizationURL."
        ),
    });
}

/// Why a grant with a link is not Ready: a kept failure, an interrupted exchange, a deleted
/// Secret, or simply waiting for an owner.
fn waiting_reason(seen: &Seen<'_>) -> Verdict {
    let kept_failure = seen.attempt().and_then(|c| {
        let kept = c.observed_generation == Some(seen.generation);
        reasons::ATTEMPT_FAILURES
            .iter()
            .copied()
            .find(|r| kept && *r == c.reason)
            .map(|reason| (reason, c.message.clone()))
    });
    if seen.interrupted() {
        return Verdict::not_ready(
            reasons::EXCHANGE_INTERRUPTED,
            "The operator stopped while it was exchanging a Slack approval, so Slack may have issued a token that nobody holds: revoke it in Slack (the workspace's or organization's app management page, under the app's authorizations), then approve the new link in status.authorizationURL.".to_owned(),
        );
    }
    if let Some((reason, message)) = kept_failure {
        return Verdict::not_ready(reason, message);
    }
    let token_secret = &seen.inputs.token_secret;
    if *token_secret == TokenSecret::Absent && seen.current.installation.is_some() {
        return Verdict::not_ready(
            reasons::SECRET_MISSING,
            format!(
                "Secret {} with the token was deleted. A Slack owner must approve the new link in status.authorizationURL.",
                seen.secret()
            ),
        );
    }
    let who = match seen.grant.spec.installation {
        Installation::Workspace => "a Slack Workspace Owner",
        Installation::Organization => "a Slack Org Owner",
    };
    let keeps = if *token_secret == TokenSecret::Managed {
        format!(
            " Until then Secret {} keeps the previous token.",
            seen.secret()
        )
    } else {
        String::new()
    };
    Verdict::not_ready(
        reasons::AWAITING_AUTHORIZATION,
        format!("Waiting for {who} to open status.authorizationURL and click Allow.{keeps}"),
    )
}

/// The conditions, and a Warning Event when `Ready` turns to a new failure.
fn conclude(seen: &Seen<'_>, plan: &mut Plan, verdict: Verdict, pending: Option<Verdict>) {
    let Verdict {
        ok,
        reason,
        message,
    } = verdict;
    let now = seen.inputs.now;
    let ready = conditions::ready(seen.ready(), ok, reason, message, seen.generation, now);
    let quiet = ok
        || reason == reasons::AWAITING_AUTHORIZATION
        || reason == reasons::EXCHANGING
        || seen.reason() == Some(reason);
    if !quiet {
        plan.events.push(PlannedEvent {
            warning: true,
            reason,
            note: ready.message.clone(),
        });
    }
    let pending = authorization_pending(seen, plan, &ready, pending);
    let explains = if ready.status == "True" && pending.status == "True" {
        &pending
    } else {
        &ready
    };
    plan.status.reason = Some(explains.reason.clone());
    if ready.status == "False" && failed_attempt(&ready.reason) {
        plan.status.phase = Some(Phase::Failed);
    }
    let pinned = team_pinned(seen, &mut plan.events);
    let restored = match seen.inputs.held.as_ref().and_then(|h| h.restored) {
        Some(reason) => {
            let mut restored = conditions::ready(
                None,
                true,
                reason,
                restored_message(seen, reason),
                seen.generation,
                now,
            );
            restored.type_ = conditions::SECRET_RESTORED.to_owned();
            Some(restored)
        }
        None => seen.condition(conditions::SECRET_RESTORED).cloned(),
    };
    let synced = seen.inputs.ping_federate.as_ref().map(|synced| {
        let previous = seen.condition(conditions::PINGFEDERATE_SYNCED);
        let changed = previous.is_none_or(|p| p.reason != synced.reason);
        if !synced.ok && changed && synced.reason != reasons::PINGFEDERATE_WAITING {
            plan.events.push(PlannedEvent {
                warning: true,
                reason: synced.reason,
                note: synced.message.clone(),
            });
        }
        let mut condition = conditions::ready(
            previous,
            synced.ok,
            synced.reason,
            synced.message.clone(),
            seen.generation,
            now,
        );
        condition.type_ = conditions::PINGFEDERATE_SYNCED.to_owned();
        condition
    });
    let provisioning = provisioning_ready(seen, plan);
    plan.status.conditions = [
        Some(ready),
        Some(pending),
        Some(pinned),
        synced,
        provisioning,
        restored,
    ]
    .into_iter()
    .flatten()
    .collect();
}

/// Whether `reason` on `Ready` means the last approval failed and nobody has acted since: a
/// failure kept for the spec it happened with (a spec change clears it). A cancel in Slack
/// (`AccessDenied`) is the owner's choice, not a failure.
fn failed_attempt(reason: &str) -> bool {
    reason != reasons::ACCESS_DENIED && reasons::ATTEMPT_FAILURES.contains(&reason)
}

/// `ProvisioningReady`, from SCIM's last answer (kept as it was while nothing new was asked),
/// with a Warning Event when SCIM starts refusing.
fn provisioning_ready(seen: &Seen<'_>, plan: &mut Plan) -> Option<Condition> {
    let previous = seen.condition(conditions::PROVISIONING_READY);
    let Some(answer) = &seen.inputs.provisioning else {
        return previous.cloned().filter(|_| seen.inputs.held.is_some());
    };
    let (ok, reason, message) = match answer {
        Provisioning::Ready => (
            true,
            reasons::SCIM_ACCEPTED,
            "Slack's SCIM API accepts the token: PingFederate's Slack provisioner can use it."
                .to_owned(),
        ),
        Provisioning::Refused(code) => (
            false,
            reasons::SCIM_REFUSED,
            format!(
                "Slack's SCIM API refused the token ({code}), so PingFederate's Slack provisioner will fail with it. Likely causes: a Slack plan without SCIM (it needs Business+ or Enterprise Grid; plus_teams_only), a token without the admin scope, an approver who is not a Workspace or Org Owner or Admin (invalid_authentication), or on Enterprise Grid an install on a workspace instead of the organization (non_org_teams_only)."
            ),
        ),
    };
    if !ok && previous.is_none_or(|p| p.status != "False") {
        plan.events.push(PlannedEvent {
            warning: true,
            reason,
            note: message.clone(),
        });
    }
    let mut condition = conditions::ready(
        previous,
        ok,
        reason,
        message,
        seen.generation,
        seen.inputs.now,
    );
    condition.type_ = conditions::PROVISIONING_READY.to_owned();
    Some(condition)
}

/// `AuthorizationPending`: `True` while a link is out (or its approval is being exchanged),
/// with why; `False` otherwise.
fn authorization_pending(
    seen: &Seen<'_>,
    plan: &Plan,
    ready: &Condition,
    pending: Option<Verdict>,
) -> Condition {
    let previous = seen.condition(conditions::AUTHORIZATION_PENDING);
    let link_out = plan.link != Link::None || plan.status.exchange.is_some();
    let (out, reason, message) = match pending {
        Some(pending) => (true, pending.reason, pending.message),
        None if ready.status == "False" && link_out => {
            let reason = if ready.reason != reasons::AWAITING_AUTHORIZATION {
                // The failure or refusal that called for the link says why.
                ready.reason.as_str()
            } else if seen.current.installation.is_none() {
                reasons::FIRST_APPROVAL
            } else {
                reasons::AWAITING_AUTHORIZATION
            };
            (true, reason, ready.message.clone())
        }
        None if ready.status == "True" => (
            false,
            reasons::UP_TO_DATE,
            "No authorization link is out: the token in the Secret is the approved one.".to_owned(),
        ),
        None => (
            false,
            ready.reason.as_str(),
            "No authorization link is out; the Ready condition says why.".to_owned(),
        ),
    };
    let mut condition = conditions::ready(
        previous,
        out,
        reason,
        message,
        seen.generation,
        seen.inputs.now,
    );
    condition.type_ = conditions::AUTHORIZATION_PENDING.to_owned();
    condition
}

/// The `TeamPinned` condition, with a Warning Event when it first turns False.
fn team_pinned(seen: &Seen<'_>, events: &mut Vec<PlannedEvent>) -> Condition {
    let previous = seen
        .current
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::TEAM_PINNED);
    let (pinned, reason, message) = match &seen.grant.spec.team_id {
        Some(team) => (
            true,
            reasons::TEAM_ID_SET,
            format!("Only {team} can approve this grant."),
        ),
        None => (
            false,
            reasons::TEAM_ID_UNSET,
            "spec.teamID is not set, so whoever opens the authorization link may approve it from any Slack workspace they own, and that workspace's token is stored. Set spec.teamID to the workspace (T...) or organization (E...) that must approve.".to_owned(),
        ),
    };
    if !pinned && previous.is_none_or(|c| c.status != "False") {
        events.push(PlannedEvent {
            warning: true,
            reason,
            note: message.clone(),
        });
    }
    let now = seen.inputs.now;
    let mut condition = conditions::ready(previous, pinned, reason, message, seen.generation, now);
    condition.type_ = conditions::TEAM_PINNED.to_owned();
    condition
}

/// The grant's published link, if it is an approval link under `start_url`, signed with the
/// current key, and still valid. It
/// outlives spec changes: each visit mints a state for the generation of the moment.
fn usable_link(
    current: &SlackOAuthGrantStatus,
    inputs: &Inputs<'_>,
    now: Timestamp,
) -> Option<(String, Timestamp)> {
    let url = current.authorization_url.as_ref()?;
    let expires_at = current.authorization_expires_at.as_ref()?.0;
    let token = token_in(inputs.start_url, url)?;
    inputs.state_key.verify_link(token).ok()?;
    (now < expires_at).then(|| (url.clone(), expires_at))
}

fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

/// Time from `now` until `then`, at least one second so a requeue never spins.
fn until(now: Timestamp, then: Timestamp) -> Duration {
    let left = then.duration_since(now);
    Duration::try_from(left)
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use serde_json::json;

    use super::*;
    use crate::api::Installation;

    const NOW: i64 = 1_800_000_000;

    fn now() -> Timestamp {
        Timestamp::from_second(NOW).expect("time")
    }

    fn grant(status: serde_json::Value) -> SlackOAuthGrant {
        serde_json::from_value(json!({
            "apiVersion": "slack-oauth-operator.io/v1alpha1",
            "kind": "SlackOAuthGrant",
            "metadata": { "name": "scim", "namespace": "pf", "uid": "uid-1", "generation": 2 },
            "spec": {
                "clientID": "1234567890.1234567890",
                "clientSecretRef": { "name": "slack-app" },
                "secret": { "name": "slack-token" }
            },
            "status": status
        }))
        .expect("grant")
    }

    static START_URL: std::sync::LazyLock<url::Url> = std::sync::LazyLock::new(|| {
        url::Url::parse("https://op.example.com/oauth/start/").expect("url")
    });
    static FRESH: std::sync::LazyLock<String> = std::sync::LazyLock::new(new_link);
    static KEY: std::sync::LazyLock<StateKey> = std::sync::LazyLock::new(StateKey::generate);

    fn new_link() -> String {
        let token = KEY.issue_link();
        crate::callback::link::link_url(&START_URL, &token)
    }

    /// The link the apply step mints in these tests, and when it expires.
    fn fresh() -> (String, Timestamp) {
        (
            FRESH.clone(),
            Timestamp::from_second(NOW + 3600).expect("time"),
        )
    }

    fn held(pending: Option<Pending>) -> Held {
        Held {
            installation: installation(),
            token: TokenStatus {
                revision: 1,
                issued_at: Time(now()),
                expires_at: None,
                refreshed_at: None,
            },
            pending,
            refresh_failed: false,
            restored: None,
        }
    }

    /// A grant with a client Secret and nothing else: each test changes what it is about.
    fn inputs(grant: &SlackOAuthGrant) -> Inputs<'_> {
        Inputs {
            grant,
            client_secret: ClientSecret::Present,
            token_secret: TokenSecret::Absent,
            adoption: Adoption::NotAsked,
            held: None,
            rollout: None,
            ping_federate: None,
            provisioning: None,
            token_check: TokenCheck::Unchecked,
            now: now(),
            require_team_id: false,
            authorization_ttl: Duration::from_secs(3600),
            start_url: &START_URL,
            state_key: &KEY,
        }
    }

    fn run(
        grant: &SlackOAuthGrant,
        client_secret: ClientSecret,
        token_secret: TokenSecret,
    ) -> Plan {
        decide(&Inputs {
            client_secret,
            token_secret,
            ..inputs(grant)
        })
    }

    fn run_holding(grant: &SlackOAuthGrant, client_secret: ClientSecret, held: Held) -> Plan {
        decide(&Inputs {
            client_secret,
            token_secret: TokenSecret::Managed,
            held: Some(held),
            ..inputs(grant)
        })
    }

    /// Plans, and mints a link the way the apply step does when the plan asks for one.
    fn decide(inputs: &Inputs<'_>) -> Plan {
        let mut planned = plan(inputs);
        if let Link::Mint { expires_at } = planned.link {
            assert_eq!(expires_at, fresh().1, "a link lives for the TTL");
            planned.publish_link(fresh().0);
        }
        planned
    }

    fn condition<'a>(plan: &'a Plan, type_: &str) -> &'a Condition {
        plan.status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("the condition")
    }

    fn ready(plan: &Plan) -> &Condition {
        &plan.status.conditions[0]
    }

    fn installation() -> InstallationStatus {
        InstallationStatus {
            team_id: Some("T1".into()),
            team_name: Some("Acme".into()),
            ..Default::default()
        }
    }

    #[test]
    fn new_grant_gets_a_link_and_awaits_authorization() {
        let plan = run(
            &grant(json!(null)),
            ClientSecret::Present,
            TokenSecret::Absent,
        );
        assert_eq!(plan.status.phase, Some(Phase::AwaitingAuthorization));
        assert!(plan.status.authorization_url.is_some());
        assert_eq!(plan.status.authorization_expires_at, Some(Time(fresh().1)));
        assert_eq!(plan.status.observed_generation, Some(2));
        assert_eq!(ready(&plan).status, "False");
        assert_eq!(ready(&plan).reason, reasons::AWAITING_AUTHORIZATION);
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(3600)));
        let reasons: Vec<_> = plan.events.iter().map(|e| e.reason).collect();
        assert_eq!(
            reasons,
            [reasons::AWAITING_AUTHORIZATION, reasons::TEAM_ID_UNSET]
        );
    }

    #[test]
    fn a_grant_that_needs_nothing_plans_the_status_it_has() {
        let first = run(
            &grant(json!(null)),
            ClientSecret::Present,
            TokenSecret::Absent,
        );
        let settled = grant(serde_json::to_value(&first.status).expect("json"));
        let again = run(&settled, ClientSecret::Present, TokenSecret::Absent);
        assert_eq!(again.status, first.status, "no write when nothing changed");
        assert!(again.events.is_empty());
        assert_eq!(
            again.requeue_after,
            Some(Duration::from_secs(3600)),
            "wake up at expiry, no polling"
        );
    }

    #[test]
    fn expired_link_is_replaced() {
        let old = new_link();
        let g = grant(
            json!({ "authorizationURL": old, "authorizationExpiresAt": "2027-01-15T07:59:59Z" }),
        );
        let plan = run(&g, ClientSecret::Present, TokenSecret::Absent);
        assert_ne!(plan.status.authorization_url.as_deref(), Some(old.as_str()));
        assert!(plan.status.authorization_url.is_some());
    }

    #[test]
    fn a_link_outlives_a_spec_change_while_the_grant_waits() {
        let out = new_link();
        let mut g = grant(
            json!({ "authorizationURL": out, "authorizationExpiresAt": "2027-01-15T08:01:40Z", "observedGeneration": 1 }),
        );
        g.metadata.generation = Some(3);
        let plan = run(&g, ClientSecret::Present, TokenSecret::Absent);
        assert_eq!(plan.link, Link::Keep);
        assert_eq!(plan.status.authorization_url.as_deref(), Some(out.as_str()));
    }

    #[test]
    fn a_link_under_another_public_url_or_key_or_slacks_own_url_is_replaced() {
        let token = KEY.issue_link();
        let other_key = StateKey::generate().issue_link();
        for old in [
            format!("https://old.example.com/oauth/start/{token}"),
            format!("https://op.example.com/oauth/start/{other_key}"),
            format!("https://slack.com/oauth/v2/authorize?client_id=1&state=s2.{token}"),
        ] {
            let g = grant(
                json!({ "authorizationURL": old, "authorizationExpiresAt": "2027-01-15T08:01:40Z" }),
            );
            let plan = run(&g, ClientSecret::Present, TokenSecret::Absent);
            assert_eq!(plan.status.authorization_url, Some(fresh().0), "{old}");
        }
    }

    #[test]
    fn missing_client_secret_publishes_no_link_and_says_why() {
        let plan = run(
            &grant(json!(null)),
            ClientSecret::SecretMissing,
            TokenSecret::Absent,
        );
        assert_eq!(plan.status.phase, Some(Phase::Failed));
        assert_eq!(plan.status.authorization_url, None);
        assert_eq!(ready(&plan).reason, reasons::CLIENT_SECRET_MISSING);
        assert!(
            ready(&plan).message.contains("pf/slack-app"),
            "{}",
            ready(&plan).message
        );
        assert!(
            plan.events
                .iter()
                .any(|e| e.warning && e.reason == reasons::CLIENT_SECRET_MISSING)
        );

        let key = run(
            &grant(json!(null)),
            ClientSecret::KeyMissing,
            TokenSecret::Absent,
        );
        assert!(
            ready(&key).message.contains("has no key clientSecret"),
            "{}",
            ready(&key).message
        );
    }

    #[test]
    fn secret_with_the_current_generation_makes_the_grant_ready() {
        let token = held(None);
        let plan = run_holding(&grant(json!(null)), ClientSecret::Present, token);
        assert_eq!(plan.status.phase, Some(Phase::Ready));
        assert_eq!(plan.status.authorization_url, None);
        assert_eq!(plan.status.installation, Some(installation()));
        assert_eq!(ready(&plan).status, "True");
        assert_eq!(ready(&plan).reason, reasons::AUTHORIZED);
        assert!(ready(&plan).message.contains("Acme (T1)"));
        assert_eq!(plan.requeue_after, None);
        assert!(plan.events.iter().any(|e| e.reason == reasons::AUTHORIZED));
    }

    #[test]
    fn ready_grant_does_not_need_the_client_secret() {
        let token = held(None);
        let plan = run_holding(&grant(json!(null)), ClientSecret::SecretMissing, token);
        assert_eq!(plan.status.phase, Some(Phase::Ready));
    }

    #[test]
    fn spec_change_after_ready_keeps_ready_and_publishes_a_link_as_pending() {
        let token = held(Some(Pending::SpecChanged));
        let plan = run_holding(
            &grant(json!({ "installation": { "teamID": "T1" } })),
            ClientSecret::Present,
            token,
        );
        assert_eq!(plan.status.phase, Some(Phase::Ready));
        assert_eq!(ready(&plan).status, "True");
        assert!(plan.status.authorization_url.is_some());
        let pending = condition(&plan, conditions::AUTHORIZATION_PENDING);
        assert_eq!(
            (pending.status.as_str(), pending.reason.as_str()),
            ("True", reasons::SPEC_CHANGED)
        );
        assert!(
            pending.message.contains("keeps the current token"),
            "{}",
            pending.message
        );
        let reauthorize = run_holding(
            &grant(json!(null)),
            ClientSecret::Present,
            held(Some(Pending::Reauthorize)),
        );
        assert_eq!(
            condition(&reauthorize, conditions::AUTHORIZATION_PENDING).reason,
            reasons::REAUTHORIZATION_REQUESTED
        );
        let settled = run_holding(&grant(json!(null)), ClientSecret::Present, held(None));
        assert_eq!(settled.status.authorization_url, None);
        let up_to_date = condition(&settled, conditions::AUTHORIZATION_PENDING);
        assert_eq!(
            (up_to_date.status.as_str(), up_to_date.reason.as_str()),
            ("False", reasons::UP_TO_DATE)
        );
    }

    #[test]
    fn a_failed_reapproval_is_kept_on_authorization_pending_while_ready_stays_true() {
        let status = json!({
            "conditions": [
                { "type": "Ready", "status": "True", "reason": "Authorized", "message": "",
                  "lastTransitionTime": "2027-01-01T00:00:00Z", "observedGeneration": 2 },
                { "type": "AuthorizationPending", "status": "True", "reason": "AccessDenied",
                  "message": "The Slack owner declined.", "lastTransitionTime": "2027-01-01T00:00:00Z",
                  "observedGeneration": 2 }
            ]
        });
        let plan = run_holding(
            &grant(status),
            ClientSecret::Present,
            held(Some(Pending::Reauthorize)),
        );
        assert_eq!(ready(&plan).status, "True");
        let pending = condition(&plan, conditions::AUTHORIZATION_PENDING);
        assert_eq!(pending.reason, reasons::ACCESS_DENIED);
        assert!(plan.status.authorization_url.is_some(), "a fresh link");
        assert_eq!(
            plan.status.phase,
            Some(Phase::Ready),
            "the token still works"
        );
        assert_eq!(
            plan.status.reason.as_deref(),
            Some(reasons::ACCESS_DENIED),
            "kubectl get shows the pending approval's story, not Ready's"
        );
    }

    #[test]
    fn a_token_that_is_not_adopted_leaves_the_grant_failed_without_a_link() {
        let g = grant(json!(null));
        let with = |adoption: Adoption| {
            decide(&Inputs {
                token_secret: TokenSecret::Foreign,
                adoption,
                ..inputs(&g)
            })
        };
        let refused = with(Adoption::Refused(
            "Slack does not accept the token (invalid_auth)".into(),
        ));
        assert_eq!(ready(&refused).reason, reasons::ADOPTION_REFUSED);
        assert!(ready(&refused).message.contains("invalid_auth"));
        assert_eq!(refused.status.authorization_url, None);
        assert_eq!(refused.status.phase, Some(Phase::Failed));
        let not_shared = with(Adoption::NotShared);
        assert_eq!(ready(&not_shared).reason, reasons::SECRET_CONFLICT);
        assert!(
            ready(&not_shared)
                .message
                .contains(labels::SHARED_WITH_GRANTS)
        );
        let unavailable = with(Adoption::Unavailable);
        assert_eq!(ready(&unavailable).reason, reasons::ADOPTION_PENDING);
        assert_eq!(unavailable.requeue_after, Some(ADOPTION_RETRY));
    }

    #[test]
    fn a_refused_refresh_is_not_ready_with_a_fresh_link() {
        let mut token = held(None);
        token.refresh_failed = true;
        let plan = run_holding(&grant(json!(null)), ClientSecret::Present, token);
        assert_eq!(ready(&plan).reason, reasons::REFRESH_FAILED);
        assert!(plan.status.authorization_url.is_some());
        assert!(
            plan.events
                .iter()
                .any(|e| e.warning && e.reason == reasons::REFRESH_FAILED)
        );
    }

    #[test]
    fn a_restored_secret_is_said_in_a_condition_and_an_event() {
        let mut token = held(None);
        token.restored = Some(reasons::SECRET_DELETED);
        let plan = run_holding(&grant(json!(null)), ClientSecret::Present, token);
        assert_eq!(ready(&plan).status, "True");
        let restored = condition(&plan, conditions::SECRET_RESTORED);
        assert_eq!(restored.reason, reasons::SECRET_DELETED);
        assert!(
            plan.events
                .iter()
                .any(|e| e.warning && e.reason == reasons::SECRET_DELETED)
        );
        let settled = grant(serde_json::to_value(&plan.status).expect("json"));
        let again = run_holding(&settled, ClientSecret::Present, held(None));
        assert_eq!(
            condition(&again, conditions::SECRET_RESTORED).reason,
            reasons::SECRET_DELETED,
            "kept"
        );
        assert!(again.events.is_empty());
    }

    #[test]
    fn deleted_secret_reports_secret_missing_with_a_new_link() {
        let was_ready = json!({
            "phase": "Ready", "installation": { "teamID": "T1" },
            "conditions": [{ "type": "Ready", "status": "True", "reason": "Authorized", "message": "",
                             "lastTransitionTime": "2027-01-01T00:00:00Z", "observedGeneration": 2 }]
        });
        let plan = run(
            &grant(was_ready),
            ClientSecret::Present,
            TokenSecret::Absent,
        );
        assert_eq!(ready(&plan).reason, reasons::SECRET_MISSING);
        assert!(plan.status.authorization_url.is_some());
        assert_eq!(
            ready(&plan).last_transition_time,
            Time(now()),
            "status flipped True -> False"
        );
    }

    #[test]
    fn foreign_secret_is_a_conflict_without_a_link() {
        let plan = run(
            &grant(json!(null)),
            ClientSecret::Present,
            TokenSecret::Foreign,
        );
        assert_eq!(ready(&plan).reason, reasons::SECRET_CONFLICT);
        assert_eq!(plan.status.authorization_url, None);
        assert_eq!(plan.requeue_after, Some(CONFLICT_RECHECK));
    }

    #[test]
    fn callback_failure_is_kept_next_to_a_fresh_link() {
        let failed = json!({ "conditions": [{ "type": "Ready", "status": "False", "reason": "AccessDenied",
            "message": "The Slack owner declined.", "lastTransitionTime": "2027-01-01T00:00:00Z", "observedGeneration": 2 }] });
        let plan = run(&grant(failed), ClientSecret::Present, TokenSecret::Absent);
        assert_eq!(ready(&plan).reason, reasons::ACCESS_DENIED);
        assert_eq!(ready(&plan).message, "The Slack owner declined.");
        assert!(plan.status.authorization_url.is_some());
        assert_eq!(
            plan.status.phase,
            Some(Phase::AwaitingAuthorization),
            "a cancel is the owner's choice, not a failure"
        );
        assert_eq!(plan.status.reason.as_deref(), Some(reasons::ACCESS_DENIED));
    }

    #[test]
    fn a_failed_attempt_leaves_the_grant_failed_until_someone_acts() {
        let failed = |generation: i64| {
            json!({ "conditions": [{ "type": "Ready", "status": "False", "reason": "BadClientSecret",
                "message": "Slack refused the client secret.", "lastTransitionTime": "2027-01-01T00:00:00Z",
                "observedGeneration": generation }] })
        };
        let plan = run(
            &grant(failed(2)),
            ClientSecret::Present,
            TokenSecret::Absent,
        );
        assert_eq!(plan.status.phase, Some(Phase::Failed));
        assert_eq!(
            plan.status.reason.as_deref(),
            Some(reasons::BAD_CLIENT_SECRET)
        );
        assert!(
            plan.status.authorization_url.is_some(),
            "the owner can try again"
        );

        // A spec change is someone acting: the grant waits for an approval again.
        let plan = run(
            &grant(failed(1)),
            ClientSecret::Present,
            TokenSecret::Absent,
        );
        assert_eq!(plan.status.phase, Some(Phase::AwaitingAuthorization));
        assert_eq!(
            plan.status.reason.as_deref(),
            Some(reasons::AWAITING_AUTHORIZATION)
        );
    }

    fn exchanging(renewed_secs_ago: i64) -> serde_json::Value {
        let claimed_at = Timestamp::from_second(NOW - 100).expect("time");
        let renewed_at = Timestamp::from_second(NOW - renewed_secs_ago).expect("time");
        json!({
            "conditions": [{ "type": "Ready", "status": "False", "reason": "Exchanging",
                "message": "exchanging", "lastTransitionTime": claimed_at.to_string(), "observedGeneration": 2 }],
            "exchange": { "holder": "pod-a/1", "startedAt": claimed_at.to_string(), "renewedAt": renewed_at.to_string() }
        })
    }

    #[test]
    fn a_claim_leaves_the_status_as_the_controller_plans_it() {
        let waiting = run(
            &grant(json!(null)),
            ClientSecret::Present,
            TokenSecret::Absent,
        );
        let mut claimed = grant(serde_json::to_value(&waiting.status).expect("status"));
        claimed.metadata.resource_version = Some("7".into());
        let now = Timestamp::from_second(NOW).expect("time");
        let exchange = ExchangeStatus {
            holder: "pod-a/1".into(),
            started_at: Time(now),
            renewed_at: Time(now),
        };
        let used = crate::api::UsedState {
            id: "used-1".into(),
            expires_at: Time(now + SignedDuration::from_secs(1800)),
        };
        let patch = crate::status::claim_patch(&claimed, &exchange, &used, now).expect("patch");
        let mut document = serde_json::to_value(&claimed).expect("grant");
        json_patch::patch(&mut document, &patch).expect("the claim applies");
        let claimed: SlackOAuthGrant = serde_json::from_value(document).expect("grant");
        let planned = run(&claimed, ClientSecret::Present, TokenSecret::Absent);
        assert_eq!(
            Some(&planned.status),
            claimed.status.as_ref(),
            "the reconcile a claim wakes has nothing to write"
        );
    }

    #[test]
    fn claimed_link_waits_while_its_holder_renews_the_exchange() {
        let plan = run(
            &grant(exchanging(10)),
            ClientSecret::Present,
            TokenSecret::Absent,
        );
        assert_eq!(
            plan.status.authorization_url, None,
            "no second link while a code is being exchanged"
        );
        assert_eq!(ready(&plan).reason, reasons::EXCHANGING);
        assert!(plan.status.exchange.is_some(), "the record is kept");
        assert_eq!(
            plan.requeue_after,
            Some(EXCHANGE_ORPHANED_AFTER - Duration::from_secs(10))
        );
        assert!(
            !plan
                .events
                .iter()
                .any(|e| e.warning && e.reason != reasons::TEAM_ID_UNSET)
        );
    }

    #[test]
    fn an_exchange_whose_holder_stopped_warns_and_publishes_a_fresh_link_at_once() {
        let plan = run(
            &grant(exchanging(31)),
            ClientSecret::Present,
            TokenSecret::Absent,
        );
        assert!(
            plan.status.authorization_url.is_some(),
            "a fresh link at once"
        );
        assert_eq!(plan.status.exchange, None);
        assert_eq!(ready(&plan).reason, reasons::EXCHANGE_INTERRUPTED);
        assert!(ready(&plan).message.contains("revoke it in Slack"));
        assert!(
            plan.events
                .iter()
                .any(|e| e.warning && e.reason == reasons::EXCHANGE_INTERRUPTED)
        );

        // Once warned, the warning is kept next to the link and not repeated.
        let settled = grant(serde_json::to_value(&plan.status).expect("json"));
        let again = run(&settled, ClientSecret::Present, TokenSecret::Absent);
        assert_eq!(ready(&again).reason, reasons::EXCHANGE_INTERRUPTED);
        assert!(again.events.is_empty(), "{:?}", again.events);
    }

    #[test]
    fn an_exchange_that_stored_its_token_is_simply_ready() {
        let token = held(None);
        let plan = run_holding(&grant(exchanging(300)), ClientSecret::Present, token);
        assert_eq!(ready(&plan).reason, reasons::AUTHORIZED);
        assert_eq!(plan.status.exchange, None);
        assert!(
            !plan
                .events
                .iter()
                .any(|e| e.reason == reasons::EXCHANGE_INTERRUPTED)
        );
    }

    #[test]
    fn a_grant_without_team_id_is_flagged_once_and_refused_when_required() {
        let plan = run(
            &grant(json!(null)),
            ClientSecret::Present,
            TokenSecret::Absent,
        );
        let pinned = condition(&plan, conditions::TEAM_PINNED);
        assert_eq!(pinned.type_, conditions::TEAM_PINNED);
        assert_eq!(
            (pinned.status.as_str(), pinned.reason.as_str()),
            ("False", reasons::TEAM_ID_UNSET)
        );
        assert!(
            plan.events
                .iter()
                .any(|e| e.warning && e.reason == reasons::TEAM_ID_UNSET)
        );
        let settled = grant(serde_json::to_value(&plan.status).expect("json"));
        let again = run(&settled, ClientSecret::Present, TokenSecret::Absent);
        assert!(again.events.is_empty(), "warned once");

        let mut pinned_grant = grant(json!(null));
        pinned_grant.spec.team_id = Some("T1".into());
        let plan = run(&pinned_grant, ClientSecret::Present, TokenSecret::Absent);
        assert_eq!(condition(&plan, conditions::TEAM_PINNED).status, "True");
        assert!(
            !plan
                .events
                .iter()
                .any(|e| e.reason == reasons::TEAM_ID_UNSET)
        );

        let required = plan_with(&grant(json!(null)), true);
        assert_eq!(ready(&required).reason, reasons::TEAM_ID_REQUIRED);
        assert_eq!(required.status.authorization_url, None);
        assert_eq!(required.status.phase, Some(Phase::Failed));
        let allowed = plan_with(&pinned_grant, true);
        assert!(allowed.status.authorization_url.is_some());
    }

    fn plan_with(grant: &SlackOAuthGrant, require_team_id: bool) -> Plan {
        decide(&Inputs {
            require_team_id,
            ..inputs(grant)
        })
    }

    #[test]
    fn a_token_slack_refuses_is_not_ready_gets_a_fresh_link_and_keeps_the_secret() {
        let token = held(None);
        let g = grant(json!(null));
        let revoked = decide(&Inputs {
            token_secret: TokenSecret::Managed,
            held: Some(token.clone()),
            token_check: TokenCheck::Revoked,
            ..inputs(&g)
        });
        assert_eq!(ready(&revoked).reason, reasons::TOKEN_REVOKED);
        assert!(revoked.status.authorization_url.is_some(), "a fresh link");
        assert_eq!(revoked.status.installation, Some(installation()));
        assert!(
            revoked
                .events
                .iter()
                .any(|e| e.warning && e.reason == reasons::TOKEN_REVOKED)
        );

        // After a restart, before this process has checked the token, the verdict stands.
        let settled = grant(serde_json::to_value(&revoked.status).expect("json"));
        let unchecked = run_holding(&settled, ClientSecret::Present, token.clone());
        assert_eq!(ready(&unchecked).reason, reasons::TOKEN_REVOKED);
        assert!(unchecked.events.is_empty(), "warned once");

        // Slack down says nothing: a grant whose token was never refused stays Ready.
        let ready_grant = run_holding(&g, ClientSecret::Present, token);
        assert_eq!(ready(&ready_grant).reason, reasons::AUTHORIZED);
    }

    #[test]
    fn organization_grant_asks_an_org_owner() {
        let mut g = grant(json!(null));
        g.spec.installation = Installation::Organization;
        let plan = run(&g, ClientSecret::Present, TokenSecret::Absent);
        assert!(ready(&plan).message.contains("Org Owner"));
    }
}
