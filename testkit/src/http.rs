//! Answers of a service read whole, and the API keys test gateways accept.
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

/// Tenant `alpha`, every job type.
pub const ALPHA: &str = "alpha-token-0000000001";
/// Key `beta`, tenant `acme`.
pub const BETA: &str = "beta-token-00000000002";
/// Key `gamma`, also tenant `acme`: a second key of the same tenant.
pub const GAMMA: &str = "gamma-token-0000000003";
/// Key `scoped`, tenant `scoped`, webhook.deliver only.
pub const SCOPED: &str = "scoped-token-000000004";

/// Key `ops`, tenant `ops`, admin: may declare job types.
pub const ADMIN: &str = "ops-admin-token-000005";

/// `CODIGO_API_KEYS` with [`ALPHA`], [`BETA`], [`GAMMA`], [`SCOPED`] and [`ADMIN`].
pub fn api_keys() -> String {
    format!(
        "alpha:{ALPHA},beta:{BETA};tenant=acme,gamma:{GAMMA};tenant=acme,scoped:{SCOPED};types=webhook.deliver,ops:{ADMIN};admin=true"
    )
}

/// A response read whole: status, headers, the body as JSON (`Null` if it is not) and text.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// Asserts the status, showing the body when it is another.
    pub fn assert_status(&self, status: StatusCode) {
        assert_eq!(self.status, status, "{}", self.text);
    }

    /// Asserts a problem+json answer of the given status and problem type.
    pub fn assert_problem(&self, status: StatusCode, slug: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        assert_eq!(
            self.body["type"],
            format!("https://codigo.dev/problems/{slug}"),
            "{}",
            self.text
        );
        assert!(
            self.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            self.text
        );
    }
}

/// Posts `body` to `url` until the gateway accepts it (202), for 30 s at most: a gateway just
/// started refuses jobs until its streams are in place.
pub async fn post_until_accepted(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> reqwest::Response {
    for _ in 0..600 {
        let response = http
            .post(url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("post");
        if response.status() == StatusCode::ACCEPTED {
            return response;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the gateway never accepted the job");
}

pub async fn read(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        text,
    }
}
