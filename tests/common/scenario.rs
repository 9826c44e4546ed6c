//! Scenario builders: the set-ups guest tests share, each returning what
//! the test goes on with once it is ready.

use super::Drydock;

/// The region the scenarios launch in.
pub const REGION: &str = "region-a";
/// The root password of `Scenario::instance`'s guests.
pub const ROOT_PW: &str = "hunter2";

pub struct Scenario;

impl Scenario {
    /// An instance of type `ty` launched from the shared image with root
    /// password `ROOT_PW`, booted to its login prompt; its id.
    pub fn instance(dd: &Drydock, ty: &str) -> String {
        Self::instance_with(dd, &["--type", ty, "--root-password", ROOT_PW])
    }

    /// An instance launched from the shared image with `args`, booted to
    /// its login prompt; its id.
    pub fn instance_with(dd: &Drydock, args: &[&str]) -> String {
        let img = dd.image(REGION);
        let id = dd.launch(REGION, &img, args);
        dd.wait_login(REGION, &id);
        id
    }

    /// An instance (root password `pw`, faults allowed) that booted once,
    /// then was stopped, given `fault` and started again; its id.
    pub fn broken(dd: &Drydock, fault: &str) -> String {
        let id = Self::instance_with(dd, &["--root-password", "pw", "--allow-faults"]);
        dd.inject_fault(REGION, &id, fault);
        id
    }

    /// A broken (old generation) instance, as launched, and a rescue (new
    /// generation, so disks hot-plug) booted to its login prompt, both with
    /// root password `pw`. The rescue is up first, as an operator's would
    /// be: a disk hot-plugged while its guest still boots can be missed by
    /// the guest (seen as "the rescue instance does not see vol-…" in the
    /// random-kill repair, about one run in three).
    pub fn broken_and_rescue(dd: &Drydock) -> (String, String) {
        let img = dd.image(REGION);
        let broken = dd.launch(
            REGION,
            &img,
            &["--type", "m1.small", "--root-password", "pw"],
        );
        let rescue = dd.launch(
            REGION,
            &img,
            &["--type", "n2.small", "--root-password", "pw"],
        );
        dd.wait_login(REGION, &rescue);
        (broken, rescue)
    }
}
