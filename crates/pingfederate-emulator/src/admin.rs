//! The emulated PingFederate admin API: admin credentials, SP connections, replication, faults
//! and the call record, as plain state and functions of (state, request). No I/O happens here;
//! `server` parses HTTP into [`AdminRequest`]s and turns [`Answer`]s back into HTTP.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde_json::{Value, json};

use crate::{
    ids,
    model::{BasicAuth, Call, Fault, Outage, Route, target_setting},
    target_settings::{self, Foreign, ValidationError},
};

/// Where the admin API lives on the admin port (reference §3.2).
pub const BASE_PATH: &str = "/pf-admin-api/v1";

/// What a request addresses, from its path alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `/idp/spConnections`
    Connections,
    /// `/idp/spConnections/{id}`
    Connection(String),
    /// `/cluster/replicate`
    Replicate,
    /// Anything else.
    Unknown,
}

impl Target {
    /// The target of `path` (the full request path, base path included).
    pub(crate) fn of(path: &str) -> Self {
        let Some(rest) = path.strip_prefix(BASE_PATH) else {
            return Self::Unknown;
        };
        match rest {
            "/idp/spConnections" => Self::Connections,
            "/cluster/replicate" => Self::Replicate,
            _ => match rest.strip_prefix("/idp/spConnections/") {
                Some(id) if !id.is_empty() && !id.contains('/') => {
                    let id = percent_decode(id);
                    Self::Connection(id)
                }
                _ => Self::Unknown,
            },
        }
    }

    /// The route `method` on this target is, if the emulator serves it.
    pub(crate) fn route(&self, method: &str) -> Option<Route> {
        match (self, method) {
            (Self::Connections, "GET") => Some(Route::ListConnections),
            (Self::Connection(_), "GET") => Some(Route::GetConnection),
            (Self::Connection(_), "PUT") => Some(Route::PutConnection),
            (Self::Replicate, "POST") => Some(Route::Replicate),
            _ => None,
        }
    }

    /// The methods the emulator serves on this target, for `Allow`.
    fn allowed(&self) -> &'static str {
        match self {
            Self::Connections => "GET",
            Self::Connection(_) => "GET, PUT",
            Self::Replicate => "POST",
            Self::Unknown => "",
        }
    }
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| text.to_owned())
}

/// The `Authorization` header, parsed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Authorization {
    Missing,
    Malformed,
    Basic { username: String, password: String },
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("Missing"),
            Self::Malformed => f.write_str("Malformed"),
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &crate::model::REDACTED)
                .finish(),
        }
    }
}

/// The request body.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Body {
    Empty,
    Json(Value),
    NotJson,
    TooLarge,
}

/// An admin API request, parsed by `server`.
#[derive(Clone, Debug)]
pub(crate) struct AdminRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub target: Target,
    pub route: Option<Route>,
    pub xsrf_header: Option<String>,
    pub authorization: Authorization,
    pub content_type: Option<String>,
    pub bypass_external_validation: Option<String>,
    pub body: Body,
}

/// What the emulator answers.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub status: u16,
    /// A JSON body; otherwise `text` is the (HTML) body.
    pub json: Option<Value>,
    pub text: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn ok(body: Value) -> Self {
        Self {
            status: 200,
            json: Some(body),
            text: String::new(),
            headers: Vec::new(),
        }
    }

    /// PingFederate's error shape, `ApiResult`: `resultId` and `message`.
    fn error(status: u16, result_id: &str, message: &str) -> Self {
        Self {
            status,
            ..Self::ok(json!({ "resultId": result_id, "message": message }))
        }
    }

    /// A 422 `ApiResult` with its `validationErrors`.
    fn validation(errors: &[ValidationError]) -> Self {
        Self {
            status: 422,
            ..Self::ok(json!({
                "resultId": "validation_error",
                "message": "Validation error(s) occurred. Please review the error(s) and address accordingly.",
                "validationErrors": errors.iter().map(ValidationError::to_json).collect::<Vec<_>>(),
            }))
        }
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// 401, for wrong or missing credentials and for [`Fault::Unauthorized`].
    fn unauthorized() -> Self {
        Self::error(
            401,
            "invalid_credentials",
            "Authentication failed: missing or invalid credentials.",
        )
        .with_header("www-authenticate", "Basic realm=\"PingFederate\"")
    }

    /// A short HTML page with this status, as a proxy or a failing server answers.
    fn html(status: u16, what: &str) -> Self {
        let status = if (100..=999).contains(&status) {
            status
        } else {
            500
        };
        Self {
            status,
            json: None,
            text: format!("<html><body><h1>{status}</h1><p>{what}</p></body></html>"),
            headers: Vec::new(),
        }
    }

    /// The answer while the server is [`Outage::Unavailable`].
    pub(crate) fn unavailable() -> Self {
        Self::html(503, "PingFederate is not available.")
    }

    /// The answer to an injected fault other than a delay.
    pub(crate) fn for_fault(fault: &Fault) -> Self {
        match fault {
            Fault::ServerError(status) => Self::html(*status, "PingFederate is having trouble."),
            Fault::Unauthorized => Self::unauthorized(),
            // Delays are handled by the caller; answering normally is the point.
            Fault::Delay(_) | Fault::DelayAnswer(_) => Self::html(500, "unexpected delay fault"),
        }
    }
}

/// Faults queued for one route: first the counted ones, in order, then the sticky one.
#[derive(Debug, Default)]
struct Faults {
    queued: VecDeque<Fault>,
    until_cleared: Option<Fault>,
}

/// One SP connection as stored.
#[derive(Debug)]
struct Connection {
    /// What a GET answers: secret fields carry only their `encryptedValue`.
    document: Value,
    /// The target setting names that are encrypted for this connection's plugin type.
    secret_fields: BTreeSet<String>,
}

/// Everything the emulated PingFederate knows. No `Debug`: it holds the admin password and
/// every secret's plaintext.
pub(crate) struct PingFederate {
    username: String,
    password: String,
    connections: BTreeMap<String, Connection>,
    /// Every `encryptedValue` this server issued or was seeded with → the plaintext it stands
    /// for (`None` when a test seeded it without one). PingFederate decrypts any of them.
    encrypted: HashMap<String, Option<String>>,
    /// Every name ever marked secret, to redact calls even to unknown connections.
    ever_secret: BTreeSet<String>,
    faults: HashMap<Route, Faults>,
    outage: Option<Outage>,
    /// Bumped by every change of outage, so a timed outage ends only the outage it started.
    outage_generation: u64,
    /// Bumped by every start of an [`Outage::Unreachable`]: a connection accepted in an older
    /// epoch belongs to a server that went away.
    unreachable_epoch: u64,
    cut_connections: usize,
    replications: usize,
    calls: Vec<Call>,
}

impl Default for PingFederate {
    fn default() -> Self {
        Self {
            username: DEFAULT_USERNAME.to_owned(),
            password: ids::password(),
            connections: BTreeMap::new(),
            encrypted: HashMap::new(),
            ever_secret: BTreeSet::new(),
            faults: HashMap::new(),
            outage: None,
            outage_generation: 0,
            unreachable_epoch: 0,
            cut_connections: 0,
            replications: 0,
            calls: Vec::new(),
        }
    }
}

/// The admin account Ping's own tooling uses (reference §3.3).
pub const DEFAULT_USERNAME: &str = "administrator";

impl PingFederate {
    // ---- configuration and inspection ----

    pub(crate) fn username(&self) -> &str {
        &self.username
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }

    pub(crate) fn set_credentials(&mut self, username: &str, password: &str) {
        username.clone_into(&mut self.username);
        password.clone_into(&mut self.password);
    }

    /// Stores `connection` as the console would, with `secret_fields` encrypted; replaces a
    /// connection with the same ID. Returns the ID.
    pub(crate) fn seed(
        &mut self,
        connection: Value,
        secret_fields: &[&str],
    ) -> Result<String, String> {
        let id = connection
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .map(str::to_owned)
            .ok_or("the connection needs a string \"id\" without '/'")?;
        let secret_fields: BTreeSet<String> = secret_fields
            .iter()
            .map(|name| (*name).to_owned())
            .collect();
        let sealed =
            target_settings::seal(connection, &secret_fields, &self.encrypted, Foreign::Accept)
                .map_err(|errors| format!("invalid target settings: {errors:?}"))?;
        self.encrypted.extend(sealed.issued);
        self.ever_secret.extend(secret_fields.iter().cloned());
        self.connections.insert(
            id.clone(),
            Connection {
                document: sealed.connection,
                secret_fields,
            },
        );
        Ok(id)
    }

    pub(crate) fn connection(&self, id: &str) -> Option<Value> {
        self.connections.get(id).map(|c| c.document.clone())
    }

    pub(crate) fn remove_connection(&mut self, id: &str) -> bool {
        self.connections.remove(id).is_some()
    }

    /// The plaintext of secret target setting `field` of connection `id`, if it has one that
    /// the emulator knows.
    pub(crate) fn secret_value(&self, id: &str, field: &str) -> Option<String> {
        let connection = self.connections.get(id)?;
        if !connection.secret_fields.contains(field) {
            return None;
        }
        let encrypted = target_setting(&connection.document, field)?
            .get("encryptedValue")?
            .as_str()?;
        self.encrypted.get(encrypted)?.clone()
    }

    pub(crate) fn inject(&mut self, route: Route, fault: Fault, times: usize) {
        let faults = self.faults.entry(route).or_default();
        faults.queued.extend(std::iter::repeat_n(fault, times));
    }

    pub(crate) fn inject_until_cleared(&mut self, route: Route, fault: Fault) {
        self.faults.entry(route).or_default().until_cleared = Some(fault);
    }

    pub(crate) fn clear_faults(&mut self, route: Route) {
        self.faults.remove(&route);
    }

    /// The fault for the next call of `route`, if any.
    pub(crate) fn take_fault(&mut self, route: Route) -> Option<Fault> {
        let faults = self.faults.get_mut(&route)?;
        faults
            .queued
            .pop_front()
            .or_else(|| faults.until_cleared.clone())
    }

    pub(crate) fn outage(&self) -> Option<Outage> {
        self.outage
    }

    /// Sets the outage; returns its generation.
    pub(crate) fn set_outage(&mut self, outage: Option<Outage>) -> u64 {
        if outage == Some(Outage::Unreachable) && self.outage != outage {
            self.unreachable_epoch += 1;
        }
        self.outage = outage;
        self.outage_generation += 1;
        self.outage_generation
    }

    /// Ends the outage if it is still the one of `generation`.
    pub(crate) fn end_outage(&mut self, generation: u64) {
        if self.outage_generation == generation {
            self.set_outage(None);
        }
    }

    /// The epoch a connection accepted now belongs to, or `None` (and the connection counted
    /// as cut) while the server is unreachable.
    pub(crate) fn accept_connection(&mut self) -> Option<u64> {
        if self.outage == Some(Outage::Unreachable) {
            self.cut_connections += 1;
            None
        } else {
            Some(self.unreachable_epoch)
        }
    }

    /// Whether a connection accepted in `epoch` must be cut now; counts it if so.
    pub(crate) fn cut_connection(&mut self, epoch: u64) -> bool {
        let cut = self.outage == Some(Outage::Unreachable) || epoch != self.unreachable_epoch;
        if cut {
            self.cut_connections += 1;
        }
        cut
    }

    pub(crate) fn cut_connections(&self) -> usize {
        self.cut_connections
    }

    pub(crate) fn replications(&self) -> usize {
        self.replications
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.clone()
    }

    /// Records a call with its answer.
    pub(crate) fn record(
        &mut self,
        request: &AdminRequest,
        answer: &Answer,
        fault: Option<&Fault>,
        during_outage: bool,
    ) {
        let basic_auth = match &request.authorization {
            Authorization::Missing => BasicAuth::Missing,
            Authorization::Malformed => BasicAuth::Malformed,
            Authorization::Basic { username, password } => {
                if self.is_admin(username, password) {
                    BasicAuth::Valid {
                        username: username.clone(),
                    }
                } else {
                    BasicAuth::Wrong {
                        username: username.clone(),
                    }
                }
            }
        };
        let connection_id = match &request.target {
            Target::Connection(id) => Some(id.clone()),
            _ => None,
        };
        let request_body = match &request.body {
            Body::Json(value) => value.clone(),
            Body::Empty | Body::NotJson | Body::TooLarge => Value::Null,
        };
        self.calls.push(Call {
            method: request.method.clone(),
            path: request.path.clone(),
            query: request.query.clone(),
            route: request.route,
            connection_id,
            xsrf_header: request.xsrf_header.clone(),
            basic_auth,
            content_type: request.content_type.clone(),
            bypass_external_validation: request.bypass_external_validation.clone(),
            request_body,
            status: answer.status,
            fault: fault.cloned(),
            during_outage,
            response: answer.json.clone().unwrap_or(Value::Null),
            secret_fields: self.ever_secret.clone(),
        });
    }

    fn is_admin(&self, username: &str, password: &str) -> bool {
        username == self.username && password == self.password
    }

    // ---- the admin API ----

    /// Answers one request (faults and outages already applied by the caller).
    ///
    /// The checks run in this order: the XSRF header (403), credentials (401), the route (404,
    /// 405), then the operation's own checks.
    pub(crate) fn call(&mut self, request: &AdminRequest) -> Answer {
        if request.xsrf_header.is_none() {
            return Answer::error(
                403,
                "missing_xsrf_header",
                "The request is missing the required header X-XSRF-Header (send \
                 X-XSRF-Header: PingFederate).",
            );
        }
        match &request.authorization {
            Authorization::Basic { username, password } if self.is_admin(username, password) => {}
            _ => return Answer::unauthorized(),
        }
        let Some(route) = request.route else {
            return match request.target {
                Target::Unknown => Answer::error(404, "resource_not_found", "Resource not found."),
                _ => Answer::error(
                    405,
                    "method_not_allowed",
                    &format!("{} is not supported on this resource.", request.method),
                )
                .with_header("allow", request.target.allowed()),
            };
        };
        match (route, &request.target) {
            (Route::ListConnections, _) => self.list_connections(request),
            (Route::GetConnection, Target::Connection(id)) => self.get_connection(id),
            (Route::PutConnection, Target::Connection(id)) => self.put_connection(id, request),
            (Route::Replicate, _) => self.replicate(),
            // `Target::route` pairs connection routes with connection targets only.
            (Route::GetConnection | Route::PutConnection, _) => {
                Answer::error(404, "resource_not_found", "Resource not found.")
            }
        }
    }

    /// `GET /idp/spConnections`: `entityId` is an exact, case-sensitive match; `filter` a
    /// case-insensitive partial match on `name` or `entityId` (go-client's
    /// `GetSpConnections`); `page` (from 1) and `numberPerPage` page the result. Connections
    /// come in ID order.
    fn list_connections(&self, request: &AdminRequest) -> Answer {
        let mut entity_id = None;
        let mut filter = None;
        let mut page = None;
        let mut per_page = None;
        let query = request.query.as_deref().unwrap_or("");
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "entityId" => entity_id = Some(value.into_owned()),
                "filter" => filter = Some(value.to_lowercase()),
                "page" | "numberPerPage" => {
                    let Some(number) = value.parse::<usize>().ok().filter(|n| *n > 0) else {
                        return Answer::error(
                            400,
                            "invalid_request",
                            &format!("{name} must be a positive integer."),
                        );
                    };
                    if name == "page" {
                        page = Some(number);
                    } else {
                        per_page = Some(number);
                    }
                }
                _ => {}
            }
        }
        let text = |document: &Value, member: &str| {
            document
                .get(member)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let matching = self.connections.values().map(|c| &c.document).filter(|d| {
            entity_id
                .as_deref()
                .is_none_or(|wanted| text(d, "entityId") == wanted)
                && filter.as_deref().is_none_or(|wanted| {
                    text(d, "name").to_lowercase().contains(wanted)
                        || text(d, "entityId").to_lowercase().contains(wanted)
                })
        });
        let items: Vec<Value> = match per_page {
            Some(per_page) => matching
                .skip((page.unwrap_or(1) - 1).saturating_mul(per_page))
                .take(per_page)
                .cloned()
                .collect(),
            None => matching.cloned().collect(),
        };
        Answer::ok(json!({ "items": items }))
    }

    fn get_connection(&self, id: &str) -> Answer {
        match self.connections.get(id) {
            Some(connection) => Answer::ok(connection.document.clone()),
            None => Answer::error(404, "resource_not_found", "Resource not found."),
        }
    }

    /// `PUT /idp/spConnections/{id}`: a full replace (reference §3.2). Checked in the order a
    /// JAX-RS server does: media type (415), JSON (400), the resource (404), then validation
    /// (422). The answer is the connection as stored.
    fn put_connection(&mut self, id: &str, request: &AdminRequest) -> Answer {
        if !is_json(request.content_type.as_deref()) {
            return Answer::error(
                415,
                "unsupported_media_type",
                "The request body must be application/json.",
            );
        }
        let mut sent = match &request.body {
            Body::Json(value @ Value::Object(_)) => value.clone(),
            Body::TooLarge => {
                return Answer::error(413, "request_too_large", "The request body is too large.");
            }
            Body::Json(_) | Body::Empty | Body::NotJson => {
                return Answer::error(
                    400,
                    "invalid_request",
                    "The request body must be a JSON object.",
                );
            }
        };
        let Some(connection) = self.connections.get(id) else {
            return Answer::error(404, "resource_not_found", "Resource not found.");
        };
        let mut errors = Vec::new();
        match sent.get("id") {
            None | Some(Value::Null) => {
                sent["id"] = Value::String(id.to_owned());
            }
            Some(Value::String(sent_id)) if sent_id == id => {}
            Some(_) => errors.push(ValidationError::new(
                "id_mismatch",
                "id",
                "The connection ID in the body does not match the ID in the path.",
            )),
        }
        for required in ["entityId", "name"] {
            if sent
                .get(required)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errors.push(ValidationError::new(
                    "required_field",
                    required,
                    &format!("{required} is required."),
                ));
            }
        }
        let sealed = target_settings::seal(
            sent,
            &connection.secret_fields,
            &self.encrypted,
            Foreign::Refuse,
        );
        let sealed = match sealed {
            Ok(sealed) if errors.is_empty() => sealed,
            Ok(_) => return Answer::validation(&errors),
            Err(more) => {
                errors.extend(more);
                return Answer::validation(&errors);
            }
        };
        self.encrypted.extend(sealed.issued);
        let document = sealed.connection;
        if let Some(connection) = self.connections.get_mut(id) {
            connection.document = document.clone();
        }
        Answer::ok(document)
    }

    /// `POST /cluster/replicate`: answers an `ApiResult` (go-client's `StartReplication`).
    fn replicate(&mut self) -> Answer {
        self.replications += 1;
        Answer::ok(json!({
            "resultId": "success",
            "message": "Replication started.",
        }))
    }
}

/// Whether `content_type` is `application/json`, with or without parameters.
fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_targets_and_routes() {
        let base = BASE_PATH;
        assert_eq!(
            Target::of(&format!("{base}/idp/spConnections")),
            Target::Connections
        );
        assert_eq!(
            Target::of(&format!("{base}/idp/spConnections/a%20b")),
            Target::Connection("a b".into())
        );
        assert_eq!(
            Target::of(&format!("{base}/idp/spConnections/a+b")),
            Target::Connection("a+b".into())
        );
        assert_eq!(
            Target::of(&format!("{base}/idp/spConnections/a/certs")),
            Target::Unknown
        );
        assert_eq!(Target::of("/idp/spConnections"), Target::Unknown);
        assert_eq!(
            Target::Connection("x".into()).route("PUT"),
            Some(Route::PutConnection)
        );
        assert_eq!(Target::Connection("x".into()).route("DELETE"), None);
        assert_eq!(Target::Replicate.route("GET"), None);
    }

    #[test]
    fn json_media_types_may_carry_a_charset() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(None));
    }

    #[test]
    fn debug_of_a_request_hides_the_password() {
        let auth = Authorization::Basic {
            username: "administrator".into(),
            password: "hunter2".into(),
        };
        let printed = format!("{auth:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("administrator"));
    }
}
