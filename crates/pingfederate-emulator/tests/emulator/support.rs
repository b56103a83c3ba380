//! A running emulator with one full Slack SP connection, and the HTTP an admin API client sends.

use pingfederate_emulator::PingFederateEmulator;
use reqwest::{Method, RequestBuilder, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

/// The connection every fixture seeds.
pub const ID: &str = "slackConnection";
/// The target setting holding the Slack token (its real name is UNCONFIRMED, §3.1).
pub const TOKEN: &str = "ACCESS_TOKEN";
/// Another encrypted target setting.
pub const PASSWORD: &str = "PROXY_PASSWORD";
/// The token the seeded connection starts with.
pub const OLD_TOKEN: &str = "xoxp-1111-2222-3333-oldtokenoldtokenoldtoken";
/// The seeded proxy password.
pub const OLD_PASSWORD: &str = "proxy-s3cr3t-password";
/// The secret fields of the seeded connection.
pub const SECRETS: &[&str] = &[TOKEN, PASSWORD];

/// A full SP connection as a console-built one might look: browser SSO off, outbound
/// provisioning with encrypted and plain target settings (one inherited), a channel with its
/// source and attribute mappings, and members no client has a type for.
pub fn full_connection() -> Value {
    json!({
        "id": ID,
        "type": "SP",
        "name": "Slack Provisioner",
        "entityId": "https://slack.com",
        "active": true,
        "loggingMode": "STANDARD",
        "virtualEntityIds": [],
        "connectionTargetType": "STANDARD",
        "contactInfo": {"company": "Acme", "email": "iam@acme.example"},
        "licenseConnectionGroup": "",
        "creationDate": "2026-03-01T10:00:00.000Z",
        "metadataReloadSettings": {"enableAutoMetadataUpdate": false, "metadataUrlRef": null},
        "credentials": {"signingSettings": {"signingKeyPairRef": {"id": "k1"}, "algorithm": "SHA256withRSA"}},
        "extendedProperties": {"owner": {"values": ["team-iam"]}},
        "outboundProvision": {
            "type": "SlackProvisioner",
            "targetSettings": [
                {"name": TOKEN, "value": OLD_TOKEN},
                {"name": "Unique User Identifier", "value": "primaryEmail"},
                {"name": "Provision Disabled Users", "value": "false", "inherited": true},
                {"name": "User Create", "value": "true"},
                {"name": "User Update", "value": "true"},
                {"name": "User Disable", "value": "true"},
                {"name": PASSWORD, "value": OLD_PASSWORD},
                {"name": "Remove User Action", "value": "Disable", "futureMember": {"x": 1}},
            ],
            "customSchema": {"attributes": [], "namespace": "urn:acme"},
            "channels": [{
                "name": "Employees",
                "active": true,
                "maxThreads": 1,
                "timeout": 60,
                "channelSource": {
                    "dataSource": {"id": "LDAP-1"},
                    "guidAttributeName": "entryUUID",
                    "guidBinary": false,
                    "changeDetectionSettings": {
                        "userObjectClass": "inetOrgPerson",
                        "groupObjectClass": "groupOfUniqueNames",
                        "changedUsersAlgorithm": "TIMESTAMP_NO_NEGATION",
                        "usnAttributeName": "uSNChanged",
                        "timeStampAttributeName": "modifyTimestamp"
                    },
                    "groupMembershipDetection": {"memberOfGroupAttributeName": "isMemberOf"},
                    "accountManagementSettings": {
                        "accountStatusAttributeName": "nsaccountlock",
                        "accountStatusAlgorithm": "ACCOUNT_STATUS_ALGORITHM_FLAG",
                        "flagComparisonValue": "true",
                        "flagComparisonStatus": true,
                        "defaultStatus": true
                    },
                    "baseDn": "dc=acme,dc=example",
                    "userSource": {"baseDn": "ou=people,dc=acme,dc=example", "searchScope": "SUBTREE", "filter": "(objectClass=inetOrgPerson)"},
                    "groupSource": {"baseDn": "ou=groups,dc=acme,dc=example"}
                },
                "attributeMapping": [
                    {"fieldName": "userName", "value": {"type": "STANDARD", "value": "uid"}},
                    {"fieldName": "primaryEmail", "value": {"type": "STANDARD", "value": "mail"}, "default": "nobody@acme.example"},
                    {"fieldName": "displayName", "value": {"type": "EXPRESSION", "value": "#this.get(\"cn\")"}, "masked": false}
                ]
            }]
        },
        "somethingNewInPf13": {"nested": [1, 2.5, null, true, "é ✓", 9007199254740993_u64, -7]}
    })
}

pub struct Fixture {
    pub pf: PingFederateEmulator,
    pub http: reqwest::Client,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).expect("a JSON body")
    }

    pub fn result_id(&self) -> Option<String> {
        self.json()["resultId"].as_str().map(str::to_owned)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Fixture {
    /// An emulator with the full connection seeded, its token and proxy password secret.
    pub async fn start() -> Self {
        let pf = PingFederateEmulator::start()
            .await
            .expect("start the emulator");
        pf.seed_connection(full_connection(), SECRETS);
        Self { pf, http: client() }
    }

    /// `<admin API>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.pf.admin_api_url())
    }

    /// A request as the operator sends it: the XSRF header and the admin's Basic credentials.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("X-XSRF-Header", "PingFederate")
            .basic_auth(self.pf.admin_username(), Some(self.pf.admin_password()))
    }

    pub async fn get(&self, path: &str) -> Reply {
        reply(self.admin(Method::GET, path)).await
    }

    /// A PUT with a JSON body (`Content-Type: application/json`).
    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        reply(self.admin(Method::PUT, path).json(body)).await
    }

    /// The seeded connection, as a GET answers it.
    pub async fn read(&self) -> Value {
        let reply = self.get(&format!("/idp/spConnections/{ID}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.json()
    }

    /// PUTs `connection` to the seeded connection's URL.
    pub async fn write(&self, connection: &Value) -> Reply {
        self.put(&format!("/idp/spConnections/{ID}"), connection)
            .await
    }
}

pub fn client() -> reqwest::Client {
    install_tls_provider();
    reqwest::Client::builder().build().expect("client")
}

pub async fn reply(request: RequestBuilder) -> Reply {
    let response = request.send().await.expect("the emulator answers");
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        text: response.text().await.expect("body"),
    }
}

/// The target setting `name` of `connection`.
pub fn setting<'c>(connection: &'c Value, name: &str) -> &'c Value {
    connection["outboundProvision"]["targetSettings"]
        .as_array()
        .expect("target settings")
        .iter()
        .find(|field| field["name"] == name)
        .unwrap_or_else(|| panic!("no target setting {name} in {connection}"))
}

/// The same target setting, to change.
pub fn setting_mut<'c>(connection: &'c mut Value, name: &str) -> &'c mut Value {
    connection["outboundProvision"]["targetSettings"]
        .as_array_mut()
        .expect("target settings")
        .iter_mut()
        .find(|field| field["name"] == name)
        .expect("the target setting")
}

/// The operator's token rotation (§3.2): in the token entry, `value` replaces `encryptedValue`;
/// every other entry is left as read.
pub fn with_new_token(mut connection: Value, token: &str) -> Value {
    let field = setting_mut(&mut connection, TOKEN);
    let object = field.as_object_mut().expect("an object");
    object.remove("encryptedValue");
    object.insert("value".into(), json!(token));
    connection
}

/// In the workspace, reqwest is built without a default TLS provider (the operator picks ring),
/// so every client of these tests needs one installed first, even for plain-HTTP requests.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
