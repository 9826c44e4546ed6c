//! What an open maintenance window does now: which tasks start (lower
//! priority first, equal priorities together, each group after the one
//! before it has finished), which are skipped at the cutoff, which are
//! cancelled at the end. Pure, so a simulated clock drives the tests.

use chrono::{DateTime, Utc};

use crate::journal::{WindowRecord, WindowTask, WindowTaskRun};

/// Where a task of this opening stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStatus {
    NotStarted,
    Running(String),
    Finished,
    Skipped,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowAction {
    Start(String),
    Skip(String, String),
    Cancel(String),
    Close,
}

/// The status of each task, from what the journal recorded and whether
/// each started execution has ended.
pub fn statuses(
    tasks: &[WindowTask],
    recorded: &[WindowTaskRun],
    ended: &dyn Fn(&str) -> bool,
) -> Vec<(WindowTask, TaskStatus)> {
    tasks
        .iter()
        .map(|t| {
            let status = match recorded.iter().find(|r| r.task == t.name) {
                None => TaskStatus::NotStarted,
                Some(r) if r.state == "skipped" => TaskStatus::Skipped,
                Some(r) => match &r.execution_id {
                    Some(id) if !ended(id) => TaskStatus::Running(id.clone()),
                    Some(_) => TaskStatus::Finished,
                    // Claimed but never linked to an execution: it did not start.
                    None => TaskStatus::Finished,
                },
            };
            (t.clone(), status)
        })
        .collect()
}

/// The actions for one open window at `now`.
pub fn actions(
    w: &WindowRecord,
    slot_at: i64,
    ends_at: i64,
    tasks: &[(WindowTask, TaskStatus)],
    now: DateTime<Utc>,
) -> Vec<WindowAction> {
    let now = now.timestamp_millis();
    let cutoff_at = ends_at - w.cutoff_ms.max(0);
    let mut out = Vec::new();
    if now >= ends_at {
        for (t, s) in tasks {
            match s {
                TaskStatus::NotStarted => out.push(WindowAction::Skip(
                    t.name.clone(),
                    "the window ended before its turn".into(),
                )),
                TaskStatus::Running(id) if w.cutoff_behavior == "cancel" => {
                    out.push(WindowAction::Cancel(id.clone()))
                }
                _ => {}
            }
        }
        out.push(WindowAction::Close);
        return out;
    }
    if now >= cutoff_at {
        for (t, s) in tasks {
            if *s == TaskStatus::NotStarted {
                out.push(WindowAction::Skip(
                    t.name.clone(),
                    format!(
                        "cutoff: no task starts in the last {} of the window",
                        crate::duration::format_duration(std::time::Duration::from_millis(
                            w.cutoff_ms.max(0) as u64
                        ))
                    ),
                ));
            }
        }
        return out;
    }
    let _ = slot_at;
    let mut priorities: Vec<i64> = tasks.iter().map(|(t, _)| t.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    for p in priorities {
        let group: Vec<&(WindowTask, TaskStatus)> =
            tasks.iter().filter(|(t, _)| t.priority == p).collect();
        let waiting: Vec<&str> = group
            .iter()
            .filter(|(_, s)| *s == TaskStatus::NotStarted)
            .map(|(t, _)| t.name.as_str())
            .collect();
        let running = group
            .iter()
            .any(|(_, s)| matches!(s, TaskStatus::Running(_)));
        if !waiting.is_empty() {
            out.extend(
                waiting
                    .into_iter()
                    .map(|n| WindowAction::Start(n.to_string())),
            );
            break;
        }
        if running {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Clock;
    use crate::schedule::ManualClock;

    fn window(behavior: &str) -> WindowRecord {
        WindowRecord {
            name: "patch".into(),
            expression: "cron(0 2 * * 6)".into(),
            timezone: "UTC".into(),
            duration_ms: 4 * 3_600_000,
            cutoff_ms: 3_600_000,
            cutoff_behavior: behavior.into(),
            created_by: "root".into(),
            created_at: 0,
            last_slot_at: None,
        }
    }

    fn task(name: &str, priority: i64) -> WindowTask {
        WindowTask {
            window: "patch".into(),
            name: name.into(),
            runbook: "rb".into(),
            params: Default::default(),
            priority,
            created_by: Some("alice".into()),
            created_by_uid: Some(1001),
            runbook_sha256: None,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn priorities_cutoff_and_both_end_behaviours_on_a_simulated_clock() {
        let w = window("cancel");
        let slot = t("2026-12-05T02:00:00Z").timestamp_millis();
        let ends = slot + w.duration_ms;
        let clock = ManualClock::new(t("2026-12-05T02:00:01Z"));
        let tasks = [
            task("backup", 1),
            task("patch-a", 2),
            task("patch-b", 2),
            task("report", 3),
        ];
        let with = |s: [TaskStatus; 4]| -> Vec<(WindowTask, TaskStatus)> {
            tasks.iter().cloned().zip(s).collect()
        };
        use TaskStatus::*;
        // Lower priority first.
        assert_eq!(
            actions(
                &w,
                slot,
                ends,
                &with([NotStarted, NotStarted, NotStarted, NotStarted]),
                clock.now()
            ),
            vec![WindowAction::Start("backup".into())]
        );
        // Equal priorities together, once the group before has finished.
        assert!(actions(
            &w,
            slot,
            ends,
            &with([Running("ex-1".into()), NotStarted, NotStarted, NotStarted]),
            clock.now()
        )
        .is_empty());
        assert_eq!(
            actions(
                &w,
                slot,
                ends,
                &with([Finished, NotStarted, NotStarted, NotStarted]),
                clock.now()
            ),
            vec![
                WindowAction::Start("patch-a".into()),
                WindowAction::Start("patch-b".into())
            ]
        );
        // After end - cutoff no task starts.
        clock.set(t("2026-12-05T05:00:00Z"));
        assert_eq!(
            actions(
                &w,
                slot,
                ends,
                &with([Finished, Running("ex-2".into()), Finished, NotStarted]),
                clock.now()
            ),
            vec![WindowAction::Skip(
                "report".into(),
                "cutoff: no task starts in the last 1h00m of the window".into()
            )]
        );
        // At the end: cancel what runs (cancel), or let it finish (finish).
        clock.set(t("2026-12-05T06:00:00Z"));
        let end_state = with([Finished, Running("ex-2".into()), Finished, Skipped]);
        assert_eq!(
            actions(&w, slot, ends, &end_state, clock.now()),
            vec![WindowAction::Cancel("ex-2".into()), WindowAction::Close]
        );
        assert_eq!(
            actions(&window("finish"), slot, ends, &end_state, clock.now()),
            vec![WindowAction::Close]
        );
    }

    #[test]
    fn statuses_come_from_the_journal_and_the_executions() {
        let tasks = [task("a", 1), task("b", 1), task("c", 1), task("d", 1)];
        let recorded = vec![
            WindowTaskRun {
                task: "a".into(),
                state: "started".into(),
                execution_id: Some("ex-a".into()),
                reason: None,
            },
            WindowTaskRun {
                task: "b".into(),
                state: "started".into(),
                execution_id: Some("ex-b".into()),
                reason: None,
            },
            WindowTaskRun {
                task: "c".into(),
                state: "skipped".into(),
                execution_id: None,
                reason: Some("cutoff".into()),
            },
        ];
        let s = statuses(&tasks, &recorded, &|id| id == "ex-a");
        let got: Vec<TaskStatus> = s.into_iter().map(|(_, s)| s).collect();
        assert_eq!(
            got,
            vec![
                TaskStatus::Finished,
                TaskStatus::Running("ex-b".into()),
                TaskStatus::Skipped,
                TaskStatus::NotStarted
            ]
        );
    }
}
