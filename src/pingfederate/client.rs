//! The admin API over HTTPS: HTTP Basic with a native admin account, `X-XSRF-Header:
//! PingFederate` on every request, JSON bodies, a deadline on every call, answers read up to a
//! bound, and redirects never followed (they could carry the password elsewhere).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::time::Instant;
use tracing::info;
use url::Url;

use super::{ConnectionRef, MAX_BODY_BYTES, PfError, PingFederateApi, Push, set_token};

/// A native admin account.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: SecretString,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One PingFederate admin API, at `base` (`https://<host>:9999/pf-admin-api/v1/`).
pub struct AdminClient {
    http: reqwest::Client,
    base: Url,
    credentials: Credentials,
}

/// Limit on one HTTP request, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl AdminClient {
    /// `ca_bundle`: PEM certificates to trust for PingFederate's admin certificate, besides the
    /// usual roots.
    pub fn new(
        base: &Url,
        credentials: Credentials,
        ca_bundle: Option<&str>,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("slack-oauth-operator/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_bundle {
            for certificate in reqwest::Certificate::from_pem_bundle(pem.as_bytes())? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Self {
            http: builder.build()?,
            base,
            credentials,
        })
    }

    async fn call(
        &self,
        what: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Result<(StatusCode, Option<Value>), PfError> {
        let mut url = self.base.join(path).map_err(|_| PfError::Decode { what })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self
            .http
            .request(method, url)
            .basic_auth(
                &self.credentials.username,
                Some(self.credentials.password.expose_secret()),
            )
            .header("X-XSRF-Header", "PingFederate")
            .header("Accept", "application/json");
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body).map_err(|_| PfError::Decode { what })?;
            request = request
                .header("Content-Type", "application/json")
                .body(bytes);
        }
        let response = request.send().await.map_err(|source| PfError::Transport {
            what,
            source: source.without_url(),
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(PfError::Status {
                what,
                status: status.as_u16(),
            });
        }
        let bytes = read_limited(what, response).await?;
        if bytes.is_empty() {
            return Ok((status, None));
        }
        let value = serde_json::from_slice(&bytes).map_err(|_| PfError::Decode { what })?;
        Ok((status, Some(value)))
    }
}

async fn read_limited(
    what: &'static str,
    mut response: reqwest::Response,
) -> Result<Vec<u8>, PfError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(PfError::TooLarge {
            what,
            limit: MAX_BODY_BYTES,
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| PfError::Transport {
            what,
            source: source.without_url(),
        })?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(PfError::TooLarge {
                what,
                limit: MAX_BODY_BYTES,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn within<T>(
    deadline: Instant,
    call: impl Future<Output = Result<T, PfError>>,
) -> Result<T, PfError> {
    tokio::time::timeout_at(deadline, call)
        .await
        .unwrap_or(Err(PfError::TimedOut))
}

/// An SP connection's ID may go into a URL path: PingFederate's IDs are letters, digits, `-`,
/// `_` and `.`.
fn path_segment(id: &str) -> Result<&str, PfError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(id)
    } else {
        Err(PfError::ConnectionNotFound(super::printable(id)))
    }
}

impl PingFederateApi for AdminClient {
    async fn connection_id(
        &self,
        reference: &ConnectionRef,
        deadline: Instant,
    ) -> Result<String, PfError> {
        let (query, wanted, field) = match reference {
            ConnectionRef::Id(id) => return Ok(path_segment(id)?.to_owned()),
            ConnectionRef::Name(name) => (("filter", name.as_str()), name, "name"),
            ConnectionRef::EntityId(entity) => (("entityId", entity.as_str()), entity, "entityId"),
        };
        let what = "GET /idp/spConnections";
        let (_, body) = within(
            deadline,
            self.call(what, Method::GET, "idp/spConnections", &[query], None, &[]),
        )
        .await?;
        let items = body
            .as_ref()
            .and_then(|b| b.get("items"))
            .and_then(Value::as_array)
            .ok_or(PfError::Decode { what })?;
        let matching: Vec<&str> = items
            .iter()
            .filter(|c| c.get(field).and_then(Value::as_str) == Some(wanted.as_str()))
            .filter_map(|c| c.get("id").and_then(Value::as_str))
            .collect();
        match matching.as_slice() {
            [id] => Ok(path_segment(id)?.to_owned()),
            [] => Err(PfError::ConnectionNotFound(super::printable(wanted))),
            many => Err(PfError::AmbiguousConnection(
                super::printable(wanted),
                many.len(),
            )),
        }
    }

    async fn push(&self, push: &Push<'_>, deadline: Instant) -> Result<(), PfError> {
        let id = path_segment(push.connection_id)?;
        let path = format!("idp/spConnections/{id}");
        let (_, body) = within(
            deadline,
            self.call("GET the SP connection", Method::GET, &path, &[], None, &[]),
        )
        .await?;
        let mut connection = body.ok_or(PfError::Decode {
            what: "GET the SP connection",
        })?;
        set_token(
            &mut connection,
            push.token_field,
            push.token.expose_secret(),
        )?;
        let bypass: &[(&str, &str)] = if push.bypass_external_validation {
            &[("X-BypassExternalValidation", "true")]
        } else {
            &[]
        };
        within(
            deadline,
            self.call(
                "PUT the SP connection",
                Method::PUT,
                &path,
                &[],
                Some(&connection),
                bypass,
            ),
        )
        .await?;
        if push.replicate {
            within(
                deadline,
                self.call(
                    "POST /cluster/replicate",
                    Method::POST,
                    "cluster/replicate",
                    &[],
                    None,
                    &[],
                ),
            )
            .await?;
        }
        info!(connection = %id, "pushed the token into PingFederate");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_reach_a_url_path() {
        assert!(path_segment("slack-scim_1.v2").is_ok());
        for bad in ["", "../admin", "a/b", "a?b", "a b", "%2e%2e"] {
            assert!(path_segment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_never_show_the_password() {
        let credentials = Credentials {
            username: "administrator".into(),
            password: SecretString::from("2FederateM0re"),
        };
        assert!(!format!("{credentials:?}").contains("2Federate"));
    }
}
