//! AWS Signature Version 4, with the credentials of an SDK configuration: for HTTP
//! deliveries (API Gateway with IAM authorization, Lambda function URLs) and for the
//! SQS calls the worker makes without the SDK.

use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use eventpipe_crds::SigV4;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Credentials this close to expiry are fetched again.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

pub struct Signer {
    service: &'static str,
    region: String,
    provider: SharedCredentialsProvider,
    /// The chain's providers do not cache (the SDK clients do); without this, web
    /// identity credentials would cost an STS call per delivery.
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

impl Signer {
    /// The signer a processor's `sigv4` asks for.
    pub fn new(spec: &SigV4, aws: &SdkConfig) -> anyhow::Result<Self> {
        let Some(region) = spec.region.clone().or(aws.region().map(|r| r.to_string())) else {
            bail!("processor.http.sigv4: no region; set sigv4.region or the worker's AWS_REGION")
        };
        Self::build(spec.service.name(), region, aws, "processor.http.sigv4")
    }

    /// A signer for calls to `service` in the configuration's region.
    pub fn for_service(service: &'static str, aws: &SdkConfig) -> anyhow::Result<Self> {
        let Some(region) = aws.region() else {
            bail!("{service}: no region; set the binding's region or AWS_REGION")
        };
        Self::build(service, region.to_string(), aws, service)
    }

    /// `what` names the signer in errors.
    fn build(
        service: &'static str,
        region: String,
        aws: &SdkConfig,
        what: &str,
    ) -> anyhow::Result<Self> {
        let Some(provider) = aws.credentials_provider() else {
            bail!("{what}: the worker has no AWS credentials to sign with");
        };
        Ok(Self {
            service,
            region,
            provider,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// The headers that sign a POST of `body` to `url` with `headers`.
    pub async fn sign(
        &self,
        url: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> anyhow::Result<HeaderMap> {
        let creds = self.credentials().await?;
        signature_headers(
            &creds,
            &self.region,
            self.service,
            SystemTime::now(),
            url,
            headers,
            body,
        )
    }

    async fn credentials(&self) -> anyhow::Result<Credentials> {
        let mut cached = self.cached.lock().await;
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|at| at > SystemTime::now() + REFRESH_BEFORE)
        };
        if let Some(c) = cached.as_ref().filter(|c| fresh(c)) {
            return Ok(c.clone());
        }
        let c = self
            .provider
            .provide_credentials()
            .await
            .context("AWS credentials for SigV4")?;
        *cached = Some(c.clone());
        Ok(c)
    }
}

/// The SigV4 headers (`authorization`, `x-amz-date`, `x-amz-security-token` with a
/// session) of a POST, signing every header given plus `host`.
pub fn signature_headers(
    creds: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
    url: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> anyhow::Result<HeaderMap> {
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .context("SigV4 parameters")?
        .into();
    // Values that are not text cannot be signed; the server ignores unsigned headers.
    let signed = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
    let request = SignableRequest::new("POST", url, signed, SignableBody::Bytes(body))
        .context("SigV4: the processor URL")?;
    let (instructions, _) = sign(request, &params).context("SigV4")?.into_parts();
    let mut out = HeaderMap::new();
    for (name, value) in instructions.headers() {
        let mut value = HeaderValue::try_from(value).context("SigV4 header")?;
        value.set_sensitive(name.eq_ignore_ascii_case("x-amz-security-token"));
        out.insert(HeaderName::try_from(name).context("SigV4 header")?, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_credentials(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(String::from),
            None,
            "test",
        )
    }

    /// 2015-08-30T12:36:00Z, the time of AWS's SigV4 test suite.
    fn suite_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    /// `post-vanilla` of AWS's SigV4 test suite.
    #[test]
    fn matches_the_aws_test_suite() {
        let h = signature_headers(
            &example_credentials(None),
            "us-east-1",
            "service",
            suite_time(),
            "https://example.amazonaws.com/",
            &HeaderMap::new(),
            b"",
        )
        .unwrap();
        assert_eq!(h["x-amz-date"], "20150830T123600Z");
        assert_eq!(
            h["authorization"],
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
    }

    #[test]
    fn signs_the_request_headers_and_carries_the_session_token() {
        let mut headers = HeaderMap::new();
        headers.insert("ce-id", HeaderValue::from_static("e1"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let h = signature_headers(
            &example_credentials(Some("session")),
            "eu-west-1",
            "lambda",
            suite_time(),
            "https://abc.lambda-url.eu-west-1.on.aws/",
            &headers,
            br#"{"a":1}"#,
        )
        .unwrap();
        let auth = h["authorization"].to_str().unwrap();
        assert!(
            auth.contains("/20150830/eu-west-1/lambda/aws4_request"),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=ce-id;content-type;host;x-amz-date;x-amz-security-token"),
            "{auth}"
        );
        assert_eq!(h["x-amz-security-token"], "session");
        assert!(h["x-amz-security-token"].is_sensitive());
    }
}
