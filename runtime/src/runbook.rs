//! A runbook: its Rhai source and the metadata it declares first.
//!
//! Every runbook starts with a `runbook(#{ ... })` call naming it,
//! describing it and declaring its typed parameters. The metadata is read
//! without running anything else: a restricted engine evaluates the script
//! only up to that call.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use regex::Regex;
use rhai::{Dynamic, Engine, EvalAltResult, Map, Position};
use serde_json::Value;

use crate::params::{ParamSpec, ParamType, SuppliedValue};

/// Where a runbook's source came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunbookOrigin {
    /// Embedded in the drydock binary.
    Bundled(String),
    /// A file on disk.
    File(PathBuf),
}

impl fmt::Display for RunbookOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bundled(file) => write!(f, "<bundled>/{file}"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A parsed runbook, ready to run.
#[derive(Debug, Clone)]
pub struct Runbook {
    pub name: String,
    pub description: String,
    pub params: Vec<ParamSpec>,
    pub source: String,
    pub origin: RunbookOrigin,
    /// For a file: who owns it and what it held when it was loaded.
    pub provenance: Option<crate::provenance::Provenance>,
}

/// A problem with a runbook's source or its metadata, located in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct RunbookError {
    pub origin: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for RunbookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.origin, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.origin, self.message),
            _ => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for RunbookError {}

impl RunbookError {
    pub(crate) fn at(origin: &RunbookOrigin, pos: Position, message: impl Into<String>) -> Self {
        Self {
            origin: origin.to_string(),
            line: pos.line(),
            column: pos.position(),
            message: message.into(),
        }
    }
}

/// The largest runbook file drydock reads.
pub use crate::input_file::MAX_RUNBOOK_BYTES as MAX_SOURCE;

/// SHA-256 of a runbook's source, recorded to notice edits between runs.
pub fn source_digest(source: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(source.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const METADATA_CAPTURED: &str = "drydock: runbook metadata captured";
const EXAMPLE: &str =
    "start the file with runbook(#{ name: \"my-runbook\", description: \"...\", params: #{} });";

impl Runbook {
    /// Parses `source`, checks it compiles and reads its metadata.
    pub fn parse(source: String, origin: RunbookOrigin) -> Result<Self, RunbookError> {
        if source.len() > MAX_SOURCE {
            return Err(RunbookError {
                origin: origin.to_string(),
                line: None,
                column: None,
                message: format!(
                    "the file is {} bytes; a runbook may be at most {MAX_SOURCE} bytes",
                    source.len()
                ),
            });
        }
        let mut engine = Engine::new_raw();
        engine.set_max_expr_depths(64, 32);
        engine
            .compile(&source)
            .map_err(|e| RunbookError::at(&origin, e.position(), e.err_type().to_string()))?;
        let (map, pos) = capture_metadata(&source, &origin)?;
        let mut runbook = Self::from_metadata(map, pos, &origin)?;
        runbook.source = source;
        runbook.origin = origin;
        Ok(runbook)
    }

    fn from_metadata(
        mut map: Map,
        pos: Position,
        origin: &RunbookOrigin,
    ) -> Result<Self, RunbookError> {
        let err = |message: String| RunbookError::at(origin, pos, message);
        let name = take_string(&mut map, "name")
            .map_err(err)?
            .ok_or_else(|| err(format!("runbook metadata has no `name`; {EXAMPLE}")))?;
        if !Regex::new(r"^[a-z0-9][a-z0-9._-]*$")
            .unwrap()
            .is_match(&name)
        {
            return Err(err(format!(
                "runbook name {name:?} must be lowercase letters, digits, `-`, `_` or `.`"
            )));
        }
        let description = take_string(&mut map, "description")
            .map_err(err)?
            .unwrap_or_default();
        let mut params = Vec::new();
        if let Some(declared) = map.remove("params") {
            let declared = declared
                .try_cast::<Map>()
                .ok_or_else(|| err("`params` must be a map of name => #{ type: ... }".into()))?;
            for (param, decl) in declared {
                let decl = decl.try_cast::<Map>().ok_or_else(|| {
                    err(format!(
                        "parameter `{param}` must be declared as #{{ type: \"string\", ... }}"
                    ))
                })?;
                params.push(parse_param(param.to_string(), decl).map_err(err)?);
            }
        }
        if let Some(unknown) = map.keys().next() {
            return Err(err(format!(
                "unknown runbook metadata key `{unknown}`; expected name, description, params"
            )));
        }
        Ok(Self {
            name,
            description,
            params,
            source: String::new(),
            origin: origin.clone(),
            provenance: None,
        })
    }

    /// The file-name-like label used in messages.
    pub fn label(&self) -> String {
        self.origin.to_string()
    }
}

/// Evaluates the script with an engine that knows only `runbook()`, stopping
/// at that call, and returns the metadata map and where it was declared.
fn capture_metadata(source: &str, origin: &RunbookOrigin) -> Result<(Map, Position), RunbookError> {
    let captured: Arc<Mutex<Option<(Map, Position)>>> = Arc::default();
    let mut engine = Engine::new();
    // Reading metadata runs the file's top: bound what it may build, so
    // one hostile file in a runbook directory cannot take drydock down.
    engine.set_max_operations(100_000);
    engine.set_max_string_size(64 * 1024);
    engine.set_max_array_size(10_000);
    engine.set_max_map_size(10_000);
    engine.set_max_call_levels(32);
    engine.set_max_expr_depths(64, 32);
    engine.on_print(|_| {});
    let sink = captured.clone();
    engine.register_fn(
        "runbook",
        move |ctx: rhai::NativeCallContext, meta: Map| -> Result<Dynamic, Box<EvalAltResult>> {
            *sink.lock().unwrap() = Some((meta, ctx.call_position()));
            Err(
                EvalAltResult::ErrorTerminated(METADATA_CAPTURED.into(), ctx.call_position())
                    .into(),
            )
        },
    );
    let result = engine.run(source);
    if let Some(found) = captured.lock().unwrap().take() {
        return Ok(found);
    }
    match result {
        Ok(()) => Err(RunbookError {
            origin: origin.to_string(),
            line: None,
            column: None,
            message: format!("no runbook metadata; {EXAMPLE}"),
        }),
        Err(e) => Err(RunbookError::at(
            origin,
            e.position(),
            format!(
                "the runbook(#{{...}}) declaration must come first, before any other call ({})",
                e.unwrap_inner()
            ),
        )),
    }
}

fn take_string(map: &mut Map, key: &str) -> Result<Option<String>, String> {
    match map.remove(key) {
        None => Ok(None),
        Some(v) if v.is_string() => Ok(Some(v.into_string().unwrap())),
        Some(v) => Err(format!("`{key}` must be a string, got {}", v.type_name())),
    }
}

fn to_json(value: Dynamic) -> Result<Value, String> {
    rhai::serde::from_dynamic::<Value>(&value).map_err(|e| e.to_string())
}

fn parse_param(name: String, mut decl: Map) -> Result<ParamSpec, String> {
    let at = |m: String| format!("parameter `{name}`: {m}");
    let type_name = take_string(&mut decl, "type")
        .map_err(at)?
        .ok_or_else(|| at(format!("no `type`; use one of {}", ParamType::NAMES)))?;
    let kind = ParamType::parse(&type_name).ok_or_else(|| {
        at(format!(
            "unknown type {type_name:?}; use one of {}",
            ParamType::NAMES
        ))
    })?;
    let description = take_string(&mut decl, "description")
        .map_err(at)?
        .unwrap_or_default();
    let pattern = take_string(&mut decl, "pattern")
        .map_err(at)?
        .map(|p| Regex::new(&p).map_err(|e| at(format!("bad `pattern`: {e}"))))
        .transpose()?;
    let allowed = match decl.remove("allowed") {
        None => vec![],
        Some(v) => match to_json(v).map_err(at)? {
            Value::Array(items) => items,
            _ => return Err(at("`allowed` must be a list of values".into())),
        },
    };
    let int_field = |decl: &mut Map, key: &str| -> Result<Option<i64>, String> {
        match decl.remove(key) {
            None => Ok(None),
            Some(v) => v
                .as_int()
                .map(Some)
                .map_err(|_| at(format!("`{key}` must be an integer"))),
        }
    };
    let min = int_field(&mut decl, "min")?;
    let max = int_field(&mut decl, "max")?;
    let default = decl
        .remove("default_value")
        .or_else(|| decl.remove("default"))
        .map(to_json)
        .transpose()
        .map_err(at)?;
    let required = match decl.remove("required") {
        None => default.is_none(),
        Some(v) => v
            .as_bool()
            .map_err(|_| at("`required` must be true or false".into()))?,
    };
    if let Some(unknown) = decl.keys().next() {
        return Err(at(format!(
            "unknown key `{unknown}`; expected type, description, default_value, required, allowed, pattern, min, max"
        )));
    }
    if kind == ParamType::Secret {
        let reference = default
            .as_ref()
            .map(|d| d.as_str().is_some_and(|s| s.starts_with("param:")));
        if reference == Some(false) {
            return Err(at(
                "a secret's default_value must name a stored parameter (\"param:NAME\"), not hold the secret itself: runbook files are not secret"
                    .into(),
            ));
        }
        if !allowed.is_empty() {
            return Err(at(
                "a secret cannot list `allowed` values: they would be the secrets".into(),
            ));
        }
    }
    let spec = ParamSpec {
        name: name.clone(),
        kind,
        description,
        required,
        default: None,
        allowed,
        pattern,
        min,
        max,
    };
    for value in &spec.allowed {
        spec.check(&SuppliedValue::Json(value.clone()))
            .map_err(|m| at(format!("allowed value does not fit the type: {m}")))?;
    }
    if let Some(d) = &default {
        spec.check(&SuppliedValue::Json(d.clone()))
            .map_err(|m| at(format!("default does not fit the declaration: {m}")))?;
    }
    Ok(ParamSpec { default, ..spec })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Runbook, RunbookError> {
        Runbook::parse(src.to_string(), RunbookOrigin::File("t.rhai".into()))
    }

    #[test]
    fn reads_metadata_without_running_the_body() {
        let rb = parse(
            r#"
            runbook(#{
                name: "fix-it",
                description: "Fixes it",
                params: #{
                    count: #{ type: "int", default_value: 3, min: 1 },
                    target: #{ type: "instance", description: "the sick one" },
                },
            });
            this_function_does_not_exist();
            "#,
        )
        .unwrap();
        assert_eq!(rb.name, "fix-it");
        assert_eq!(rb.params.len(), 2);
        let count = rb.params.iter().find(|p| p.name == "count").unwrap();
        assert!(!count.required);
        assert_eq!(count.default, Some(Value::from(3)));
    }

    #[test]
    fn syntax_errors_have_file_line_column() {
        let err = parse("runbook(#{ name: \"x\" });\nlet a = ;\n").unwrap_err();
        assert_eq!(err.origin, "t.rhai");
        assert_eq!(err.line, Some(2));
        assert!(err.column.is_some());
        assert!(err.to_string().starts_with("t.rhai:2:"));
    }

    #[test]
    fn metadata_problems_are_named() {
        let cases = [
            ("let x = 1;", "no runbook metadata"),
            ("runbook(#{ description: \"d\" });", "no `name`"),
            ("runbook(#{ name: \"Bad Name\" });", "must be lowercase"),
            ("runbook(#{ name: \"a\", params: #{ p: #{ type: \"float\" } } });", "unknown type \"float\""),
            ("runbook(#{ name: \"a\", params: #{ p: #{ type: \"int\", default_value: \"x\" } } });", "default does not fit"),
            ("runbook(#{ name: \"a\", params: #{ p: #{ type: \"string\", pattern: \"(\" } } });", "bad `pattern`"),
            ("runbook(#{ name: \"a\", colour: 1 });", "unknown runbook metadata key `colour`"),
            ("sh(\"rm -rf /\"); runbook(#{ name: \"a\" });", "must come first"),
        ];
        for (src, want) in cases {
            let err = parse(src).unwrap_err().to_string();
            assert!(err.contains(want), "{src}: {err}");
        }
    }
}
