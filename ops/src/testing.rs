//! A journal with an execution in it, for the tests.

use drydock_runtime::journal::NewExecution;
use drydock_runtime::Journal;

pub fn journal() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    (dir, j)
}

/// Records an execution of `runbook` requested by `requester`; returns its id.
pub fn execution(j: &mut Journal, runbook: &str, requester: &str) -> String {
    j.create_execution(&NewExecution {
        runbook: runbook.into(),
        origin: "<test>".into(),
        source_sha256: "0".repeat(64),
        params: serde_json::Map::new(),
        parent: None,
        auto_approve_by: None,
        requested_by: requester.into(),
        requester_uid: None,
        region: "region-a".into(),
        profile: "default".into(),
        gate: None,
        gate_approvers: Vec::new(),
        run_by: None,
        runbook_owner: None,
    })
    .unwrap()
}
