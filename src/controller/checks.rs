//! When each Ready grant's token is next checked with `auth.test`, and what the last check
//! said. Kept in memory: after a restart or a leader change every token approved before it is
//! checked again, at most [`HELD_CHECKS_PER_SECOND`] a second (and all within one interval); a
//! token approved while this controller runs is first checked one interval after its approval;
//! and every later check is spread by jitter, so that many grants never call Slack in a burst.
//! Checking costs no API write: only a change of verdict reaches the grant's status.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use rand::RngExt;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::{
    api::{InstallationStatus, TokenKind},
    slack::{Provisioning, SlackError, TokenIdentity, is_dead_token},
};

/// The checks that nothing spread yet start at most this many a second: the first check of
/// each token approved before this controller started (every token, after a restart or a leader
/// change), and the checks a 429's pause held back. 10,000 grants are checked again within
/// about 8 minutes of a restart, and their checks never crowd out the reconciles of new grants.
/// When one interval holds fewer slots than there are such checks, the rest fall at random
/// within the interval.
pub const HELD_CHECKS_PER_SECOND: u32 = 20;
/// After a check that failed because Slack could not answer, the next one comes this soon
/// (or after Slack's Retry-After, if longer).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// What the last check of a grant's token said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// Not checked by this process yet.
    Unchecked,
    Valid,
    /// Slack refused it: revoked, expired, or its user deactivated.
    Revoked,
    /// Slack accepted it for another team or user than the one recorded.
    Invalid,
}

struct Entry {
    /// Of the token the verdict is about; never logged, never stored.
    fingerprint: [u8; 32],
    next_due: Instant,
    verdict: TokenCheck,
    /// What SCIM last said about the token, for grants whose token drives SCIM.
    provisioning: Option<Provisioning>,
}

/// The schedule and verdicts of every token this controller checks.
pub struct Checks {
    interval: Duration,
    /// When this controller started: tokens approved before it are checked at once (spread).
    started: k8s_openapi::jiff::Timestamp,
    entries: Mutex<HashMap<String, Entry>>,
    /// Slack answered 429 with this Retry-After: no check starts before it passes, for any
    /// grant (Slack's limits are per app and method, not per token).
    paused_until: Mutex<Option<Instant>>,
    /// The next free moment for a check that nothing spread yet ([`HELD_CHECKS_PER_SECOND`]).
    next_slot: Mutex<Option<Instant>>,
}

fn fingerprint(token: &SecretString) -> [u8; 32] {
    Sha256::digest(token.expose_secret().as_bytes()).into()
}

/// `base` scaled by a random factor in [0.9, 1.1).
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::rng().random_range(0.9..1.1))
}

impl Checks {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            started: k8s_openapi::jiff::Timestamp::now(),
            entries: Mutex::default(),
            paused_until: Mutex::default(),
            next_slot: Mutex::default(),
        }
    }

    /// The moment, at or after `not_before`, of a check that nothing spread yet: the next free
    /// slot, or a random moment in the interval after `not_before` once the slots run past it.
    fn slot(&self, not_before: Instant) -> Instant {
        let mut next = self
            .next_slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = next.map_or(not_before, |next| next.max(not_before));
        if slot > not_before + self.interval {
            return not_before + self.interval.mul_f64(rand::rng().random_range(0.0..1.0));
        }
        *next = Some(slot + Duration::from_secs(1) / HELD_CHECKS_PER_SECOND);
        slot
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// When a token not seen before is first checked: one interval after its approval if that
    /// happened while this controller ran (Slack just issued it), else in the next free slot.
    fn first_due(
        &self,
        approved_at: Option<k8s_openapi::jiff::Timestamp>,
        now: Instant,
    ) -> Instant {
        match approved_at.filter(|at| *at > self.started) {
            Some(at) => {
                let age = k8s_openapi::jiff::Timestamp::now().duration_since(at);
                let age = Duration::try_from(age).unwrap_or_default();
                now + jittered(self.interval).saturating_sub(age)
            }
            None => self.slot(now),
        }
    }

    /// The verdict on grant `uid`'s current `token` (approved at `approved_at`), and whether a
    /// check is due now; otherwise how long until it is.
    pub fn due(
        &self,
        uid: &str,
        token: &SecretString,
        approved_at: Option<k8s_openapi::jiff::Timestamp>,
        now: Instant,
    ) -> (TokenCheck, Option<Duration>) {
        let print = fingerprint(token);
        let mut entries = self.entries();
        let entry = entries.entry(uid.to_owned()).or_insert_with(|| Entry {
            fingerprint: print,
            next_due: self.first_due(approved_at, now),
            verdict: TokenCheck::Unchecked,
            provisioning: None,
        });
        if entry.fingerprint != print {
            // A new token (a new approval): its verdict starts over.
            entry.fingerprint = print;
            entry.verdict = TokenCheck::Unchecked;
            entry.provisioning = None;
            entry.next_due = self.first_due(approved_at, now);
        }
        let paused = self
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .filter(|until| *until > now);
        if let Some(until) = paused
            && entry.next_due < until
        {
            // The checks the pause held back start after it, a slot each.
            entry.next_due = self.slot(until);
        }
        let wait = entry.next_due.saturating_duration_since(now);
        (entry.verdict, (!wait.is_zero()).then_some(wait))
    }

    /// Records a check's outcome. `None` (Slack could not answer) keeps the verdict and tries
    /// again soon.
    pub fn record(
        &self,
        uid: &str,
        verdict: Option<TokenCheck>,
        retry_after: Option<Duration>,
        now: Instant,
    ) {
        if let Some(wait) = retry_after {
            let mut paused = self
                .paused_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let until = now + wait;
            if paused.is_none_or(|p| p < until) {
                *paused = Some(until);
            }
        }
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(uid) else {
            return;
        };
        match verdict {
            Some(verdict) => {
                entry.verdict = verdict;
                entry.next_due = now + jittered(self.interval);
            }
            None => {
                let wait = retry_after
                    .unwrap_or(RETRY_AFTER_FAILURE)
                    .max(RETRY_AFTER_FAILURE);
                entry.next_due = now + jittered(wait.min(self.interval));
            }
        }
    }

    /// Whether a token issued at `issued_at` was issued while this controller ran (so it is
    /// new, not one every grant has after a restart).
    pub fn issued_since_start(&self, issued_at: k8s_openapi::jiff::Timestamp) -> bool {
        issued_at > self.started
    }

    /// What SCIM last said about grant `uid`'s current token.
    pub fn provisioning(&self, uid: &str) -> Option<Provisioning> {
        self.entries().get(uid).and_then(|e| e.provisioning.clone())
    }

    pub fn record_provisioning(&self, uid: &str, provisioning: Provisioning) {
        if let Some(entry) = self.entries().get_mut(uid) {
            entry.provisioning = Some(provisioning);
        }
    }

    /// Forgets a deleted grant.
    pub fn forget(&self, uid: &str) {
        self.entries().remove(uid);
    }

    /// Until the next check of `uid`, if it is scheduled.
    pub fn until_next(&self, uid: &str, now: Instant) -> Option<Duration> {
        self.entries().get(uid).map(|e| {
            e.next_due
                .saturating_duration_since(now)
                .max(Duration::from_secs(1))
        })
    }
}

/// The verdict of an `auth.test` answer about a token recorded for `installation`; `None` when
/// Slack could not answer (network, 429, 5xx), which says nothing about the token.
pub fn verdict(
    answer: &Result<TokenIdentity, SlackError>,
    installation: &InstallationStatus,
) -> Option<TokenCheck> {
    match answer {
        Ok(identity) => {
            let team_ok = identity.team_id.as_ref().is_none_or(|team| {
                Some(team) == installation.team_id.as_ref()
                    || Some(team) == installation.enterprise_id.as_ref()
            });
            let user_token = installation.token_type != Some(TokenKind::Bot);
            let user_ok = !user_token
                || installation.authorized_user_id.is_none()
                || identity.user_id == installation.authorized_user_id;
            Some(if team_ok && user_ok {
                TokenCheck::Valid
            } else {
                TokenCheck::Invalid
            })
        }
        Err(error) if is_dead_token(error) => Some(TokenCheck::Revoked),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_pauses_every_grants_checks_until_its_retry_after() {
        let checks = Checks::new(Duration::from_secs(60));
        let now = Instant::now();
        let token = SecretString::from("xoxp-1");
        let other = SecretString::from("xoxp-2");
        checks.due("a", &token, None, now);
        checks.due("b", &other, None, now);
        checks.record("a", None, Some(Duration::from_secs(120)), now);
        let later = now + Duration::from_secs(90);
        let (_, wait) = checks.due("b", &other, None, later);
        assert!(
            wait.is_some_and(|w| w >= Duration::from_secs(30)),
            "b waits for a's Retry-After: {wait:?}"
        );
    }

    fn installation() -> InstallationStatus {
        InstallationStatus {
            team_id: Some("T1".into()),
            authorized_user_id: Some("U1".into()),
            token_type: Some(TokenKind::User),
            ..Default::default()
        }
    }

    fn identity(team: &str, user: &str) -> TokenIdentity {
        TokenIdentity {
            team_id: Some(team.into()),
            user_id: Some(user.into()),
            ..Default::default()
        }
    }

    #[test]
    fn slack_refusing_or_naming_someone_else_is_a_verdict_and_slack_down_is_none() {
        let recorded = installation();
        assert_eq!(
            verdict(&Ok(identity("T1", "U1")), &recorded),
            Some(TokenCheck::Valid)
        );
        assert_eq!(
            verdict(&Ok(identity("T2", "U1")), &recorded),
            Some(TokenCheck::Invalid)
        );
        assert_eq!(
            verdict(&Ok(identity("T1", "U2")), &recorded),
            Some(TokenCheck::Invalid)
        );
        let api = |code: &str| SlackError::Api {
            method: "auth.test",
            code: code.into(),
        };
        for code in [
            "token_revoked",
            "invalid_auth",
            "token_expired",
            "account_inactive",
        ] {
            assert_eq!(
                verdict(&Err(api(code)), &recorded),
                Some(TokenCheck::Revoked),
                "{code}"
            );
        }
        let down = SlackError::Status {
            method: "auth.test",
            status: 503,
        };
        assert_eq!(verdict(&Err(down), &recorded), None);
        let limited = SlackError::RateLimited {
            method: "auth.test",
            retry_after: Duration::from_secs(5),
        };
        assert_eq!(verdict(&Err(limited), &recorded), None);
    }

    #[test]
    fn first_checks_are_spread_and_later_ones_follow_the_interval() {
        let checks = Checks::new(Duration::from_secs(3600));
        let now = Instant::now();
        let token = SecretString::from("xoxp-1");
        let waits: Vec<Duration> = (0..200)
            .map(|i| {
                checks
                    .due(&format!("uid-{i}"), &token, None, now)
                    .1
                    .unwrap_or_default()
            })
            .collect();
        // One slot each, HELD_CHECKS_PER_SECOND a second from now: 200 take 10 s.
        let step = Duration::from_secs(1) / HELD_CHECKS_PER_SECOND;
        for (i, wait) in waits.iter().enumerate() {
            assert_eq!(*wait, step * u32::try_from(i).expect("small"), "check {i}");
        }
        // Asking again keeps the slot.
        assert_eq!(checks.due("uid-199", &token, None, now).1, Some(step * 199));

        checks.record("uid-0", Some(TokenCheck::Valid), None, now);
        let (verdict, wait) = checks.due("uid-0", &token, None, now);
        assert_eq!(verdict, TokenCheck::Valid);
        let wait = wait.expect("scheduled");
        assert!(
            wait >= Duration::from_secs(3240) && wait <= Duration::from_secs(3960),
            "{wait:?}"
        );

        // A new token starts over.
        let (verdict, _) = checks.due("uid-0", &SecretString::from("xoxp-2"), None, now);
        assert_eq!(verdict, TokenCheck::Unchecked);

        // A token approved while the controller runs is first checked an interval later.
        let approved = k8s_openapi::jiff::Timestamp::now();
        let (_, wait) = checks.due("uid-new", &token, Some(approved), now);
        assert!(
            wait.expect("scheduled") >= Duration::from_secs(3000),
            "{wait:?}"
        );
    }

    #[test]
    fn slack_being_down_keeps_the_verdict_and_retries_soon() {
        let checks = Checks::new(Duration::from_secs(3600));
        let now = Instant::now();
        let token = SecretString::from("xoxp-1");
        checks.due("u", &token, None, now);
        checks.record("u", Some(TokenCheck::Valid), None, now);
        checks.record("u", None, Some(Duration::from_secs(120)), now);
        let (verdict, wait) = checks.due("u", &token, None, now);
        assert_eq!(verdict, TokenCheck::Valid);
        let wait = wait.expect("scheduled");
        // Slack's Retry-After (120 s, jittered by 10%), or, when that falls inside the pause it
        // also set, the first slot after the pause.
        assert!(
            wait >= Duration::from_secs(108) && wait <= Duration::from_secs(132),
            "{wait:?}"
        );
    }

    #[test]
    fn checks_a_pause_held_back_start_after_it_a_slot_each() {
        let checks = Checks::new(Duration::from_secs(3600));
        let now = Instant::now();
        let token = SecretString::from("xoxp-1");
        for i in 0..100 {
            checks.due(&format!("uid-{i}"), &token, None, now);
        }
        checks.record("uid-0", None, Some(Duration::from_secs(60)), now);
        let later = now + Duration::from_secs(1);
        let mut waits: Vec<Duration> = (1..100)
            .map(|i| {
                checks
                    .due(&format!("uid-{i}"), &token, None, later)
                    .1
                    .expect("held back")
            })
            .collect();
        waits.sort();
        let step = Duration::from_secs(1) / HELD_CHECKS_PER_SECOND;
        assert_eq!(
            waits[0],
            Duration::from_secs(59),
            "the first goes when the pause ends"
        );
        for pair in waits.windows(2) {
            assert_eq!(pair[1] - pair[0], step, "then one a slot");
        }
    }

    #[test]
    fn more_first_checks_than_one_interval_has_slots_fall_within_the_interval() {
        let interval = Duration::from_secs(2);
        let checks = Checks::new(interval);
        let now = Instant::now();
        let token = SecretString::from("xoxp-1");
        let slots = 2 * HELD_CHECKS_PER_SECOND as usize;
        let waits: Vec<Duration> = (0..slots * 5)
            .map(|i| {
                checks
                    .due(&format!("uid-{i}"), &token, None, now)
                    .1
                    .unwrap_or_default()
            })
            .collect();
        assert!(waits.iter().all(|w| *w <= interval), "{waits:?}");
        let late = waits.iter().filter(|w| **w > interval / 2).count();
        assert!(
            (slots..slots * 4).contains(&late),
            "spread over the interval: {late} of {} in its second half",
            waits.len()
        );
    }
}
