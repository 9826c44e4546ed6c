//! The runbooks drydock knows, described for people and for forms:
//! `drydock runbooks --json` and the web console's catalogue and run form
//! both show this, so a parameter reads the same everywhere. A secret
//! parameter's default is never described (it would be its value).

use drydock_runtime::catalog::CatalogEntry;
use drydock_runtime::params::{ParamSpec, ParamType};
use drydock_runtime::{Runbook, RunbookOrigin};
use serde::Serialize;
use serde_json::Value;

/// One declared parameter, as a form needs it.
#[derive(Debug, Clone, Serialize)]
pub struct ParamInfo {
    pub name: String,
    /// The declared type (`string`, `int`, `bool`, `list`, `map`,
    /// `duration`, `secret`, `instance`, …).
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    pub required: bool,
    /// The default (never for a secret).
    pub default: Option<Value>,
    /// The values it may take (empty: any of its type).
    pub allowed: Vec<Value>,
    /// A regular expression its value must match.
    pub pattern: Option<String>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// What a value looks like, in words (`an integer`, `true or false`…).
    pub expected: String,
    /// Whether it is a secret: typed, never shown, sealed in the journal.
    pub secret: bool,
}

impl ParamInfo {
    pub fn of(p: &ParamSpec) -> Self {
        let secret = p.kind == ParamType::Secret;
        Self {
            name: p.name.clone(),
            kind: p.kind.to_string(),
            description: p.description.clone(),
            required: p.required,
            default: if secret { None } else { p.default.clone() },
            allowed: if secret {
                Vec::new()
            } else {
                p.allowed.clone()
            },
            pattern: p.pattern.as_ref().map(|r| r.as_str().to_string()),
            min: p.min,
            max: p.max,
            expected: p.kind.expected(),
            secret,
        }
    }
}

/// A runbook of the catalogue, or why it cannot be read.
#[derive(Debug, Clone, Serialize)]
pub struct RunbookInfo {
    /// Its name (absent when it does not parse).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `<bundled>/FILE` or the file's path.
    pub origin: String,
    pub bundled: bool,
    /// A user runbook of the same name hides this bundled one.
    pub shadowed: bool,
    pub params: Vec<ParamInfo>,
    /// Why it cannot be run (it does not parse, or cannot be trusted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunbookInfo {
    /// A runbook that parsed.
    pub fn of(rb: &Runbook, shadowed: bool) -> Self {
        Self {
            name: Some(rb.name.clone()),
            description: Some(rb.description.clone()),
            origin: rb.origin.to_string(),
            bundled: matches!(rb.origin, RunbookOrigin::Bundled(_)),
            shadowed,
            params: rb.params.iter().map(ParamInfo::of).collect(),
            error: None,
        }
    }

    /// An entry of the catalogue, valid or not.
    pub fn of_entry(e: &CatalogEntry) -> Self {
        match &e.runbook {
            Ok(rb) => Self::of(rb, e.shadowed),
            Err(err) => Self {
                name: None,
                description: None,
                origin: e.origin.to_string(),
                bundled: matches!(e.origin, RunbookOrigin::Bundled(_)),
                shadowed: e.shadowed,
                params: Vec::new(),
                error: Some(err.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_parameter_never_shows_its_default_and_others_show_everything() {
        let source = |secret_default: &str| {
            format!(
                r#"runbook(#{{ name: "form", description: "A form.", params: #{{
                     mode: #{{ type: "string", allowed: ["fast", "safe"], default_value: "safe", description: "How." }},
                     count: #{{ type: "int", min: 1, max: 5, default_value: 2 }},
                     token: #{{ type: "secret"{secret_default} }},
                   }} }});"#
            )
        };
        // A runbook may refuse a secret's default outright; either way it
        // is never described.
        let rb = Runbook::parse(
            source(r#", default_value: "hunter2""#),
            RunbookOrigin::Bundled("form.rhai".into()),
        )
        .or_else(|_| Runbook::parse(source(""), RunbookOrigin::Bundled("form.rhai".into())))
        .unwrap();
        let info = RunbookInfo::of(&rb, false);
        assert_eq!(info.name.as_deref(), Some("form"));
        assert!(info.bundled && info.error.is_none());
        let p = |n: &str| info.params.iter().find(|p| p.name == n).unwrap().clone();
        let mode = p("mode");
        assert_eq!(mode.allowed, vec![Value::from("fast"), Value::from("safe")]);
        assert_eq!(mode.default, Some(Value::from("safe")));
        assert_eq!(mode.description, "How.");
        let count = p("count");
        assert_eq!(
            (count.min, count.max, count.kind.as_str()),
            (Some(1), Some(5), "int")
        );
        assert_eq!(count.expected, "an integer");
        let token = p("token");
        assert!(token.secret && token.default.is_none());
        assert!(!serde_json::to_string(&info).unwrap().contains("hunter2"));
    }
}
