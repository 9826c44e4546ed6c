//! Status checks of every instance, and automatic recovery (anchor: EC2's
//! status checks and simplified automatic recovery): what `drydock serve`
//! runs at each check interval.
//!
//! A verdict that changes is recorded (the host store keeps the last one,
//! with since when) and becomes an `instance.status` event. An instance
//! whose system check fails — its VMM or instance process died, the host
//! went down — and that has automatic recovery on is started again: the
//! same instance (id, volumes, addresses, tags), recorded as an
//! `instance.recovery` event. At most `max` recoveries within `window`;
//! past that it stays stopped, and an event says why. Guest-side failures
//! (the instance check) are never recovered here: they are events for
//! rules.

use std::path::Path;
use std::time::Duration;

use drydock_host::health::{Status, StatusReport};
use drydock_host::{HostError, InstanceState, StoredStatus, REGIONS};
use drydock_runtime::journal::now_ms;
use drydock_runtime::journal::stream::{kind, NewStreamEvent};
use drydock_runtime::Journal;
use serde_json::json;

use crate::host::{open, HostOptions};

/// How many recoveries, within how long.
#[derive(Debug, Clone, Copy)]
pub struct RecoveryPolicy {
    pub max: u32,
    pub window: Duration,
}

impl Default for RecoveryPolicy {
    /// EC2's: three a day.
    fn default() -> Self {
        Self {
            max: 3,
            window: Duration::from_secs(24 * 3600),
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone)]
pub struct HealthPass {
    pub checked: usize,
    /// `(instance, previous status, new status)`.
    pub changed: Vec<(String, String, String)>,
    /// `(instance, outcome)`: recovered, failed: …, limit.
    pub recoveries: Vec<(String, String)>,
}

fn stored(r: &StatusReport) -> StoredStatus {
    StoredStatus {
        instance_id: r.instance.clone(),
        status: r.status.as_str().to_string(),
        system: r.system.status.as_str().to_string(),
        system_reason: r.system.reason.clone(),
        guest: r.guest.status.as_str().to_string(),
        guest_reason: r.guest.reason.clone(),
        since: r.checked_at,
        checked_at: r.checked_at,
    }
}

fn emit(journal: &Journal, e: NewStreamEvent) {
    if let Err(err) = journal.emit(&e) {
        tracing::warn!("the event `{}` was not recorded: {err}", e.detail);
    }
}

/// Checks every instance that runs or was stopped by a failure, in every
/// region; records and reports changes; recovers what may be recovered.
pub fn pass(
    data_dir: &Path,
    profile: &str,
    policy: &RecoveryPolicy,
    journal: &Journal,
) -> Result<HealthPass, HostError> {
    let mut out = HealthPass::default();
    for region in REGIONS {
        let host = open(&HostOptions {
            data_dir,
            region,
            profile,
        })?;
        let instances = host.store()?.instances(Some(region))?;
        for i in instances {
            let watch = i.state == InstanceState::Running
                || (i.state == InstanceState::Stopped
                    && drydock_host::health::unplanned_stop(&i.state_reason));
            if !watch {
                continue;
            }
            let report = match host.status_checks(&i.id) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(instance = %i.id, "status checks failed to run: {e}");
                    continue;
                }
            };
            out.checked += 1;
            let s = stored(&report);
            if let Some(previous) = host.store()?.record_status(&s)? {
                let reason = match (report.system.status, report.guest.status) {
                    (Status::Ok, _) => report.guest.reason.clone(),
                    _ => report.system.reason.clone(),
                };
                emit(
                    journal,
                    NewStreamEvent {
                        kind: kind::INSTANCE_STATUS,
                        instance: Some(&i.id),
                        region: Some(region),
                        detail: &format!("{} is {}: {reason}", i.id, report.status),
                        data: json!({
                            "status": report.status.as_str(),
                            "previous": previous,
                            "system": report.system.status.as_str(),
                            "system_reason": report.system.reason,
                            "instance_check": report.guest.status.as_str(),
                            "instance_reason": report.guest.reason,
                            "reason": reason,
                        }),
                        ..Default::default()
                    },
                );
                out.changed
                    .push((i.id.clone(), previous, report.status.as_str().to_string()));
            }
            if report.system.status == Status::Impaired && host.store()?.auto_recovery(&i.id)? {
                if let Some(outcome) = recover(&host, &i.id, region, policy, journal)? {
                    out.recoveries.push((i.id.clone(), outcome));
                }
            }
        }
    }
    Ok(out)
}

/// Starts an instance whose system check failed again, within the
/// policy's limit. Returns what was done (None: nothing new to do).
fn recover(
    host: &drydock_host::Host,
    id: &str,
    region: &str,
    policy: &RecoveryPolicy,
    journal: &Journal,
) -> Result<Option<String>, HostError> {
    let rec = host.store()?.instance(id)?;
    // Opening the host reconciled it: an instance whose process is gone
    // is stopped by now. One still marked running is left to the next
    // pass (its process may be on its way down).
    // And a stop it did not ask for: a person's stop that ended while
    // the check ran is not undone.
    if rec.state != InstanceState::Stopped
        || !drydock_host::health::unplanned_stop(&rec.state_reason)
    {
        return Ok(None);
    }
    let since = now_ms() - policy.window.as_millis() as i64;
    let made = host.store()?.recoveries_since(id, since)?;
    if made >= policy.max {
        // Said once per failure.
        let said = host
            .store()?
            .last_recovery(id)?
            .is_some_and(|(at, outcome)| outcome == "limit" && at >= rec.state_since);
        if said {
            return Ok(None);
        }
        host.store()?.add_recovery(id, "limit")?;
        let why = format!(
            "{id} was not recovered: {made} recoveries in the last {} already (at most {}); it stays stopped ({}). Start it by hand once the cause is found",
            drydock_runtime::duration::format_duration(policy.window),
            policy.max,
            rec.state_reason
        );
        emit(
            journal,
            NewStreamEvent {
                kind: kind::INSTANCE_RECOVERY,
                instance: Some(id),
                region: Some(region),
                detail: &why,
                data: json!({ "outcome": "limit", "recoveries": made, "max": policy.max, "cause": rec.state_reason }),
                ..Default::default()
            },
        );
        return Ok(Some("limit".into()));
    }
    // Counted before the start: a start that fails counts too.
    host.store()?.add_recovery(id, "started")?;
    let cause = rec.state_reason.clone();
    let (outcome, detail) = match host.start(id) {
        Ok(_) => (
            "recovered".to_string(),
            format!("{id} recovered (started again after: {cause})"),
        ),
        Err(e) => (
            format!("failed: {e}"),
            format!("{id} could not be recovered: {e}"),
        ),
    };
    emit(
        journal,
        NewStreamEvent {
            kind: kind::INSTANCE_RECOVERY,
            instance: Some(id),
            region: Some(region),
            detail: &detail,
            data: json!({
                "outcome": if outcome == "recovered" { "recovered" } else { "failed" },
                "error": outcome.strip_prefix("failed: "),
                "cause": cause,
                "recoveries": made + 1,
                "max": policy.max,
            }),
            ..Default::default()
        },
    );
    Ok(Some(outcome))
}
