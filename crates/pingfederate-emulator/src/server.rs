//! HTTP at the edge: the axum router, request parsing into [`AdminRequest`]s, outages and
//! faults, and answers back to HTTP. The decisions all live in [`crate::admin`].

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::{
    Router,
    body::Body as HttpBody,
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use tracing::debug;

use crate::{
    admin::{AdminRequest, Answer, Authorization, Body, PingFederate, Target},
    model::{Fault, Outage},
};

/// The emulated PingFederate, shared by the handlers, the listener and the handles.
pub(crate) type Shared = Arc<Mutex<PingFederate>>;

/// Largest request body read.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Every path goes to one handler: the route is decided from the path and method, after the
/// outage and fault checks, so that unknown paths are recorded and answered like PingFederate.
pub(crate) fn router(pf: Shared) -> Router {
    Router::new().fallback(handle).with_state(pf)
}

/// The state stays usable after a panicking test thread poisoned the lock.
pub(crate) fn lock(pf: &Shared) -> MutexGuard<'_, PingFederate> {
    pf.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn handle(State(pf): State<Shared>, request: Request) -> Response {
    let request = parse(request).await;
    // PingFederate finishes what it started even when the client hangs up mid-call (a PUT can
    // be stored whose answer never arrives), so the call runs in its own task.
    match tokio::spawn(answer(pf, request)).await {
        Ok(answer) => into_response(answer),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Applies the outage or the next injected fault, if any, then runs the call; records it.
async fn answer(pf: Shared, request: AdminRequest) -> Answer {
    let (outage, fault) = {
        let mut pf = lock(&pf);
        let outage = pf.outage();
        let fault = match (outage, request.route) {
            (None, Some(route)) => pf.take_fault(route),
            _ => None,
        };
        (outage, fault)
    };
    if outage == Some(Outage::Unavailable) {
        let answer = Answer::unavailable();
        lock(&pf).record(&request, &answer, None, true);
        return answer;
    }
    if let Some(Fault::Delay(delay)) = &fault {
        tokio::time::sleep(*delay).await;
    }
    let answer = {
        let mut pf = lock(&pf);
        let answer = match &fault {
            Some(fault @ (Fault::ServerError(_) | Fault::Unauthorized)) => Answer::for_fault(fault),
            Some(Fault::Delay(_) | Fault::DelayAnswer(_)) | None => pf.call(&request),
        };
        pf.record(&request, &answer, fault.as_ref(), false);
        answer
    };
    if let Some(Fault::DelayAnswer(delay)) = &fault {
        tokio::time::sleep(*delay).await;
    }
    debug!(
        method = %request.method,
        path = %request.path,
        status = answer.status,
        result_id = answer.json.as_ref().and_then(|b| b.get("resultId")).and_then(|r| r.as_str()),
        injected = fault.is_some(),
        "PingFederate admin API call answered"
    );
    answer
}

/// Reads an HTTP request into what the admin API looks at.
async fn parse(request: Request) -> AdminRequest {
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let method = parts.method.to_string();
    let path = parts.uri.path().to_owned();
    let target = Target::of(&path);
    let route = target.route(&method);
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Err(_) => Body::TooLarge,
        Ok(bytes) if bytes.is_empty() => Body::Empty,
        Ok(bytes) => serde_json::from_slice(&bytes).map_or(Body::NotJson, Body::Json),
    };
    AdminRequest {
        method,
        query: parts.uri.query().map(str::to_owned),
        target,
        route,
        // Header names are case-insensitive; PingFederate documents `X-XSRF-Header`.
        xsrf_header: header("x-xsrf-header"),
        authorization: authorization(&parts.headers),
        content_type: header(header::CONTENT_TYPE.as_str()),
        bypass_external_validation: header("x-bypassexternalvalidation"),
        body,
        path,
    }
}

/// The `Authorization` header, if it is Basic with `username:password`.
fn authorization(headers: &HeaderMap) -> Authorization {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Authorization::Missing;
    };
    let Ok(value) = value.to_str() else {
        return Authorization::Malformed;
    };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Authorization::Malformed;
    }
    base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            text.split_once(':')
                .map(|(username, password)| Authorization::Basic {
                    username: username.to_owned(),
                    password: password.to_owned(),
                })
        })
        .unwrap_or(Authorization::Malformed)
}

fn into_response(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (content_type, body) = match answer.json {
        Some(json) => ("application/json", json.to_string()),
        None => ("text/html; charset=utf-8", answer.text),
    };
    let mut response = Response::new(HttpBody::from(body));
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
