//! Event rules, the parts every front end shares: reading a rule's event
//! spec (`instance.status impaired`), matching events, filling a rule's
//! parameters from the event (`{{event.instance}}`,
//! `{{event.data.line}}`), and checking a rule against its runbook when
//! it is added, so that a rule never starts a run its runbook would
//! refuse for a reason known in advance.

use std::collections::BTreeMap;

use drydock_runtime::journal::rules::RuleRecord;
use drydock_runtime::journal::stream::{kind, StreamEvent};
use drydock_runtime::params::{resolve_params, ParamType, SuppliedValue};
use drydock_runtime::runbook::Runbook;
use serde_json::Value;

use crate::OpsError;

/// The event type console-pattern rules follow.
pub const CONSOLE_EVENT: &str = kind::INSTANCE_CONSOLE;

/// The field a value after the type stands for (`instance.status
/// impaired` means `data.status = impaired`).
fn main_field(event_type: &str) -> Option<&'static str> {
    match event_type {
        kind::INSTANCE_STATE => Some("data.state"),
        kind::INSTANCE_STATUS => Some("data.status"),
        kind::INSTANCE_RECOVERY => Some("data.outcome"),
        kind::EXECUTION_ENDED => Some("data.state"),
        kind::APPROVAL_DECIDED => Some("data.state"),
        kind::SCHEDULE_SLOT => Some("data.state"),
        kind::DRILL_VERDICT => Some("data.verdict"),
        _ => None,
    }
}

/// Reads `TYPE [VALUE]` and `KEY=VALUE` matches into the rule's type and
/// matches.
pub fn event_spec(
    spec: &str,
    matches: &[String],
) -> Result<(String, Vec<(String, String)>), OpsError> {
    let mut words = spec.split_whitespace();
    let ty = words.next().unwrap_or("").to_string();
    if !kind::is_known(&ty) {
        return Err(OpsError::Usage(format!(
            "--event `{spec}`: `{ty}` is not an event type; the types are {}, runbook.NAME (a runbook's own) or their first part (e.g. instance)",
            kind::ALL.join(", ")
        )));
    }
    let mut out = Vec::new();
    if let Some(value) = words.next() {
        let Some(field) = main_field(&ty) else {
            return Err(OpsError::Usage(format!(
                "--event `{spec}`: {ty} takes no value after its type; match fields with --match KEY=VALUE"
            )));
        };
        out.push((field.to_string(), value.to_string()));
    }
    if words.next().is_some() {
        return Err(OpsError::Usage(format!(
            "--event `{spec}` is TYPE [VALUE], like `instance.status impaired`; more fields go in --match KEY=VALUE"
        )));
    }
    for m in matches {
        let Some((k, v)) = m.split_once('=') else {
            return Err(OpsError::Usage(format!(
                "--match `{m}` is not KEY=VALUE (like instance=i-0abc or data.reason=…)"
            )));
        };
        let k = k.trim();
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(OpsError::Usage(format!(
                "--match `{m}`: `{k}` is not a field of an event (type, instance, execution, region, detail, data.…)"
            )));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok((ty, out))
}

/// A field of an event by its dotted path, as text.
fn field(event: &Value, path: &str) -> Option<String> {
    let mut v = event;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    Some(match v {
        Value::String(s) => s.clone(),
        Value::Null => return None,
        other => other.to_string(),
    })
}

/// Whether `event` is one `rule` follows.
pub fn matches(rule: &RuleRecord, event: &StreamEvent) -> bool {
    let ty = &event.kind;
    let type_ok = *ty == rule.event_type
        || ty
            .strip_prefix(rule.event_type.as_str())
            .is_some_and(|r| r.starts_with('.'));
    if !type_ok {
        return false;
    }
    // A console rule follows the console events its own pattern raised.
    if rule.console_pattern.is_some() && event.data["rule"] != rule.name.as_str() {
        return false;
    }
    let v = serde_json::to_value(event).unwrap_or(Value::Null);
    rule.matches
        .iter()
        .all(|(k, want)| field(&v, k).as_deref() == Some(want.as_str()))
}

/// Fields of an event the host sets (a guest cannot choose them): the
/// only ones a placeholder may use in a parameter that is not plain text.
const HOST_SET: &[&str] = &["instance", "execution", "region", "seq", "type", "at"];

/// The `{{…}}` paths of a template (`event.` removed).
fn placeholders(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("{{") {
        let Some(end) = rest[at..].find("}}") else {
            break;
        };
        let path = rest[at + 2..at + end].trim();
        out.push(path.strip_prefix("event.").unwrap_or(path).to_string());
        rest = &rest[at + end + 2..];
    }
    out
}

/// Whether a parameter value holds a `{{…}}` placeholder.
fn templated(v: &Value) -> bool {
    matches!(v, Value::String(s) if s.contains("{{"))
}

/// Fills `{{event.PATH}}` placeholders of text parameters from `event`;
/// text values are converted by the runbook's declared types, as on a
/// command line.
pub fn render_params(
    params: &serde_json::Map<String, Value>,
    event: &StreamEvent,
) -> Result<BTreeMap<String, SuppliedValue>, String> {
    let ev = serde_json::to_value(event).unwrap_or(Value::Null);
    let mut out = BTreeMap::new();
    for (k, v) in params {
        let value = match v {
            Value::String(s) if s.contains("{{") => {
                let mut text = String::new();
                let mut rest = s.as_str();
                while let Some(at) = rest.find("{{") {
                    text.push_str(&rest[..at]);
                    let Some(end) = rest[at..].find("}}") else {
                        return Err(format!(
                            "parameter {k}: `{s}` opens {{{{ without closing it"
                        ));
                    };
                    let path = rest[at + 2..at + end].trim();
                    let Some(path) = path.strip_prefix("event.") else {
                        return Err(format!(
                            "parameter {k}: `{{{{{path}}}}}` is not a field of the event; write {{{{event.instance}}}} or {{{{event.data.…}}}}"
                        ));
                    };
                    let Some(val) = field(&ev, path) else {
                        return Err(format!(
                            "parameter {k}: the event has no `{path}` (event {} of type {})",
                            event.seq, event.kind
                        ));
                    };
                    text.push_str(&val);
                    rest = &rest[at + end + 2..];
                }
                text.push_str(rest);
                // Filled from the event, it must not become a reference
                // to the parameter store (the prefix would be the
                // guest's, e.g. from a console line).
                if text.trim_start().starts_with("param:") {
                    return Err(format!(
                        "parameter {k}: the value filled from event {} starts with param:, which would read the parameter store; refused",
                        event.seq
                    ));
                }
                SuppliedValue::Text(text)
            }
            Value::String(s) => SuppliedValue::Text(s.clone()),
            other => SuppliedValue::Json(other.clone()),
        };
        out.insert(k.clone(), value);
    }
    Ok(out)
}

/// Checks a rule's parameters against its runbook: every name declared,
/// every required one given, every literal value of the declared type
/// (placeholders are checked when the rule fires).
pub fn check_params(
    runbook: &Runbook,
    params: &serde_json::Map<String, Value>,
) -> Result<(), OpsError> {
    let literal: BTreeMap<String, SuppliedValue> = params
        .iter()
        .filter(|(_, v)| !templated(v))
        .map(|(k, v)| {
            let supplied = match v {
                // As typed on a command line: converted by the declared type.
                Value::String(s) => SuppliedValue::Text(s.clone()),
                other => SuppliedValue::Json(other.clone()),
            };
            (k.clone(), supplied)
        })
        .collect();
    let mut errors = Vec::new();
    // What an event may fill in: plain text anywhere; a value of another
    // type (an instance id, a list…) only from fields the host sets, so
    // text a guest printed cannot choose which instance a run acts on, or
    // the shape of a list.
    for (k, v) in params {
        let Value::String(text) = v else { continue };
        if !text.contains("{{") {
            continue;
        }
        let Some(spec) = runbook.params.iter().find(|p| &p.name == k) else {
            continue;
        };
        if spec.kind == ParamType::Secret || text.trim_start().starts_with("param:") {
            errors.push(format!(
                "{k}: a secret or a param: reference cannot be filled from an event; name a stored parameter (param:NAME) without placeholders"
            ));
            continue;
        }
        if spec.kind != ParamType::String {
            let guest: Vec<String> = placeholders(text)
                .into_iter()
                .filter(|p| !HOST_SET.contains(&p.as_str()))
                .collect();
            if !guest.is_empty() {
                errors.push(format!(
                    "{k}: it is {} — only the event's {} may fill it (not {}: text that can come from a guest)",
                    spec.kind.expected(),
                    HOST_SET.join(", "),
                    guest.join(", ")
                ));
            }
        }
    }
    for k in params.keys() {
        if !runbook.params.iter().any(|p| &p.name == k) {
            let known: Vec<&str> = runbook.params.iter().map(|p| p.name.as_str()).collect();
            errors.push(format!(
                "{k}: runbook {} has no such parameter (it takes: {})",
                runbook.name,
                known.join(", ")
            ));
        }
    }
    if let Err(e) = resolve_params(&runbook.params, &literal) {
        for p in e.0 {
            // Templated ones are filled later.
            if params.get(&p.param).is_some_and(templated) {
                continue;
            }
            if !errors
                .iter()
                .any(|x| x.starts_with(&format!("{}:", p.param)))
            {
                errors.push(format!("{}: {}", p.param, p.message));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(OpsError::Usage(format!(
            "the rule's parameters would be refused by runbook {}: {}",
            runbook.name,
            errors.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, data: Value) -> StreamEvent {
        StreamEvent {
            seq: 7,
            at: 0,
            kind: kind.into(),
            instance: Some("i-1".into()),
            execution: None,
            region: Some("region-a".into()),
            detail: "d".into(),
            data,
        }
    }

    fn rule(ty: &str, matches: Vec<(String, String)>) -> RuleRecord {
        RuleRecord {
            name: "r".into(),
            event_type: ty.into(),
            matches,
            console_pattern: None,
            runbook: "x".into(),
            webhook: None,
            webhook_secret: None,
            webhook_private: false,
            params: Default::default(),
            approvers: vec![],
            max_per_hour: 10,
            created_by: "me".into(),
            created_by_uid: 0,
            created_at: 0,
        }
    }

    #[test]
    fn specs_match_events_by_type_value_and_fields() {
        let (ty, m) = event_spec("instance.status impaired", &["region=region-a".into()]).unwrap();
        assert_eq!(ty, "instance.status");
        assert_eq!(m[0], ("data.status".into(), "impaired".into()));
        let r = rule(&ty, m);
        assert!(matches(
            &r,
            &event(
                "instance.status",
                serde_json::json!({ "status": "impaired" })
            )
        ));
        assert!(!matches(
            &r,
            &event("instance.status", serde_json::json!({ "status": "ok" }))
        ));
        assert!(!matches(
            &r,
            &event(
                "instance.state",
                serde_json::json!({ "status": "impaired" })
            )
        ));
        let family = rule("instance", vec![]);
        assert!(matches(&family, &event("instance.state", Value::Null)));
        assert!(!matches(
            &rule("inst", vec![]),
            &event("instance.state", Value::Null)
        ));
        for bad in [
            "bogus.type",
            "execution.started extra",
            "instance.status a b",
        ] {
            assert!(event_spec(bad, &[]).is_err(), "{bad}");
        }
        assert!(event_spec("instance.status", &["novalue".into()]).is_err());
        assert!(event_spec("instance.status", &["da ta=x".into()]).is_err());
    }

    #[test]
    fn placeholders_are_filled_from_the_event_or_refused() {
        let e = event("instance.console", serde_json::json!({ "line": "Press S" }));
        let mut p = serde_json::Map::new();
        p.insert("instance".into(), "{{event.instance}}".into());
        p.insert("why".into(), "saw: {{ event.data.line }}!".into());
        p.insert("n".into(), 3.into());
        let r = render_params(&p, &e).unwrap();
        assert!(matches!(&r["instance"], SuppliedValue::Text(t) if t == "i-1"));
        assert!(matches!(&r["why"], SuppliedValue::Text(t) if t == "saw: Press S!"));
        assert!(matches!(&r["n"], SuppliedValue::Json(v) if v == 3));
        p.insert("bad".into(), "{{event.data.nope}}".into());
        assert!(render_params(&p, &e)
            .unwrap_err()
            .contains("no `data.nope`"));
        p.insert("bad".into(), "{{params.x}}".into());
        assert!(render_params(&p, &e).is_err());
        p.insert("bad".into(), "{{event.instance".into());
        assert!(render_params(&p, &e).is_err());
        // A console line cannot become a parameter-store reference.
        let mut q = serde_json::Map::new();
        q.insert("x".into(), "{{event.data.line}}".into());
        let sneaky = event(
            "instance.console",
            serde_json::json!({ "line": "param:db/password" }),
        );
        assert!(render_params(&q, &sneaky).unwrap_err().contains("param:"));
        assert_eq!(
            placeholders("a {{event.instance}} b {{ event.data.line }}"),
            vec!["instance", "data.line"]
        );
    }
}
