//! HTTP at the edge: the axum router, request parsing into [`ApiRequest`]s, and answers back to
//! HTTP. The decisions all live in [`crate::slack`].

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{FromRequest, Multipart, Path, RawQuery, Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use base64::Engine as _;
use tracing::debug;

use crate::{
    consent,
    model::{Decision, Fault},
    slack::{Answer, ApiRequest, AuthorizeRequest, PageError, Rejection, SCIM_USERS, Slack},
};

/// The emulated Slack, shared by the handlers and the `SlackEmulator` handles.
pub(crate) type Shared = Arc<Mutex<Slack>>;

/// Largest request body read.
const BODY_LIMIT: usize = 1024 * 1024;

/// Slack's pages and Web API.
pub(crate) fn router(slack: Shared) -> Router {
    Router::new()
        .route(
            "/oauth/v2/authorize",
            get(consent_page).post(consent_decision),
        )
        .route("/api/{method}", any(api))
        .route("/scim/v2/Users", get(scim_users))
        .fallback(not_found)
        .with_state(slack)
}

/// The state stays usable after a panicking test thread poisoned the lock.
pub(crate) fn lock(slack: &Shared) -> MutexGuard<'_, Slack> {
    slack.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `GET /oauth/v2/authorize`: the consent page, or Slack's error page.
async fn consent_page(State(slack): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let request =
        AuthorizeRequest::from_pairs(url::form_urlencoded::parse(query.as_bytes()).into_owned());
    let checked = lock(&slack).check_authorize(&request);
    match checked {
        Ok(consent) => html(StatusCode::OK, consent::page(&consent)),
        Err(error) => html(StatusCode::BAD_REQUEST, consent::error_page(error)),
    }
}

/// `POST /oauth/v2/authorize`: Allow or Cancel. The hidden fields are checked again, since a
/// form can be edited before it is sent.
async fn consent_decision(State(slack): State<Shared>, body: Bytes) -> Response {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let decision = match pairs
        .iter()
        .find(|(name, _)| name == "decision")
        .map(|(_, value)| value.as_str())
    {
        Some("allow") => Some(Decision::Allow),
        Some("cancel") => Some(Decision::Cancel),
        _ => None,
    };
    let request = AuthorizeRequest::from_pairs(pairs);
    let mut slack = lock(&slack);
    let consent = match slack.check_authorize(&request) {
        Ok(consent) => consent,
        Err(error) => return html(StatusCode::BAD_REQUEST, consent::error_page(error)),
    };
    let Some(decision) = decision else {
        return html(
            StatusCode::BAD_REQUEST,
            consent::error_page(PageError::InvalidDecision),
        );
    };
    let location = slack.decide(&consent, decision);
    debug!(?decision, "consent decided");
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

/// `/api/<method>`: one Web API call, recorded with its answer.
async fn api(
    State(slack): State<Shared>,
    Path(method): Path<String>,
    request: Request,
) -> Response {
    let request = parse(method, request).await;
    // Slack finishes what it started even when the client hangs up mid-call (a token can be
    // issued whose answer never arrives), so the call runs in its own task.
    let answered = tokio::spawn(answer(slack, request)).await;
    match answered {
        Ok(answer) => into_response(answer),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `GET /scim/v2/Users`: the SCIM probe, recorded (and faulted) as method `scim.Users`.
async fn scim_users(State(slack): State<Shared>, request: Request) -> Response {
    let (_, bearer) = authorization(request.headers());
    let request = ApiRequest {
        method: SCIM_USERS.to_owned(),
        http_method: request.method().to_string(),
        content_type: None,
        params: BTreeMap::new(),
        basic: None,
        bearer,
        json_body: false,
        missing_charset: false,
        rejection: None,
    };
    into_response(answer(slack, request).await)
}

/// Applies the next injected fault, if any, then runs the method; records the call.
async fn answer(slack: Shared, request: ApiRequest) -> Answer {
    let fault = lock(&slack).take_fault(&request.method);
    if let Some(Fault::Delay(delay)) = &fault {
        tokio::time::sleep(*delay).await;
    }
    let answer = {
        let mut slack = lock(&slack);
        let answer = match &fault {
            Some(fault @ (Fault::Error(_) | Fault::RateLimited { .. } | Fault::ServerError(_))) => {
                Answer::for_fault(fault)
            }
            Some(Fault::Delay(_) | Fault::DelayAnswer(_)) | None => slack.call(&request),
        };
        slack.record(&request, &answer);
        answer
    };
    if let Some(Fault::DelayAnswer(delay)) = &fault {
        tokio::time::sleep(*delay).await;
    }
    debug!(
        method = %request.method,
        status = answer.status,
        error = answer.json.as_ref().and_then(|b| b.get("error")).and_then(|e| e.as_str()),
        injected = fault.is_some(),
        "Slack Web API call answered"
    );
    answer
}

/// Reads an HTTP request the way Slack's Web API does.
async fn parse(method: String, request: Request) -> ApiRequest {
    let (parts, body) = request.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (basic, bearer) = authorization(&parts.headers);
    let mut api = ApiRequest {
        method,
        http_method: parts.method.to_string(),
        content_type: content_type.clone(),
        params: BTreeMap::new(),
        basic,
        bearer,
        json_body: false,
        missing_charset: false,
        rejection: None,
    };
    // Real Slack also accepts GET with query parameters; the emulator refuses it so that a
    // client putting secrets into URLs is caught. Query parameters are never read.
    if parts.method != Method::POST {
        api.rejection = Some(Rejection::NotPost);
        return api;
    }
    let (essence, charset) = media_type(content_type.as_deref());
    if essence == "multipart/form-data" {
        let request = Request::from_parts(parts, body);
        match read_multipart(request).await {
            Ok(params) => api.params = params,
            Err(code) => api.rejection = Some(Rejection::Body(code)),
        }
        return api;
    }
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        api.rejection = Some(Rejection::Body("invalid_form_data"));
        return api;
    };
    match essence.as_str() {
        "" if bytes.is_empty() => {}
        "" => api.rejection = Some(Rejection::Body("missing_post_type")),
        "application/x-www-form-urlencoded" => {
            for (name, value) in url::form_urlencoded::parse(&bytes).into_owned() {
                api.params.entry(name).or_insert(value);
            }
        }
        "application/json" => {
            api.json_body = true;
            api.missing_charset = !charset.is_some_and(|c| c.eq_ignore_ascii_case("utf-8"));
            match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes) {
                Ok(object) => {
                    for (name, value) in object {
                        let value = match value {
                            serde_json::Value::Null => continue,
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        };
                        api.params.insert(name, value);
                    }
                }
                Err(_) => api.rejection = Some(Rejection::Body("invalid_json")),
            }
        }
        _ => api.rejection = Some(Rejection::Body("invalid_post_type")),
    }
    api
}

/// The media type (lowercase, without parameters) and its `charset`, if any.
fn media_type(content_type: Option<&str>) -> (String, Option<String>) {
    let Some(content_type) = content_type else {
        return (String::new(), None);
    };
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let charset = parts.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_owned())
    });
    (essence, charset)
}

async fn read_multipart(request: Request) -> Result<BTreeMap<String, String>, &'static str> {
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|_| "invalid_form_data")?;
    let mut params = BTreeMap::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|_| "invalid_form_data")?
    {
        let Some(name) = field.name().map(str::to_owned) else {
            continue;
        };
        let value = field.text().await.map_err(|_| "invalid_form_data")?;
        params.entry(name).or_insert(value);
    }
    Ok(params)
}

/// `Authorization: Basic` credentials (or `Err` if they do not decode) and a Bearer token.
#[allow(clippy::type_complexity)]
fn authorization(headers: &HeaderMap) -> (Option<Result<(String, String), ()>>, Option<String>) {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return (None, None);
    };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let credentials = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| {
                text.split_once(':')
                    .map(|(id, secret)| (id.to_owned(), secret.to_owned()))
            })
            .ok_or(());
        (Some(credentials), None)
    } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        (None, Some(rest.to_owned()))
    } else {
        (None, None)
    }
}

fn into_response(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (content_type, body) = match answer.json {
        Some(json) => ("application/json; charset=utf-8", json.to_string()),
        None => ("text/html; charset=utf-8", answer.text),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    for (name, value) in answer.headers {
        if let Ok(value) = header::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

fn html(status: StatusCode, page: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}
