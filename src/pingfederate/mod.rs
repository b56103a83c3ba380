//! PingFederate's admin API (`/pf-admin-api/v1`), behind a trait like Slack's: the one change
//! the operator makes is to put a new token into an SP connection's outbound-provisioning target
//! settings, leaving every other field of the connection exactly as it came.
//!
//! The rules are in [`set_token`] (pure); the HTTP is in [`client`].

mod client;

use std::{future::Future, time::Duration};

use secrecy::SecretString;
use serde_json::Value;
use tokio::time::Instant;

pub use client::{AdminClient, Credentials};

/// Which SP connection to push into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionRef {
    Id(String),
    Name(String),
    EntityId(String),
}

/// One push.
#[derive(Debug)]
pub struct Push<'a> {
    pub connection_id: &'a str,
    pub token_field: &'a str,
    pub token: &'a SecretString,
    /// Send `X-BypassExternalValidation: true` (PingFederate then does not call Slack to check
    /// the token when it saves the connection).
    pub bypass_external_validation: bool,
    /// `POST /cluster/replicate` after the change.
    pub replicate: bool,
}

/// The calls the operator makes.
pub trait PingFederateApi: Send + Sync {
    /// The ID of the connection `reference` names (looked up by name or entity ID once).
    fn connection_id(
        &self,
        reference: &ConnectionRef,
        deadline: Instant,
    ) -> impl Future<Output = Result<String, PfError>> + Send;

    /// GETs the connection, sets the token, PUTs it back whole; then replicates if asked.
    fn push(
        &self,
        push: &Push<'_>,
        deadline: Instant,
    ) -> impl Future<Output = Result<(), PfError>> + Send;
}

/// A failed call to PingFederate. Messages never contain a token, the admin password, or
/// anything PingFederate answered beyond a status code and field names.
#[derive(Debug, thiserror::Error)]
pub enum PfError {
    #[error("failed to call PingFederate's admin API: it answered HTTP {status} to {what}")]
    Status { what: &'static str, status: u16 },
    #[error("failed to call PingFederate's admin API: the request to {what} did not complete")]
    Transport {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to call PingFederate's admin API within the deadline")]
    TimedOut,
    #[error(
        "failed to read PingFederate's answer to {what}: it was not the JSON the admin API documents"
    )]
    Decode { what: &'static str },
    #[error("failed to read PingFederate's answer to {what}: it was larger than {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
    #[error(
        "failed to find the token field {field} in the connection's outboundProvision.targetSettings; the fields it has are: {available}"
    )]
    FieldNotFound { field: String, available: String },
    #[error("failed to find the SP connection {0} in PingFederate")]
    ConnectionNotFound(String),
    #[error("failed to find a single SP connection named {0}: PingFederate has {1} such")]
    AmbiguousConnection(String, usize),
}

impl PfError {
    /// Whether trying again later may succeed: network failures, timeouts, 429 and 5xx. Every
    /// other failure (401, 403, 404, a missing field, a validation error) waits for a change of
    /// the grant or of the credentials. Decided here only.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Transport { .. } | Self::TimedOut => true,
            Self::Decode { .. }
            | Self::TooLarge { .. }
            | Self::FieldNotFound { .. }
            | Self::ConnectionNotFound(_)
            | Self::AmbiguousConnection(..) => false,
        }
    }

    /// The condition reason this failure is reported under.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Status {
                status: 401 | 403, ..
            } => crate::api::reasons::PINGFEDERATE_UNAUTHORIZED,
            Self::FieldNotFound { .. } => crate::api::reasons::PINGFEDERATE_FIELD_NOT_FOUND,
            Self::ConnectionNotFound(_)
            | Self::AmbiguousConnection(..)
            | Self::Status { status: 404, .. } => {
                crate::api::reasons::PINGFEDERATE_CONNECTION_NOT_FOUND
            }
            Self::Status {
                status: 400 | 422, ..
            } => crate::api::reasons::PINGFEDERATE_REJECTED,
            _ => crate::api::reasons::PINGFEDERATE_UNAVAILABLE,
        }
    }
}

/// The most of a connection that is read: a full one is tens of KiB.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Deadline of one push, GET and PUT and replicate together.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// `connection` with the target setting `field` set to `token`: its `value` is the new token
/// and its `encryptedValue` is gone (PingFederate then stores the new secret). Every other field
/// of the connection, encrypted values included, stays exactly as it came. When the connection
/// has no such field, the error names the fields it has (names only, never values).
pub fn set_token(connection: &mut Value, field: &str, token: &str) -> Result<(), PfError> {
    let settings = connection
        .pointer_mut("/outboundProvision/targetSettings")
        .and_then(Value::as_array_mut);
    let Some(settings) = settings else {
        return Err(PfError::FieldNotFound {
            field: field.to_owned(),
            available: "none (the connection has no outboundProvision.targetSettings)".to_owned(),
        });
    };
    let names: Vec<String> = settings
        .iter()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .map(crate::pingfederate::printable)
        .collect();
    let Some(entry) = settings
        .iter_mut()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(field))
        .and_then(Value::as_object_mut)
    else {
        return Err(PfError::FieldNotFound {
            field: printable(field),
            available: if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            },
        });
    };
    entry.remove("encryptedValue");
    entry.insert("value".to_owned(), Value::String(token.to_owned()));
    Ok(())
}

/// A field name from PingFederate as it may appear in a status message: printable ASCII only,
/// at most 64 characters.
pub fn printable(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn connection() -> Value {
        json!({
            "id": "slack", "name": "Slack", "entityId": "https://slack.com", "active": true,
            "unknownToTheOperator": { "nested": [1, 2, 3] },
            "outboundProvision": {
                "type": "SlackProvisioner",
                "targetSettings": [
                    { "name": "Unique User Identifier", "value": "primaryEmail" },
                    { "name": "OAuth 2 Access Token", "encryptedValue": "OBF:old" },
                    { "name": "Proxy Password", "encryptedValue": "OBF:keep-me" }
                ],
                "channels": [{ "name": "users", "attributeMapping": [{ "fieldName": "userName" }] }]
            }
        })
    }

    #[test]
    fn the_token_replaces_only_its_own_entry_and_every_other_field_stays_as_it_came() {
        let before = connection();
        let mut after = before.clone();
        set_token(&mut after, "OAuth 2 Access Token", "xoxp-new").expect("set");
        let settings = after["outboundProvision"]["targetSettings"]
            .as_array()
            .expect("settings");
        assert_eq!(
            settings[1],
            json!({ "name": "OAuth 2 Access Token", "value": "xoxp-new" })
        );
        assert_eq!(
            settings[0],
            before["outboundProvision"]["targetSettings"][0]
        );
        assert_eq!(
            settings[2],
            before["outboundProvision"]["targetSettings"][2]
        );
        let mut rest = after.clone();
        rest["outboundProvision"]["targetSettings"] = Value::Null;
        let mut rest_before = before.clone();
        rest_before["outboundProvision"]["targetSettings"] = Value::Null;
        assert_eq!(rest, rest_before);
    }

    #[test]
    fn a_missing_field_names_the_fields_there_are_and_no_values() {
        let mut connection = connection();
        let error = set_token(&mut connection, "ACCESS_TOKEN", "xoxp-new").expect_err("missing");
        let message = error.to_string();
        assert!(
            message.contains("Unique User Identifier, OAuth 2 Access Token, Proxy Password"),
            "{message}"
        );
        assert!(
            !message.contains("OBF")
                && !message.contains("primaryEmail")
                && !message.contains("xoxp"),
            "{message}"
        );
        assert!(!error.is_transient());
        let mut bare = json!({ "id": "x" });
        assert!(matches!(
            set_token(&mut bare, "t", "v"),
            Err(PfError::FieldNotFound { .. })
        ));
    }

    #[test]
    fn failures_are_transient_or_wait_for_a_change_in_one_place() {
        let status = |status| PfError::Status {
            what: "PUT",
            status,
        };
        for code in [429, 500, 503] {
            assert!(status(code).is_transient(), "{code}");
        }
        for code in [400, 401, 403, 404, 422] {
            assert!(!status(code).is_transient(), "{code}");
        }
        assert!(PfError::TimedOut.is_transient());
    }
}
