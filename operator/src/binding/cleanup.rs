//! Deleting what a binding with `deletionPolicy: Delete` created: only queues and
//! tables that carry its uid in their owner tag, never one it adopted or another
//! binding made.

use eventpipe_core::provision::{self, FailureKind, ProvisionError};
use eventpipe_core::resolve;
use eventpipe_crds::{DeletionPolicy, QueueBinding};

use super::clients;
use crate::context::{Context, Error};

/// A queue or table the binding may have created.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Candidate {
    Queue(String),
    Table(String),
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Candidate::Queue(name) => write!(f, "queue {name:?}"),
            Candidate::Table(name) => write!(f, "table {name:?}"),
        }
    }
}

/// What cleanup did with a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Deleted,
    /// Not there: never made, or deleted already.
    Absent,
    /// There, but not tagged as this binding's: adopted, or made by someone else.
    Kept,
}

/// What the binding may have created: with `create: true` its queue or table; the
/// queue's or table's own DLQ (a stream's is made whether or not the table was). A
/// DLQ the policy names may be shared, so it is never one.
fn candidates(b: &QueueBinding) -> Vec<Candidate> {
    let mut found = vec![];
    if let Some(q) = b.spec.sqs.as_ref().filter(|q| q.create) {
        let name = resolve::queue_name(q);
        let dlq = resolve::own_dead_letter_queue(&name);
        found.extend([Candidate::Queue(name), Candidate::Queue(dlq)]);
    }
    if let Some(s) = &b.spec.dynamodb_stream {
        let table = match (&s.table_name, &s.stream_arn) {
            (Some(name), _) => name.clone(),
            (None, arn) => resolve::table_of_stream(arn.as_deref().unwrap_or_default()),
        };
        if s.create {
            found.push(Candidate::Table(table.clone()));
        }
        found.push(Candidate::Queue(resolve::own_dead_letter_queue(&table)));
    }
    found
}

/// Whether a resource whose owner tag is `owner` was created by the binding `uid`;
/// an untagged resource is nobody's, even to a binding without a uid.
fn created_by(owner: Option<&str>, uid: Option<&str>) -> bool {
    matches!((owner, uid), (Some(owner), Some(uid)) if owner == uid)
}

/// Deletes the candidate if its owner tag names the binding `uid`. Tags that cannot
/// be read are an error, never a licence to delete: the finalizer stays and cleanup
/// retries, so a passing failure neither destroys data nor leaks a queue.
async fn remove(
    sqs: &aws_sdk_sqs::Client,
    ddb: &aws_sdk_dynamodb::Client,
    candidate: &Candidate,
    uid: Option<&str>,
) -> Result<Outcome, ProvisionError> {
    let outcome = match candidate {
        Candidate::Queue(name) => remove_queue(sqs, name, uid).await,
        Candidate::Table(name) => remove_table(ddb, name, uid).await,
    };
    match outcome {
        Err(e)
            if matches!(
                e.kind,
                FailureKind::QueueNotFound | FailureKind::TableNotFound
            ) =>
        {
            Ok(Outcome::Absent)
        }
        done => done,
    }
}

async fn remove_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    uid: Option<&str>,
) -> Result<Outcome, ProvisionError> {
    let url = provision::url_of(sqs, name).await?;
    let owner = provision::queue_owner(sqs, &url).await?;
    if !created_by(owner.as_deref(), uid) {
        return Ok(Outcome::Kept);
    }
    let delete = sqs.delete_queue().queue_url(&url).send().await;
    delete.map_err(provision::fail(format!("delete queue {name:?}")))?;
    Ok(Outcome::Deleted)
}

async fn remove_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
    uid: Option<&str>,
) -> Result<Outcome, ProvisionError> {
    let owner = provision::table_owner(ddb, name).await?;
    if !created_by(owner.as_deref(), uid) {
        return Ok(Outcome::Kept);
    }
    let delete = ddb.delete_table().table_name(name).send().await;
    delete.map_err(provision::fail(format!("delete table {name:?}")))?;
    Ok(Outcome::Deleted)
}

/// Deletes what the binding created (`deletionPolicy: Delete`) and says in an Event
/// what it deleted and what it kept.
pub(super) async fn cleanup(b: &QueueBinding, ctx: &Context, ns: &str) -> Result<(), Error> {
    // A binding switched to Retain keeps its finalizer until deleted; it deletes nothing.
    if b.spec.deletion_policy != DeletionPolicy::Delete {
        return Ok(());
    }
    let (sqs, ddb) = clients(b, ctx, ns).await?;
    let uid = b.metadata.uid.as_deref();
    let (mut deleted, mut kept) = (vec![], vec![]);
    for candidate in candidates(b) {
        match remove(&sqs, &ddb, &candidate, uid).await {
            Ok(Outcome::Deleted) => deleted.push(candidate.to_string()),
            Ok(Outcome::Kept) => {
                kept.push(format!("kept {candidate}: not created by this binding"))
            }
            Ok(Outcome::Absent) => {}
            Err(e) => {
                let note = format!("kept {candidate} for now, will retry: {e}");
                ctx.event(b, true, "DeleteFailed", note).await;
                return Err(Error::Aws {
                    what: format!("deleting {candidate}"),
                    message: e.to_string(),
                });
            }
        }
    }
    let mut said = match deleted.is_empty() {
        true => vec!["deleted nothing".to_string()],
        false => vec![format!("deleted {}", deleted.join(", "))],
    };
    said.extend(kept);
    let note = format!("{} (deletionPolicy: Delete)", said.join("; "));
    ctx.event(b, false, "Deleted", note).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_tag_naming_the_binding_makes_it_the_creator() {
        assert!(created_by(Some("b-1"), Some("b-1")));
        assert!(!created_by(Some("b-2"), Some("b-1")));
        assert!(!created_by(None, Some("b-1")));
        assert!(!created_by(None, None), "untagged is nobody's");
        assert!(!created_by(Some("b-1"), None));
    }

    fn binding(spec: serde_json::Value) -> QueueBinding {
        QueueBinding::new("b", serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn candidates_are_what_the_binding_may_have_made() {
        let queue = |n: &str| Candidate::Queue(n.into());
        let sqs = binding(json!({"sqs": {"queueName": "o.fifo", "fifo": true, "create": true}}));
        assert_eq!(candidates(&sqs), [queue("o.fifo"), queue("o-dlq.fifo")]);
        let adopted = binding(json!({"sqs": {"queueName": "o"}}));
        assert_eq!(candidates(&adopted), []);
        let made = binding(json!({"dynamodbStream": {"tableName": "t", "create": true}}));
        assert_eq!(
            candidates(&made),
            [Candidate::Table("t".into()), queue("t-dlq")]
        );
        let arn = "arn:aws:dynamodb:us-east-1:1:table/t/stream/x";
        let found = binding(json!({"dynamodbStream": {"streamArn": arn}}));
        assert_eq!(candidates(&found), [queue("t-dlq")]);
    }
}
