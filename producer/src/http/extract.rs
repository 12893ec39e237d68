//! Who is calling: the `Caller` extractor, resolved from `Authorization: Bearer <token>`.
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use super::AppState;
use crate::auth::Caller;
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
