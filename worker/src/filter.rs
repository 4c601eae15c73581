//! EventBridge-style event patterns over the CloudEvent as JSON (attributes,
//! extensions and `data`): exact values, `prefix`, `suffix`, `equals-ignore-case`,
//! `wildcard`, `anything-but`, `numeric` ranges, `exists`, nested fields and `$or`.
//! Every field of a pattern must match; a list matches when any entry does; an array
//! in the event matches when any element does.

use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    fields: Vec<(String, Node)>,
    any_of: Vec<Pattern>,
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Nested(Pattern),
    AnyOf(Vec<Matcher>),
}

#[derive(Clone, Debug, PartialEq)]
enum Matcher {
    Equals(Value),
    Prefix(String),
    Suffix(String),
    EqualsIgnoreCase(String),
    Wildcard(String),
    AnythingBut(Vec<Value>),
    AnythingButPrefix(String),
    AnythingButSuffix(String),
    Numeric(Vec<(Op, f64)>),
    Exists(bool),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A pattern that cannot be used, with the dotted path of the offending part.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("filter.{path}: {message}")]
pub struct PatternError {
    pub path: String,
    pub message: String,
}

fn error(path: &str, message: impl Into<String>) -> PatternError {
    PatternError {
        path: path.to_string(),
        message: message.into(),
    }
}

impl Pattern {
    pub fn compile(pattern: &Map<String, Value>) -> Result<Self, PatternError> {
        compile_object(pattern, "")
    }

    pub fn matches(&self, event: &Value) -> bool {
        let fields = self.fields.iter().all(|(key, node)| {
            let value = event.get(key);
            match node {
                Node::Nested(sub) => sub.matches(value.unwrap_or(&Value::Null)),
                Node::AnyOf(matchers) => matches_value(matchers, value),
            }
        });
        fields && (self.any_of.is_empty() || self.any_of.iter().any(|p| p.matches(event)))
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn compile_object(object: &Map<String, Value>, path: &str) -> Result<Pattern, PatternError> {
    let mut pattern = Pattern {
        fields: vec![],
        any_of: vec![],
    };
    for (key, value) in object {
        let here = join(path, key);
        match (key.as_str(), value) {
            ("$or", Value::Array(options)) => {
                for option in options {
                    let Value::Object(o) = option else {
                        return Err(error(&here, "each $or entry must be a pattern object"));
                    };
                    pattern.any_of.push(compile_object(o, &here)?);
                }
            }
            (_, Value::Object(o)) => pattern
                .fields
                .push((key.clone(), Node::Nested(compile_object(o, &here)?))),
            (_, Value::Array(items)) if !items.is_empty() => {
                let matchers = items
                    .iter()
                    .map(|m| compile_matcher(m, &here))
                    .collect::<Result<_, _>>()?;
                pattern.fields.push((key.clone(), Node::AnyOf(matchers)));
            }
            _ => {
                return Err(error(
                    &here,
                    format!(
                        "must be a list of values or matchers, or a nested pattern, got {value}"
                    ),
                ));
            }
        }
    }
    Ok(pattern)
}

fn compile_matcher(m: &Value, path: &str) -> Result<Matcher, PatternError> {
    let Value::Object(o) = m else {
        return Ok(Matcher::Equals(m.clone()));
    };
    let [(kind, arg)] = o.iter().collect::<Vec<_>>()[..] else {
        return Err(error(
            path,
            format!("a matcher has exactly one key, got {m}"),
        ));
    };
    let text = |what: &str| {
        arg.as_str()
            .map(str::to_string)
            .ok_or_else(|| error(path, format!("{what} needs a string, got {arg}")))
    };
    Ok(match kind.as_str() {
        "prefix" => Matcher::Prefix(text("prefix")?),
        "suffix" => Matcher::Suffix(text("suffix")?),
        "equals-ignore-case" => Matcher::EqualsIgnoreCase(text("equals-ignore-case")?),
        "wildcard" => Matcher::Wildcard(text("wildcard")?),
        "exists" => Matcher::Exists(
            arg.as_bool()
                .ok_or_else(|| error(path, "exists needs true or false"))?,
        ),
        "numeric" => Matcher::Numeric(compile_numeric(arg, path)?),
        "anything-but" => compile_anything_but(arg, path)?,
        other => return Err(error(path, format!("unknown matcher {other:?}"))),
    })
}

fn compile_anything_but(arg: &Value, path: &str) -> Result<Matcher, PatternError> {
    match arg {
        Value::Array(values) => Ok(Matcher::AnythingBut(values.clone())),
        Value::Object(o) => match (o.get("prefix"), o.get("suffix")) {
            (Some(Value::String(p)), None) => Ok(Matcher::AnythingButPrefix(p.clone())),
            (None, Some(Value::String(s))) => Ok(Matcher::AnythingButSuffix(s.clone())),
            _ => Err(error(
                path,
                format!("anything-but takes values, {{prefix}} or {{suffix}}, got {arg}"),
            )),
        },
        literal => Ok(Matcher::AnythingBut(vec![literal.clone()])),
    }
}

fn compile_numeric(arg: &Value, path: &str) -> Result<Vec<(Op, f64)>, PatternError> {
    let bad = || {
        error(
            path,
            format!("numeric needs pairs of operator (=, <, <=, >, >=) and number, got {arg}"),
        )
    };
    let items = arg
        .as_array()
        .filter(|a| !a.is_empty() && a.len() % 2 == 0)
        .ok_or_else(bad)?;
    items
        .chunks(2)
        .map(|pair| {
            let op = match pair[0].as_str() {
                Some("=") => Op::Eq,
                Some("<") => Op::Lt,
                Some("<=") => Op::Le,
                Some(">") => Op::Gt,
                Some(">=") => Op::Ge,
                _ => return Err(bad()),
            };
            Ok((op, pair[1].as_f64().ok_or_else(bad)?))
        })
        .collect()
}

fn matches_value(matchers: &[Matcher], value: Option<&Value>) -> bool {
    match value {
        None => matchers.contains(&Matcher::Exists(false)),
        Some(Value::Array(items)) => {
            matchers.contains(&Matcher::Exists(true))
                || items.iter().any(|x| matchers.iter().any(|m| m.test(x)))
        }
        Some(x) => matchers.iter().any(|m| m.test(x)),
    }
}

impl Matcher {
    fn test(&self, v: &Value) -> bool {
        let s = v.as_str();
        match self {
            Matcher::Equals(want) => equal(want, v),
            Matcher::Prefix(p) => s.is_some_and(|s| s.starts_with(p.as_str())),
            Matcher::Suffix(p) => s.is_some_and(|s| s.ends_with(p.as_str())),
            Matcher::EqualsIgnoreCase(p) => s.is_some_and(|s| s.eq_ignore_ascii_case(p)),
            Matcher::Wildcard(w) => s.is_some_and(|s| wildcard(w, s)),
            Matcher::AnythingBut(values) => !values.iter().any(|x| equal(x, v)),
            Matcher::AnythingButPrefix(p) => s.is_some_and(|s| !s.starts_with(p.as_str())),
            Matcher::AnythingButSuffix(p) => s.is_some_and(|s| !s.ends_with(p.as_str())),
            Matcher::Numeric(bounds) => v
                .as_f64()
                .is_some_and(|n| bounds.iter().all(|(op, b)| op.holds(n, *b))),
            Matcher::Exists(want) => *want,
        }
    }
}

impl Op {
    fn holds(self, n: f64, bound: f64) -> bool {
        match self {
            Op::Eq => n == bound,
            Op::Lt => n < bound,
            Op::Le => n <= bound,
            Op::Gt => n > bound,
            Op::Ge => n >= bound,
        }
    }
}

/// Numbers compare by value (`5` equals `5.0`), everything else exactly.
fn equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// `*` matches any run of characters (EventBridge `wildcard`).
fn wildcard(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pattern(v: Value) -> Pattern {
        Pattern::compile(v.as_object().unwrap()).unwrap()
    }

    fn event() -> Value {
        json!({
            "type": "issue_comment", "source": "/eventpipe/hooks/github",
            "data": {
                "action": "created",
                "repository": {"full_name": "acme/widgets", "stars": 42},
                "labels": ["bug", "p1"],
                "draft": null
            }
        })
    }

    fn check(p: Value, want: bool) {
        assert_eq!(pattern(p.clone()).matches(&event()), want, "{p}");
    }

    #[test]
    fn exact_values_nested_fields_and_and_or_semantics() {
        check(json!({"type": ["issue_comment"]}), true);
        check(json!({"type": ["push", "issue_comment"]}), true);
        check(json!({"type": ["push"]}), false);
        check(
            json!({"type": ["issue_comment"], "data": {"action": ["deleted"]}}),
            false,
        );
        check(
            json!({"data": {"repository": {"full_name": ["acme/widgets"]}}}),
            true,
        );
        check(json!({"data": {"repository": {"stars": [42.0]}}}), true);
        check(json!({"data": {"draft": [null]}}), true);
        check(json!({"data": {"missing": {"deeper": ["x"]}}}), false);
    }

    #[test]
    fn string_matchers() {
        check(
            json!({"data": {"repository": {"full_name": [{"prefix": "acme/"}]}}}),
            true,
        );
        check(
            json!({"data": {"repository": {"full_name": [{"suffix": "/gadgets"}]}}}),
            false,
        );
        check(
            json!({"type": [{"equals-ignore-case": "ISSUE_COMMENT"}]}),
            true,
        );
        check(
            json!({"source": [{"wildcard": "/eventpipe/*/github"}]}),
            true,
        );
        check(
            json!({"source": [{"wildcard": "/eventpipe/*/gitlab"}]}),
            false,
        );
    }

    #[test]
    fn anything_but() {
        check(json!({"type": [{"anything-but": ["push", "ping"]}]}), true);
        check(json!({"type": [{"anything-but": "issue_comment"}]}), false);
        check(
            json!({"type": [{"anything-but": {"prefix": "issue"}}]}),
            false,
        );
        check(
            json!({"type": [{"anything-but": {"suffix": "push"}}]}),
            true,
        );
        check(json!({"data": {"nope": [{"anything-but": "x"}]}}), false);
    }

    #[test]
    fn numeric_ranges() {
        check(
            json!({"data": {"repository": {"stars": [{"numeric": [">", 10, "<=", 42]}]}}}),
            true,
        );
        check(
            json!({"data": {"repository": {"stars": [{"numeric": [">=", 43]}]}}}),
            false,
        );
        check(
            json!({"data": {"repository": {"stars": [{"numeric": ["=", 42]}]}}}),
            true,
        );
        check(json!({"data": {"action": [{"numeric": [">", 0]}]}}), false);
    }

    #[test]
    fn exists_and_arrays() {
        check(json!({"data": {"labels": [{"exists": true}]}}), true);
        check(json!({"data": {"assignee": [{"exists": false}]}}), true);
        check(json!({"data": {"action": [{"exists": false}]}}), false);
        check(json!({"data": {"labels": ["p1"]}}), true);
        check(json!({"data": {"labels": ["p2"]}}), false);
    }

    #[test]
    fn or_groups() {
        check(
            json!({"$or": [{"type": ["push"]}, {"data": {"action": ["created"]}}]}),
            true,
        );
        check(
            json!({"type": ["issue_comment"], "$or": [{"type": ["push"]}, {"data": {"action": ["edited"]}}]}),
            false,
        );
    }

    #[test]
    fn bad_patterns_name_the_field() {
        let cases = [
            (
                json!({"type": "issue_comment"}),
                "filter.type: must be a list of values or matchers",
            ),
            (json!({"type": []}), "filter.type: must be a list"),
            (
                json!({"data": {"n": [{"numeric": [">"]}]}}),
                "filter.data.n: numeric needs pairs",
            ),
            (
                json!({"data": {"n": [{"numeric": ["~", 1]}]}}),
                "filter.data.n: numeric needs pairs",
            ),
            (
                json!({"type": [{"regex": "x"}]}),
                "filter.type: unknown matcher \"regex\"",
            ),
            (
                json!({"type": [{"prefix": "a", "suffix": "b"}]}),
                "filter.type: a matcher has exactly one key",
            ),
            (
                json!({"type": [{"exists": "yes"}]}),
                "filter.type: exists needs true or false",
            ),
            (
                json!({"type": [{"prefix": 5}]}),
                "filter.type: prefix needs a string, got 5",
            ),
            (
                json!({"$or": [1]}),
                "filter.$or: each $or entry must be a pattern object",
            ),
        ];
        for (p, want) in cases {
            let err = Pattern::compile(p.as_object().unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(want), "{err} should start with {want}");
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*.png", "a/b.png"));
        assert!(wildcard("a*b*c", "aXXbYYc"));
        assert!(!wildcard("a*b*c", "aXXcYYb"));
        assert!(wildcard("abc", "abc"));
        assert!(!wildcard("abc", "abcd"));
        assert!(wildcard("a*", "a"));
        assert!(!wildcard("ab*ba", "aba"));
    }
}
