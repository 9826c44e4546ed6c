//! Whether the VM makes progress, as the system status check asks it: the
//! VMM answers a status query within [`PROBE_TIMEOUT`] (a VMM stopped by
//! a signal or wedged does not), the VM is running (not paused by an I/O
//! error or a guest panic, QEMU; no vCPU thread ended or held up in a
//! device, drydock's VMM), or paused by drydock itself for a copy.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::running::Shared;
use crate::backend::Backend;
use crate::HostError;

/// How long the VMM has to answer a status query.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the instance process reports for `health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmHealth {
    /// Whether the vCPUs make progress.
    pub progressing: bool,
    /// What the VMM says the VM is (`running`, `paused`, QEMU's
    /// `io-error`, `guest-panicked`, …), or `no answer`.
    pub vm: String,
    /// Why not, when not.
    pub reason: String,
}

impl VmHealth {
    fn ok(vm: &str) -> Self {
        Self {
            progressing: true,
            vm: vm.to_string(),
            reason: String::new(),
        }
    }
    fn stuck(vm: &str, reason: String) -> Self {
        Self {
            progressing: false,
            vm: vm.to_string(),
            reason,
        }
    }
}

impl Shared {
    /// Asks the VMM how the VM is, waiting at most [`PROBE_TIMEOUT`]. A
    /// query left unanswered is not repeated while it waits (the control
    /// connection is shared): later asks report how long it has waited.
    pub(super) fn vm_health(self: &Arc<Self>) -> Result<VmHealth, HostError> {
        {
            let probe = self.probe.lock().unwrap();
            if let Some(since) = *probe {
                return Ok(VmHealth::stuck(
                    "no answer",
                    format!(
                        "the VMM has not answered a status query for {} s (stopped or wedged: its vCPUs make no progress)",
                        since.elapsed().as_secs()
                    ),
                ));
            }
        }
        *self.probe.lock().unwrap() = Some(Instant::now());
        let (tx, rx) = std::sync::mpsc::channel();
        let me = self.clone();
        std::thread::spawn(move || {
            let answer = me.query_vm();
            *me.probe.lock().unwrap() = None;
            let _ = tx.send(answer);
        });
        match rx.recv_timeout(PROBE_TIMEOUT) {
            Ok(answer) => answer,
            Err(_) => Ok(VmHealth::stuck(
                "no answer",
                format!(
                    "the VMM does not answer a status query within {} s (stopped or wedged: its vCPUs make no progress)",
                    PROBE_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    fn paused_by_drydock(&self) -> bool {
        self.pauses.load(Ordering::SeqCst) % 2 == 1
    }

    fn query_vm(&self) -> Result<VmHealth, HostError> {
        match self.backend {
            Backend::Qemu(_) => {
                let status = self.qmp("query-status", json!({}))?;
                let state = status["status"].as_str().unwrap_or("unknown").to_string();
                Ok(match state.as_str() {
                    "running" => VmHealth::ok("running"),
                    "paused" if self.paused_by_drydock() => VmHealth::ok("paused"),
                    other => VmHealth::stuck(
                        other,
                        format!("the VM is not running: QEMU reports `{other}`"),
                    ),
                })
            }
            Backend::Drydock => {
                let status = self.qmp("status", json!({}))?;
                let state = status["state"].as_str().unwrap_or("unknown").to_string();
                if state == "paused" && !self.paused_by_drydock() {
                    return Ok(VmHealth::stuck(
                        "paused",
                        "the VM is paused and drydock did not pause it".into(),
                    ));
                }
                let vcpus = status["vcpus"].as_u64().unwrap_or(0);
                let running = status["vcpus_running"].as_u64().unwrap_or(0);
                if running < vcpus {
                    return Ok(VmHealth::stuck(
                        &state,
                        format!("{} of {vcpus} vCPU threads ended", vcpus - running),
                    ));
                }
                if let Some(held) = status["held_vcpus"].as_array().and_then(|a| a.first()) {
                    return Ok(VmHealth::stuck(
                        &state,
                        format!(
                            "vCPU {} has been held up in the VMM for {} ms (a device does not return)",
                            held["vcpu"], held["in_exit_ms"]
                        ),
                    ));
                }
                Ok(VmHealth::ok(&state))
            }
        }
    }
}
