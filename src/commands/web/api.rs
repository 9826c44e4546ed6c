//! The JSON API behind the web console: what it reads, and approving.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use drydock_ops::approvals::{self, DecideOptions};
use drydock_ops::executions::ExecutionView;
use drydock_runtime::journal::ExecutionFilter;
use drydock_runtime::schedule::calendar::{state_of, CalendarState};
use drydock_runtime::schedule::next_run;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Approves, Caller, Consoles};
use super::error::ErrorBody;
use super::{ApiError, WebState};

type ApiResult = Result<Json<Value>, ApiError>;

#[utoipa::path(get, path = "/api/whoami", tag = "console",
    responses(
        (status = 200, description = "The account the request acts as: `account`, `uid`", body = serde_json::Value),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("token" = ["read"]), ("cookie" = ["read"])))]
pub async fn whoami(Caller { who: me, .. }: Caller) -> ApiResult {
    Ok(Json(json!({ "account": me.name, "uid": me.uid })))
}

/// The serve itself: pid, since when, what it listens on, what it runs.
/// `caller` is the account the request acts as.
#[utoipa::path(get, path = "/api/serve", tag = "console",
    responses(
        (status = 200, description = "The serve: pid, since when, where it listens, schedules, runs going (`drydock serve status --json`)", body = serde_json::Value),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("token" = ["read"]), ("cookie" = ["read"])))]
pub async fn serve(State(s): State<WebState>, Caller { who: me, .. }: Caller) -> ApiResult {
    let mut status = s
        .serve
        .lock()
        .map_err(|_| ApiError::internal("the serve status is unavailable"))?
        .clone();
    status["caller"] = json!(me.name);
    Ok(Json(status))
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// How many executions, newest first (default 50, at most 500).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/executions", tag = "executions", params(ListQuery),
    responses(
        (status = 200, description = "Executions, newest first (`drydock executions --json`)", body = serde_json::Value),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("token" = ["read"]), ("cookie" = ["read"])))]
pub async fn executions(
    State(s): State<WebState>,
    _: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let journal = s.journal()?;
    let list = journal.executions(&ExecutionFilter {
        limit: Some(q.limit.unwrap_or(50).min(500)),
        ..Default::default()
    })?;
    Ok(Json(json!(list)))
}

/// An execution as the page shows it: the operations layer's view of it
/// (what `drydock executions show --json` prints) and its timeline.
fn show(journal: &drydock_runtime::Journal, id: &str) -> Result<Value, ApiError> {
    let view = ExecutionView::load(journal, id)?;
    let timeline = view.timeline(drydock_runtime::journal::now_ms());
    let mut out = json!(view);
    out["timeline"] = json!(timeline);
    Ok(out)
}

#[utoipa::path(get, path = "/api/executions/{id}", tag = "executions",
    params(("id" = String, Path, description = "An execution id or a unique prefix of one")),
    responses(
        (status = 200, description = "The execution, its steps, attempts, approvals, printed lines, children and timeline (`drydock executions show --json`)", body = serde_json::Value),
        (status = 404, description = "No such execution", body = ErrorBody),
    ),
    security(("token" = ["read"]), ("cookie" = ["read"])))]
pub async fn execution(State(s): State<WebState>, _: Caller, Path(id): Path<String>) -> ApiResult {
    Ok(Json(show(&s.journal()?, &id)?))
}

/// Live progress: the execution as JSON whenever it changes, until it ends.
#[utoipa::path(get, path = "/api/executions/{id}/stream", tag = "executions",
    params(("id" = String, Path, description = "An execution id or a unique prefix of one")),
    responses(
        (status = 200, description = "Server-sent events named `execution`, each the execution as `GET /api/executions/{id}` returns it, sent when it changes, until it ends", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such execution", body = ErrorBody),
    ),
    security(("token" = ["read"]), ("cookie" = ["read"])))]
pub async fn stream(
    State(s): State<WebState>,
    _: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl futures_core::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let first = show(&s.journal()?, &id)?;
    let stream = async_stream(s, id, first);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn async_stream(
    s: WebState,
    id: String,
    first: Value,
) -> impl futures_core::Stream<Item = Result<Event, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(8);
    tokio::spawn(async move {
        let mut last = String::new();
        let mut current = Some(first);
        loop {
            if let Some(v) = current.take() {
                // Sent when the journal changed: a running step's timeline
                // row grows with the clock, which is no change.
                let mut seen = v.clone();
                if let Some(o) = seen.as_object_mut() {
                    o.remove("timeline");
                }
                let seen = seen.to_string();
                if seen != last {
                    let ended = v["execution"]["state"].as_str().is_some_and(|st| {
                        matches!(
                            st,
                            "Success" | "Failed" | "TimedOut" | "Cancelled" | "Rejected"
                        )
                    });
                    if tx
                        .send(Ok(Event::default().event("execution").data(v.to_string())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    last = seen;
                    if ended {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            current = s.journal().ok().and_then(|j| show(&j, &id).ok());
        }
    });
    ReceiverStream(rx)
}

/// A stream over an mpsc receiver.
struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

#[utoipa::path(get, path = "/api/approvals", tag = "executions",
    responses(
        (status = 200, description = "Approvals waiting for a decision, each with whether the caller may decide and why not", body = serde_json::Value),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("token" = ["read"]), ("cookie" = ["read"])))]
pub async fn approvals(State(s): State<WebState>, Caller { who: me, .. }: Caller) -> ApiResult {
    let journal = s.journal()?;
    let out: Vec<Value> = approvals::list(&journal, &me)?
        .into_iter()
        .map(|p| {
            json!({
                "you_may_approve": p.you.may_approve(),
                "why_not": p.you.why_not(),
                "approval": p.approval,
                "runbook": p.execution.runbook,
                "requested_by": p.execution.requested_by,
            })
        })
        .collect();
    Ok(Json(json!(out)))
}

/// A decision on an execution's pending approval.
#[derive(Deserialize, ToSchema)]
pub struct DecisionBody {
    /// Approve (true) or reject (false).
    approve: bool,
    /// Why, kept with the decision (at most 2000 characters).
    #[serde(default)]
    comment: String,
}

#[utoipa::path(post, path = "/api/executions/{id}/decision", tag = "executions",
    params(("id" = String, Path, description = "An execution id or a unique prefix of one")),
    request_body = DecisionBody,
    responses(
        (status = 200, description = "The decision as recorded: `execution_id`, `approver`, `outcome`", body = serde_json::Value),
        (status = 400, description = "Not allowed: the caller is not an approver, decided already, or requested it", body = ErrorBody),
        (status = 403, description = "The token's scope does not allow approving", body = ErrorBody),
        (status = 404, description = "No such execution", body = ErrorBody),
    ),
    security(("token" = ["approve"]), ("cookie" = ["approve"])))]
pub async fn decide(
    State(s): State<WebState>,
    Caller { who: me, .. }: Caller<Approves>,
    Path(id): Path<String>,
    Json(body): Json<DecisionBody>,
) -> ApiResult {
    let mut journal = s.journal()?;
    let decided = approvals::decide(
        &mut journal,
        &DecideOptions {
            execution: &id,
            approve: body.approve,
            comment: &body.comment,
            who: &me,
        },
    )?;
    Ok(Json(json!({
        "execution_id": decided.execution_id,
        "approver": decided.approver,
        "outcome": decided.outcome,
    })))
}

#[utoipa::path(get, path = "/api/schedules", tag = "schedules",
    responses(
        (status = 200, description = "Schedules with their next run, a closed calendar blocking them, and their last slots", body = serde_json::Value),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("token" = ["read"]), ("cookie" = ["read"])))]
pub async fn schedules(State(s): State<WebState>, _: Caller) -> ApiResult {
    let journal = s.journal()?;
    let now = chrono::Utc::now();
    let out: Vec<Value> = journal
        .schedules()?
        .into_iter()
        .map(|sc| {
            let blocked = sc
                .calendar
                .as_ref()
                .and_then(|c| match state_of(&journal, c, now) {
                    CalendarState::Open => None,
                    CalendarState::Closed(why) => Some(why),
                });
            let slots = journal.slots(&sc.name, 5).unwrap_or_default();
            json!({
                "schedule": sc,
                "next_run": next_run(&sc, now).map(|t| t.to_rfc3339()),
                "calendar_blocks": blocked,
                "slots": slots,
            })
        })
        .collect();
    Ok(Json(json!(out)))
}

#[utoipa::path(get, path = "/api/windows", tag = "schedules",
    responses(
        (status = 200, description = "Maintenance windows with their tasks and last openings", body = serde_json::Value),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("token" = ["read"]), ("cookie" = ["read"])))]
pub async fn windows(State(s): State<WebState>, _: Caller) -> ApiResult {
    let journal = s.journal()?;
    let mut out = Vec::new();
    for w in journal.windows()? {
        let tasks = journal.window_tasks(&w.name)?;
        let runs = journal.window_runs(&w.name, 3)?;
        out.push(json!({ "window": w, "tasks": tasks, "runs": runs }));
    }
    Ok(Json(json!(out)))
}

#[utoipa::path(get, path = "/api/calendars", tag = "schedules",
    responses(
        (status = 200, description = "Change calendars: open or closed now, why, and their events", body = serde_json::Value),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("token" = ["read"]), ("cookie" = ["read"])))]
pub async fn calendars(State(s): State<WebState>, _: Caller) -> ApiResult {
    let journal = s.journal()?;
    let now = chrono::Utc::now();
    let out: Vec<Value> = journal
        .calendars()?
        .into_iter()
        .map(|c| {
            let state = state_of(&journal, &c.name, now);
            json!({
                "calendar": c,
                "open": state == CalendarState::Open,
                "reason": match state { CalendarState::Closed(r) => r, CalendarState::Open => String::new() },
                "events": journal.calendar_events(&c.name).unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(json!(out)))
}

#[derive(Deserialize, IntoParams)]
pub struct RegionQuery {
    /// The region (default: serve's).
    region: Option<String>,
    /// For a console: how many of its last lines (default 200, at most 5000).
    tail: Option<usize>,
}

fn host(s: &WebState, region: Option<&str>) -> Result<drydock_host::Host, ApiError> {
    drydock_ops::host::open(&drydock_ops::host::HostOptions {
        data_dir: &s.data_dir,
        region: region.unwrap_or(&s.region),
        profile: &s.profile,
    })
    .map_err(|e| ApiError::bad(e.to_string()))
}

#[utoipa::path(get, path = "/api/instances", tag = "instances", params(RegionQuery),
    responses(
        (status = 200, description = "The region's instances with their status checks' last verdicts", body = serde_json::Value),
        (status = 400, description = "No such region or profile", body = ErrorBody),
    ),
    security(("token" = ["read"]), ("cookie" = ["read"])))]
pub async fn instances(
    State(s): State<WebState>,
    _: Caller,
    Query(q): Query<RegionQuery>,
) -> ApiResult {
    let h = host(&s, q.region.as_deref())?;
    let store = h.store().map_err(|e| ApiError::internal(e.to_string()))?;
    let list = store
        .instances(Some(h.region()))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    // The status checks' last verdicts (serve runs them).
    let statuses = store
        .stored_statuses()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let list: Vec<serde_json::Value> = list
        .iter()
        .map(|i| {
            let mut v = serde_json::to_value(i).unwrap_or_default();
            let watched = i.state == drydock_host::InstanceState::Running
                || drydock_host::health::unplanned_stop(&i.state_reason);
            v["status"] = json!(watched
                .then(|| statuses.get(&i.id).map(|s| s.status.clone()))
                .flatten());
            v
        })
        .collect();
    Ok(Json(json!({ "region": h.region(), "instances": list })))
}

/// An instance's console output (read-only). A console can show what
/// was typed at it, so reading one needs the `console` scope.
#[utoipa::path(get, path = "/api/instances/{id}/console", tag = "instances",
    params(("id" = String, Path, description = "An instance id"), RegionQuery),
    responses(
        (status = 200, description = "The instance's last console lines (read-only): `instance`, `output`", body = serde_json::Value),
        (status = 403, description = "The token's scope does not allow consoles", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
    ),
    security(("token" = ["console"]), ("cookie" = ["console"])))]
pub async fn console(
    State(s): State<WebState>,
    _: Caller<Consoles>,
    Path(id): Path<String>,
    Query(q): Query<RegionQuery>,
) -> ApiResult {
    let h = host(&s, q.region.as_deref())?;
    let text = h
        .console_output(&id, None, Some(q.tail.unwrap_or(200).min(5000)))
        .map_err(|e| ApiError::not_found(e.to_string()))?;
    Ok(Json(json!({ "instance": id, "output": text })))
}
