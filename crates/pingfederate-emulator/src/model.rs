//! The emulator's public vocabulary: the routes a test injects faults into, the faults and
//! outages themselves, and the calls it inspects afterwards.
//!
//! [`Call`] holds raw request bodies in a public field (a test compares the token the operator
//! sent with the one it meant to send), but its `Debug` output redacts every secret target
//! setting and every `encryptedValue`, and the admin password is never kept at all, so a failed
//! assertion that prints a call leaks nothing.

use std::{collections::BTreeSet, fmt, time::Duration};

use serde_json::Value;

/// One operation of the admin API the emulator serves, named after the operations of
/// `pingfederate-go-client`'s `IdpSpConnectionsApi` and `ClusterApi` (reference §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// `GET /idp/spConnections` (`GetSpConnections`), with `entityId`, `filter`, `page` and
    /// `numberPerPage`.
    ListConnections,
    /// `GET /idp/spConnections/{id}` (`GetSpConnection`).
    GetConnection,
    /// `PUT /idp/spConnections/{id}` (`UpdateSpConnection`), a full replace.
    PutConnection,
    /// `POST /cluster/replicate` (`StartReplication`).
    Replicate,
}

impl Route {
    /// Every route, for tests that fault all of them.
    pub const ALL: [Route; 4] = [
        Route::ListConnections,
        Route::GetConnection,
        Route::PutConnection,
        Route::Replicate,
    ];
}

/// A failure injected into calls of one [`Route`]. Faults apply before anything else is
/// checked (the XSRF header, credentials, the body), as a failing proxy or a sick server would.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this HTTP status (e.g. 500, 502, 503) with a short HTML body, without acting.
    /// A status outside 100..=999 becomes 500.
    ServerError(u16),
    /// Answer 401 exactly as for wrong credentials, without acting: as when the admin password
    /// was rotated under the caller.
    Unauthorized,
    /// Wait this long (real time), then handle the call normally.
    Delay(Duration),
    /// Handle the call normally (a PUT is stored at once), but hold the answer back this long
    /// (real time): as when the network is slow, or the caller gives up, after PingFederate
    /// has acted.
    DelayAnswer(Duration),
}

/// How the whole server is down, for [`PingFederateEmulator::set_outage`](crate::PingFederateEmulator::set_outage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// Every request is answered 503 with a short HTML body, as a proxy or ingress in front of
    /// a stopped PingFederate answers. Each one is recorded as a [`Call`].
    Unavailable,
    /// Connections are closed without an answer, new ones as soon as they are accepted and open
    /// ones at their next read or write, even after the outage ended (the server that accepted
    /// them is gone): the caller sees transport errors, as when the admin pod is being
    /// recreated behind its Service (reference §4.2, §4.4). Nothing is recorded as a [`Call`]; [`PingFederateEmulator::cut_connections`](crate::PingFederateEmulator::cut_connections)
    /// counts them.
    Unreachable,
}

/// What a call sent as `Authorization`, judged against the admin credentials of the moment.
/// The password itself is never kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BasicAuth {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not `Basic` with base64 `username:password`.
    Malformed,
    /// Basic credentials that are not the admin's.
    Wrong {
        /// The username sent.
        username: String,
    },
    /// The admin's credentials.
    Valid {
        /// The username sent.
        username: String,
    },
}

impl BasicAuth {
    /// Whether these were the admin's credentials.
    pub fn is_valid(&self) -> bool {
        matches!(self, Self::Valid { .. })
    }
}

/// One HTTP request the emulator answered.
#[derive(Clone, PartialEq)]
pub struct Call {
    /// The HTTP method, e.g. `PUT`.
    pub method: String,
    /// The request path as sent, e.g. `/pf-admin-api/v1/idp/spConnections/slack`.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The route it matched; `None` for paths or methods the emulator does not serve.
    pub route: Option<Route>,
    /// The connection ID in the path, for the routes that have one.
    pub connection_id: Option<String>,
    /// The `X-XSRF-Header` value; any value satisfies PingFederate, so `Some` means it was right.
    pub xsrf_header: Option<String>,
    /// The credentials, judged.
    pub basic_auth: BasicAuth,
    /// The `Content-Type` header as sent.
    pub content_type: Option<String>,
    /// The `X-BypassExternalValidation` header as sent (reference §3.2).
    pub bypass_external_validation: Option<String>,
    /// The request body parsed as JSON, raw (new secrets in plaintext): use the accessors in
    /// tests, never `{:?}` of this field alone (`{:?}` of the whole `Call` is safe). `Null`
    /// when there was no body or it was not JSON.
    pub request_body: Value,
    /// The HTTP status answered.
    pub status: u16,
    /// The injected fault that shaped the answer, if any.
    pub fault: Option<Fault>,
    /// Whether the server was down ([`Outage::Unavailable`]) when the call came.
    pub during_outage: bool,
    /// The JSON body answered; `Null` when the body was not JSON.
    pub response: Value,
    /// Target setting names that were secret for this call's connection(s), for `Debug`.
    pub(crate) secret_fields: BTreeSet<String>,
}

impl Call {
    /// Whether the call carried the XSRF header.
    pub fn has_xsrf_header(&self) -> bool {
        self.xsrf_header.is_some()
    }

    /// The ConfigField named `name` in the request body's `outboundProvision.targetSettings`.
    pub fn sent_target_setting(&self, name: &str) -> Option<&Value> {
        target_setting(&self.request_body, name)
    }

    /// The `value` sent for target setting `name`, raw: for a secret field, a new plaintext.
    pub fn sent_value(&self, name: &str) -> Option<&str> {
        self.sent_target_setting(name)?.get("value")?.as_str()
    }

    /// The `encryptedValue` sent for target setting `name`.
    pub fn sent_encrypted_value(&self, name: &str) -> Option<&str> {
        self.sent_target_setting(name)?
            .get("encryptedValue")?
            .as_str()
    }

    /// PingFederate's `resultId` when the answer was an error in its shape.
    pub fn result_id(&self) -> Option<&str> {
        self.response.get("resultId")?.as_str()
    }
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("route", &self.route)
            .field("connection_id", &self.connection_id)
            .field("xsrf_header", &self.xsrf_header)
            .field("basic_auth", &self.basic_auth)
            .field("content_type", &self.content_type)
            .field(
                "bypass_external_validation",
                &self.bypass_external_validation,
            )
            .field(
                "request_body",
                &redact(&self.request_body, &self.secret_fields),
            )
            .field("status", &self.status)
            .field("fault", &self.fault)
            .field("during_outage", &self.during_outage)
            .field("response", &redact(&self.response, &self.secret_fields))
            .finish()
    }
}

pub(crate) const REDACTED: &str = "[redacted]";

/// The ConfigField named `name` in `connection.outboundProvision.targetSettings`.
pub(crate) fn target_setting<'c>(connection: &'c Value, name: &str) -> Option<&'c Value> {
    connection
        .pointer("/outboundProvision/targetSettings")?
        .as_array()?
        .iter()
        .find(|field| field.get("name").and_then(Value::as_str) == Some(name))
}

/// `value` with every `encryptedValue` and the `value` of every ConfigField-like object named
/// in `secret_fields` replaced, wherever they sit (a connection, a list of them, a PUT body).
pub(crate) fn redact(value: &Value, secret_fields: &BTreeSet<String>) -> Value {
    match value {
        Value::Object(map) => {
            let secret = map
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|name| secret_fields.contains(name));
            Value::Object(
                map.iter()
                    .map(|(key, v)| {
                        let v = match key.as_str() {
                            "encryptedValue" => Value::String(REDACTED.to_owned()),
                            "value" if secret => Value::String(REDACTED.to_owned()),
                            _ => redact(v, secret_fields),
                        };
                        (key.clone(), v)
                    })
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| redact(item, secret_fields))
                .collect(),
        ),
        other => other.clone(),
    }
}
