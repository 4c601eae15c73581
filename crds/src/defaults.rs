//! The default of every optional field with one, in one table: serde's
//! `default = "..."` names a function, and the CRD schemas show what it returns.

use crate::Duration;

macro_rules! defaults {
    ($($name:ident: $ty:ty = $value:expr;)*) => {
        $(pub(crate) fn $name() -> $ty { $value })*
    };
}

defaults! {
    one: i32 = 1;
    yes: bool = true;

    // EventPipeline
    max_body_bytes: i64 = 1 << 20;
    tolerance: Duration = Duration::lit("5m");
    processor_timeout: Duration = Duration::lit("10s");
    container_port: i32 = 8080;
    container_path: String = "/".into();
    counter: String = "count".into();
    batch_window: Duration = Duration::lit("0s");
    concurrency: i32 = 16;
    delivery_timeout: Duration = Duration::lit("30s");
    idempotency_ttl: Duration = Duration::lit("24h");
    max_replicas: i32 = 10;
    target_depth: i64 = 100;
    target_lag: i64 = 60;
    cooldown: Duration = Duration::lit("5m");
    polling_interval: Duration = Duration::lit("5s");
    sample_ratio: f64 = 1.0;

    // QueueBinding
    visibility_timeout: Duration = Duration::lit("30s");
    wait_time: Duration = Duration::lit("20s");
    sqs_batch_size: i32 = 10;
    stream_batch_size: i32 = 100;
    parallelization_factor: i32 = 1;
    checkpoint_table: String = "eventpipe-checkpoints".into();

    // DeadLetterPolicy
    max_receive_count: i32 = 3;
    retention: Duration = Duration::lit("14d");
    backoff_initial: Duration = Duration::lit("1s");
    backoff_multiplier: f64 = 2.0;
    backoff_max: Duration = Duration::lit("5m");
}
