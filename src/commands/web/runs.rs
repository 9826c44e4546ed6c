//! Running from the web: the runbook catalogue, starting an execution
//! from a run form, cancelling and resuming one. A start goes through the
//! executor `drydock run` uses (the same parameter checks, the error of
//! each parameter returned by name so the form shows it by its field) and
//! is run by a background runner like `drydock run --detach`; the
//! requester is the signed-in account. Only runbooks of the catalogue run
//! from here, by name: never a file by path, which serve's account would
//! run.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use drydock_ops::runbooks::RunbookInfo;
use drydock_runtime::identity::Identity;
use drydock_runtime::params::ParamType;
use drydock_runtime::{CatalogError, RunOptions, Runbook, StartError, StartOptions, SuppliedValue};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::auth::{Caller, Runs};
use super::error::{ApiError, ErrorBody};
use super::WebState;
use crate::commands::run::start_background_with;
use crate::commands::Context;

type ApiResult = Result<Json<Value>, ApiError>;

/// A runbook of the catalogue by name; a path is refused.
fn find(ctx: &Context, name: &str) -> Result<Runbook, ApiError> {
    if name.contains('/') || name.ends_with(".rhai") {
        return Err(ApiError::bad(format!(
            "`{}` is a path: the web console runs runbooks of the catalogue by name (GET /api/runbooks); run a file with `drydock run PATH`",
            drydock_ops::display::shown(name)
        )));
    }
    ctx.executor.catalog().find(name).map_err(|e| match e {
        CatalogError::NotFound { .. } => ApiError::not_found(e.to_string()),
        other => ApiError::bad(other.to_string()),
    })
}

/// Runs blocking work (the journal, the catalogue's files, starting a
/// runner) off the server's thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the request's worker failed: {e}")))?
}

/// The runbooks drydock knows, bundled and installed.
#[utoipa::path(get, path = "/api/runbooks", tag = "runbooks",
    responses(
        (status = 200, description = "Every runbook of the catalogue (user runbooks first) with its description and parameters, as `drydock runbooks --json` lists them; one that cannot be read has `error`", body = serde_json::Value),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("token" = ["read"]), ("cookie" = ["read"])))]
pub async fn runbooks(State(s): State<WebState>, _: Caller) -> ApiResult {
    blocking(move || {
        let list: Vec<RunbookInfo> = s
            .ctx
            .executor
            .catalog()
            .entries()
            .iter()
            .map(RunbookInfo::of_entry)
            .collect();
        Ok(Json(json!(list)))
    })
    .await
}

/// One runbook and its parameters: what its run form is made from.
#[utoipa::path(get, path = "/api/runbooks/{name}", tag = "runbooks",
    params(("name" = String, Path, description = "The runbook's name")),
    responses(
        (status = 200, description = "The runbook: `name`, `description`, `params` (each with `type`, `required`, `default`, `allowed`, `pattern`, `min`, `max`, `description`, `secret`; a secret's default is never sent)", body = serde_json::Value),
        (status = 404, description = "No such runbook", body = ErrorBody),
    ),
    security(("token" = ["read"]), ("cookie" = ["read"])))]
pub async fn runbook(State(s): State<WebState>, _: Caller, Path(name): Path<String>) -> ApiResult {
    blocking(move || Ok(Json(json!(RunbookInfo::of(&find(&s.ctx, &name)?, false))))).await
}

/// A run to start.
#[derive(Deserialize, ToSchema)]
pub struct RunRequest {
    /// The runbook's name in the catalogue.
    runbook: String,
    /// Values by parameter name: text as typed into a form, converted by
    /// the declared type as `--param NAME=VALUE` is, or JSON values. An
    /// empty string is the same as leaving the parameter out. A secret is
    /// its value or `param:NAME` (the parameter store).
    #[serde(default)]
    #[schema(value_type = Object)]
    params: BTreeMap<String, Value>,
}

/// A refusal of the parameters, each field's problem by its name.
fn invalid(runbook: &str, fields: BTreeMap<String, String>) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("runbook `{runbook}` was not started; its parameters are not valid"),
    );
    e.body.fields = Some(fields);
    e
}

/// The values of a run request as `drydock run` takes them, and the
/// problems found before the executor checks them: a secret's `file:`,
/// `env:` or `prompt` would be read on serve's machine as serve's
/// account, so only the CLI takes them.
fn supplied_of(
    runbook: &Runbook,
    params: BTreeMap<String, Value>,
) -> (BTreeMap<String, SuppliedValue>, BTreeMap<String, String>) {
    let mut supplied = BTreeMap::new();
    let mut fields = BTreeMap::new();
    for (name, value) in params {
        let value = match value {
            Value::Null => continue,
            Value::String(t) if t.is_empty() => continue,
            Value::String(t) => SuppliedValue::Text(t),
            other => SuppliedValue::Json(other),
        };
        let secret = runbook
            .params
            .iter()
            .any(|p| p.name == name && p.kind == ParamType::Secret);
        if let (true, SuppliedValue::Text(t)) = (secret, &value) {
            if t.starts_with("file:") || t.starts_with("env:") || t == "prompt" {
                fields.insert(
                    name,
                    "file:, env: and prompt are read by `drydock run` on your own machine; here type the secret, or give param:NAME (the parameter store)".into(),
                );
                continue;
            }
        }
        supplied.insert(name, value);
    }
    (supplied, fields)
}

/// Starts the execution (checked as `drydock run` checks it) and its
/// background runner; returns its id.
fn start_run(ctx: &Context, me: &Identity, req: RunRequest) -> Result<Value, ApiError> {
    let runbook = find(ctx, &req.runbook)?;
    let (supplied, mut fields) = supplied_of(&runbook, req.params);
    let opts = StartOptions {
        requester: Some(me.clone()),
        ..Default::default()
    };
    if !fields.is_empty() {
        // Every field's problem at once: the executor's checks too.
        if let Err(errors) = drydock_runtime::params::resolve_params(&runbook.params, &supplied) {
            for e in errors.0 {
                fields.entry(e.param).or_insert(e.message);
            }
        }
        return Err(invalid(&runbook.name, fields));
    }
    let id = match ctx.executor.create_execution(&runbook, &supplied, &opts) {
        Ok(id) => id,
        Err(StartError::Params(errors)) => {
            let fields = errors.0.into_iter().map(|e| (e.param, e.message)).collect();
            return Err(invalid(&runbook.name, fields));
        }
        Err(StartError::Journal(e)) => return Err(e.into()),
    };
    let log = runner(ctx, &id, RunOptions::default())?;
    Ok(json!({
        "execution_id": id,
        "runbook": runbook.name,
        "requested_by": me.name,
        "log": log,
    }))
}

/// Starts `drydock resume ID` in the background, as `drydock run --detach`
/// does; serve reaps it when it ends. Returns its log file.
fn runner(ctx: &Context, id: &str, opts: RunOptions) -> Result<String, ApiError> {
    let (child, log) = start_background_with(ctx, id, opts).map_err(|e| {
        if e.code == 2 {
            ApiError::bad(e.message)
        } else {
            ApiError::internal(e.message)
        }
    })?;
    // Serve reaps every child that ends, tracked or not.
    std::mem::forget(child);
    Ok(log.display().to_string())
}

/// Starts a runbook, as `drydock run --detach` does.
#[utoipa::path(post, path = "/api/runs", tag = "executions",
    request_body = RunRequest,
    responses(
        (status = 201, description = "Started: `execution_id`, `runbook`, `requested_by` (the signed-in account), `log`", body = serde_json::Value),
        (status = 400, description = "A path instead of a runbook's name, or a runbook that cannot be run", body = ErrorBody),
        (status = 403, description = "The token's scope does not allow running", body = ErrorBody),
        (status = 404, description = "No such runbook", body = ErrorBody),
        (status = 422, description = "Parameters that are not valid: `fields` holds each one's problem by name; nothing was started", body = ErrorBody),
    ),
    security(("token" = ["run"]), ("cookie" = ["run"])))]
pub async fn start(
    State(s): State<WebState>,
    Caller { who: me, .. }: Caller<Runs>,
    Json(req): Json<RunRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let out = blocking(move || start_run(&s.ctx, &me, req)).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// Cancels an execution, as `drydock cancel --no-wait` does: its runner
/// stops it at its next safe point and runs its cleanups; when no runner
/// is alive, one is started to do that.
#[utoipa::path(post, path = "/api/executions/{id}/cancel", tag = "executions",
    params(("id" = String, Path, description = "An execution id or a unique prefix of one")),
    responses(
        (status = 200, description = "Cancel requested: `execution_id`, `runner_pid` (the runner that stops it)", body = serde_json::Value),
        (status = 400, description = "The execution already ended", body = ErrorBody),
        (status = 403, description = "The token's scope does not allow running", body = ErrorBody),
        (status = 404, description = "No such execution", body = ErrorBody),
    ),
    security(("token" = ["run"]), ("cookie" = ["run"])))]
pub async fn cancel(
    State(s): State<WebState>,
    _: Caller<Runs>,
    Path(id): Path<String>,
) -> ApiResult {
    blocking(move || {
        let mut journal = s.ctx.executor.journal()?;
        let requested = drydock_ops::runs::request_cancel(&mut journal, &id)?;
        drop(journal);
        let started = match requested.runner_pid {
            Some(_) => None,
            None => Some(runner(
                &s.ctx,
                &requested.execution_id,
                RunOptions::default(),
            )?),
        };
        Ok(Json(json!({
            "execution_id": requested.execution_id,
            "runner_pid": requested.runner_pid,
            "log": started,
        })))
    })
    .await
}

/// How to resume.
#[derive(Deserialize, ToSchema)]
pub struct ResumeBody {
    /// Reopen a Failed, TimedOut or Cancelled execution and run its failed
    /// part again (`drydock resume --retry`).
    #[serde(default)]
    retry: bool,
}

/// Resumes an execution whose runner stopped, or retries one that ended,
/// as `drydock resume [--retry] --detach` does.
#[utoipa::path(post, path = "/api/executions/{id}/resume", tag = "executions",
    params(("id" = String, Path, description = "An execution id or a unique prefix of one")),
    request_body = ResumeBody,
    responses(
        (status = 200, description = "A runner took it: `execution_id`, `retry`, `log`", body = serde_json::Value),
        (status = 400, description = "A runner has it already, or it ended and `retry` was not asked for", body = ErrorBody),
        (status = 403, description = "The token's scope does not allow running", body = ErrorBody),
        (status = 404, description = "No such execution", body = ErrorBody),
    ),
    security(("token" = ["run"]), ("cookie" = ["run"])))]
pub async fn resume(
    State(s): State<WebState>,
    _: Caller<Runs>,
    Path(id): Path<String>,
    Json(body): Json<ResumeBody>,
) -> ApiResult {
    blocking(move || {
        let id = drydock_ops::runs::check_resume(&s.ctx.executor.journal()?, &id, body.retry)?;
        let log = runner(&s.ctx, &id, RunOptions { retry: body.retry })?;
        Ok(Json(
            json!({ "execution_id": id, "retry": body.retry, "log": log }),
        ))
    })
    .await
}
