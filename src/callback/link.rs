//! Approval links: `<public-url>/oauth/start/<token>`, the short, stable link a grant publishes
//! in `status.authorizationURL`. No I/O.
//!
//! A token is 16 random bytes and a 16-byte HMAC-SHA256 tag over them (with the operator's
//! [`StateKey`], in a domain of its own), base64url: 43 characters. So:
//! - it is unguessable (128 random bits), and a forged one is told apart from a genuine one with
//!   no lookup at all, so an unknown token says nothing about which grants exist;
//! - it names no grant: the grant is found by the token it publishes;
//! - a visit mints a `state` bound to the token's [`link_id`], signed and stored nowhere: any
//!   replica can check it, after any restart, and one visitor's state never replaces another's.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::Mac;
use rand::Rng;
use sha2::{Digest, Sha256};
use url::Url;

use super::state::StateKey;

const RANDOM_BYTES: usize = 16;
const TAG_BYTES: usize = 16;
/// The length of a token: base64url of 32 bytes, unpadded.
pub const TOKEN_LEN: usize = 43;
/// What the tag is computed over besides the random bytes, so that no other signature the key
/// makes (a state's) can pass for a token's.
const DOMAIN: &[u8] = b"slack-oauth-operator start link v1\0";

/// A token that is not one this operator issued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failed to accept the approval link: it is not one this operator issued")]
pub struct ForgedLink;

impl StateKey {
    /// A fresh approval-link token.
    pub fn issue_link(&self) -> String {
        let mut bytes = [0u8; RANDOM_BYTES + TAG_BYTES];
        rand::rng().fill_bytes(&mut bytes[..RANDOM_BYTES]);
        let tag = self.link_tag(&bytes[..RANDOM_BYTES]);
        bytes[RANDOM_BYTES..].copy_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Checks that `token` is one this key issued, in constant time. Anything else (another
    /// length, another alphabet, another key's tag) is refused before it is looked up.
    pub fn verify_link(&self, token: &str) -> Result<(), ForgedLink> {
        if token.len() != TOKEN_LEN {
            return Err(ForgedLink);
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| ForgedLink)?;
        let (random, tag) = bytes.split_at(RANDOM_BYTES);
        let mut mac = self.mac();
        mac.update(DOMAIN);
        mac.update(random);
        mac.verify_truncated_left(tag).map_err(|_| ForgedLink)
    }

    fn link_tag(&self, random: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac = self.mac();
        mac.update(DOMAIN);
        mac.update(random);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }
}

/// What a state carries of the link it was minted from: a hash, so that the state (which travels
/// through Slack) does not carry the link itself.
pub fn link_id(token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(DOMAIN)
        .chain_update(token.as_bytes())
        .finalize();
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// The approval link for `token`.
pub fn link_url(start_url: &Url, token: &str) -> String {
    format!("{start_url}{token}")
}

/// The token of a published approval link under `start_url`, if it is one: a Slack URL published
/// by an older version, or a link under another public URL, is not.
pub fn token_in<'a>(start_url: &Url, published: &'a str) -> Option<&'a str> {
    let token = published.strip_prefix(start_url.as_str())?;
    (token.len() == TOKEN_LEN && token.bytes().all(is_base64url)).then_some(token)
}

/// The token of a published approval link under any public URL: what a grant's status points
/// at, for the index that answers visits.
pub fn published_token(published: &str) -> Option<&str> {
    let (_, token) = published.rsplit_once("/oauth/start/")?;
    (token.len() == TOKEN_LEN && token.bytes().all(is_base64url)).then_some(token)
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_carries_128_random_bits_and_verifies_only_with_its_key() {
        let key = StateKey::generate();
        let token = key.issue_link();
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(token.bytes().all(is_base64url), "{token}");
        assert_eq!(key.verify_link(&token), Ok(()));
        assert_ne!(token, key.issue_link(), "fresh randomness each time");
        assert_eq!(StateKey::generate().verify_link(&token), Err(ForgedLink));
    }

    #[test]
    fn tampered_or_malformed_tokens_are_refused() {
        let key = StateKey::generate();
        let token = key.issue_link();
        let mut flipped = token.clone().into_bytes();
        flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        let too_long = format!("{token}A");
        for bad in [
            "",
            "x",
            &token[..TOKEN_LEN - 1],
            too_long.as_str(),
            flipped.as_str(),
            &"%2e".repeat(15)[..TOKEN_LEN],
            &"A".repeat(TOKEN_LEN),
        ] {
            assert_eq!(key.verify_link(bad), Err(ForgedLink), "{bad}");
        }
    }

    #[test]
    fn a_published_link_gives_back_its_token_only_under_the_start_path() {
        let start = Url::parse("https://op.example.com/oauth/start/").expect("url");
        let token = StateKey::generate().issue_link();
        let link = link_url(&start, &token);
        assert_eq!(link, format!("https://op.example.com/oauth/start/{token}"));
        assert_eq!(token_in(&start, &link), Some(token.as_str()));
        assert_eq!(published_token(&link), Some(token.as_str()));
        let other = Url::parse("https://other.example.com/oauth/start/").expect("url");
        assert_eq!(token_in(&other, &link), None, "another public URL");
        let slack = format!("https://slack.com/oauth/v2/authorize?client_id=1&state={token}");
        assert_eq!(token_in(&start, &slack), None);
        assert_eq!(published_token(&slack), None);
        assert_eq!(published_token(&format!("{link}/x")), None);
    }

    #[test]
    fn the_link_id_is_stable_and_reveals_nothing_of_the_token() {
        let token = StateKey::generate().issue_link();
        assert_eq!(link_id(&token), link_id(&token));
        assert_ne!(link_id(&token), link_id(&StateKey::generate().issue_link()));
        assert!(!link_id(&token).contains(&token[..8]));
    }
}
