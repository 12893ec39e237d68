//! What routes extract from a request: the `Caller` (from `Authorization: Bearer <token>`)
//! and, for the submission routes, the whole `Submission`.
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde_json::Value;

use super::AppState;
use crate::auth::Caller;
use crate::body::{body_bytes, parse_json, require_json};
use crate::problem::Problem;

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 9110).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The caller a request's headers name; 401 without a valid API key (unless auth is
/// disabled).
pub(super) fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, Problem> {
    let Some(keys) = &state.keys else {
        return Ok(Caller::anonymous());
    };
    bearer_token(headers)
        .and_then(|token| keys.find(token))
        .map(|key| Caller::with_key(key.clone()))
        .ok_or_else(Problem::unauthorized)
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        // Admission authenticated the request already; keys are hashed and compared once.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        authenticate(state, &parts.headers)
    }
}

/// A request to one of the submission routes: who sent it, its headers and its body (read by
/// admission, within the size limit).
pub(super) struct Submission {
    pub state: Arc<AppState>,
    pub caller: Caller,
    pub headers: HeaderMap,
    pub body: Result<Bytes, Problem>,
}

impl Submission {
    /// The body as JSON; 415 unless the request says it is JSON.
    pub fn json(&self) -> Result<Value, Problem> {
        require_json(&self.headers)?;
        parse_json(self.body.as_ref().map_err(Problem::clone)?)
    }
}

impl FromRequest<Arc<AppState>> for Submission {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, Problem> {
        let (mut parts, body) = request.into_parts();
        let caller = Caller::from_request_parts(&mut parts, state).await?;
        let headers = std::mem::take(&mut parts.headers);
        let body = Bytes::from_request(Request::from_parts(parts, body), state).await;
        Ok(Self {
            state: state.clone(),
            caller,
            headers,
            body: body_bytes(body, state.max_body_bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut headers = HeaderMap::new();
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearerabc", None),
        ] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer_token(&headers), token, "{value}");
        }
    }
}
