//! What `slo report` asks Prometheus: each SLO's SLI, events and bad events as PromQL (the
//! recording rules' own expressions), and the client that asks.
use std::collections::BTreeMap;

use serde::Deserialize;

use super::SloError;

/// Windows the recording rules exist for.
const RECORDED_WINDOWS: &[&str] = &["5m", "30m", "1h", "6h", "3d", "30d"];

/// One SLO: how to read its SLI and count its events over any window.
pub(super) struct Definition {
    pub name: &'static str,
    pub per_job_type: bool,
    /// The objective when Prometheus has no `codigo:slo_objective:30d` for it (SPEC defaults).
    pub default_objective: f64,
    pub sli: fn(&str) -> String,
    pub events: fn(&str) -> String,
    pub bad_events: fn(&str) -> String,
}

const INGEST: &str = r#"route!~"/healthz|/readyz|/metrics""#;

fn availability(w: &str) -> String {
    format!(
        "1 - ((sum(rate(codigo_gateway_requests_total{{{INGEST}, status=~\"5..\"}}[{w}])) or vector(0)) \
         / sum(rate(codigo_gateway_requests_total{{{INGEST}}}[{w}])))"
    )
}

fn availability_events(w: &str) -> String {
    format!("sum(increase(codigo_gateway_requests_total{{{INGEST}}}[{w}]))")
}

fn availability_bad(w: &str) -> String {
    format!(
        "sum(increase(codigo_gateway_requests_total{{{INGEST}, status=~\"5..\"}}[{w}])) or vector(0)"
    )
}

fn latency(w: &str) -> String {
    format!(
        "sum(rate(codigo_gateway_request_duration_seconds_bucket{{{INGEST}, le=\"0.5\"}}[{w}])) \
         / sum(rate(codigo_gateway_request_duration_seconds_count{{{INGEST}}}[{w}]))"
    )
}

fn latency_events(w: &str) -> String {
    format!("sum(increase(codigo_gateway_request_duration_seconds_count{{{INGEST}}}[{w}]))")
}

fn latency_bad(w: &str) -> String {
    format!(
        "sum(increase(codigo_gateway_request_duration_seconds_count{{{INGEST}}}[{w}])) \
         - sum(increase(codigo_gateway_request_duration_seconds_bucket{{{INGEST}, le=\"0.5\"}}[{w}]))"
    )
}

fn job_success(w: &str) -> String {
    format!(
        "sum by (job_type) (rate(codigo_consumer_acks_total{{outcome=\"ack\"}}[{w}]) \
           or 0 * rate(codigo_consumer_acks_total{{outcome=\"term\"}}[{w}]) \
           or 0 * rate(codigo_consumer_dead_letters_total{{reason=\"max_deliveries\"}}[{w}])) \
         / sum by (job_type) (rate(codigo_consumer_acks_total{{outcome=~\"ack|term\"}}[{w}]) \
           or rate(codigo_consumer_dead_letters_total{{reason=\"max_deliveries\"}}[{w}]))"
    )
}

fn job_events(w: &str) -> String {
    format!(
        "sum by (job_type) (increase(codigo_consumer_acks_total{{outcome=~\"ack|term\"}}[{w}]) \
           or increase(codigo_consumer_dead_letters_total{{reason=\"max_deliveries\"}}[{w}]))"
    )
}

fn job_bad(w: &str) -> String {
    format!(
        "sum by (job_type) (increase(codigo_consumer_acks_total{{outcome=\"term\"}}[{w}]) \
           or increase(codigo_consumer_dead_letters_total{{reason=\"max_deliveries\"}}[{w}]) \
           or 0 * increase(codigo_consumer_acks_total{{outcome=\"ack\"}}[{w}]))"
    )
}

pub(super) const SLOS: &[Definition] = &[
    Definition {
        name: "producer_availability",
        per_job_type: false,
        default_objective: 0.999,
        sli: availability,
        events: availability_events,
        bad_events: availability_bad,
    },
    Definition {
        name: "producer_latency",
        per_job_type: false,
        default_objective: 0.95,
        sli: latency,
        events: latency_events,
        bad_events: latency_bad,
    },
    Definition {
        name: "job_success",
        per_job_type: true,
        default_objective: 0.995,
        sli: job_success,
        events: job_events,
        bad_events: job_bad,
    },
];

#[derive(Debug, Deserialize)]
struct ApiAnswer {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
pub(super) enum ApiData {
    Vector(Vec<ApiSample>),
    Scalar((f64, String)),
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
pub(super) struct ApiSample {
    pub metric: BTreeMap<String, String>,
    pub value: (f64, String),
}

/// Values of an instant vector, keyed by job type (empty for SLOs without one). NaN (no
/// events: 0/0) and infinities are no data.
pub(super) type Values = BTreeMap<String, f64>;

pub(super) struct Prometheus {
    pub http: reqwest::Client,
    pub url: String,
    /// Every query is evaluated at this one instant, so the numbers fit together.
    pub at: Option<f64>,
}

impl Prometheus {
    pub async fn get(&self, query: &str) -> Result<ApiData, SloError> {
        let mut params = vec![("query", query.to_owned())];
        if let Some(at) = self.at {
            params.push(("time", format!("{at:.3}")));
        }
        let unreachable = |source| SloError::Unreachable {
            url: self.url.clone(),
            source,
        };
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&params)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let refused = |error: String| SloError::Refused {
            url: self.url.clone(),
            query: query.to_owned(),
            error,
        };
        let answer: ApiAnswer = response
            .json()
            .await
            .map_err(|e| refused(format!("HTTP {status}, not a Prometheus API answer ({e})")))?;
        match (answer.status.as_str(), answer.data) {
            ("success", Some(data)) => Ok(data),
            _ => Err(refused(
                answer.error.unwrap_or_else(|| format!("HTTP {status}")),
            )),
        }
    }

    pub async fn values(&self, query: &str) -> Result<Values, SloError> {
        match self.get(query).await? {
            ApiData::Vector(samples) => Ok(samples
                .into_iter()
                .filter_map(|sample| {
                    let value: f64 = sample.value.1.parse().ok()?;
                    let key = sample.metric.get("job_type").cloned().unwrap_or_default();
                    value.is_finite().then_some((key, value))
                })
                .collect()),
            ApiData::Scalar((_, value)) => Ok(value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(|v| (String::new(), v))
                .into_iter()
                .collect()),
            ApiData::Other => Err(SloError::Refused {
                url: self.url.clone(),
                query: query.to_owned(),
                error: "the answer is not an instant vector".into(),
            }),
        }
    }

    /// The SLI over `window`: its recording rule where one exists, else its expression. A
    /// rule without a series (not loaded, or loaded after the data) hides nothing: what it
    /// lacks is computed from the raw counters.
    pub async fn sli(&self, slo: &Definition, window: &str) -> Result<Values, SloError> {
        if !RECORDED_WINDOWS.contains(&window) {
            return self.values(&(slo.sli)(window)).await;
        }
        let mut values = self
            .values(&format!("codigo:{}:{window}", slo.name))
            .await?;
        let complete = if slo.per_job_type {
            codigo_schemas::registry()
                .names()
                .all(|name| values.contains_key(name))
        } else {
            !values.is_empty()
        };
        if !complete {
            for (key, value) in self.values(&(slo.sli)(window)).await? {
                values.entry(key).or_insert(value);
            }
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_match_the_recording_rules() {
        let rules = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../observability/prometheus/rules/codigo-slo.rules.yml"
        ))
        .expect("rule file");
        let squash = |s: &str| s.split_whitespace().collect::<String>();
        let rules = squash(&rules);
        for slo in SLOS {
            let recorded = format!("record:codigo:{}:30dexpr:|", slo.name);
            let start = rules
                .find(&recorded)
                .unwrap_or_else(|| panic!("no rule for {}", slo.name))
                + recorded.len();
            let end = rules[start..]
                .find("-record:")
                .map_or(rules.len(), |e| start + e);
            assert_eq!(squash(&(slo.sli)("30d")), rules[start..end], "{}", slo.name);
        }
    }
}
