//! `Retry-After` (RFC 9110 section 10.2.3): a number of seconds, or an HTTP date.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDateTime, Utc};

/// The wait a `Retry-After` value asks for at `now`; `None` when it cannot be read.
/// A date in the past asks for no wait.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at: SystemTime = http_date(value)?.into();
    Some(at.duration_since(now).unwrap_or_default())
}

/// The three formats a recipient must accept: IMF-fixdate, RFC 850 and asctime.
fn http_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc2822(value) {
        return Some(d.with_timezone(&Utc));
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
        .map(|d| d.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().into()
    }

    #[test]
    fn seconds_are_read_as_they_are() {
        let now = SystemTime::now();
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
    }

    #[test]
    fn dates_in_every_http_format_are_read_relative_to_now() {
        let now = at("2015-10-21T07:27:30Z");
        let half_minute = Some(Duration::from_secs(30));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            half_minute
        );
        assert_eq!(
            retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now),
            half_minute
        );
        assert_eq!(retry_after("Wed Oct 21 07:28:00 2015", now), half_minute);
    }

    #[test]
    fn a_date_in_the_past_asks_for_no_wait() {
        let now = at("2015-10-21T08:00:00Z");
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn anything_else_is_not_read() {
        let now = SystemTime::now();
        for bad in ["", "-5", "1.5", "soon", "Wed, 99 Oct 2015 07:28:00 GMT"] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }
}
