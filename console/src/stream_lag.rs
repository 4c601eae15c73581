//! A pipeline's stream lag where no metrics cache has it (locally): the largest
//! iterator age its workers recorded on their leases in the checkpoint table.

use std::path::Path;
use std::time::SystemTime;

use eventpipe_core::{aws, checkpoints};
use eventpipe_crds::Pipeline;

/// The leases of one stream source of a pipeline.
#[derive(Clone)]
pub struct LagSource {
    pub ddb: aws_sdk_dynamodb::Client,
    pub table: String,
    pub pipeline: String,
    pub binding: String,
}

impl LagSource {
    /// The lag in whole seconds; none while no reader has measured one (or the table
    /// does not answer).
    pub async fn read(&self) -> Option<i64> {
        let leases = (checkpoints::leases(&self.ddb, &self.table).await)
            .map_err(|e| tracing::debug!(error = %e, "stream lag not read"))
            .ok()?;
        let mine = checkpoints::of_binding(&leases, &self.pipeline, &self.binding);
        let lag = checkpoints::stream_lag(mine, SystemTime::now())?;
        Some(lag.as_secs() as i64)
    }
}

/// Where the lag of each of `pipeline`'s stream sources is read, with the AWS
/// configuration its QueueBinding asks for.
pub async fn sources(pipeline: &Pipeline, secrets_dir: &Path) -> anyhow::Result<Vec<LagSource>> {
    let mut out = vec![];
    for s in &pipeline.pipeline.spec.sources {
        let binding = pipeline.binding(&s.queue_binding_ref);
        let Some(stream) = &binding.spec.dynamodb_stream else {
            continue;
        };
        let config = aws::config_for(&binding.spec, secrets_dir).await?;
        out.push(LagSource {
            ddb: aws_sdk_dynamodb::Client::new(&config),
            table: stream.checkpoint_table.clone(),
            pipeline: pipeline.name(),
            binding: s.queue_binding_ref.name.clone(),
        });
    }
    Ok(out)
}
