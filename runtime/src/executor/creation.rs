//! Creating an execution: its parameters checked against the runbook's
//! metadata, `param:` references resolved, secrets sealed before anything
//! is written, and opened again for the run.

use super::*;

impl Executor {
    /// Validates parameters and records a Pending execution. Nothing is
    /// recorded when a parameter is bad.
    pub fn create_execution(
        &self,
        runbook: &Runbook,
        supplied: &BTreeMap<String, SuppliedValue>,
        opts: &StartOptions,
    ) -> Result<String, StartError> {
        self.create_inner(runbook, supplied, opts, None)
    }

    pub(super) fn create_inner(
        &self,
        runbook: &Runbook,
        supplied: &BTreeMap<String, SuppliedValue>,
        opts: &StartOptions,
        parent: Option<(String, String)>,
    ) -> Result<String, StartError> {
        let resolved = self.resolve_plain_refs(runbook, supplied)?;
        let params = resolve_params(&runbook.params, &resolved)?;
        let params = self.seal_secrets(runbook, params)?;
        let mut journal = self.journal()?;
        let requester = opts.requester.clone().unwrap_or_else(Identity::current);
        Ok(journal.create_execution(&NewExecution {
            runbook: runbook.name.clone(),
            origin: runbook.origin.to_string(),
            source_sha256: source_digest(&runbook.source),
            params,
            parent,
            auto_approve_by: opts.auto_approve.then(|| requester.name.clone()),
            requested_by: requester.name.clone(),
            requester_uid: Some(requester.uid),
            region: self.region.clone(),
            profile: self.profile.clone(),
            gate: opts.gate.clone(),
            gate_approvers: opts.gate_approvers.clone(),
            run_by: run_by(&requester),
            runbook_owner: runbook.provenance.as_ref().map(|p| p.owner.clone()),
        })?)
    }

    /// A `param:NAME[:VERSION|:LABEL]` given for a parameter that is not a
    /// secret is the parameter store's value (a String parameter), never
    /// the text `param:…`; a SecureString there is refused (the runbook
    /// must declare the parameter `secret` to receive it).
    pub(super) fn resolve_plain_refs(
        &self,
        runbook: &Runbook,
        supplied: &BTreeMap<String, SuppliedValue>,
    ) -> Result<BTreeMap<String, SuppliedValue>, StartError> {
        use crate::journal::Selector;
        use crate::params::{ParamError, ParamType};
        let mut out = supplied.clone();
        let mut errors = Vec::new();
        for spec in &runbook.params {
            if spec.kind == ParamType::Secret {
                continue;
            }
            let text = match supplied.get(&spec.name) {
                Some(SuppliedValue::Text(t)) => t.clone(),
                Some(SuppliedValue::Json(serde_json::Value::String(t))) => t.clone(),
                _ => continue,
            };
            let Some(reference) = text.strip_prefix("param:") else {
                continue;
            };
            let (name, which) = Selector::split(reference);
            let journal = self.journal()?;
            match journal.parameter(name, &which) {
                Ok(rec) if rec.secure => errors.push(ParamError {
                    param: spec.name.clone(),
                    message: format!(
                        "param:{reference} is a SecureString, and `{}` is not a secret parameter of runbook `{}`: its value would be journaled and shown in clear. Declare the parameter `type: \"secret\"`, or store a String parameter",
                        spec.name, runbook.name
                    ),
                }),
                Ok(rec) => {
                    out.insert(spec.name.clone(), SuppliedValue::Text(rec.value));
                }
                Err(e) => errors.push(ParamError {
                    param: spec.name.clone(),
                    message: format!("param:{reference}: {e}"),
                }),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(StartError::Params(ParamErrors(errors)))
        }
    }

    /// Replaces each secret parameter's value by a sealed copy, or by a
    /// pinned reference to the parameter store (`param:NAME[:VERSION|:LABEL]`).
    pub(super) fn seal_secrets(
        &self,
        runbook: &Runbook,
        mut params: serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StartError> {
        use crate::journal::Selector;
        use crate::params::{ParamError, ParamType};
        let mut errors = Vec::new();
        for spec in runbook
            .params
            .iter()
            .filter(|p| p.kind == ParamType::Secret)
        {
            let Some(serde_json::Value::String(text)) = params.get(&spec.name).cloned() else {
                continue;
            };
            let stored = match text.strip_prefix("param:") {
                Some(reference) => {
                    let (name, which) = Selector::split(reference);
                    self.journal()?
                        .parameter(name, &which)
                        .map(|p| serde_json::json!({ PARAM_REF_KEY: p.name, "version": p.version }))
                        .map_err(|e| e.to_string())
                }
                None => SecretKey::load_or_create(&self.data_dir)
                    .and_then(|k| k.seal(&spec.name, &text))
                    .map(|sealed| serde_json::json!({ SEALED_KEY: sealed }))
                    .map_err(|e| e.to_string()),
            };
            match stored {
                Ok(v) => {
                    params.insert(spec.name.clone(), v);
                }
                Err(message) => errors.push(ParamError {
                    param: spec.name.clone(),
                    message,
                }),
            }
        }
        if errors.is_empty() {
            Ok(params)
        } else {
            Err(ParamErrors(errors).into())
        }
    }

    /// The stored parameters with secrets opened, registered in `secrets`.
    pub(super) fn open_secrets(
        &self,
        journal: &Journal,
        stored: &serde_json::Value,
        secrets: &Secrets,
    ) -> Result<serde_json::Value, RunError> {
        let serde_json::Value::Object(map) = stored else {
            return Ok(stored.clone());
        };
        let mut key = None;
        let mut out = serde_json::Map::new();
        for (name, value) in map {
            let opened = match value.as_object() {
                Some(m) if m.contains_key(SEALED_KEY) => {
                    if key.is_none() {
                        key = Some(
                            SecretKey::load_or_create(&self.data_dir)
                                .map_err(|e| RunError::Secrets(e.to_string()))?,
                        );
                    }
                    let sealed = m.get(SEALED_KEY).and_then(|v| v.as_str()).unwrap_or("");
                    key.as_ref()
                        .map(|k| k.open(name, sealed))
                        .transpose()
                        .map_err(|e| RunError::Secrets(format!("parameter `{name}`: {e}")))?
                        .unwrap_or_default()
                }
                Some(m) if m.contains_key(PARAM_REF_KEY) => {
                    let pname = m.get(PARAM_REF_KEY).and_then(|v| v.as_str()).unwrap_or("");
                    let version = m.get("version").and_then(|v| v.as_i64()).unwrap_or(0);
                    crate::parameters::read_parameter(
                        &self.data_dir,
                        journal,
                        pname,
                        &crate::journal::Selector::Version(version),
                    )
                    .map(|(value, _)| value)
                    .map_err(|e| RunError::Secrets(format!("parameter `{name}`: {e}")))?
                }
                _ => {
                    out.insert(name.clone(), value.clone());
                    continue;
                }
            };
            secrets.add(&opened);
            out.insert(name.clone(), serde_json::Value::String(opened));
        }
        Ok(serde_json::Value::Object(out))
    }
}
