//! What wraps the routes: one observed span per request, and the admission every API request
//! passes before its handler runs.
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use opentelemetry::propagation::Extractor;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::extract::authenticate;
use super::AppState;
use crate::events::RequestServed;
use crate::problem::Problem;

struct HttpHeaders<'a>(&'a HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// A bounded set of method labels.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// One span and one `RequestServed` per request, labelled by route pattern (never the raw
/// path).
pub(super) async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let span = tracing::info_span!("http_request", http.method = method, http.route = %route,
        http.status_code = tracing::field::Empty);
    codigo_common::telemetry::link_to_parent(&span, &HttpHeaders(request.headers()));
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.status_code", status.as_u16());
    span.in_scope(|| {
        RequestServed {
            route: &route,
            method,
            status,
            duration: started.elapsed(),
        }
        .emit();
    });
    response
}

/// What every API request passes before its body is read: a free slot (else 503 and
/// Retry-After, never an endless queue), a valid API key from the headers (else 401, and the
/// body is never read), and the whole body within the read timeout (else 408) and the size
/// limit (else 413). The caller found is handed on to the route.
pub(super) async fn admit(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    // Shed requests are counted by `observe`, as 503s of their route.
    let Ok(permit) = state.in_flight.clone().try_acquire_owned() else {
        return Problem::overloaded().into_response();
    };
    let admission = Admission::holding(permit);
    let caller = match authenticate(&state, request.headers()) {
        Ok(caller) => caller,
        Err(problem) => return problem.into_response(),
    };
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(caller);
    parts.extensions.insert(admission.clone());
    let limit = state.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Problem::payload_too_large(limit).into_response();
    }
    let timeout = state.request_read_timeout;
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => return Problem::request_timeout(timeout.as_secs()).into_response(),
        Ok(Err(error)) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            return if too_large {
                Problem::payload_too_large(limit).into_response()
            } else {
                Problem::malformed_json(format!("the request body could not be read: {error}"))
                    .into_response()
            };
        }
        Ok(Ok(bytes)) => bytes,
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    drop(admission);
    response
}

/// A request's slot among CODIGO_MAX_CONCURRENT_REQUESTS. A request that goes on to wait for
/// its job gives the slot back first: waiting costs the gateway almost nothing, and has a
/// bound of its own (CODIGO_MAX_WAITING_REQUESTS).
#[derive(Clone)]
pub(super) struct Admission(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl Admission {
    fn holding(permit: OwnedSemaphorePermit) -> Self {
        Self(Arc::new(Mutex::new(Some(permit))))
    }

    pub(super) fn release(&self) {
        if let Ok(mut permit) = self.0.lock() {
            permit.take();
        }
    }
}
