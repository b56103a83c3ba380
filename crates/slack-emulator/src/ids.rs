//! Random IDs, codes and tokens shaped like Slack's.
//!
//! Every secret carries at least 128 bits from the thread-local CSPRNG, so two emulators (or two
//! test runs) never hand out the same value and a test cannot pass by guessing one.

use rand::{RngExt, distr::Alphanumeric};

const ID_ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// `count` characters from `alphabet`.
fn pick(alphabet: &[u8], count: usize) -> String {
    let mut rng = rand::rng();
    (0..count)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

/// `count` alphanumeric characters (about 5.95 bits each).
fn alphanumeric(count: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(count)
        .map(char::from)
        .collect()
}

/// `count` lowercase hex digits (4 bits each).
fn hex(count: usize) -> String {
    pick(b"0123456789abcdef", count)
}

/// A 13-digit number, like the numeric parts of Slack's tokens and codes.
fn number() -> u64 {
    rand::rng().random_range(1_000_000_000_000..10_000_000_000_000)
}

/// A Slack object ID: `prefix` followed by 10 uppercase alphanumerics, e.g. `A07ABCDEF12`.
pub(crate) fn object_id(prefix: char) -> String {
    format!("{prefix}0{}", pick(ID_ALPHABET, 9))
}

/// An app ID (`A…`).
pub(crate) fn app_id() -> String {
    object_id('A')
}

/// An authorization code: `<n>.<n>.<64 hex>` (256 bits).
pub(crate) fn code() -> String {
    format!("{}.{}.{}", number(), number(), hex(64))
}

/// A long-lived bot token: `xoxb-<n>-<n>-<24 alnum>` (about 143 bits).
pub(crate) fn bot_token() -> String {
    format!("xoxb-{}-{}-{}", number(), number(), alphanumeric(24))
}

/// A long-lived user token: `xoxp-<n>-<n>-<n>-<32 hex>` (128 bits).
pub(crate) fn user_token() -> String {
    format!("xoxp-{}-{}-{}-{}", number(), number(), number(), hex(32))
}

/// A rotating access token: `xoxe.xoxb-1-…` or `xoxe.xoxp-1-…` (about 595 bits).
pub(crate) fn rotating_token(bot: bool) -> String {
    let kind = if bot { "xoxb" } else { "xoxp" };
    format!("xoxe.{kind}-1-{}", alphanumeric(100))
}

/// A refresh token: `xoxe-1-…` (about 595 bits).
pub(crate) fn refresh_token() -> String {
    format!("xoxe-1-{}", alphanumeric(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_tokens_have_slacks_shapes() {
        let app = app_id();
        assert_eq!(app.len(), 11);
        assert!(app.starts_with("A0"));
        assert!(bot_token().starts_with("xoxb-"));
        assert!(user_token().starts_with("xoxp-"));
        assert!(rotating_token(true).starts_with("xoxe.xoxb-1-"));
        assert!(rotating_token(false).starts_with("xoxe.xoxp-1-"));
        assert!(refresh_token().starts_with("xoxe-1-"));
        assert_eq!(code().split('.').count(), 3);
        assert_ne!(user_token(), user_token());
    }
}
