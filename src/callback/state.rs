//! The OAuth `state` parameter: what it carries, how it is signed and encoded, and how a
//! callback's state is checked against the grant it names. No I/O.
//!
//! A state is minted at each visit to a grant's approval link (`link.rs`) and stored nowhere. It
//! names its grant (namespace, name, UID, generation) and the link it came from (by
//! [`super::link::link_id`]), carries when it was issued and when it expires ([`STATE_TTL`]
//! later) and 256 random bits, and is signed: `s3.<payload>.<mac>`, where `mac` is an
//! HMAC-SHA256 over `s3.<payload>` with the operator's [`StateKey`]. So:
//! - a forged state is refused by [`StateKey::verify`] before anything in it is used: no API
//!   call, no log field, no page text comes from a state the operator did not sign;
//! - a genuine state is bound to one grant generation (UID and generation are checked) and to the
//!   approval link the grant publishes now: once the grant is Ready or re-authorized, its link
//!   changes and every state minted from the old one stops working;
//! - it works once: the claim that starts its exchange records its [`AuthorizationState::id`] in
//!   `status.usedStates`, in a JSON patch guarded by the grant's resourceVersion, and a state
//!   found there is refused. It works on any replica and across restarts.

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The longest state accepted; anything longer is malformed without further parsing.
pub const MAX_STATE_LEN: usize = 1024;
const VERSION_PREFIX: &str = "s3.";
/// How long a state minted at a visit is valid: time for the owner to read Slack's consent page
/// and click Allow. The approval link itself lives much longer (`--authorization-ttl`).
pub const STATE_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 60);
const NONCE_BYTES: usize = 32;
const MAC_BYTES: usize = 32;
/// Length of a [`StateKey`], in bytes.
pub const KEY_BYTES: usize = 32;

/// The decoded `state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationState {
    #[serde(rename = "ns")]
    pub namespace: String,
    #[serde(rename = "n")]
    pub name: String,
    #[serde(rename = "u")]
    pub uid: String,
    #[serde(rename = "g")]
    pub generation: i64,
    /// Unix seconds.
    #[serde(rename = "e")]
    pub expires_at: i64,
    /// When it was minted, in Unix seconds.
    #[serde(rename = "i")]
    pub issued_at: i64,
    /// The [`super::link::link_id`] of the approval link it was minted from.
    #[serde(rename = "l")]
    pub link: String,
    #[serde(rename = "r")]
    nonce: String,
}

/// What a callback's state is checked against: the grant it names, as it is now.
#[derive(Clone, Debug)]
pub struct Grant<'a> {
    pub uid: &'a str,
    pub generation: i64,
    /// The [`super::link::link_id`] of the approval link the grant publishes, if any.
    pub link: Option<String>,
    /// The ids of the states already used on it (`status.usedStates`).
    pub used: Vec<&'a str>,
    /// An approval of it is being exchanged right now.
    pub exchanging: bool,
}

/// Why a state was refused before its grant was even looked at.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("failed to decode the state: it is not one this operator issued")]
    Malformed,
}

/// Why a genuine state does not authorize a callback for the grant it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The named grant was deleted (and perhaps recreated under the same name).
    GrantGone,
    /// The grant's spec changed after the link was issued.
    OlderGeneration,
    /// The state's time is up.
    Expired,
    /// Minted from a link the grant no longer publishes: it was approved, or re-authorized.
    NotCurrent,
    /// Already used for an approval attempt.
    Used,
    /// Another approval of the grant is being exchanged right now.
    InProgress,
}

/// The key states are signed with. Its bytes never leave it: no `Debug`, no `Display`.
#[derive(Clone)]
pub struct StateKey {
    key: [u8; KEY_BYTES],
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateKey(..)")
    }
}

/// A key of the wrong length.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failed to use the state key: it must be exactly {KEY_BYTES} bytes")]
pub struct InvalidKey;

impl StateKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut key = [0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        Self { key }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidKey> {
        let key = bytes.try_into().map_err(|_| InvalidKey)?;
        Ok(Self { key })
    }

    /// The key's bytes, to store it.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.key.to_vec()
    }

    pub(super) fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    /// The URL-safe string sent to Slack as `state`.
    pub fn sign(&self, state: &AuthorizationState) -> String {
        // Serializing a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(state).unwrap_or_default();
        let signed = format!("{VERSION_PREFIX}{}", URL_SAFE_NO_PAD.encode(json));
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Parses a `state` from a callback, refusing anything this key did not sign, and anything
    /// whose names could not be a Kubernetes namespace and object name.
    pub fn verify(&self, raw: &str) -> Result<AuthorizationState, DecodeError> {
        let (signed, tag) = split(raw)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| DecodeError::Malformed)?;
        if tag.len() != MAC_BYTES {
            return Err(DecodeError::Malformed);
        }
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        mac.verify_slice(&tag).map_err(|_| DecodeError::Malformed)?;
        decode_payload(signed)
    }
}

/// `(s2.<payload>, <mac>)`, checking only the shape.
fn split(raw: &str) -> Result<(&str, &str), DecodeError> {
    if raw.len() > MAX_STATE_LEN || !raw.starts_with(VERSION_PREFIX) {
        return Err(DecodeError::Malformed);
    }
    let (signed, tag) = raw.rsplit_once('.').ok_or(DecodeError::Malformed)?;
    if signed.len() <= VERSION_PREFIX.len() {
        return Err(DecodeError::Malformed);
    }
    Ok((signed, tag))
}

fn decode_payload(signed: &str) -> Result<AuthorizationState, DecodeError> {
    let body = signed
        .strip_prefix(VERSION_PREFIX)
        .ok_or(DecodeError::Malformed)?;
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| DecodeError::Malformed)?;
    let state: AuthorizationState =
        serde_json::from_slice(&json).map_err(|_| DecodeError::Malformed)?;
    let nonce_ok = URL_SAFE_NO_PAD
        .decode(&state.nonce)
        .is_ok_and(|n| n.len() == NONCE_BYTES);
    if !nonce_ok || !is_dns_label(&state.namespace) || !is_dns_subdomain(&state.name) {
        return Err(DecodeError::Malformed);
    }
    Ok(state)
}

/// An RFC 1123 label, as Kubernetes namespace names are.
pub fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

/// An RFC 1123 subdomain, as the names of most Kubernetes objects (and of grants) are.
pub fn is_dns_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(is_dns_label)
}

impl AuthorizationState {
    /// A new state for a visit to a grant's approval link `link` (its [`super::link::link_id`])
    /// at `now` (Unix seconds), with fresh randomness, valid for [`STATE_TTL`].
    pub fn issue(
        namespace: &str,
        name: &str,
        uid: &str,
        generation: i64,
        link: &str,
        now: i64,
    ) -> Self {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
            generation,
            expires_at: now.saturating_add(STATE_TTL.as_secs() as i64),
            issued_at: now,
            link: link.to_owned(),
            nonce: URL_SAFE_NO_PAD.encode(nonce),
        }
    }

    /// What `status.usedStates` records of this state once it is used: a hash of its random
    /// part, which tells nobody the state itself.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(self.nonce.as_bytes());
        URL_SAFE_NO_PAD.encode(&digest[..12])
    }

    /// Checks this (genuine) state against what the grant it names looks like now. The link
    /// comparison is constant-time so response timing reveals nothing about it.
    pub fn check(&self, grant: &Grant<'_>, now: i64) -> Result<(), Mismatch> {
        if self.uid != grant.uid {
            return Err(Mismatch::GrantGone);
        }
        if now >= self.expires_at {
            return Err(Mismatch::Expired);
        }
        if self.generation != grant.generation {
            return Err(Mismatch::OlderGeneration);
        }
        let is_current = grant
            .link
            .as_ref()
            .is_some_and(|current| bool::from(current.as_bytes().ct_eq(self.link.as_bytes())));
        if !is_current {
            return Err(Mismatch::NotCurrent);
        }
        if grant.used.contains(&self.id().as_str()) {
            return Err(Mismatch::Used);
        }
        if grant.exchanging {
            return Err(Mismatch::InProgress);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000;

    fn state() -> AuthorizationState {
        AuthorizationState::issue("pingfederate", "slack-scim", "uid-1", 3, "link-1", NOW)
    }

    fn grant<'a>() -> Grant<'a> {
        Grant {
            uid: "uid-1",
            generation: 3,
            link: Some("link-1".to_owned()),
            used: Vec::new(),
            exchanging: false,
        }
    }

    #[test]
    fn state_round_trips_through_its_signed_encoding() {
        let key = StateKey::generate();
        let issued = state();
        let raw = key.sign(&issued);
        assert!(raw.len() < MAX_STATE_LEN);
        assert!(raw.starts_with("s3."), "{raw}");
        assert!(
            raw.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "URL-safe: {raw}"
        );
        assert_eq!(key.verify(&raw), Ok(issued.clone()));
        assert_eq!(issued.expires_at, NOW + STATE_TTL.as_secs() as i64);
    }

    #[test]
    fn a_state_signed_with_another_key_is_refused() {
        let raw = StateKey::generate().sign(&state());
        assert_eq!(
            StateKey::generate().verify(&raw),
            Err(DecodeError::Malformed)
        );
    }

    #[test]
    fn a_tampered_state_is_refused() {
        let key = StateKey::generate();
        let raw = key.sign(&state());
        let (signed, tag) = raw.rsplit_once('.').expect("shape");
        let mut other = state();
        other.name = "other".into();
        let forged_payload = key.sign(&other);
        let (forged_signed, _) = forged_payload.rsplit_once('.').expect("shape");
        assert_eq!(
            key.verify(&format!("{forged_signed}.{tag}")),
            Err(DecodeError::Malformed)
        );
        assert_eq!(key.verify(signed), Err(DecodeError::Malformed));
        assert_eq!(
            key.verify(&format!("{signed}.")),
            Err(DecodeError::Malformed)
        );
    }

    #[test]
    fn each_state_carries_256_fresh_random_bits_and_an_id_that_is_not_them() {
        let a = state();
        let b = state();
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a.nonce).map(|n| n.len()), Ok(32));
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), a.clone().id());
        assert!(!a.nonce.contains(&a.id()));
    }

    #[test]
    fn malformed_states_are_refused() {
        let key = StateKey::generate();
        let too_long = "s3.".to_owned() + &"A".repeat(MAX_STATE_LEN);
        for raw in [
            "",
            "s3.",
            "s3..",
            "s2.abc",
            "not-a-state",
            "s3.!!!!.!!!!",
            "s3.e30.AAAA",
            too_long.as_str(),
        ] {
            assert_eq!(key.verify(raw), Err(DecodeError::Malformed), "{raw}");
        }
        let mut short_nonce = state();
        short_nonce.nonce = URL_SAFE_NO_PAD.encode([0u8; 8]);
        assert_eq!(
            key.verify(&key.sign(&short_nonce)),
            Err(DecodeError::Malformed)
        );
    }

    #[test]
    fn signed_states_naming_no_valid_object_are_refused() {
        let key = StateKey::generate();
        for (namespace, name) in [
            ("pf", "?watch=true&timeoutSeconds=3600"),
            ("pf", "?limit=500"),
            ("pf", "a/b"),
            ("pf", "../secrets"),
            ("pf/..", "scim"),
            ("PF", "scim"),
            ("", "scim"),
            ("pf", ""),
            ("pf", "x\r\ny"),
        ] {
            let state = AuthorizationState::issue(namespace, name, "u", 1, "l", 1);
            assert_eq!(
                key.verify(&key.sign(&state)),
                Err(DecodeError::Malformed),
                "{namespace}/{name}"
            );
        }
        let long_name = "a".repeat(63) + "." + &"b".repeat(63);
        let state = AuthorizationState::issue("pf", &long_name, "u", 1, "l", 1);
        assert!(key.verify(&key.sign(&state)).is_ok());
    }

    #[test]
    fn a_fresh_state_of_the_current_link_is_accepted() {
        assert_eq!(state().check(&grant(), NOW + 1), Ok(()));
    }

    #[test]
    fn state_of_a_deleted_grant_is_refused() {
        let other = Grant {
            uid: "uid-2",
            ..grant()
        };
        assert_eq!(state().check(&other, NOW), Err(Mismatch::GrantGone));
    }

    #[test]
    fn state_of_an_older_generation_is_refused() {
        let newer = Grant {
            generation: 4,
            ..grant()
        };
        assert_eq!(state().check(&newer, NOW), Err(Mismatch::OlderGeneration));
    }

    #[test]
    fn expired_state_is_refused() {
        let expires = state().expires_at;
        assert_eq!(state().check(&grant(), expires), Err(Mismatch::Expired));
    }

    #[test]
    fn a_state_of_a_link_no_longer_published_is_refused() {
        for link in [None, Some("link-2".to_owned())] {
            let replaced = Grant { link, ..grant() };
            assert_eq!(state().check(&replaced, NOW), Err(Mismatch::NotCurrent));
        }
    }

    #[test]
    fn a_used_state_is_refused_and_so_is_any_while_an_exchange_runs() {
        let issued = state();
        let id = issued.id();
        let used = Grant {
            used: vec!["other", id.as_str()],
            ..grant()
        };
        assert_eq!(issued.check(&used, NOW), Err(Mismatch::Used));
        let busy = Grant {
            exchanging: true,
            ..grant()
        };
        assert_eq!(issued.check(&busy, NOW), Err(Mismatch::InProgress));
    }
}
