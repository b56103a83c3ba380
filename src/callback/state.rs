//! The OAuth `state` parameter: what it carries, how it is encoded, and how a callback's state is
//! checked against the grant it names. No I/O.
//!
//! A state names its grant (namespace, name, UID, generation), carries its expiry and 256 random
//! bits. It is published only inside `status.authorizationURL`, and a callback is accepted only
//! when its state is, byte for byte, the one in the grant's current URL. That makes it
//! unguessable (the random part), bound to one grant generation (UID and generation are checked),
//! verifiable by any replica before and after a restart (the grant's status lives in etcd, not in
//! memory), and single-use (the callback server removes the URL from the status, with a JSON
//! patch `test` of the URL, before it exchanges the code; a second use finds no URL).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::Rng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// The longest state accepted; anything longer is malformed without further parsing.
pub const MAX_STATE_LEN: usize = 1024;
const VERSION_PREFIX: &str = "s1.";
const NONCE_BYTES: usize = 32;

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
    #[serde(rename = "r")]
    nonce: String,
}

/// Why a state was refused before its grant was even looked at.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("failed to decode the state: it is not one this operator issued")]
    Malformed,
}

/// Why a well-formed state does not authorize a callback for the grant it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The named grant was deleted (and perhaps recreated under the same name).
    GrantGone,
    /// The grant's spec changed after the link was issued.
    OlderGeneration,
    /// The link's time is up.
    Expired,
    /// Not the grant's current link: already used, replaced, or forged.
    NotCurrent,
}

impl AuthorizationState {
    /// A new state for a grant, with fresh randomness.
    pub fn issue(namespace: &str, name: &str, uid: &str, generation: i64, expires_at: i64) -> Self {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
            generation,
            expires_at,
            nonce: URL_SAFE_NO_PAD.encode(nonce),
        }
    }

    /// The URL-safe string sent to Slack as `state`.
    pub fn encode(&self) -> String {
        // Serializing a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{VERSION_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// Parses a `state` from a callback.
    pub fn decode(raw: &str) -> Result<Self, DecodeError> {
        if raw.len() > MAX_STATE_LEN {
            return Err(DecodeError::Malformed);
        }
        let body = raw
            .strip_prefix(VERSION_PREFIX)
            .ok_or(DecodeError::Malformed)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| DecodeError::Malformed)?;
        let state: Self = serde_json::from_slice(&json).map_err(|_| DecodeError::Malformed)?;
        let nonce_ok = URL_SAFE_NO_PAD
            .decode(&state.nonce)
            .is_ok_and(|n| n.len() == NONCE_BYTES);
        if !nonce_ok || state.namespace.is_empty() || state.name.is_empty() {
            return Err(DecodeError::Malformed);
        }
        Ok(state)
    }

    /// Checks this state against what the grant it names looks like now.
    ///
    /// `current_state` is the `state` inside the grant's published `status.authorizationURL`, if
    /// any. The comparison is constant-time so response timing reveals nothing about it.
    pub fn check(
        &self,
        raw: &str,
        grant_uid: &str,
        grant_generation: i64,
        current_state: Option<&str>,
        now: i64,
    ) -> Result<(), Mismatch> {
        if self.uid != grant_uid {
            return Err(Mismatch::GrantGone);
        }
        if self.generation != grant_generation {
            return Err(Mismatch::OlderGeneration);
        }
        let is_current = current_state
            .is_some_and(|current| bool::from(current.as_bytes().ct_eq(raw.as_bytes())));
        if now >= self.expires_at {
            return Err(Mismatch::Expired);
        }
        if !is_current {
            return Err(Mismatch::NotCurrent);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AuthorizationState {
        AuthorizationState::issue("pingfederate", "slack-scim", "uid-1", 3, 1_000)
    }

    #[test]
    fn state_round_trips_through_its_encoding() {
        let issued = state();
        let raw = issued.encode();
        assert!(raw.len() < MAX_STATE_LEN);
        assert!(
            raw.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "URL-safe: {raw}"
        );
        assert_eq!(AuthorizationState::decode(&raw), Ok(issued));
    }

    #[test]
    fn each_state_carries_256_fresh_random_bits() {
        let a = state();
        let b = state();
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a.nonce).map(|n| n.len()), Ok(32));
    }

    #[test]
    fn malformed_states_are_refused() {
        let too_long = "s1.".to_owned() + &"A".repeat(MAX_STATE_LEN);
        for raw in [
            "",
            "s1.",
            "s2.abc",
            "not-a-state",
            "s1.!!!!",
            "s1.e30",
            too_long.as_str(),
        ] {
            assert_eq!(
                AuthorizationState::decode(raw),
                Err(DecodeError::Malformed),
                "{raw}"
            );
        }
        let mut short_nonce = state();
        short_nonce.nonce = URL_SAFE_NO_PAD.encode([0u8; 8]);
        assert_eq!(
            AuthorizationState::decode(&short_nonce.encode()),
            Err(DecodeError::Malformed)
        );
    }

    #[test]
    fn current_state_for_the_same_grant_and_generation_is_accepted() {
        let issued = state();
        let raw = issued.encode();
        assert_eq!(issued.check(&raw, "uid-1", 3, Some(&raw), 999), Ok(()));
    }

    #[test]
    fn state_of_a_deleted_grant_is_refused() {
        let issued = state();
        let raw = issued.encode();
        assert_eq!(
            issued.check(&raw, "uid-2", 3, Some(&raw), 0),
            Err(Mismatch::GrantGone)
        );
    }

    #[test]
    fn state_of_an_older_generation_is_refused() {
        let issued = state();
        let raw = issued.encode();
        assert_eq!(
            issued.check(&raw, "uid-1", 4, Some(&raw), 0),
            Err(Mismatch::OlderGeneration)
        );
    }

    #[test]
    fn expired_state_is_refused() {
        let issued = state();
        let raw = issued.encode();
        assert_eq!(
            issued.check(&raw, "uid-1", 3, Some(&raw), 1_000),
            Err(Mismatch::Expired)
        );
    }

    #[test]
    fn used_or_forged_state_is_refused() {
        let issued = state();
        let raw = issued.encode();
        assert_eq!(
            issued.check(&raw, "uid-1", 3, None, 0),
            Err(Mismatch::NotCurrent)
        );
        let other = state().encode();
        assert_eq!(
            issued.check(&raw, "uid-1", 3, Some(&other), 0),
            Err(Mismatch::NotCurrent)
        );
    }
}
