//! CloudEvents 1.0 at `POST /v1/events`, over the HTTP protocol binding: structured mode
//! (`application/cloudevents+json`), batch mode (`application/cloudevents-batch+json`) and
//! binary mode (`ce-*` headers, the body is the event's data).
//!
//! An event becomes a job: `type` is the job type, `source` and `id` together its
//! idempotency key (so a redelivered event is a duplicate, per tenant, while two sources that
//! both send `id: 1` make two jobs), `data` the payload. From there it takes the
//! same path as `POST /v1/jobs`: scope, schema, publish, metrics and problem types.
//!
//! Events are read with serde_json rather than the `cloudevents-sdk` crate: its axum
//! extractor reads bodies without the gateway's size limit, answers plain-text 400/500
//! instead of problem details, stops at the first missing attribute, and has no
//! server-side batch mode.
use std::collections::BTreeMap;

use axum::http::HeaderMap;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::body::{is_json_media_type, media_type, media_type_essence, parse_json, refuse_nul};
use crate::ingest::{rejected, Ingest, JobRequest};
use crate::problem::Problem;
use crate::publish::NewJob;

/// Content type of one event in the JSON event format (structured mode).
pub const STRUCTURED: &str = "application/cloudevents+json";
/// Content type of a batch of events in the JSON event format.
pub const BATCH: &str = "application/cloudevents-batch+json";
/// The only CloudEvents version accepted.
pub const SPEC_VERSION: &str = "1.0";

/// Required context attributes, in the order problems name them.
const REQUIRED: [&str; 4] = ["id", "source", "specversion", "type"];
/// Longest event id: it is the job's idempotency key.
const MAX_ID_LEN: usize = 256;

/// A CloudEvents 1.0 event in the JSON event format. Extension attributes (lower-case
/// letters and digits) are accepted and not forwarded.
#[derive(Debug, ToSchema)]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// Unique per source; with `source`, the job's idempotency key (1 to 256 characters).
    pub id: String,
    /// URI-reference of the event's producer; with `id`, the job's idempotency key.
    pub source: String,
    /// A registered job type (see `GET /v1/job-types`).
    #[schema(rename = "type")]
    pub event_type: String,
    /// JSON only: `application/json` or `application/*+json`.
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    pub subject: Option<String>,
    /// RFC 3339 time of the occurrence.
    #[schema(format = DateTime)]
    pub time: Option<String>,
    /// The job's payload, validated against the job type's JSON Schema.
    #[schema(value_type = Object)]
    pub data: Option<serde_json::Value>,
}

/// How a request carries its events (CloudEvents HTTP binding §3).
pub enum Mode {
    Structured,
    Batch,
    Binary,
}

pub fn mode(headers: &HeaderMap) -> Result<Mode, Problem> {
    match media_type(headers).as_deref() {
        Some(STRUCTURED) => Ok(Mode::Structured),
        Some(BATCH) => Ok(Mode::Batch),
        Some(other) if other.starts_with("application/cloudevents") => {
            Err(Problem::unsupported_media_type_because(format!(
                "{other} is not supported; send events in the JSON event format ({STRUCTURED} or \
                 {BATCH}) or in binary mode (ce-* headers with a JSON body)"
            )))
        }
        // Anything else is binary mode: the attributes travel as ce-* headers.
        _ => Ok(Mode::Binary),
    }
}

fn missing_attributes(present: impl Fn(&str) -> bool) -> Result<(), Problem> {
    let missing: Vec<&str> = REQUIRED.into_iter().filter(|a| !present(a)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Problem::cloudevent_missing_attributes(&missing))
    }
}

/// Extension attribute names: lower-case ASCII letters and digits (CloudEvents 1.0 §3.1.1).
fn valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn non_empty<'a>(name: &str, value: Option<&'a str>) -> Result<&'a str, Problem> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Problem::invalid_cloudevent(format!(
            "attribute {name} must be a non-empty string"
        ))),
    }
}

/// The attributes every mode shares, checked the same way.
fn check_context(
    specversion: &str,
    id: &str,
    time: Option<&str>,
    datacontenttype: Option<&str>,
) -> Result<(), Problem> {
    if specversion != SPEC_VERSION {
        return Err(Problem::invalid_cloudevent(format!(
            "specversion {specversion:?} is not supported; send CloudEvents {SPEC_VERSION}"
        )));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Problem::invalid_cloudevent(format!(
            "attribute id is longer than {MAX_ID_LEN} characters; it is the job's idempotency key"
        )));
    }
    if let Some(time) = time {
        OffsetDateTime::parse(time, &Rfc3339).map_err(|_| {
            Problem::invalid_cloudevent(format!(
                "attribute time {time:?} is not an RFC 3339 timestamp such as 2018-04-05T17:31:00Z"
            ))
        })?;
    }
    if let Some(content_type) = datacontenttype {
        if !is_json_media_type(&media_type_essence(content_type)) {
            return Err(Problem::unsupported_media_type_because(format!(
                "the event's data is {content_type:?}; job payloads are JSON: send \
                 application/json data"
            )));
        }
    }
    Ok(())
}

/// An event read into a job request; `source` takes part in the job's id.
#[derive(Debug)]
pub struct EventJob {
    request: JobRequest,
    source: String,
}

impl EventJob {
    /// The checks of every job, then the event's own id (from its `source` and `id`).
    pub fn check(
        self,
        ingest: &Ingest,
        caller: &Caller,
        payload_pointer: &str,
    ) -> Result<NewJob, Problem> {
        let mut job = ingest.check(caller, self.request, payload_pointer)?;
        job.event_source = Some(self.source);
        Ok(job)
    }
}

/// An event of the JSON event format (structured mode, or the item of a batch at `pointer`),
/// counted as rejected when it is not a valid event.
pub fn read_json_event(event: Value, pointer: &str) -> Result<EventJob, Problem> {
    let claimed = claimed_type(event.get("type").and_then(Value::as_str));
    refuse_nul(&event, pointer)
        .and_then(|()| from_json(event))
        .map_err(|problem| rejected(&claimed, problem))
}

/// An event in binary mode, counted as rejected when it is not a valid event.
pub fn read_binary_event(headers: &HeaderMap, body: &[u8]) -> Result<EventJob, Problem> {
    let claimed = claimed_type(headers.get("ce-type").and_then(|v| v.to_str().ok()));
    from_binary(headers, body).map_err(|problem| rejected(&claimed, problem))
}

/// One event of the JSON event format (structured mode, or an item of a batch).
fn from_json(value: Value) -> Result<EventJob, Problem> {
    let Value::Object(event) = value else {
        return Err(Problem::invalid_cloudevent(
            "a CloudEvent in the JSON format is a JSON object of attributes",
        ));
    };
    // The JSON format reads a null attribute as an absent one.
    let mut event: Map<String, Value> = event.into_iter().filter(|(_, v)| !v.is_null()).collect();
    missing_attributes(|name| event.contains_key(name))?;
    let text = |name: &str| non_empty(name, event.get(name).and_then(Value::as_str));
    let specversion = text("specversion")?;
    let id = text("id")?.to_owned();
    let source = text("source")?.to_owned();
    let job_type = text("type")?.to_owned();
    let optional = |name: &str| -> Result<Option<&str>, Problem> {
        event
            .get(name)
            .map(|v| non_empty(name, v.as_str()))
            .transpose()
    };
    check_context(
        specversion,
        &id,
        optional("time")?,
        optional("datacontenttype")?,
    )?;
    optional("dataschema")?;
    optional("subject")?;
    if event.contains_key("data_base64") {
        return Err(Problem::unsupported_media_type_because(
            "data_base64 carries binary data; job payloads are JSON: send them as `data`",
        ));
    }
    for (name, value) in &event {
        if !valid_attribute_name(name) {
            return Err(Problem::invalid_cloudevent(format!(
                "attribute name {name:?} is not valid: CloudEvents attribute names are lower-case \
                 letters and digits"
            )));
        }
        if name != "data" && (value.is_object() || value.is_array()) {
            return Err(Problem::invalid_cloudevent(format!(
                "attribute {name} must be a string, number or boolean"
            )));
        }
    }
    let run_at = optional("runat")?.map(str::to_owned);
    let seconds_of = |name: &str| match event.get(name) {
        None => Ok(None),
        Some(Value::Number(seconds)) => Ok(seconds.as_f64()),
        Some(Value::String(seconds)) => seconds_attribute(name, seconds).map(Some),
        Some(_) => Err(invalid_seconds(name)),
    };
    let delay = seconds_of("delay")?;
    let ttl = seconds_of("ttl")?;
    let expires_at = optional("expiresat")?.map(str::to_owned);
    let callback_url = optional("callbackurl")?.map(str::to_owned);
    Ok(EventJob {
        request: JobRequest {
            job_type,
            payload: event.remove("data").unwrap_or(Value::Null),
            idempotency_key: Some(id),
            run_at,
            delay,
            expires_at,
            ttl,
            callback_url,
        },
        source,
    })
}

/// Decodes a binary-mode header value: printable ASCII, with `%XX` escapes for UTF-8 bytes
/// (CloudEvents HTTP binding §3.1.3.2).
fn percent_decode(name: &str, raw: &[u8]) -> Result<String, Problem> {
    let invalid = || {
        Problem::invalid_cloudevent(format!(
            "header {name} is not valid: use printable ASCII with %XX escapes for UTF-8 bytes"
        ))
    };
    let mut bytes = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2).ok_or_else(invalid)?;
            let hex = std::str::from_utf8(hex).map_err(|_| invalid())?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| invalid())?);
            rest = &tail[2..];
        } else if (0x20..0x7f).contains(&byte) {
            bytes.push(byte);
            rest = tail;
        } else {
            return Err(invalid());
        }
    }
    String::from_utf8(bytes).map_err(|_| invalid())
}

/// An event in binary mode: attributes in `ce-*` headers, data in the body.
fn from_binary(headers: &HeaderMap, body: &[u8]) -> Result<EventJob, Problem> {
    let mut attributes = BTreeMap::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        if !valid_attribute_name(attribute) {
            return Err(Problem::invalid_cloudevent(format!(
                "header {name} does not name a valid attribute: CloudEvents attribute names are \
                 lower-case letters and digits"
            )));
        }
        if attribute == "datacontenttype" {
            return Err(Problem::invalid_cloudevent(
                "in binary mode the data's media type is the Content-Type header, not \
                 ce-datacontenttype",
            ));
        }
        attributes.insert(
            attribute.to_owned(),
            percent_decode(name.as_str(), value.as_bytes())?,
        );
    }
    missing_attributes(|name| attributes.contains_key(name))?;
    let text = |name: &str| non_empty(name, attributes.get(name).map(String::as_str));
    let specversion = text("specversion")?;
    let id = text("id")?;
    let source = text("source")?;
    let job_type = text("type")?;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .map_err(|_| Problem::invalid_cloudevent("the Content-Type header is not ASCII"))
        })
        .transpose()?;
    check_context(
        specversion,
        id,
        attributes.get("time").map(String::as_str),
        content_type,
    )?;
    if let Some((name, _)) = attributes.iter().find(|(_, v)| v.contains('\0')) {
        return Err(Problem::nul_character(format!("ce-{name} header")));
    }
    let payload = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        parse_json(body)?
    };
    refuse_nul(&payload, "")?;
    Ok(EventJob {
        request: JobRequest {
            job_type: job_type.to_owned(),
            payload,
            idempotency_key: Some(id.to_owned()),
            run_at: attributes.get("runat").cloned(),
            delay: attributes
                .get("delay")
                .map(|seconds| seconds_attribute("delay", seconds))
                .transpose()?,
            expires_at: attributes.get("expiresat").cloned(),
            ttl: attributes
                .get("ttl")
                .map(|seconds| seconds_attribute("ttl", seconds))
                .transpose()?,
            callback_url: attributes.get("callbackurl").cloned(),
        },
        source: source.to_owned(),
    })
}

fn invalid_seconds(name: &str) -> Problem {
    Problem::invalid_cloudevent(format!(
        "the {name} extension attribute is a number of seconds"
    ))
}

/// A `delay` or `ttl` extension attribute in its string form (binary mode carries only
/// strings).
fn seconds_attribute(name: &str, text: &str) -> Result<f64, Problem> {
    text.trim().parse().map_err(|_| invalid_seconds(name))
}

/// The `type` an event claims, for the rejection metric (folded to `unknown` unless it is
/// registered).
fn claimed_type(value: Option<&str>) -> String {
    value.unwrap_or("unknown").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problem_type(problem: &Problem) -> &str {
        problem.problem_type.rsplit('/').next().unwrap_or_default()
    }

    #[test]
    fn structured_event_becomes_a_job_request() {
        let request = from_json(json!({
            "specversion": "1.0", "type": "ledger.post", "source": "/mycontext/subcontext",
            "id": "A234-1234-1234", "time": "2018-04-05T17:31:00Z",
            "comexampleextension1": "value", "comexampleothervalue": 5,
            "datacontenttype": "application/json; charset=utf-8",
            "data": {"account": "a", "amount_cents": 1, "currency": "EUR"}
        }))
        .expect("valid");
        assert_eq!(request.source, "/mycontext/subcontext");
        let request = request.request;
        assert_eq!(request.job_type, "ledger.post");
        assert_eq!(request.idempotency_key.as_deref(), Some("A234-1234-1234"));
        assert_eq!(request.payload["account"], "a");
    }

    #[test]
    fn every_missing_attribute_is_named() {
        let problem =
            from_json(json!({"type": "ledger.post", "id": null, "data": {}})).expect_err("missing");
        assert_eq!(problem.status, 400);
        assert_eq!(
            problem.missing_attributes,
            vec!["id", "source", "specversion"]
        );
        assert!(
            problem.detail.contains("id, source, specversion"),
            "{}",
            problem.detail
        );
    }

    #[test]
    fn bad_attributes_are_refused() {
        let base = json!({"specversion": "1.0", "type": "ledger.post", "source": "s", "id": "1"});
        for (field, value, slug) in [
            ("specversion", json!("0.3"), "invalid-cloudevent"),
            ("id", json!(""), "invalid-cloudevent"),
            ("id", json!(7), "invalid-cloudevent"),
            ("id", json!("x".repeat(257)), "invalid-cloudevent"),
            ("time", json!("yesterday"), "invalid-cloudevent"),
            (
                "datacontenttype",
                json!("text/xml"),
                "unsupported-media-type",
            ),
            ("data_base64", json!("e30="), "unsupported-media-type"),
            ("Bad-Name", json!("x"), "invalid-cloudevent"),
            ("ext", json!({"nested": true}), "invalid-cloudevent"),
        ] {
            let mut event = base.clone();
            event[field] = value;
            let problem = from_json(event).expect_err(field);
            assert_eq!(problem_type(&problem), slug, "{field}: {}", problem.detail);
        }
        assert!(from_json(json!([base])).is_err());
    }

    #[test]
    fn binary_headers_are_percent_decoded() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-type", "ledger.post"),
            ("ce-source", "/mycontext/subcontext"),
            ("ce-id", "caf%C3%A9-1"),
            ("ce-time", "2018-04-05T03:56:24Z"),
            ("content-type", "application/json; charset=utf-8"),
        ] {
            headers.insert(name, value.parse().expect("header"));
        }
        let event = from_binary(&headers, br#"{"account": "a"}"#).expect("valid");
        assert_eq!(event.source, "/mycontext/subcontext");
        let request = event.request;
        assert_eq!(request.idempotency_key.as_deref(), Some("café-1"));
        assert_eq!(request.payload, json!({"account": "a"}));

        headers.insert("ce-id", "bad%zz".parse().expect("header"));
        assert!(from_binary(&headers, b"{}").is_err());
        headers.insert("ce-id", "1".parse().expect("header"));
        headers.insert("content-type", "text/plain".parse().expect("header"));
        let problem = from_binary(&headers, b"{}").expect_err("text/plain");
        assert_eq!(problem.status, 415);
        headers.remove("content-type");
        assert!(
            from_binary(&headers, b"{}").is_ok(),
            "no Content-Type means JSON"
        );
        headers.remove("ce-source");
        headers.remove("ce-specversion");
        let problem = from_binary(&headers, b"{}").expect_err("missing");
        assert_eq!(problem.missing_attributes, vec!["source", "specversion"]);
    }
}
