//! Runs that stop at an approval: started, found and left waiting, with
//! or without their runner.

use std::process::Child;

use super::Drydock;

impl Drydock {
    /// Spawns `drydock <args…>` and waits until its (only) execution asks
    /// for an approval: the runner and the execution's id.
    pub fn spawn_until_approval(&self, args: &[&str]) -> (Child, String) {
        let child = self.spawn(args);
        let id = self.only_execution();
        self.wait_for_approval(&id);
        (child, id)
    }

    /// As `spawn_until_approval`, then kills the runner: an execution
    /// waiting for an approval with no runner alive; its id.
    pub fn approval_without_runner(&self, args: &[&str]) -> String {
        let (mut child, id) = self.spawn_until_approval(args);
        child.kill().unwrap();
        child.wait().unwrap();
        id
    }
}
