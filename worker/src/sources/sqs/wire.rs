//! ReceiveMessage and DeleteMessageBatch, the two calls a busy queue makes for every
//! few messages, spoken directly in SQS's JSON protocol: signed with the binding's
//! credentials, sent on a pooled HTTP client, read with serde. The SDK's per-request
//! machinery (interceptors, orchestration, its own JSON reader) took a fifth of the
//! worker's CPU in `make bench`; every other SQS call stays on the SDK.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use aws_types::service_config::ServiceConfigKey;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::Uri;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::http_client::{self, HttpClient, HttpError};
use crate::sigv4::Signer;

const CONTENT: &str = "application/x-amz-json-1.0";
/// Tries per call; transport errors, throttling and server errors are tried again.
const ATTEMPTS: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// Idle connections kept to the endpoint (SQS keeps them open; moto closes each).
const POOLED: usize = 16;
/// Beyond a long poll's wait, how long an answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Transport(#[from] HttpError),
    #[error("{code}: {message} (HTTP {status})")]
    Service {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unreadable answer: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("signing: {0:#}")]
    Sign(anyhow::Error),
}

impl WireError {
    /// Worth another try: the connection failed, or SQS is busy or failing.
    fn transient(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Service { status, code, .. } => {
                *status >= 500 || *status == 429 || code.contains("Throttl")
            }
            Self::Decode(_) | Self::Sign(_) => false,
        }
    }
}

/// What a receive asks for.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Receive<'a> {
    pub queue_url: &'a str,
    pub max_number_of_messages: i32,
    pub wait_time_seconds: i32,
    pub visibility_timeout: i32,
    pub message_system_attribute_names: &'a [&'a str],
    pub message_attribute_names: &'a [&'a str],
}

/// A delete entry SQS could not carry out.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Failed {
    pub id: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

pub struct Wire {
    http: HttpClient,
    /// Parsed once: every request is posted to it and signed for it.
    endpoint: Uri,
    url: String,
    signer: Signer,
}

impl Wire {
    /// Calls to where the SDK would send this configuration's SQS calls.
    pub async fn new(aws: &SdkConfig) -> anyhow::Result<Self> {
        let endpoint = endpoint(aws).await?;
        let endpoint = http_client::uri(&endpoint)
            .map_err(|e| anyhow::anyhow!("the SQS endpoint {endpoint:?}: {e}"))?;
        Ok(Self {
            http: HttpClient::new(POOLED)?,
            url: endpoint.to_string(),
            endpoint,
            signer: Signer::for_service("sqs", aws)?,
        })
    }

    /// The messages of one receive, as the SDK would have read them.
    pub async fn receive(&self, r: &Receive<'_>) -> Result<Vec<Message>, WireError> {
        let wait = Duration::from_secs(r.wait_time_seconds.max(0) as u64);
        let body = serde_json::to_vec(r)?;
        let answer = self.call("ReceiveMessage", body, wait).await?;
        messages(&answer)
    }

    /// Deletes up to ten messages by receipt handle; the entries SQS refused.
    pub async fn delete(&self, url: &str, receipts: &[String]) -> Result<Vec<Failed>, WireError> {
        let body = serde_json::to_vec(&delete_request(url, receipts))?;
        let answer = self
            .call("DeleteMessageBatch", body, Duration::ZERO)
            .await?;
        Ok(serde_json::from_slice::<DeleteAnswer>(&answer)?.failed)
    }

    /// One action, tried again while its failure is transient.
    async fn call(&self, action: &str, body: Vec<u8>, wait: Duration) -> Result<Bytes, WireError> {
        let mut attempt = 1;
        loop {
            match self.attempt(action, &body, wait).await {
                Err(e) if e.transient() && attempt < ATTEMPTS => {
                    tracing::warn!(action, attempt, error = %e, "SQS call failed; trying again");
                    let pause = FIRST_RETRY * 2u32.pow(attempt - 1);
                    tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64())).await;
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }

    async fn attempt(&self, action: &str, body: &[u8], wait: Duration) -> Result<Bytes, WireError> {
        let mut headers = HeaderMap::with_capacity(6);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT));
        headers.insert(TARGET.clone(), target(action));
        let signed =
            (self.signer.sign(&self.url, &headers, body).await).map_err(WireError::Sign)?;
        headers.extend(signed);
        let timeout = wait + ANSWER_TIMEOUT;
        let answer = (self.http)
            .post(&self.endpoint, headers, body.to_vec(), timeout)
            .await?;
        match answer.status.as_u16() {
            200..=299 => Ok(answer.body),
            status => Err(service_error(status, &answer.body)),
        }
    }
}

static TARGET: HeaderName = HeaderName::from_static("x-amz-target");

fn target(action: &str) -> HeaderValue {
    HeaderValue::try_from(format!("AmazonSQS.{action}")).expect("action names are ASCII")
}

/// The SDK's endpoint for SQS: an override (the binding's `endpoint`,
/// `AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL`), else the region's.
async fn endpoint(aws: &SdkConfig) -> anyhow::Result<String> {
    let params = Params::builder()
        .set_region(aws.region().map(|r| r.to_string()))
        .use_fips(aws.use_fips().unwrap_or(false))
        .use_dual_stack(aws.use_dual_stack().unwrap_or(false))
        .set_endpoint(endpoint_override(aws))
        .build()?;
    let resolved = DefaultResolver::new().resolve_endpoint(&params).await;
    let resolved = resolved.map_err(|e| anyhow::anyhow!("the SQS endpoint: {e}"))?;
    Ok(resolved.url().to_string())
}

/// The override, looked up as the SDK's SQS client looks it up.
fn endpoint_override(aws: &SdkConfig) -> Option<String> {
    let given = aws.endpoint_url().map(str::to_string);
    if aws.get_origin("endpoint_url").is_client_config() {
        return given;
    }
    let key = ServiceConfigKey::builder()
        .service_id("SQS")
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build()
        .ok()?;
    (aws.service_config())
        .and_then(|c| c.load_config(key))
        .or(given)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteRequest<'a> {
    queue_url: &'a str,
    entries: Vec<DeleteEntry<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteEntry<'a> {
    id: String,
    receipt_handle: &'a str,
}

/// Entries are numbered in order, which is how a refusal names its message.
fn delete_request<'a>(url: &'a str, receipts: &'a [String]) -> DeleteRequest<'a> {
    let entries = (receipts.iter().enumerate())
        .map(|(i, r)| DeleteEntry {
            id: i.to_string(),
            receipt_handle: r,
        })
        .collect();
    DeleteRequest {
        queue_url: url,
        entries,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteAnswer {
    #[serde(default)]
    failed: Vec<Failed>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveAnswer {
    #[serde(default)]
    messages: Vec<Wired>,
}

/// A message as the JSON protocol carries it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Wired {
    message_id: Option<String>,
    receipt_handle: Option<String>,
    body: Option<String>,
    #[serde(default)]
    attributes: HashMap<String, String>,
    #[serde(default)]
    message_attributes: HashMap<String, WiredAttribute>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WiredAttribute {
    data_type: String,
    string_value: Option<String>,
    binary_value: Option<String>,
}

/// A receive's answer, as SDK messages (what the rest of the source reads).
fn messages(answer: &[u8]) -> Result<Vec<Message>, WireError> {
    let received: ReceiveAnswer = serde_json::from_slice(answer)?;
    Ok(received.messages.into_iter().map(message).collect())
}

fn message(m: Wired) -> Message {
    let attributes = (m.attributes.into_iter())
        .map(|(k, v)| (MessageSystemAttributeName::from(k.as_str()), v))
        .collect();
    let message_attributes = (m.message_attributes.into_iter())
        .filter_map(|(k, a)| attribute(&k, a).map(|a| (k, a)))
        .collect();
    Message::builder()
        .set_message_id(m.message_id)
        .set_receipt_handle(m.receipt_handle)
        .set_body(m.body)
        .set_attributes(Some(attributes))
        .set_message_attributes(Some(message_attributes))
        .build()
}

/// A message attribute; one that cannot be read is left out (with a warning) rather
/// than failing the receive, whose messages would then never be delivered.
fn attribute(name: &str, a: WiredAttribute) -> Option<MessageAttributeValue> {
    let binary = match a.binary_value.map(|b| BASE64.decode(b)) {
        Some(Ok(b)) => Some(Blob::new(b)),
        Some(Err(e)) => {
            tracing::warn!(attribute = name, error = %e, "left out a message attribute that is not base64");
            return None;
        }
        None => None,
    };
    let built = MessageAttributeValue::builder()
        .data_type(a.data_type)
        .set_string_value(a.string_value)
        .set_binary_value(binary)
        .build();
    built.ok()
}

/// An error answer: `{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": …}`.
fn service_error(status: u16, answer: &[u8]) -> WireError {
    let a: serde_json::Value = serde_json::from_slice(answer).unwrap_or_default();
    let text = |key: &str| {
        a.get(key)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    let code = text("__type").and_then(|t| t.rsplit('#').next());
    let message = text("message").or(text("Message"));
    WireError::Service {
        status,
        code: code.unwrap_or("UnknownError").into(),
        message: match message {
            Some(m) => m.into(),
            None => String::from_utf8_lossy(answer).chars().take(200).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receive_answer_reads_as_sdk_messages() {
        let answer = br#"{"Messages":[{"MessageId":"m1","ReceiptHandle":"r1","MD5OfBody":"x",
            "Body":"{\"a\":1}","Attributes":{"ApproximateReceiveCount":"2","MessageGroupId":"g"},
            "MessageAttributes":{"traceparent":{"DataType":"String","StringValue":"00-ab-cd-01"},
            "raw":{"DataType":"Binary","BinaryValue":"aGk="}}}]}"#;
        let got = messages(answer).unwrap();
        assert_eq!(got.len(), 1);
        let m = &got[0];
        assert_eq!(m.message_id(), Some("m1"));
        assert_eq!(m.receipt_handle(), Some("r1"));
        assert_eq!(m.body(), Some(r#"{"a":1}"#));
        let system = m.attributes().unwrap();
        assert_eq!(
            system[&MessageSystemAttributeName::ApproximateReceiveCount],
            "2"
        );
        assert_eq!(system[&MessageSystemAttributeName::MessageGroupId], "g");
        let attrs = m.message_attributes().unwrap();
        assert_eq!(attrs["traceparent"].string_value(), Some("00-ab-cd-01"));
        assert_eq!(attrs["raw"].binary_value().unwrap().as_ref(), b"hi");
    }

    #[test]
    fn an_empty_receive_has_no_messages() {
        assert!(messages(b"{}").unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_attribute_is_left_out_and_its_message_kept() {
        let answer = br#"{"Messages":[{"MessageId":"m1","ReceiptHandle":"r1","Body":"b",
            "MessageAttributes":{"raw":{"DataType":"Binary","BinaryValue":"%%"},
            "kept":{"DataType":"String","StringValue":"v"}}}]}"#;
        let got = messages(answer).unwrap();
        assert_eq!(got[0].body(), Some("b"));
        let attrs = got[0].message_attributes().unwrap();
        assert!(!attrs.contains_key("raw"));
        assert_eq!(attrs["kept"].string_value(), Some("v"));
    }

    #[test]
    fn an_unreadable_answer_is_an_error() {
        assert!(matches!(messages(b"<html>"), Err(WireError::Decode(_))));
    }

    #[test]
    fn a_delete_names_entries_by_position() {
        let receipts = vec!["r0".to_string(), "r1".to_string()];
        let body = serde_json::to_value(delete_request("https://q/1/a", &receipts)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"QueueUrl": "https://q/1/a", "Entries": [
                {"Id": "0", "ReceiptHandle": "r0"}, {"Id": "1", "ReceiptHandle": "r1"}]})
        );
    }

    #[test]
    fn a_receive_asks_in_the_protocol_s_names() {
        let r = Receive {
            queue_url: "u",
            max_number_of_messages: 10,
            wait_time_seconds: 20,
            visibility_timeout: 30,
            message_system_attribute_names: &["ApproximateReceiveCount"],
            message_attribute_names: &["All"],
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"QueueUrl": "u", "MaxNumberOfMessages": 10, "WaitTimeSeconds": 20,
                "VisibilityTimeout": 30, "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
                "MessageAttributeNames": ["All"]})
        );
    }

    #[test]
    fn error_answers_name_their_code() {
        let e = service_error(
            400,
            br#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#,
        );
        assert_eq!(
            e.to_string(),
            "QueueDoesNotExist: The specified queue does not exist. (HTTP 400)"
        );
        assert!(!e.transient());
        assert!(
            service_error(400, br#"{"__type":"com.amazonaws.sqs#RequestThrottled"}"#).transient()
        );
        let e = service_error(503, b"Service Unavailable");
        assert!(e.transient());
        assert_eq!(
            e.to_string(),
            "UnknownError: Service Unavailable (HTTP 503)"
        );
    }

    #[tokio::test]
    async fn the_endpoint_is_the_override_or_the_region_s() {
        let config = |endpoint: Option<&str>| {
            let b = SdkConfig::builder()
                .region(aws_config::Region::new("eu-west-1"))
                .behavior_version(aws_config::BehaviorVersion::latest());
            match endpoint {
                Some(e) => b.endpoint_url(e).build(),
                None => b.build(),
            }
        };
        assert_eq!(
            endpoint(&config(None)).await.unwrap(),
            "https://sqs.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            endpoint(&config(Some("http://127.0.0.1:4566")))
                .await
                .unwrap(),
            "http://127.0.0.1:4566"
        );
    }

    fn receive_from(url: &str) -> Receive<'_> {
        Receive {
            queue_url: url,
            max_number_of_messages: 10,
            wait_time_seconds: 1,
            visibility_timeout: 30,
            message_system_attribute_names: &["ApproximateReceiveCount", "MessageGroupId"],
            message_attribute_names: &["All"],
        }
    }

    #[tokio::test]
    async fn receives_and_deletes_on_moto_with_what_the_sdk_reads() {
        let moto = eventpipe_testkit::Moto::start();
        let sqs = moto.sqs();
        let queue = sqs.create_queue().queue_name("w.fifo");
        let queue = queue.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
        let url = queue.send().await.unwrap().queue_url.unwrap();
        let text = MessageAttributeValue::builder()
            .data_type("String")
            .string_value("00-ab");
        let raw = MessageAttributeValue::builder().data_type("Binary");
        let raw = raw.binary_value(Blob::new(b"\x00hi".to_vec()));
        (sqs.send_message()
            .queue_url(&url)
            .message_body(r#"{"a":"é"}"#))
        .message_group_id("g1")
        .message_deduplication_id("d1")
        .message_attributes("traceparent", text.build().unwrap())
        .message_attributes("raw", raw.build().unwrap())
        .send()
        .await
        .unwrap();
        let wire = Wire::new(&moto.sdk_config()).await.unwrap();

        let got = wire.receive(&receive_from(&url)).await.unwrap();
        assert_eq!(got.len(), 1);
        let m = &got[0];
        assert_eq!(m.body(), Some(r#"{"a":"é"}"#));
        let system = m.attributes().unwrap();
        assert_eq!(system[&MessageSystemAttributeName::MessageGroupId], "g1");
        assert_eq!(
            system[&MessageSystemAttributeName::ApproximateReceiveCount],
            "1"
        );
        let attrs = m.message_attributes().unwrap();
        assert_eq!(attrs["traceparent"].string_value(), Some("00-ab"));
        assert_eq!(attrs["raw"].binary_value().unwrap().as_ref(), b"\x00hi");

        let receipts = vec![
            m.receipt_handle().unwrap().to_string(),
            "not-a-receipt".into(),
        ];
        let failed = wire.delete(&url, &receipts).await.unwrap();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].id, "1");
        let visible = sqs.get_queue_attributes().queue_url(&url);
        let visible = visible.attribute_names(aws_sdk_sqs::types::QueueAttributeName::All);
        let attrs = visible.send().await.unwrap().attributes.unwrap();
        let count = |a| attrs[&a].parse::<u32>().unwrap();
        use aws_sdk_sqs::types::QueueAttributeName as Q;
        assert_eq!(count(Q::ApproximateNumberOfMessages), 0);
        assert_eq!(count(Q::ApproximateNumberOfMessagesNotVisible), 0);
    }

    #[tokio::test]
    async fn a_missing_queue_is_an_error_named_by_its_code() {
        let moto = eventpipe_testkit::Moto::start();
        let wire = Wire::new(&moto.sdk_config()).await.unwrap();
        let url = format!("{}/123456789012/missing", moto.endpoint());
        let e = wire.receive(&receive_from(&url)).await.unwrap_err();
        assert!(
            matches!(&e, WireError::Service { status: 400, code, .. } if code == "QueueDoesNotExist"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_fails_after_its_tries() {
        let closed = format!("http://127.0.0.1:{}", eventpipe_testkit::free_port());
        let config = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&closed)
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::for_tests(),
                ),
            )
            .build();
        let wire = Wire::new(&config).await.unwrap();
        let e = wire
            .delete(&format!("{closed}/1/q"), &["r".into()])
            .await
            .unwrap_err();
        assert!(matches!(e, WireError::Transport(_)), "{e}");
        assert!(e.to_string().contains("onnect"), "says why: {e}");
    }

    #[tokio::test]
    async fn without_credentials_there_is_no_wire() {
        let config = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let e = Wire::new(&config).await.err().unwrap();
        assert!(e.to_string().contains("no AWS credentials"), "{e}");
    }
}
