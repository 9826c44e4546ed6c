//! The JSON API behind the web console.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use drydock_runtime::journal::ExecutionFilter;
use drydock_runtime::schedule::calendar::{state_of, CalendarState};
use drydock_runtime::schedule::next_run;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, Caller, WebState};

type ApiResult = Result<Json<Value>, ApiError>;

pub async fn whoami(Caller(me): Caller) -> ApiResult {
    Ok(Json(json!({ "account": me.name, "uid": me.uid })))
}

/// The serve itself: pid, since when, what it listens on, what it runs.
/// `caller` is the account the request acts as.
pub async fn serve(State(s): State<WebState>, Caller(me): Caller) -> ApiResult {
    let mut status = s
        .serve
        .lock()
        .map_err(|_| ApiError::internal("the serve status is unavailable"))?
        .clone();
    status["caller"] = json!(me.name);
    Ok(Json(status))
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
}

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

fn show(journal: &drydock_runtime::Journal, id: &str) -> Result<Value, ApiError> {
    let id = journal.resolve_execution(id)?;
    let exec = journal.execution(&id)?;
    Ok(json!({
        "execution": exec,
        "runner_alive": exec.has_live_runner(),
        "steps": journal.steps(&id)?,
        "approvals": journal.approvals_of(&id)?,
        "events": journal.events(&id)?,
    }))
}

pub async fn execution(State(s): State<WebState>, _: Caller, Path(id): Path<String>) -> ApiResult {
    Ok(Json(show(&s.journal()?, &id)?))
}

/// Live progress: the execution as JSON whenever it changes, until it ends.
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
                let text = v.to_string();
                if text != last {
                    let ended = v["execution"]["state"].as_str().is_some_and(|st| {
                        matches!(
                            st,
                            "Success" | "Failed" | "TimedOut" | "Cancelled" | "Rejected"
                        )
                    });
                    if tx
                        .send(Ok(Event::default().event("execution").data(&text)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    last = text;
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

pub async fn approvals(State(s): State<WebState>, Caller(me): Caller) -> ApiResult {
    let journal = s.journal()?;
    let mut out = Vec::new();
    for a in journal.pending_approvals()? {
        let exec = journal.execution(&a.execution_id)?;
        let may = a.may_decide(&me, &exec.requested_by, true);
        out.push(json!({
            "approval": a,
            "runbook": exec.runbook,
            "requested_by": exec.requested_by,
            "you_may_approve": may.is_ok(),
            "why_not": may.err(),
        }));
    }
    Ok(Json(json!(out)))
}

#[derive(Deserialize)]
pub struct DecisionBody {
    approve: bool,
    #[serde(default)]
    comment: String,
}

pub async fn decide(
    State(s): State<WebState>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Json(body): Json<DecisionBody>,
) -> ApiResult {
    if body.comment.chars().count() > 2000 {
        return Err(ApiError::bad("a comment is limited to 2000 characters"));
    }
    let mut journal = s.journal()?;
    let id = journal.resolve_execution(&id)?;
    let outcome = journal.decide(&id, &me, body.approve, &body.comment, false)?;
    Ok(Json(
        json!({ "execution_id": id, "approver": me.name, "outcome": outcome }),
    ))
}

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

#[derive(Deserialize)]
pub struct RegionQuery {
    region: Option<String>,
    tail: Option<usize>,
}

fn host(s: &WebState, region: Option<&str>) -> Result<drydock_host::Host, ApiError> {
    drydock_host::Host::open(
        &s.data_dir,
        region.unwrap_or(&s.region),
        &s.profile,
        drydock_host::drydock_supervisor(&s.data_dir),
    )
    .map_err(|e| ApiError::bad(e.to_string()))
}

pub async fn instances(
    State(s): State<WebState>,
    _: Caller,
    Query(q): Query<RegionQuery>,
) -> ApiResult {
    let h = host(&s, q.region.as_deref())?;
    let list = h
        .store()
        .and_then(|st| st.instances(Some(h.region())))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({ "region": h.region(), "instances": list })))
}

/// An instance's console output (read-only).
pub async fn console(
    State(s): State<WebState>,
    _: Caller,
    Path(id): Path<String>,
    Query(q): Query<RegionQuery>,
) -> ApiResult {
    let h = host(&s, q.region.as_deref())?;
    let text = h
        .console_output(&id, None, Some(q.tail.unwrap_or(200).min(5000)))
        .map_err(|e| ApiError::not_found(e.to_string()))?;
    Ok(Json(json!({ "instance": id, "output": text })))
}
