//! Property tests ("fuzzing") of everything the public callback parses from a request before any
//! API call: the query string and the signed `state`. Each property runs 10,000 generated cases in
//! `make test`.

use proptest::prelude::*;
use slack_oauth_operator::callback::{
    query,
    state::{AuthorizationState, MAX_STATE_LEN, StateKey, is_dns_label, is_dns_subdomain},
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings shaped like states and their parts, plus the characters an attacker reaches for.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9_.\\-]{0,1100}",
        "s2\\.[a-zA-Z0-9_\\-]{0,600}\\.[a-zA-Z0-9_\\-]{0,60}",
        "(s1\\.|s2\\.)?[?&=/%.\\\\\\r\\n\\x1b\\[0-9;m a-z]{0,300}",
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Nothing an attacker sends as `state` is accepted without the key, and nothing panics.
    #[test]
    fn no_unsigned_state_verifies(raw in hostile_text()) {
        let key = StateKey::generate();
        prop_assert!(key.verify(&raw).is_err());
    }

    /// A signed state names only objects Kubernetes could have: whatever names were signed, a
    /// state that verifies carries a DNS-label namespace and a DNS-subdomain name, so no query or
    /// path character can reach an API request path.
    #[test]
    fn signed_states_round_trip_only_with_valid_names(
        namespace in hostile_text(),
        name in hostile_text(),
        uid in "[a-f0-9-]{0,40}",
        generation in any::<i64>(),
        link in "[A-Za-z0-9_-]{0,30}",
        issued_at in any::<i64>(),
    ) {
        let key = StateKey::generate();
        let issued = AuthorizationState::issue(&namespace, &name, &uid, generation, &link, issued_at);
        let raw = key.sign(&issued);
        match key.verify(&raw) {
            Ok(state) => {
                prop_assert_eq!(&state, &issued);
                prop_assert!(is_dns_label(&state.namespace));
                prop_assert!(is_dns_subdomain(&state.name));
                prop_assert!(raw.len() <= MAX_STATE_LEN);
                prop_assert!(!state.name.contains(['?', '&', '/', '%', '\r', '\n']));
            }
            Err(_) => prop_assert!(
                !is_dns_label(&namespace) || !is_dns_subdomain(&name) || raw.len() > MAX_STATE_LEN
            ),
        }
    }

    /// Flipping any byte of a genuine state makes it fail verification.
    #[test]
    fn a_genuine_state_with_any_byte_changed_is_refused(index in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let key = StateKey::generate();
        let raw = key.sign(&AuthorizationState::issue("pingfederate", "slack-scim", "uid", 1, "link", 2));
        let mut bytes = raw.clone().into_bytes();
        let at = index.index(bytes.len());
        prop_assume!(bytes[at] != byte);
        bytes[at] = byte;
        if let Ok(tampered) = String::from_utf8(bytes) {
            prop_assert!(key.verify(&tampered).is_err(), "{} verified", tampered);
        }
    }

    /// Nothing an attacker sends as an approval link's token verifies without the key, and
    /// nothing panics; a genuine token with any byte changed is refused.
    #[test]
    fn no_unsigned_link_verifies(raw in hostile_text(), index in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let key = StateKey::generate();
        prop_assert!(key.verify_link(&raw).is_err());
        let token = key.issue_link();
        let mut bytes = token.into_bytes();
        let at = index.index(bytes.len());
        prop_assume!(bytes[at] != byte);
        bytes[at] = byte;
        if let Ok(tampered) = String::from_utf8(bytes) {
            prop_assert!(key.verify_link(&tampered).is_err(), "{} verified", tampered);
        }
    }

    /// Any query parses or is refused without panicking; a query that parses never yields a
    /// parameter Slack would not send twice.
    #[test]
    fn any_query_parses_or_is_refused(query in prop_oneof![
        any::<String>(),
        "((state|code|error|x)=[^&]{0,80}&?){0,8}",
        "[%&=+a-zA-Z0-9]{0,5000}",
    ]) {
        if let Ok(params) = query::parse(&query) {
            prop_assert!(query.len() <= 4096);
            let states = url::form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k == "state").count();
            prop_assert!(states <= 1);
            prop_assert_eq!(params.state.is_some(), states == 1);
        }
    }
}
