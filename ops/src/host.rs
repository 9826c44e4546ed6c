//! Opening the embedded host: every front end opens it here, for the
//! region and profile it acts in.

use std::path::Path;

use drydock_host::{Host, HostError};

/// Where a front end acts: its data directory, region and profile.
#[derive(Debug, Clone, Copy)]
pub struct HostOptions<'a> {
    pub data_dir: &'a Path,
    pub region: &'a str,
    pub profile: &'a str,
}

/// Opens the host for a region and profile (which reconciles the region's
/// instances with the processes actually running). Instance processes are
/// started as `drydock-instance` ([`drydock_host::instance_program`]).
pub fn open(opts: &HostOptions) -> Result<Host, HostError> {
    Host::open(
        opts.data_dir,
        opts.region,
        opts.profile,
        drydock_host::instance_program(opts.data_dir),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_a_known_region_and_refuses_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let opts = HostOptions {
            data_dir: dir.path(),
            region: "region-a",
            profile: "default",
        };
        let host = open(&opts).unwrap();
        assert_eq!((host.region(), host.profile()), ("region-a", "default"));
        let e = open(&HostOptions {
            region: "region-z",
            ..opts
        })
        .err()
        .unwrap();
        assert!(
            e.is_usage() && e.to_string().contains("unknown region"),
            "{e}"
        );
        let e = open(&HostOptions {
            profile: "a/b",
            ..opts
        })
        .err()
        .unwrap();
        assert!(
            e.is_usage() && e.to_string().contains("profile name"),
            "{e}"
        );
    }
}
