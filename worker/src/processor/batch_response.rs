//! Which events of a batch a 2xx response says failed, in Lambda's shape:
//! `{"batchItemFailures": [{"itemIdentifier": "<event id>"}]}`. As Lambda does, an
//! answer naming nothing (no body, no such key, `null` or `[]`) is a complete
//! success, and one that cannot be trusted (malformed JSON, an identifier that is
//! missing, empty or not in the batch) fails the whole batch.

use serde_json::Value;

/// For each id of the batch (in order), whether the response names it as failed;
/// `json` says whether the response declares a JSON body.
pub fn failed_items(body: &[u8], json: bool, ids: &[&str]) -> Result<Vec<bool>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(vec![false; ids.len()]);
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) if json => return Err(format!("malformed JSON response: {e}")),
        // A plain-text answer ("ok") names no failure.
        Err(_) => return Ok(vec![false; ids.len()]),
    };
    let failures = match value.get("batchItemFailures") {
        None | Some(Value::Null) => return Ok(vec![false; ids.len()]),
        Some(Value::Array(failures)) => failures,
        Some(_) => return Err("batchItemFailures is not an array".into()),
    };
    let mut failed = vec![false; ids.len()];
    for (i, f) in failures.iter().enumerate() {
        let id = match f.get("itemIdentifier") {
            Some(Value::String(id)) if !id.is_empty() => id,
            _ => return Err(format!("batchItemFailures[{i}] has no itemIdentifier")),
        };
        let mut found = false;
        for (k, _) in ids.iter().enumerate().filter(|(_, x)| **x == id) {
            failed[k] = true;
            found = true;
        }
        if !found {
            return Err(format!(
                "batchItemFailures[{i}] names {id:?}, which is not in the batch"
            ));
        }
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: &[&str] = &["a", "b", "c"];

    fn failed(body: &str) -> Result<Vec<bool>, String> {
        failed_items(body.as_bytes(), true, IDS)
    }

    #[test]
    fn only_the_named_events_failed() {
        let body = r#"{"batchItemFailures":[{"itemIdentifier":"c"},{"itemIdentifier":"a"}]}"#;
        assert_eq!(failed(body).unwrap(), [true, false, true]);
    }

    #[test]
    fn an_answer_naming_nothing_is_a_complete_success() {
        for body in [
            "",
            "  \n",
            "{}",
            "null",
            r#"{"batchItemFailures":null}"#,
            r#"{"batchItemFailures":[]}"#,
            r#"{"ok":true}"#,
        ] {
            assert_eq!(failed(body).unwrap(), [false; 3], "{body:?}");
        }
        assert_eq!(failed_items(b"ok", false, IDS).unwrap(), [false; 3]);
    }

    #[test]
    fn an_answer_that_cannot_be_trusted_fails_the_batch() {
        let cases = [
            ("ok", "malformed JSON response"),
            (r#"{"batchItemFailures":{}}"#, "not an array"),
            (
                r#"{"batchItemFailures":[{}]}"#,
                "batchItemFailures[0] has no itemIdentifier",
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
                "has no itemIdentifier",
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
                "has no itemIdentifier",
            ),
            (
                r#"{"batchItemFailures":[{"itemId":"a"}]}"#,
                "has no itemIdentifier",
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"z"}]}"#,
                r#"batchItemFailures[1] names "z", which is not in the batch"#,
            ),
        ];
        for (body, want) in cases {
            let err = failed(body).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn an_id_twice_in_a_batch_fails_both() {
        let body = r#"{"batchItemFailures":[{"itemIdentifier":"a"}]}"#;
        assert_eq!(
            failed_items(body.as_bytes(), true, &["a", "b", "a"]).unwrap(),
            [true, false, true]
        );
    }
}
