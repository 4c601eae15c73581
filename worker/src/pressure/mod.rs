//! Back-pressure from processors, free of I/O: what a throttling answer asks for
//! (`Retry-After`), how long a throttled delivery waits before its next try, how
//! many deliveries may be in flight (AIMD) and whether deliveries may go out at all
//! (a circuit breaker). The sources apply these decisions; [`crate::gate`] shares
//! them between the sources of a pipeline.
//!
//! Throttling (429, 503, refused connections, timeouts) is the processor saying
//! "not now", not "this event is bad": it never spends a retry of the
//! DeadLetterPolicy, and never leads to a dead letter.

mod aimd;
mod circuit;
mod hold;
mod retry_after;

pub use self::aimd::Aimd;
#[cfg(test)]
pub use self::circuit::OPEN_AFTER;
pub use self::circuit::{Admit, Circuit, State};
pub use self::hold::{MAX_HOLD, hold_delay};
pub use self::retry_after::retry_after;
