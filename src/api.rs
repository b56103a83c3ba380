//! The `SlackOAuthGrant` API (`slack-oauth-operator.io/v1alpha1`): spec, status and the constants
//! shared by the controller, the callback server and the tests. No I/O happens here.
//!
//! Doc comments on the types below become the CRD's field descriptions, which is what
//! `kubectl explain slackoauthgrant.spec` prints, so they are written for the people who write
//! grants, not for the people who read this code.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every resource this operator serves.
pub const GROUP: &str = "slack-oauth-operator.io";
/// The CRD's served version.
pub const VERSION: &str = "v1alpha1";
/// The resource's plural name: the CRD is `<PLURAL>.<GROUP>`.
pub const PLURAL: &str = "slackoauthgrants";
/// The field manager the operator's writes are recorded under (`metadata.managedFields`).
pub const FIELD_MANAGER: &str = "slack-oauth-operator";

/// Default `spec.userScopes`: `admin` is the user scope Slack's SCIM API requires.
pub const DEFAULT_USER_SCOPE: &str = "admin";
/// Default `spec.clientSecretRef.key`.
pub const DEFAULT_CLIENT_SECRET_KEY: &str = "clientSecret";
/// Default `spec.secret.key`; PingFederate's Helm chart can load it with `envFrom`.
pub const DEFAULT_TOKEN_KEY: &str = "SLACK_ACCESS_TOKEN";

// The CEL expressions below mirror Kubernetes' own validation of Secret names
// (an RFC 1123 subdomain) and Secret data keys, so a grant the API server accepts never fails
// later when the operator writes the Secret.
const SECRET_NAME_RULE: &str =
    "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')";
const SECRET_NAME_MESSAGE: &str = "must be a valid Secret name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit";
const SECRET_KEY_RULE: &str = "self.matches('^[-._a-zA-Z0-9]+$')";
const SECRET_KEY_MESSAGE: &str =
    "must be a valid Secret key: letters, digits, '-', '_' and '.' only";
// Slack scope names: `admin`, `chat:write`, `users:read.email`, `admin.users:write`,
// `incoming-webhook`, `remote_files:read`, ...
const SCOPES_RULE: &str = "self.all(s, s.matches('^[a-z][a-z0-9_.-]*(:[a-z][a-z0-9_.-]*)?$'))";
const SCOPES_MESSAGE: &str = "every scope must be a Slack scope name such as 'admin', 'chat:write' or 'users:read.email' (lowercase, no spaces or commas)";
/// Scopes Slack grants to user tokens only, refused in `botScopes`: `admin` (the SCIM scope,
/// docs.slack.dev/reference/scopes/admin, a user scope in the node SDK's manifest types), and
/// Sign in with Slack's `openid`, `email` and `profile` (docs.slack.dev, "Sign in with Slack":
/// user scopes) with their legacy `identity.*` forms (users.identity takes user tokens only).
const ADMIN_BOT_SCOPE_RULE: &str = "!('admin' in self)";
const ADMIN_BOT_SCOPE_MESSAGE: &str =
    "admin can be granted to a user token only: move it from botScopes to userScopes";
const SIGN_IN_BOT_SCOPES_RULE: &str = "!self.exists(s, s in ['openid', 'email', 'profile', 'identity.basic', 'identity.email', 'identity.avatar', 'identity.team'])";
const SIGN_IN_BOT_SCOPES_MESSAGE: &str = "openid, email, profile and identity.* are Sign in with Slack scopes, granted to user tokens only: move them from botScopes to userScopes";

// Kubernetes' rules for label and annotation keys (an optional DNS-subdomain prefix and a name of
// at most 63 characters) and label values, so that every grant the API server accepts can have
// its Secret written.
const LABEL_KEYS_RULE: &str = "self.all(k, size(k) <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && (k.indexOf('/') < 0 || k.indexOf('/') <= 253))";
const LABEL_KEYS_MESSAGE: &str = "every key must be a Kubernetes label key: an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit";
const ANNOTATION_KEYS_MESSAGE: &str = "every key must be a Kubernetes annotation key: an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit";
const LABEL_VALUES_RULE: &str =
    "self.all(k, self[k].matches('^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$'))";
const LABEL_VALUES_MESSAGE: &str = "every value must be a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit";
const ADMIN_URL_RULE: &str = "self.startsWith('https://') || self.matches('^http://(127[.]0[.]0[.]1|localhost|\\\\[::1\\\\])(:[0-9]+)?(/.*)?$')";
const RESERVED_KEYS_RULE: &str =
    "self.all(k, !k.startsWith('slack-oauth-operator.io/') && k != 'app.kubernetes.io/managed-by')";
const RESERVED_KEYS_MESSAGE: &str =
    "keys under slack-oauth-operator.io/ and app.kubernetes.io/managed-by are set by the operator";

/// The Slack app, the scopes to request, and the Secret to keep the token in.
///
/// The operator publishes an authorization link in `status.authorizationURL`. When a Slack
/// Workspace or Org Owner opens it and approves, Slack sends the browser back to the operator,
/// which exchanges the code with `oauth.v2.access` and writes the token to the Secret named by
/// `spec.secret`.
// clippy reads the repeated `type_ = ...` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "slack-oauth-operator.io",
    version = "v1alpha1",
    kind = "SlackOAuthGrant",
    plural = "slackoauthgrants",
    shortname = "slackgrant",
    shortname = "slackgrants",
    shortname = "sog",
    category = "slack",
    namespaced,
    status = "SlackOAuthGrantStatus",
    derive = "PartialEq",
    doc = "A request for a Slack OAuth token (for example the `admin` user token PingFederate's Slack provisioner needs), approved once by a Slack owner in a browser and kept by the operator in a Kubernetes Secret.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        description = "Why the grant is in its phase now",
        json_path = ".status.reason"
    ),
    printcolumn(
        name = "Team",
        type_ = "string",
        description = "The Slack workspace or organization that approved the grant",
        json_path = ".status.installation.teamName"
    ),
    printcolumn(
        name = "Enterprise",
        type_ = "string",
        priority = 1,
        json_path = ".status.installation.enterpriseName"
    ),
    printcolumn(name = "Secret", type_ = "string", json_path = ".spec.secret.name"),
    printcolumn(
        name = "PingFederate",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"PingFederateSynced\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("size(self.userScopes) + size(self.botScopes) > 0")
    .message("at least one scope is required: set userScopes, botScopes or both")
    .field_path(".userScopes"))]
#[x_kube(validation = Rule::new("!has(self.token) || self.token != 'Bot' || size(self.botScopes) > 0")
    .message("token: Bot needs at least one entry in botScopes")
    .field_path(".token"))]
#[x_kube(validation = Rule::new("!has(self.token) || self.token != 'User' || size(self.userScopes) > 0")
    .message("token: User needs at least one entry in userScopes")
    .field_path(".token"))]
#[x_kube(validation = Rule::new("self.installation != 'Organization' || !has(self.teamID) || self.teamID.startsWith('E')")
    .message("installation: Organization needs an Enterprise Grid organization ID (E...) in teamID, not a workspace ID (T...)")
    .field_path(".teamID"))]
#[serde(rename_all = "camelCase")]
pub struct SlackOAuthGrantSpec {
    /// What the approval is for, in a sentence, for the Slack owner: the pages the approval link
    /// leads to show it beside the grant's namespace and name (for example "SCIM provisioning of
    /// Acme's users by PingFederate, requested by the identity team").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 500))]
    pub description: Option<String>,

    /// The Slack app's Client ID, from the app's "Basic Information" page
    /// (for example `1234567890.1234567890`).
    #[serde(rename = "clientID")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+[.][0-9]+$')")
        .message("must be a Slack app Client ID such as 1234567890.1234567890 (see the app's Basic Information page)"))]
    #[schemars(length(max = 64))]
    pub client_id: String,

    /// The Secret, in the grant's namespace, that holds the Slack app's Client Secret.
    pub client_secret_ref: ClientSecretRef,

    /// User token scopes to request (Slack's `user_scope`). Defaults to `["admin"]`, the scope
    /// Slack's SCIM API (and so PingFederate's Slack provisioner) requires.
    #[serde(default = "default_user_scopes")]
    #[x_kube(validation = Rule::new(SCOPES_RULE).message(SCOPES_MESSAGE))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(max = 100), inner(length(min = 1, max = 100)))]
    pub user_scopes: Vec<String>,

    /// Bot token scopes to request (Slack's `scope`). Empty by default. User-only scopes (`admin`,
    /// `openid`, `email`, `profile`, `identity.*`) are refused: they belong in `userScopes`.
    #[serde(default)]
    #[x_kube(validation = Rule::new(SCOPES_RULE).message(SCOPES_MESSAGE))]
    #[x_kube(validation = Rule::new(ADMIN_BOT_SCOPE_RULE).message(ADMIN_BOT_SCOPE_MESSAGE))]
    #[x_kube(validation = Rule::new(SIGN_IN_BOT_SCOPES_RULE).message(SIGN_IN_BOT_SCOPES_MESSAGE))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(max = 100), inner(length(min = 1, max = 100)))]
    pub bot_scopes: Vec<String>,

    /// Where the app is installed: `Workspace` (the default) for one workspace, or `Organization`
    /// for an Enterprise Grid org-wide install, which Slack's SCIM API requires on Enterprise Grid.
    #[serde(default)]
    pub installation: Installation,

    /// The Slack workspace (`T...`) or Enterprise Grid organization (`E...`) that must approve the
    /// grant. The authorization link asks Slack for it, and an approval from any other team is
    /// refused. Leave it unset to accept the team chosen during approval.
    #[serde(rename = "teamID", default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[TE][A-Z0-9]+$')")
        .message("must be a Slack workspace ID (T...) or Enterprise Grid organization ID (E...)"))]
    #[schemars(length(max = 32))]
    pub team_id: Option<String>,

    /// Which token to store in the Secret: `User` (Slack's `authed_user.access_token`, `xoxp-`) or
    /// `Bot` (`xoxb-`). Defaults to `User` when userScopes is not empty, otherwise `Bot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenKind>,

    /// The Secret, in the grant's namespace, that the operator writes the token to. The operator
    /// creates and owns it; it never overwrites a Secret it did not create.
    pub secret: TargetSecret,

    /// What deleting the grant does to its token. `Revoke` (the default): the operator revokes
    /// the token at Slack (`auth.revoke`) before it lets the grant go, and the Secret goes with
    /// the grant. `Retain`: nothing is revoked, and the Secret is released so that it outlives
    /// the grant.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Push each new token (approval, re-authorization, adoption, refresh) into PingFederate's
    /// SP connection through its admin API, so that PingFederate's Slack provisioner uses it
    /// without a restart. The Secret is written first; a push that fails never holds it back.
    #[serde(
        rename = "pingFederate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ping_federate: Option<PingFederateSpec>,
}

/// Where and how to push the token into PingFederate.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.connection.id), has(self.connection.name), has(self.connection.entityID)].filter(x, x).size() == 1")
    .message("connection: set exactly one of id, name and entityID")
    .field_path(".connection"))]
pub struct PingFederateSpec {
    /// The admin API's base URL, `https://<host>:9999/pf-admin-api/v1`. Must be https (plain
    /// http only to a loopback address).
    #[serde(rename = "adminAPIURL")]
    #[x_kube(validation = Rule::new(ADMIN_URL_RULE).message("must be an https:// URL such as https://pingfederate-admin:9999/pf-admin-api/v1 (http only for 127.0.0.1, localhost or [::1])"))]
    #[schemars(length(min = 9, max = 2048))]
    pub admin_api_url: String,

    /// The Secret, in the grant's namespace, with a native PingFederate admin account (HTTP
    /// Basic). It must opt in like the client Secret (label
    /// `slack-oauth-operator.io/shared-with-grants=true`), and must also name the admin API it
    /// may be sent to, in the annotation `slack-oauth-operator.io/pingfederate-admin-api-url`
    /// (equal to `adminAPIURL`): so a grant's author cannot send the password, or the token, to a
    /// host of their choosing.
    pub credentials_secret_ref: PingFederateCredentialsRef,

    /// The SP connection whose outbound provisioning uses the token.
    pub connection: ConnectionSelector,

    /// The name of the token's entry in the connection's `outboundProvision.targetSettings`.
    /// Find it with `GET /idp/spConnections/{id}` on a connection configured once by hand;
    /// when it is wrong, the grant's status names the fields the connection has.
    #[schemars(length(min = 1, max = 256))]
    pub token_field: String,

    /// PEM certificates to trust for the admin API's certificate (besides the usual roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,

    /// POST `/cluster/replicate` after each change: for clusters where "Replicate Connections
    /// when saved" is off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replicate: bool,

    /// Send `X-BypassExternalValidation: true`, so that PingFederate saves the connection
    /// without calling Slack to check the token first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bypass_external_validation: bool,
}

/// The PingFederate admin credentials.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PingFederateCredentialsRef {
    /// Name of the Secret, in the grant's namespace.
    #[x_kube(validation = Rule::new(SECRET_NAME_RULE).message(SECRET_NAME_MESSAGE))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the user name. Defaults to `username`.
    #[serde(default = "default_username_key")]
    #[x_kube(validation = Rule::new(SECRET_KEY_RULE).message(SECRET_KEY_MESSAGE))]
    #[schemars(length(min = 1, max = 253))]
    pub username_key: String,
    /// Key of the password. Defaults to `password`.
    #[serde(default = "default_password_key")]
    #[x_kube(validation = Rule::new(SECRET_KEY_RULE).message(SECRET_KEY_MESSAGE))]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: String,
}

/// An SP connection, by one of its identifiers. A name or entity ID is looked up once and the
/// ID recorded in `status.pingFederate.connectionID`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub name: Option<String>,
    #[serde(rename = "entityID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub entity_id: Option<String>,
}

fn default_username_key() -> String {
    "username".to_owned()
}

fn default_password_key() -> String {
    "password".to_owned()
}

/// Where to find the Slack app's Client Secret.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientSecretRef {
    /// Name of the Secret, in the grant's namespace.
    #[x_kube(validation = Rule::new(SECRET_NAME_RULE).message(SECRET_NAME_MESSAGE))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Key in the Secret's data that holds the Client Secret. Defaults to `clientSecret`.
    #[serde(default = "default_client_secret_key")]
    #[x_kube(validation = Rule::new(SECRET_KEY_RULE).message(SECRET_KEY_MESSAGE))]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The Secret the token is written to.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetSecret {
    /// Name of the Secret, in the grant's namespace.
    #[x_kube(validation = Rule::new(SECRET_NAME_RULE).message(SECRET_NAME_MESSAGE))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Key the token is stored under. Defaults to `SLACK_ACCESS_TOKEN`, which a workload (such as
    /// PingFederate from its Helm chart) can load as an environment variable with `envFrom`.
    #[serde(default = "default_token_key")]
    #[x_kube(validation = Rule::new(SECRET_KEY_RULE).message(SECRET_KEY_MESSAGE))]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,

    /// Extra labels for the Secret: Kubernetes label keys and values (values at most 63
    /// characters). Keys under `slack-oauth-operator.io/` and `app.kubernetes.io/managed-by` are
    /// the operator's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new(LABEL_KEYS_RULE).message(LABEL_KEYS_MESSAGE))]
    #[x_kube(validation = Rule::new(LABEL_VALUES_RULE).message(LABEL_VALUES_MESSAGE))]
    #[x_kube(validation = Rule::new(RESERVED_KEYS_RULE).message(RESERVED_KEYS_MESSAGE))]
    #[schemars(schema_with = "label_map")]
    pub labels: BTreeMap<String, String>,

    /// Extra annotations for the Secret: Kubernetes annotation keys, values of at most 4096
    /// characters. Keys under `slack-oauth-operator.io/` are the operator's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new(LABEL_KEYS_RULE).message(ANNOTATION_KEYS_MESSAGE))]
    #[x_kube(validation = Rule::new(RESERVED_KEYS_RULE).message(RESERVED_KEYS_MESSAGE))]
    #[schemars(schema_with = "annotation_map")]
    pub annotations: BTreeMap<String, String>,

    /// Take over a Secret that already holds a token under `key`, for example one pasted from
    /// Ping's hosted OAuth Configuration Service, instead of asking for a new approval. The
    /// Secret must opt in, as a client Secret does: label it
    /// `slack-oauth-operator.io/shared-with-grants=true` (and, to name this grant only, annotate
    /// it `slack-oauth-operator.io/allowed-grants`). The operator checks the token with Slack
    /// (`auth.test`) first and adopts it only if Slack accepts it for `teamID` (when set) and as
    /// the kind of token the grant asks for; a refused token is never adopted, and the Secret is
    /// left as it was. From then on the token is managed like an approved one: checked, and
    /// revoked when the grant is deleted or a new approval replaces it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,

    /// Deployments and StatefulSets in the grant's namespace to restart (a rolling restart)
    /// whenever the token in the Secret changes, for workloads that read it through `envFrom`
    /// and so see a new token only in new pods (PingFederate's chart does). Each must opt in with
    /// the annotation `slack-oauth-operator.io/restart-on-token-change: <grant name>` (several
    /// names comma-separated); one that does not is never touched. The operator sets the
    /// annotation `slack-oauth-operator.io/token-revision` on its pod template to the token's
    /// revision. `status.rollout` says when the restart has finished; a token a new approval
    /// replaced is revoked then, rather than after `--revoke-grace`. The chart grants the needed
    /// permissions only with `rolloutRestart.enabled: true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rollout_restart: Vec<RolloutTarget>,
}

/// A workload to restart when the token changes.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTarget {
    pub kind: WorkloadKind,
    /// Name of the Deployment or StatefulSet, in the grant's namespace.
    #[x_kube(validation = Rule::new(SECRET_NAME_RULE).message("must be a valid Deployment or StatefulSet name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

// The kind of a workload to restart. No doc comment, for the same reason as `TokenKind`.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

/// A map of at most 32 labels, each value at most 63 characters: bounded so that the API server
/// can bound the cost of the CEL rules above.
fn label_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 32,
        "additionalProperties": { "type": "string", "maxLength": 63 }
    })
}

/// A map of at most 32 annotations, each value at most 4096 characters, so that they always fit
/// Kubernetes' 256 KiB limit on a Secret's annotations, next to the operator's own.
fn annotation_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 32,
        "additionalProperties": { "type": "string", "maxLength": 4096 }
    })
}

/// What deleting a grant does to its token.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Revoke the token at Slack, then delete the Secret with the grant.
    #[default]
    Revoke,
    /// Keep the token live and the Secret in place, no longer owned by the grant.
    Retain,
}

/// The finalizer that lets the operator revoke (or release) a grant's token before the grant
/// goes. If the operator is gone for good, remove it by hand:
/// `kubectl patch slackoauthgrant <name> --type=json -p '[{"op":"remove","path":"/metadata/finalizers"}]'`
/// (and revoke the token in Slack yourself).
pub const FINALIZER: &str = "slack-oauth-operator.io/revoke-token";

/// Where the Slack app is installed.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Installation {
    /// A single Slack workspace.
    #[default]
    Workspace,
    /// An Enterprise Grid organization, installed org-wide by an Org Owner.
    Organization,
}

// Which Slack token the Secret holds. No doc comment on purpose: kube's schema rewrite for
// `Option<enum>` would put the type's description in place of the field's.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// The user token (`xoxp-`), granted the user scopes.
    User,
    /// The bot token (`xoxb-`), granted the bot scopes.
    Bot,
}

// Where a grant is in its life. No doc comment, for the same reason as `TokenKind`.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a Slack owner to open `status.authorizationURL` and approve.
    AwaitingAuthorization,
    /// The token is in the Secret.
    Ready,
    /// The grant cannot make progress until something changes; see the `Ready` condition.
    Failed,
}

/// What the operator has observed about the grant.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlackOAuthGrantStatus {
    /// Where the grant is: `AwaitingAuthorization` (a Slack owner has to open `authorizationURL`),
    /// `Ready` (the token is in the Secret) or `Failed` (it cannot progress until something
    /// changes, or the last approval failed and nobody has acted since; `reason` says what).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Why the grant is in its phase now: the reason of the `Ready` condition, or, while a
    /// working token keeps `Ready` `True`, that of `AuthorizationPending` when a new approval is
    /// pending or its last attempt failed. `kubectl get` shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// The link a Slack Workspace or Org Owner opens to approve the grant:
    /// `<public-url>/oauth/start/<token>`. Each visit sends the browser on to Slack's consent page
    /// with a fresh `state`, so the link can be shared and opened again after a failed attempt.
    /// It is replaced once the grant is approved, on re-authorization, and at
    /// `authorizationExpiresAt`; an old link then answers that it is no longer needed.
    #[serde(
        rename = "authorizationURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub authorization_url: Option<String>,

    /// When `authorizationURL` stops working (`--authorization-ttl` after it was published); the
    /// operator then publishes a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_expires_at: Option<Time>,

    /// The latest observations of the grant's state. `Ready` is `True` when the token is in the
    /// Secret; its reason says what the grant is waiting for otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Who approved the grant and what Slack granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<InstallationStatus>,

    /// The token in the Secret: its revision, when it was issued, and, when Slack rotates it,
    /// when it expires and was last refreshed. Holds no secret values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenStatus>,

    /// The last push of the token into PingFederate (`spec.pingFederate`).
    #[serde(
        rename = "pingFederate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ping_federate: Option<PingFederateStatus>,

    /// The rolling restart of `spec.secret.rolloutRestart` for the current token, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,

    /// The approval attempts made with `authorizationURL` recently: one entry per `state` that
    /// reached the callback, so that each works once. Holds hashes, not the states; entries are
    /// dropped once their state has expired.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub used_states: Vec<UsedState>,

    /// An approval being exchanged for a token right now. Recorded before the code is exchanged,
    /// so that if the operator stops before the token is stored or revoked, the next one knows
    /// and says so (reason `ExchangeInterrupted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<ExchangeStatus>,
}

/// A `state` that reached the callback.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsedState {
    /// A hash of the state's random part.
    #[schemars(length(max = 32))]
    pub id: String,
    /// When the state expires; the entry is kept until then.
    pub expires_at: Time,
}

/// The token the grant holds. Holds no secret values.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TokenStatus {
    /// Counts the tokens the Secret has held: one more for every approval and every refresh.
    /// Workloads listed in `spec.secret.rolloutRestart` are restarted when it changes.
    pub revision: u64,
    /// When the token in the Secret was issued.
    pub issued_at: Time,
    /// When the token in the Secret expires (Slack token rotation only). The operator refreshes
    /// it once less than a third of its lifetime is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When the token was last refreshed (Slack token rotation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_at: Option<Time>,
}

/// What PingFederate holds. No secret values.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PingFederateStatus {
    /// The SP connection's ID, as looked up.
    #[serde(
        rename = "connectionID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub connection_id: Option<String>,
    /// The revision of the token (`status.token.revision`) last pushed successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_revision: Option<u64>,
    /// When that push landed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at: Option<Time>,
    /// The reason of the last failed push, if the last push failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// A failure that only a change can fix (of the grant, or of the credentials Secret) is not
    /// retried; this says which versions it was about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_on: Option<String>,
}

/// Where the restart of the workloads for a token stands.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The token revision the workloads were restarted for.
    pub revision: u64,
    /// When every listed workload had rolled out with that revision; unset until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Each listed workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<RolloutTargetStatus>,
}

/// One workload's restart.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTargetStatus {
    pub kind: WorkloadKind,
    pub name: String,
    /// `Restarting`, `RolledOut`, `NotOptedIn` (it lacks the opt-in annotation, so it is never
    /// touched), `NotFound`, or `Forbidden` (the operator may not read or patch it: install the
    /// chart with `rolloutRestart.enabled: true`).
    pub state: String,
}

/// An exchange in flight. Holds no secret values.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeStatus {
    /// The operator process exchanging the code.
    pub holder: String,
    /// When the approval arrived.
    pub started_at: Time,
    /// Renewed by the holder while it works; an exchange not renewed for a while was interrupted.
    pub renewed_at: Time,
}

/// What Slack reported when the grant was approved. Holds no secret values.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstallationStatus {
    /// The workspace ID (`T...`); empty for an org-wide install.
    #[serde(rename = "teamID", default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// The workspace name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_name: Option<String>,
    /// The Enterprise Grid organization ID (`E...`), if any.
    #[serde(
        rename = "enterpriseID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enterprise_id: Option<String>,
    /// The Enterprise Grid organization name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enterprise_name: Option<String>,
    /// True for an org-wide Enterprise Grid install.
    #[serde(default)]
    pub enterprise_install: bool,
    /// The Slack user ID of the person who approved.
    #[serde(
        rename = "authorizedUserID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub authorized_user_id: Option<String>,
    /// The scopes Slack granted to the stored token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The kind of the stored token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<TokenKind>,
    /// When the grant was approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_at: Option<Time>,
}

fn default_user_scopes() -> Vec<String> {
    vec![DEFAULT_USER_SCOPE.to_owned()]
}

fn default_client_secret_key() -> String {
    DEFAULT_CLIENT_SECRET_KEY.to_owned()
}

fn default_token_key() -> String {
    DEFAULT_TOKEN_KEY.to_owned()
}

impl SlackOAuthGrantSpec {
    /// The token the Secret holds: `spec.token`, or `User` when user scopes are requested and
    /// `Bot` otherwise. The CRD cannot express that conditional default, so it lives here.
    pub fn effective_token(&self) -> TokenKind {
        match self.token {
            Some(kind) => kind,
            None if self.user_scopes.is_empty() => TokenKind::Bot,
            None => TokenKind::User,
        }
    }
}

/// Condition types, reasons and Event reasons. Kept as constants so that tests, the controller and
/// the callback server agree on them.
pub mod conditions {
    use k8s_openapi::{
        apimachinery::pkg::apis::meta::v1::{Condition, Time},
        jiff::Timestamp,
    };

    /// The one condition every grant carries.
    pub const READY: &str = "Ready";
    /// Whether `spec.teamID` pins the approving workspace or organization.
    pub const TEAM_PINNED: &str = "TeamPinned";
    /// Whether an authorization link is out: `True` while the grant waits for a Slack owner
    /// (its reason says why: a first approval, a spec change, a re-authorization, a refused
    /// token), also while `Ready` stays `True` because a working token is still in place.
    pub const AUTHORIZATION_PENDING: &str = "AuthorizationPending";
    /// Whether the token in the Secret is also in PingFederate's SP connection
    /// (`spec.pingFederate`).
    pub const PINGFEDERATE_SYNCED: &str = "PingFederateSynced";
    /// Whether Slack's SCIM API accepts the grant's `admin` user token, as PingFederate's Slack
    /// provisioner needs: asked after each new token and with the periodic check.
    pub const PROVISIONING_READY: &str = "ProvisioningReady";
    /// Present once the operator has rewritten the Secret from its own record, after the Secret
    /// was deleted or its token edited by hand.
    pub const SECRET_RESTORED: &str = "SecretRestored";

    /// The `Ready` condition with `reason`, keeping `previous`'s `lastTransitionTime` unless its
    /// status flips. The controller and the callback server both build it here.
    pub fn ready(
        previous: Option<&Condition>,
        ok: bool,
        reason: &str,
        message: String,
        generation: i64,
        now: Timestamp,
    ) -> Condition {
        let status = if ok { "True" } else { "False" }.to_owned();
        let last_transition_time = match previous {
            Some(previous) if previous.status == status => previous.last_transition_time.clone(),
            _ => Time(now),
        };
        Condition {
            type_: READY.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            observed_generation: Some(generation),
            last_transition_time,
        }
    }
}

/// Reasons of the `Ready` condition, also used as Event reasons. Users may alert on them, so they
/// are part of the API.
pub mod reasons {
    /// A link is published; waiting for a Slack owner to approve.
    pub const AWAITING_AUTHORIZATION: &str = "AwaitingAuthorization";
    /// The token is in the Secret.
    pub const AUTHORIZED: &str = "Authorized";
    /// A callback arrived; the operator is exchanging the code and writing the Secret.
    pub const EXCHANGING: &str = "Exchanging";
    /// The Secret named by `spec.clientSecretRef` (or its key) does not exist.
    pub const CLIENT_SECRET_MISSING: &str = "ClientSecretMissing";
    /// The grant was Ready, and its token Secret was deleted.
    pub const SECRET_MISSING: &str = "SecretMissing";
    /// A Secret with `spec.secret.name` exists and is not managed by this operator.
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    /// The Slack owner clicked Cancel (Slack's `access_denied`).
    pub const ACCESS_DENIED: &str = "AccessDenied";
    /// Slack sent the browser back with an error other than `access_denied`.
    pub const AUTHORIZATION_FAILED: &str = "AuthorizationFailed";
    /// Slack refused the code (`invalid_code`): expired, already used or for another app.
    pub const INVALID_CODE: &str = "InvalidCode";
    /// Slack refused the app's Client Secret (`bad_client_secret`).
    pub const BAD_CLIENT_SECRET: &str = "BadClientSecret";
    /// Slack does not know `spec.clientID` (`invalid_client_id`).
    pub const INVALID_CLIENT_ID: &str = "InvalidClientID";
    /// Slack refused the redirect URI (`bad_redirect_uri`).
    pub const BAD_REDIRECT_URI: &str = "BadRedirectURI";
    /// Slack refused the exchange for another documented reason.
    pub const EXCHANGE_FAILED: &str = "ExchangeFailed";
    /// Slack could not be reached, or kept failing, within the code's lifetime.
    pub const SLACK_UNAVAILABLE: &str = "SlackUnavailable";
    /// The approval came from a team other than `spec.teamID`.
    pub const WRONG_TEAM: &str = "WrongTeam";
    /// An org-wide install where a workspace install was asked for, or the reverse.
    pub const WRONG_INSTALLATION: &str = "WrongInstallation";
    /// Slack granted fewer scopes than requested, or not the requested token.
    pub const MISSING_SCOPE: &str = "MissingScope";
    /// The operator stopped while exchanging an approval; Slack may have issued a token that
    /// nobody holds.
    pub const EXCHANGE_INTERRUPTED: &str = "ExchangeInterrupted";
    /// The operator requires `spec.teamID` (`--require-team-id`) and the grant has none.
    pub const TEAM_ID_REQUIRED: &str = "TeamIDRequired";
    /// Reasons a failed attempt leaves on the grant (written by the callback server). The
    /// controller keeps them next to a fresh link, so the person sees what went wrong, and the
    /// callback draws every failure it records from this list.
    pub const ATTEMPT_FAILURES: &[&str] = &[
        ACCESS_DENIED,
        AUTHORIZATION_FAILED,
        INVALID_CODE,
        BAD_CLIENT_SECRET,
        INVALID_CLIENT_ID,
        BAD_REDIRECT_URI,
        EXCHANGE_FAILED,
        SLACK_UNAVAILABLE,
        WRONG_TEAM,
        WRONG_INSTALLATION,
        MISSING_SCOPE,
        SECRET_CONFLICT,
        EXCHANGE_INTERRUPTED,
    ];
    /// Slack refused the token in the Secret (`auth.test`: revoked, expired, user deactivated).
    pub const TOKEN_REVOKED: &str = "TokenRevoked";
    /// Slack accepted the token for another team or user than the one recorded at approval.
    pub const TOKEN_INVALID: &str = "TokenInvalid";
    /// The grant is being deleted and its token could not be revoked yet (Slack unreachable);
    /// the operator keeps trying.
    pub const REVOKE_PENDING: &str = "RevokePending";
    /// Slack refused the refresh token for good (`invalid_refresh_token`): a new approval is
    /// needed.
    pub const REFRESH_FAILED: &str = "RefreshFailed";
    /// `AuthorizationPending`: the grant has never been approved.
    pub const FIRST_APPROVAL: &str = "FirstApproval";
    /// `AuthorizationPending`: the scopes, app, team, installation or token kind changed since
    /// the approval; the old token stays in place until the new approval replaces it.
    pub const SPEC_CHANGED: &str = "SpecChanged";
    /// `AuthorizationPending`: the `slack-oauth-operator.io/reauthorize` annotation changed.
    pub const REAUTHORIZATION_REQUESTED: &str = "ReauthorizationRequested";
    /// `AuthorizationPending`: no link is out; the token in the Secret is the approved one.
    pub const UP_TO_DATE: &str = "UpToDate";
    /// `SecretRestored`, and a Warning Event: the Secret was deleted.
    pub const SECRET_DELETED: &str = "SecretDeleted";
    /// `SecretRestored`, and a Warning Event: the token in the Secret was changed by hand.
    pub const SECRET_EDITED: &str = "SecretEdited";
    /// `spec.secret.adopt`: Slack refused the token in the Secret (revoked, another team, another
    /// kind of token); it is not adopted, and the Secret is left as it was.
    pub const ADOPTION_REFUSED: &str = "AdoptionRefused";
    /// `spec.secret.adopt`: Slack could not be asked about the token yet; the operator retries.
    pub const ADOPTION_PENDING: &str = "AdoptionPending";
    /// Event: a listed workload was restarted for a new token.
    pub const ROLLOUT_RESTARTED: &str = "RolloutRestarted";
    /// Event: a listed workload lacks the opt-in annotation, or cannot be read or patched.
    pub const ROLLOUT_SKIPPED: &str = "RolloutSkipped";
    /// Event: the token in an existing Secret was adopted.
    pub const ADOPTED: &str = "Adopted";
    /// `PingFederateSynced`: the token in the Secret is in PingFederate's SP connection.
    pub const PINGFEDERATE_SYNCED: &str = "Synced";
    /// `PingFederateSynced`: PingFederate refused the admin credentials (401 or 403).
    pub const PINGFEDERATE_UNAUTHORIZED: &str = "Unauthorized";
    /// `PingFederateSynced`: the connection has no target setting named `tokenField`.
    pub const PINGFEDERATE_FIELD_NOT_FOUND: &str = "TokenFieldNotFound";
    /// `PingFederateSynced`: the SP connection does not exist (or its name is ambiguous).
    pub const PINGFEDERATE_CONNECTION_NOT_FOUND: &str = "ConnectionNotFound";
    /// `PingFederateSynced`: PingFederate refused the changed connection (400 or 422).
    pub const PINGFEDERATE_REJECTED: &str = "Rejected";
    /// `PingFederateSynced`: pushes keep failing while the token PingFederate holds is about to
    /// expire (Slack token rotation): PingFederate's provisioning will stop unless it recovers.
    pub const PINGFEDERATE_BEHIND: &str = "ExpiringBeforePush";
    /// `PingFederateSynced`: PingFederate could not be reached, or failed; retried.
    pub const PINGFEDERATE_UNAVAILABLE: &str = "Unavailable";
    /// `PingFederateSynced`: the credentials Secret is missing, not shared with the grant, or
    /// does not name this admin API URL.
    pub const PINGFEDERATE_CREDENTIALS_REFUSED: &str = "CredentialsNotShared";
    /// `PingFederateSynced`: no token to push yet.
    pub const PINGFEDERATE_WAITING: &str = "WaitingForToken";
    /// `ProvisioningReady`: SCIM accepts the token.
    pub const SCIM_ACCEPTED: &str = "SCIMAccepted";
    /// `ProvisioningReady`: SCIM refused the token.
    pub const SCIM_REFUSED: &str = "SCIMRefused";
    /// `TeamPinned`: `spec.teamID` is set.
    pub const TEAM_ID_SET: &str = "TeamIDSet";
    /// `TeamPinned`: `spec.teamID` is not set; any workspace the approver owns may be chosen.
    pub const TEAM_ID_UNSET: &str = "TeamIDUnset";
}

/// Labels the operator puts on, or looks for on, Secrets.
pub mod labels {
    /// `app.kubernetes.io/managed-by`: the controller watches Secrets by this label only.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The [`MANAGED_BY`] value on Secrets the operator writes. A Secret without it is never
    /// overwritten.
    pub const OPERATOR: &str = "slack-oauth-operator";
    /// A Secret carries this (value `true`) to share itself with the grants of its namespace;
    /// see docs/security.md. The operator reads no Secret without it or [`MANAGED_BY`].
    pub const SHARED_WITH_GRANTS: &str = "slack-oauth-operator.io/shared-with-grants";
}

/// Annotations the operator puts on, or looks for on, Secrets.
pub mod annotations {
    /// The name of the grant a token Secret belongs to. (An annotation, not a label: grant names
    /// may be longer than a label value.)
    pub const GRANT: &str = "slack-oauth-operator.io/grant";
    /// The grant generation the token was approved for. Written by versions before the token
    /// record; read only to move such Secrets under a record on upgrade.
    pub const GRANT_GENERATION: &str = "slack-oauth-operator.io/grant-generation";
    /// What Slack reported at approval (JSON of `InstallationStatus`); no secret values. Read
    /// only on upgrade, like [`GRANT_GENERATION`].
    pub const INSTALLATION: &str = "slack-oauth-operator.io/installation";
    /// On a Deployment or StatefulSet: the grants (comma-separated names) that may restart it
    /// when their token changes (`spec.secret.rolloutRestart`).
    pub const RESTART_ON_TOKEN_CHANGE: &str = "slack-oauth-operator.io/restart-on-token-change";
    /// The revision of the token in a token Secret (see `status.token.revision`), and on the pod
    /// template of a workload restarted for it.
    pub const TOKEN_REVISION: &str = "slack-oauth-operator.io/token-revision";
    /// On a grant: setting it to a new value asks for a new approval. The current token stays
    /// in place, and `Ready` stays `True`, until the new approval replaces it.
    pub const REAUTHORIZE: &str = "slack-oauth-operator.io/reauthorize";
    /// On a PingFederate credentials Secret: the admin API base URL it may be sent to.
    pub const PINGFEDERATE_ADMIN_API_URL: &str =
        "slack-oauth-operator.io/pingfederate-admin-api-url";
    /// Narrows [`super::labels::SHARED_WITH_GRANTS`] to these grant names (comma-separated).
    pub const ALLOWED_GRANTS: &str = "slack-oauth-operator.io/allowed-grants";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(user: &[&str], bot: &[&str], token: Option<TokenKind>) -> SlackOAuthGrantSpec {
        SlackOAuthGrantSpec {
            description: None,
            client_id: "1.2".into(),
            client_secret_ref: ClientSecretRef {
                name: "app".into(),
                key: default_client_secret_key(),
            },
            user_scopes: user.iter().map(|s| s.to_string()).collect(),
            bot_scopes: bot.iter().map(|s| s.to_string()).collect(),
            installation: Installation::Workspace,
            team_id: None,
            token,
            secret: TargetSecret {
                name: "token".into(),
                key: default_token_key(),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                adopt: false,
                rollout_restart: Vec::new(),
            },
            deletion_policy: DeletionPolicy::Revoke,
            ping_federate: None,
        }
    }

    #[test]
    fn token_defaults_to_user_when_user_scopes_are_requested() {
        assert_eq!(
            spec(&["admin"], &[], None).effective_token(),
            TokenKind::User
        );
        assert_eq!(
            spec(&["admin"], &["chat:write"], None).effective_token(),
            TokenKind::User
        );
    }

    #[test]
    fn token_defaults_to_bot_without_user_scopes() {
        assert_eq!(
            spec(&[], &["chat:write"], None).effective_token(),
            TokenKind::Bot
        );
    }

    #[test]
    fn explicit_token_wins_over_the_default() {
        assert_eq!(
            spec(&["admin"], &["chat:write"], Some(TokenKind::Bot)).effective_token(),
            TokenKind::Bot
        );
    }

    #[test]
    fn a_minimal_grant_gets_the_documented_defaults() {
        let grant: SlackOAuthGrantSpec = serde_json::from_value(serde_json::json!({
            "clientID": "1234567890.1234567890",
            "clientSecretRef": { "name": "slack-app" },
            "secret": { "name": "slack-token" }
        }))
        .expect("a minimal spec");
        assert_eq!(grant.user_scopes, vec!["admin"]);
        assert_eq!(grant.client_secret_ref.key, "clientSecret");
        assert_eq!(grant.secret.key, "SLACK_ACCESS_TOKEN");
        assert_eq!(grant.installation, Installation::Workspace);
    }
}
