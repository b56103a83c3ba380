//! Random values: admin passwords and the opaque `encryptedValue`s the emulator hands out.
//!
//! Each carries at least 128 bits from the thread-local CSPRNG, so a test cannot pass by
//! guessing one and two emulators never issue the same value.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

fn random_b64(bytes: usize) -> String {
    let mut buffer = vec![0_u8; bytes];
    rand::fill(&mut buffer[..]);
    URL_SAFE_NO_PAD.encode(buffer)
}

/// A random admin password (192 bits).
pub(crate) fn password() -> String {
    random_b64(24)
}

/// The protected header of every `encryptedValue`: `{"alg":"dir","enc":"A128CBC-HS256",
/// "kid":"pf-emulator"}`, base64url.
const ENCRYPTED_VALUE_HEADER: &str =
    "eyJhbGciOiJkaXIiLCJlbmMiOiJBMTI4Q0JDLUhTMjU2Iiwia2lkIjoicGYtZW11bGF0b3IifQ";

/// A new `encryptedValue`: five dot-separated base64url parts, shaped like a compact JWE with
/// direct encryption, but random and unrelated to the plaintext (the emulator looks the
/// plaintext up; nothing can be decrypted from the string). About 384 random bits.
pub(crate) fn encrypted_value() -> String {
    format!(
        "{ENCRYPTED_VALUE_HEADER}..{}.{}.{}",
        random_b64(16),
        random_b64(16),
        random_b64(16)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_says_what_its_comment_says() {
        let decoded = URL_SAFE_NO_PAD
            .decode(ENCRYPTED_VALUE_HEADER)
            .expect("base64url");
        assert_eq!(
            decoded,
            br#"{"alg":"dir","enc":"A128CBC-HS256","kid":"pf-emulator"}"#
        );
    }

    #[test]
    fn encrypted_values_are_jwe_shaped_and_never_repeat() {
        let one = encrypted_value();
        assert_eq!(one.split('.').count(), 5);
        assert_ne!(one, encrypted_value());
        assert_ne!(password(), password());
    }
}
