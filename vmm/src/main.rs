//! `drydock-vmm`: drydock's own KVM VMM as a program of its own. The
//! instance supervisor starts one per running instance with a JSON VM spec;
//! the console is on stdin/stdout, control and events on the spec's
//! sockets. It links none of the runbook engine, the host's store or the
//! network front ends: only what runs the guest.
//!
//! Exit codes: 0 the guest powered off or the VMM was stopped, 1 KVM or
//! the machine failed, 2 a usage error (bad arguments, unreadable or
//! invalid spec).

use std::io::Read;
use std::path::{Path, PathBuf};

use drydock_vmm::machine::{control::run_vmm_process, MachineEnd};
use drydock_vmm::spec::VmSpec;

/// The largest spec file read: a spec is a few hundred bytes per disk.
const MAX_SPEC_BYTES: u64 = 4 << 20;

const USAGE: &str = "usage: drydock-vmm --spec FILE

Runs one virtual machine in drydock's own KVM VMM from a JSON VM spec
(written by drydock's instance supervisor). The guest's console is on
stdin/stdout.

  --spec FILE   the VM spec (JSON)
  --help        this text
  --version     the version

Environment: DRYDOCK_LOG sets the log filter (default warn).";

#[derive(Debug, PartialEq, Eq)]
enum Args {
    Run(PathBuf),
    Help,
    Version,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut spec = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--help" | "-h" => return Ok(Args::Help),
            "--version" | "-V" => return Ok(Args::Version),
            "--spec" => {
                let v = it
                    .next()
                    .ok_or("--spec needs a file: drydock-vmm --spec FILE")?;
                if spec.replace(PathBuf::from(v)).is_some() {
                    return Err("--spec given twice".into());
                }
            }
            s if s.starts_with("--spec=") => {
                if spec.replace(PathBuf::from(&s["--spec=".len()..])).is_some() {
                    return Err("--spec given twice".into());
                }
            }
            other => {
                return Err(format!(
                    "unexpected argument `{}`; see drydock-vmm --help",
                    other.escape_debug()
                ))
            }
        }
    }
    spec.map(Args::Run)
        .ok_or_else(|| "no VM spec: drydock-vmm --spec FILE".into())
}

/// Reads and parses the spec: a regular file of bounded size (a FIFO or a
/// device would hang or exhaust memory).
fn read_spec(path: &Path) -> Result<VmSpec, String> {
    let shown = path.display();
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open the VM spec {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the VM spec {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("the VM spec {shown} is not a regular file"));
    }
    if meta.len() > MAX_SPEC_BYTES {
        return Err(format!(
            "the VM spec {shown} is {} bytes; at most {MAX_SPEC_BYTES} are read",
            meta.len()
        ));
    }
    let mut text = String::new();
    file.take(MAX_SPEC_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the VM spec {shown}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("the VM spec {shown} is not valid: {e}"))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DRYDOCK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let spec_path = match parse_args(&args) {
        Ok(Args::Run(p)) => p,
        Ok(Args::Help) => {
            println!("{USAGE}");
            return;
        }
        Ok(Args::Version) => {
            let hooks = if cfg!(feature = "test-hooks") {
                " (test hooks)"
            } else {
                ""
            };
            println!("drydock-vmm {}{hooks}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Err(e) => {
            eprintln!("drydock-vmm: {e}");
            std::process::exit(2);
        }
    };
    let spec = match read_spec(&spec_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("drydock-vmm: {e}");
            std::process::exit(2);
        }
    };
    let code = match run_vmm_process(&spec) {
        Ok(end) => {
            eprintln!(
                "drydock-vmm: {}",
                serde_json::to_string(&end).unwrap_or_default()
            );
            match end {
                MachineEnd::InternalError { .. } => 1,
                _ => 0,
            }
        }
        Err(e) => {
            eprintln!("drydock-vmm: {e}");
            1
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_are_parsed_or_refused_with_the_fix() {
        assert_eq!(
            parse_args(&args(&["--spec", "/s.json"])),
            Ok(Args::Run("/s.json".into()))
        );
        assert_eq!(
            parse_args(&args(&["--spec=/s.json"])),
            Ok(Args::Run("/s.json".into()))
        );
        assert_eq!(parse_args(&args(&["--help"])), Ok(Args::Help));
        assert_eq!(parse_args(&args(&["--version"])), Ok(Args::Version));
        assert!(parse_args(&args(&[])).unwrap_err().contains("--spec FILE"));
        assert!(parse_args(&args(&["--spec"]))
            .unwrap_err()
            .contains("needs a file"));
        assert!(parse_args(&args(&["--spec", "a", "--spec", "b"]))
            .unwrap_err()
            .contains("twice"));
        let e = parse_args(&args(&["--spce", "a"])).unwrap_err();
        assert!(e.contains("`--spce`") && e.contains("--help"), "{e}");
        let e = parse_args(&args(&["\x1b[2J"])).unwrap_err();
        assert!(!e.contains('\x1b'), "{e}");
    }

    #[test]
    fn a_spec_must_be_a_bounded_regular_file_of_valid_json() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_spec(dir.path()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read_spec(&dir.path().join("missing")).unwrap_err();
        assert!(e.contains("cannot open"), "{e}");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\"name\": 1}").unwrap();
        let e = read_spec(&bad).unwrap_err();
        assert!(e.contains("is not valid"), "{e}");
        let big = dir.path().join("big.json");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_SPEC_BYTES + 1).unwrap();
        let e = read_spec(&big).unwrap_err();
        assert!(e.contains("at most"), "{e}");
        let e = read_spec(Path::new("/dev/zero")).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
