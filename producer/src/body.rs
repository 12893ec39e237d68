//! Request bodies as every ingest route reads them: JSON only, nesting bounded before the
//! parser runs, and no U+0000 anywhere (Postgres cannot store it).
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use serde_json::Value;

use crate::problem::Problem;

/// Deepest nesting of objects and arrays a body may have. Checked on the raw bytes before
/// parsing, so a hostile body never reaches the parser's recursion or the schema validator.
pub const MAX_JSON_DEPTH: usize = 32;

/// The media type of a `Content-Type` header without its parameters, lower-cased.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)?
        .to_str()
        .ok()
        .map(media_type_essence)
}

/// A media type without its parameters, lower-cased.
pub fn media_type_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// `application/json` or any `application/*+json` type.
pub fn is_json_media_type(essence: &str) -> bool {
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// 415 unless the request says its body is JSON.
pub fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    if media_type(headers).is_some_and(|essence| is_json_media_type(&essence)) {
        Ok(())
    } else {
        Err(Problem::unsupported_media_type())
    }
}

/// Whether `bytes` nests objects and arrays deeper than `limit` (brackets inside strings do
/// not count). Malformed input is left to the parser.
pub fn nests_deeper_than(bytes: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in bytes {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The body's bytes, or 413 when over the limit.
pub fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, Problem> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::payload_too_large(limit)
        } else {
            Problem::malformed_json(format!("the request body could not be read: {rejection}"))
        }
    })
}

/// Parses a JSON body after checking its nesting depth.
pub fn parse_json(bytes: &[u8]) -> Result<Value, Problem> {
    if nests_deeper_than(bytes, MAX_JSON_DEPTH) {
        return Err(Problem::too_deeply_nested(MAX_JSON_DEPTH));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Problem::malformed_json(format!(
            "the body is not valid JSON: {e}; send a JSON object"
        ))
    })
}

/// The JSON pointer (RFC 6901) of the first string or member name holding U+0000, which
/// Postgres cannot store; `pointer` locates `value` in the body.
pub fn find_nul(value: &Value, pointer: &str) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(|| pointer.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| find_nul(item, &format!("{pointer}/{index}"))),
        Value::Object(members) => members.iter().find_map(|(name, member)| {
            let at = format!("{pointer}/{}", name.replace('~', "~0").replace('/', "~1"));
            if name.contains('\0') {
                Some(at)
            } else {
                find_nul(member, &at)
            }
        }),
        _ => None,
    }
}

/// 422 with the pointer when `value` holds U+0000 anywhere.
pub fn refuse_nul(value: &Value, pointer: &str) -> Result<(), Problem> {
    match find_nul(value, pointer) {
        Some(at) => Err(Problem::nul_character(at)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_depth_counts_brackets_outside_strings() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(!nests_deeper_than(deep(32).as_bytes(), 32));
        assert!(nests_deeper_than(deep(33).as_bytes(), 32));
        let quoted = format!(r#"{{"s": "{}\" {}"}}"#, "[".repeat(100), "{".repeat(100));
        assert!(!nests_deeper_than(quoted.as_bytes(), 2));
        assert!(nests_deeper_than(br#"{"a": {"b": [1]}}"#, 2));
    }
}
