//! Typed runbook parameters: declaration, validation and conversion.
//!
//! Parameters are declared in the runbook's metadata map and validated
//! before an execution is recorded, so a bad value never starts anything.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use serde_json::Value;

use crate::duration::parse_duration;

/// The kinds of value a parameter can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Int,
    Bool,
    List,
    Map,
    Duration,
    /// A string that is sealed in the journal and masked everywhere.
    Secret,
    Resource(ResourceKind),
}

/// Resource ids a parameter can name; checked by shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Instance,
    Volume,
    Snapshot,
    Image,
    Region,
}

impl ResourceKind {
    pub(crate) fn shape(self) -> (&'static str, &'static str) {
        match self {
            Self::Instance => (r"^i-[0-9a-f]{8,17}$", "an instance id like i-0abc1234"),
            Self::Volume => (r"^vol-[0-9a-f]{8,17}$", "a volume id like vol-0abc1234"),
            Self::Snapshot => (r"^snap-[0-9a-f]{8,17}$", "a snapshot id like snap-0abc1234"),
            Self::Image => (r"^img-[0-9a-f]{8,17}$", "an image id like img-0abc1234"),
            Self::Region => (
                r"^[a-z][a-z0-9]*(-[a-z0-9]+)+$",
                "a region name like region-a or eu-west-1",
            ),
        }
    }
}

impl ParamType {
    /// Parses the `type:` field of a parameter declaration.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "string" => Self::String,
            "int" => Self::Int,
            "bool" => Self::Bool,
            "list" => Self::List,
            "map" => Self::Map,
            "duration" => Self::Duration,
            "secret" => Self::Secret,
            "instance" => Self::Resource(ResourceKind::Instance),
            "volume" => Self::Resource(ResourceKind::Volume),
            "snapshot" => Self::Resource(ResourceKind::Snapshot),
            "image" => Self::Resource(ResourceKind::Image),
            "region" => Self::Resource(ResourceKind::Region),
            _ => return None,
        })
    }

    /// Every type name a declaration may use, for error messages.
    pub const NAMES: &'static str =
        "string, int, bool, list, map, duration, secret, instance, volume, snapshot, image, region";

    pub fn expected(self) -> String {
        match self {
            Self::String => "a string".into(),
            Self::Int => "an integer".into(),
            Self::Bool => "true or false".into(),
            Self::List => "a list (JSON array, or comma-separated values)".into(),
            Self::Map => "a map (JSON object)".into(),
            Self::Duration => "a duration like \"90s\", \"5m\" or \"1h30m\"".into(),
            Self::Secret => {
                "a secret: param:NAME (the parameter store), file:PATH, env:VAR or prompt".into()
            }
            Self::Resource(kind) => kind.shape().1.into(),
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::String => "string",
            Self::Int => "int",
            Self::Bool => "bool",
            Self::List => "list",
            Self::Map => "map",
            Self::Duration => "duration",
            Self::Secret => "secret",
            Self::Resource(ResourceKind::Instance) => "instance",
            Self::Resource(ResourceKind::Volume) => "volume",
            Self::Resource(ResourceKind::Snapshot) => "snapshot",
            Self::Resource(ResourceKind::Image) => "image",
            Self::Resource(ResourceKind::Region) => "region",
        };
        f.write_str(name)
    }
}

/// One declared parameter.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: String,
    pub kind: ParamType,
    pub description: String,
    pub required: bool,
    pub default: Option<Value>,
    pub allowed: Vec<Value>,
    pub pattern: Option<Regex>,
    pub min: Option<i64>,
    pub max: Option<i64>,
}

/// A value supplied for a parameter, before validation.
#[derive(Debug, Clone)]
pub enum SuppliedValue {
    /// From the command line (`--param k=v`): converted by the declared type.
    Text(String),
    /// From a params file or a parent runbook: already typed.
    Json(Value),
}

/// One problem with one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub param: String,
    pub message: String,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "parameter `{}`: {}", self.param, self.message)
    }
}

/// Every problem found with the supplied parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamErrors(pub Vec<ParamError>);

impl fmt::Display for ParamErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ParamErrors {}

impl ParamSpec {
    /// Converts and checks one supplied value against this declaration.
    pub fn check(&self, supplied: &SuppliedValue) -> Result<Value, String> {
        if self.kind == ParamType::Secret {
            return self.check_secret(supplied);
        }
        let value = match supplied {
            SuppliedValue::Text(text) => self.convert_text(text)?,
            SuppliedValue::Json(value) => self.convert_json(value)?,
        };
        self.check_constraints(&value)?;
        Ok(value)
    }

    /// A secret is a string; its value never appears in an error.
    fn check_secret(&self, supplied: &SuppliedValue) -> Result<Value, String> {
        let text = match supplied {
            SuppliedValue::Text(t) => t.clone(),
            SuppliedValue::Json(Value::String(t)) => t.clone(),
            SuppliedValue::Json(Value::Object(m))
                if m.contains_key(crate::secrets::SEALED_KEY)
                    || m.contains_key(crate::secrets::PARAM_REF_KEY) =>
            {
                return Ok(Value::Object(m.clone()));
            }
            SuppliedValue::Json(other) => {
                return Err(format!(
                    "got a {}, expected {}",
                    json_kind(other),
                    self.kind.expected()
                ))
            }
        };
        if text.is_empty() {
            return Err(format!(
                "the secret is empty; expected {}",
                self.kind.expected()
            ));
        }
        if !text.starts_with("param:") {
            if let Some(re) = &self.pattern {
                if !re.is_match(&text) {
                    return Err(format!(
                        "the secret does not match /{}/ (its value is not shown)",
                        re.as_str()
                    ));
                }
            }
        }
        Ok(Value::String(text))
    }

    fn mismatch(&self, shown: &str) -> String {
        format!("got {shown}, expected {}", self.kind.expected())
    }

    fn convert_text(&self, text: &str) -> Result<Value, String> {
        let shown = format!("{text:?}");
        match self.kind {
            ParamType::String
            | ParamType::Duration
            | ParamType::Secret
            | ParamType::Resource(_) => self.convert_json(&Value::String(text.to_string())),
            ParamType::Int => text
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| self.mismatch(&shown)),
            ParamType::Bool => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => Ok(Value::Bool(true)),
                "false" | "no" | "0" | "off" => Ok(Value::Bool(false)),
                _ => Err(self.mismatch(&shown)),
            },
            ParamType::List => {
                if text.trim_start().starts_with('[') {
                    let value: Value = serde_json::from_str(text)
                        .map_err(|e| format!("{}: {e}", self.mismatch(&shown)))?;
                    self.convert_json(&value)
                } else if text.trim().is_empty() {
                    Ok(Value::Array(vec![]))
                } else {
                    Ok(Value::Array(
                        text.split(',')
                            .map(|s| Value::String(s.trim().to_string()))
                            .collect(),
                    ))
                }
            }
            ParamType::Map => {
                let value: Value = serde_json::from_str(text)
                    .map_err(|e| format!("{}: {e}", self.mismatch(&shown)))?;
                self.convert_json(&value)
            }
        }
    }

    fn convert_json(&self, value: &Value) -> Result<Value, String> {
        let shown = value.to_string();
        let ok = match (self.kind, value) {
            (ParamType::String, Value::String(_)) => true,
            (ParamType::Int, Value::Number(n)) => n.is_i64(),
            (ParamType::Bool, Value::Bool(_)) => true,
            (ParamType::List, Value::Array(_)) => true,
            (ParamType::Map, Value::Object(_)) => true,
            (ParamType::Duration, Value::String(s)) => {
                parse_duration(s).map_err(|e| format!("got {shown}: {e}"))?;
                true
            }
            (ParamType::Duration, Value::Number(n)) => {
                let secs = n.as_f64().ok_or_else(|| self.mismatch(&shown))?;
                crate::duration::seconds(secs, &shown).map_err(|e| format!("got {shown}: {e}"))?;
                return Ok(Value::String(format!("{secs}s")));
            }
            (ParamType::Secret, Value::String(_)) => true,
            (ParamType::Resource(kind), Value::String(s)) => Regex::new(kind.shape().0)
                .expect("resource shapes are valid regexes")
                .is_match(s),
            _ => false,
        };
        if ok {
            Ok(value.clone())
        } else {
            Err(self.mismatch(&shown))
        }
    }

    fn check_constraints(&self, value: &Value) -> Result<(), String> {
        if !self.allowed.is_empty() && !self.allowed.contains(value) {
            let allowed: Vec<String> = self.allowed.iter().map(Value::to_string).collect();
            return Err(format!(
                "got {value}, expected one of {}",
                allowed.join(", ")
            ));
        }
        if let (Some(re), Value::String(s)) = (&self.pattern, value) {
            if !re.is_match(s) {
                return Err(format!(
                    "got {value}, expected text matching /{}/",
                    re.as_str()
                ));
            }
        }
        if let Some(n) = value.as_i64() {
            if let Some(min) = self.min {
                if n < min {
                    return Err(format!("got {n}, expected at least {min}"));
                }
            }
            if let Some(max) = self.max {
                if n > max {
                    return Err(format!("got {n}, expected at most {max}"));
                }
            }
        }
        Ok(())
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// Validates supplied values against declarations, filling defaults.
/// Reports every problem at once, not just the first.
pub fn resolve_params(
    specs: &[ParamSpec],
    supplied: &BTreeMap<String, SuppliedValue>,
) -> Result<serde_json::Map<String, Value>, ParamErrors> {
    let mut errors = Vec::new();
    let mut resolved = serde_json::Map::new();
    for name in supplied.keys() {
        if !specs.iter().any(|s| &s.name == name) {
            let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            let message = if known.is_empty() {
                "unknown parameter; this runbook takes no parameters".to_string()
            } else {
                format!(
                    "unknown parameter; this runbook takes: {}",
                    known.join(", ")
                )
            };
            errors.push(ParamError {
                param: name.clone(),
                message,
            });
        }
    }
    for spec in specs {
        match supplied.get(&spec.name) {
            Some(value) => match spec.check(value) {
                Ok(v) => {
                    resolved.insert(spec.name.clone(), v);
                }
                Err(message) => errors.push(ParamError {
                    param: spec.name.clone(),
                    message,
                }),
            },
            None => match &spec.default {
                Some(default) => {
                    resolved.insert(spec.name.clone(), default.clone());
                }
                None if spec.required => errors.push(ParamError {
                    param: spec.name.clone(),
                    message: format!(
                        "required but not given; expected {} (pass --param {}=VALUE)",
                        spec.kind.expected(),
                        spec.name
                    ),
                }),
                None => {
                    resolved.insert(spec.name.clone(), Value::Null);
                }
            },
        }
    }
    if errors.is_empty() {
        Ok(resolved)
    } else {
        Err(ParamErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, kind: &str) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            kind: ParamType::parse(kind).unwrap(),
            description: String::new(),
            required: true,
            default: None,
            allowed: vec![],
            pattern: None,
            min: None,
            max: None,
        }
    }

    fn text(s: &str) -> SuppliedValue {
        SuppliedValue::Text(s.into())
    }

    #[test]
    fn converts_each_kind_from_text() {
        let cases = [
            ("string", "hello", Value::from("hello")),
            ("int", "42", Value::from(42)),
            ("bool", "yes", Value::from(true)),
            ("list", "a, b", serde_json::json!(["a", "b"])),
            ("list", "[1,2]", serde_json::json!([1, 2])),
            ("map", r#"{"k":1}"#, serde_json::json!({"k": 1})),
            ("duration", "1h30m", Value::from("1h30m")),
            ("instance", "i-0123abcd", Value::from("i-0123abcd")),
            ("volume", "vol-0123abcd", Value::from("vol-0123abcd")),
            ("image", "img-0123abcd", Value::from("img-0123abcd")),
            ("snapshot", "snap-0123abcd", Value::from("snap-0123abcd")),
            ("region", "region-a", Value::from("region-a")),
        ];
        for (kind, input, want) in cases {
            assert_eq!(spec("p", kind).check(&text(input)).unwrap(), want, "{kind}");
        }
    }

    #[test]
    fn rejects_each_kind_with_what_was_expected() {
        let cases = [
            ("int", "4x2", "an integer"),
            ("bool", "maybe", "true or false"),
            ("map", "[1]", "a map"),
            ("duration", "soon", "90s"),
            ("instance", "vm-1", "instance id"),
            ("volume", "i-0123abcd", "volume id"),
            ("image", "ami-1", "image id"),
            ("region", "Region A", "region name"),
        ];
        for (kind, input, expect) in cases {
            let err = spec("p", kind).check(&text(input)).unwrap_err();
            assert!(err.contains(expect), "{kind}: {err}");
            assert!(err.contains(input), "{kind} names the input: {err}");
        }
    }

    #[test]
    fn reports_all_problems_unknown_and_missing() {
        let specs = vec![spec("a", "int"), spec("b", "string")];
        let mut given = BTreeMap::new();
        given.insert("a".to_string(), text("x"));
        given.insert("zzz".to_string(), text("1"));
        let errs = resolve_params(&specs, &given).unwrap_err();
        let text = errs.to_string();
        assert!(text.contains("parameter `zzz`: unknown parameter; this runbook takes: a, b"));
        assert!(text.contains("parameter `a`: got \"x\", expected an integer"));
        assert!(text.contains("parameter `b`: required but not given"));
    }

    #[test]
    fn allowed_pattern_and_range() {
        let mut s = spec("mode", "string");
        s.allowed = vec![Value::from("fast"), Value::from("safe")];
        assert!(s
            .check(&text("slow"))
            .unwrap_err()
            .contains("one of \"fast\", \"safe\""));
        let mut s = spec("name", "string");
        s.pattern = Some(Regex::new("^[a-z]+$").unwrap());
        assert!(s.check(&text("ABC")).unwrap_err().contains("/^[a-z]+$/"));
        let mut s = spec("n", "int");
        s.min = Some(1);
        s.max = Some(5);
        assert!(s.check(&text("9")).unwrap_err().contains("at most 5"));
        assert_eq!(s.check(&text("3")).unwrap(), Value::from(3));
    }

    #[test]
    fn defaults_fill_and_optional_is_null() {
        let mut a = spec("a", "int");
        a.default = Some(Value::from(7));
        let mut b = spec("b", "string");
        b.required = false;
        let out = resolve_params(&[a, b], &BTreeMap::new()).unwrap();
        assert_eq!(out["a"], Value::from(7));
        assert_eq!(out["b"], Value::Null);
    }
}
