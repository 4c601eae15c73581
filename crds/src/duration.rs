//! Durations as users write them in manifests: `500ms`, `30s`, `5m`, `2h`, `14d`, `1h30m`.

use std::{borrow::Cow, fmt, str::FromStr};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The pattern the CRD schema enforces; [`Duration::from_str`] accepts exactly this language.
pub const PATTERN: &str = "^([0-9]+(ms|s|m|h|d))+$";

/// A duration kept as the text the user wrote, so manifests round-trip unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Duration {
    text: String,
    value: std::time::Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a duration (use a number and a unit: ms, s, m, h or d, e.g. 30s, 5m, 14d)")]
pub struct InvalidDuration(pub String);

impl Duration {
    pub fn as_std(&self) -> std::time::Duration {
        self.value
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Builds a duration from a literal known to be valid (defaults).
    pub(crate) fn lit(text: &str) -> Self {
        text.parse().expect("valid duration literal")
    }
}

impl FromStr for Duration {
    type Err = InvalidDuration;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidDuration(text.to_string());
        let mut value = std::time::Duration::ZERO;
        let mut rest = text;
        if rest.is_empty() {
            return Err(invalid());
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(invalid)?;
            let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            rest = &rest[digits..];
            let (unit_ms, len) = match rest.as_bytes() {
                [b'm', b's', ..] => (1, 2),
                [b's', ..] => (1_000, 1),
                [b'm', ..] => (60_000, 1),
                [b'h', ..] => (3_600_000, 1),
                [b'd', ..] => (86_400_000, 1),
                _ => return Err(invalid()),
            };
            let ms = n.checked_mul(unit_ms).ok_or_else(invalid)?;
            value = value
                .checked_add(std::time::Duration::from_millis(ms))
                .ok_or_else(invalid)?;
            rest = &rest[len..];
        }
        Ok(Self {
            text: text.to_string(),
            value,
        })
    }
}

impl TryFrom<String> for Duration {
    type Error = InvalidDuration;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Duration> for String {
    fn from(d: Duration) -> Self {
        d.text
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "description": "A duration: a number and a unit (ms, s, m, h, d), e.g. 500ms, 30s, 5m, 2h, 14d."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    #[test]
    fn parses_every_unit_and_combinations() {
        let cases = [
            ("500ms", Std::from_millis(500)),
            ("30s", Std::from_secs(30)),
            ("5m", Std::from_secs(300)),
            ("2h", Std::from_secs(7200)),
            ("14d", Std::from_secs(14 * 86_400)),
            ("1h30m", Std::from_secs(5400)),
            ("1m500ms", Std::from_millis(60_500)),
            ("0s", Std::ZERO),
        ];
        for (text, want) in cases {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.as_std(), want, "{text}");
            assert_eq!(d.to_string(), text);
        }
    }

    #[test]
    fn rejects_what_the_schema_pattern_rejects() {
        for text in [
            "",
            "soon",
            "30",
            "s",
            "1.5s",
            "-1s",
            "30 s",
            "1w",
            "5min",
            "99999999999999999999s",
        ] {
            assert!(
                text.parse::<Duration>().is_err(),
                "{text:?} should be rejected"
            );
        }
    }

    #[test]
    fn deserializes_with_a_clear_error() {
        let err = serde_json::from_str::<Duration>("\"soon\"").unwrap_err();
        assert!(
            err.to_string().contains("\"soon\" is not a duration"),
            "{err}"
        );
    }
}
