//! `drydock-instance`: one instance's process. The host starts it when an
//! instance starts; it holds the instance's lock, starts the VMM
//! (`drydock-vmm` or QEMU), serves the instance's console and control
//! socket, and records how the VM ended.
//!
//! ```text
//! drydock-instance --data-dir DIR --instance i-… [--group G] [--owner UID]
//! ```
//!
//! Exit codes: 0 the VM ended and was recorded, 1 a failure, 2 a usage error.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use drydock_host::backend::VmmPrograms;
use drydock_runtime::access::{self, Sharing};

const USAGE: &str =
    "usage: drydock-instance --data-dir DIR --instance INSTANCE-ID [--group GROUP] [--owner UID]

Runs one instance of drydock's embedded host until its VM ends. drydock
starts it when an instance starts; operators do not run it by hand.
The VMM is DRYDOCK_VMM, else drydock-vmm beside this program.";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    data_dir: PathBuf,
    instance: String,
    sharing: Sharing,
}

/// What to do instead of running: print and exit.
#[derive(Debug, PartialEq, Eq)]
enum Early {
    Help,
    Version,
    Usage(String),
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, Early> {
    let mut data_dir = None;
    let mut instance = None;
    let mut sharing = Sharing::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let name = arg
            .to_str()
            .ok_or_else(|| Early::Usage(format!("{arg:?} is not an option")))?
            .to_string();
        let mut value = |what: &str| {
            args.next()
                .ok_or_else(|| Early::Usage(format!("{name} needs {what}")))
        };
        match name.as_str() {
            "--help" | "-h" => return Err(Early::Help),
            "--version" | "-V" => return Err(Early::Version),
            "--data-dir" => data_dir = Some(PathBuf::from(value("a directory")?)),
            "--instance" => {
                let v = value("an instance id")?;
                instance = Some(
                    v.into_string()
                        .map_err(|v| Early::Usage(format!("{v:?} is not an instance id")))?,
                );
            }
            "--group" => {
                let v = value("a group name")?;
                sharing.group = Some(
                    v.into_string()
                        .map_err(|v| Early::Usage(format!("{v:?} is not a group name")))?,
                );
            }
            "--owner" => {
                let v = value("a user id")?;
                let uid = v
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                    .ok_or_else(|| {
                        Early::Usage(format!("--owner {v:?} is not a numeric user id"))
                    })?;
                sharing.owner = Some(uid);
            }
            other => return Err(Early::Usage(format!("unknown option `{other}`"))),
        }
    }
    let data_dir = data_dir.ok_or_else(|| Early::Usage("--data-dir is required".into()))?;
    let instance = instance.ok_or_else(|| Early::Usage("--instance is required".into()))?;
    if !valid_instance_id(&instance) {
        return Err(Early::Usage(format!(
            "`{instance}` is not an instance id (i- followed by hex digits)"
        )));
    }
    Ok(Args {
        data_dir,
        instance,
        sharing,
    })
}

/// `i-` and 1 to 32 lowercase hex digits: the id names a directory, so
/// nothing else (no `/`, no `..`) gets through.
fn valid_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|hex| {
        (1..=32).contains(&hex.len())
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DRYDOCK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(Early::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(Early::Version) => {
            println!("drydock-instance {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(Early::Usage(why)) => {
            eprintln!("drydock-instance: {why}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = access::init(&args.data_dir, args.sharing) {
        eprintln!(
            "drydock-instance: cannot set up the data directory {}: {e}",
            args.data_dir.display()
        );
        return ExitCode::from(2);
    }
    match drydock_host::supervisor::supervise(
        &args.data_dir,
        &args.instance,
        &VmmPrograms::from_env(),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drydock-instance: {e}");
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Result<Args, Early> {
        parse(words.iter().map(OsString::from))
    }

    #[test]
    fn parses_the_host_command_line() {
        let a = args(&[
            "--data-dir",
            "/d",
            "--instance",
            "i-0a1b",
            "--group",
            "ops",
            "--owner",
            "1000",
        ])
        .unwrap();
        assert_eq!(a.data_dir, PathBuf::from("/d"));
        assert_eq!(a.instance, "i-0a1b");
        assert_eq!(a.sharing.group.as_deref(), Some("ops"));
        assert_eq!(a.sharing.owner, Some(1000));
        let a = args(&["--instance", "i-1", "--data-dir", "/d"]).unwrap();
        assert_eq!(a.sharing, Sharing::default());
    }

    #[test]
    fn refuses_what_is_not_an_instance_or_an_option() {
        for bad in [
            vec!["--data-dir", "/d"],
            vec!["--instance", "i-1"],
            vec!["--data-dir", "/d", "--instance", "../../etc"],
            vec!["--data-dir", "/d", "--instance", "i-"],
            vec!["--data-dir", "/d", "--instance", "i-0/.."],
            vec!["--data-dir", "/d", "--instance", "i-ABC"],
            vec!["--data-dir", "/d", "--instance", "i-1", "--owner", "alice"],
            vec!["--data-dir", "/d", "--instance", "i-1", "--frobnicate"],
            vec!["--data-dir"],
        ] {
            assert!(matches!(args(&bad), Err(Early::Usage(_))), "{bad:?}");
        }
        assert_eq!(args(&["--help"]), Err(Early::Help));
        assert_eq!(args(&["-V"]), Err(Early::Version));
    }
}
