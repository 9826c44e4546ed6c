//! Where drydock keeps its state and finds runbooks: flags, environment,
//! then the config file, then XDG defaults.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::failure::CliError;

/// The config file (`config.toml`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub runbook_dirs: Vec<PathBuf>,
    pub region: Option<String>,
    pub profile: Option<String>,
    /// A group whose members share the data directory (its files are then
    /// group-readable and -writable, and its sockets accept the group).
    pub group: Option<String>,
    /// Accounts (names or `@group`) that may use `--auto-approve` on any
    /// runbook; root always may. Honoured only from a config file the
    /// caller cannot use to grant themselves rights: see [`trusted_admins`].
    #[serde(default)]
    pub admins: Vec<String>,
    /// The account that owns a shared data directory (group mode): its
    /// files and runbooks are trusted like the caller's own.
    pub owner: Option<String>,
    /// Bundled runbooks that a user runbook of the same name may replace
    /// (otherwise two runbooks of one name are refused).
    #[serde(default)]
    pub override_bundled: Vec<String>,
}

/// The system-wide config, consulted for `admins` only (root-owned).
pub const SYSTEM_CONFIG: &str = "/etc/drydock/config.toml";

/// Settings after every source is applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub runbook_dirs: Vec<PathBuf>,
    pub region: String,
    pub profile: String,
    /// The sharing group (`group` in the config, or `DRYDOCK_GROUP`).
    pub group: Option<String>,
    /// Admin accounts besides root.
    pub admins: Vec<String>,
    /// The shared data directory's owner (uid), from `owner`.
    pub owner: Option<u32>,
    /// Bundled runbooks a user runbook may replace.
    pub override_bundled: Vec<String>,
    /// Why admins listed in a config file were not honoured, if they were not.
    pub ignored_admins: Option<String>,
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => home().join(fallback),
    }
}

fn load_config(path: &Path, explicit: bool) -> Result<ConfigFile, CliError> {
    use drydock_runtime::input_file::{read_to_string, InputKind};
    match read_to_string(path, InputKind::Config) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            CliError::usage(format!("config file {} is not valid: {e}", path.display()))
        }),
        Err(e) if e.is_not_found() && !explicit => Ok(ConfigFile::default()),
        Err(e) => Err(CliError::usage(e.to_string())),
    }
}

/// Who may grant admin rights: `admins` count only from a config file
/// owned by root, or by the data directory's owner, that nobody else can
/// write. A caller's own config (`--config /tmp/mine.toml`) cannot make
/// them an admin of a data directory they do not own. Returns the admins
/// honoured, and why others were not.
fn trusted_admins(
    config_path: &Path,
    listed: Vec<String>,
    data_dir: &Path,
) -> (Vec<String>, Option<String>) {
    use std::os::unix::fs::MetadataExt;
    let mut admins = Vec::new();
    let mut ignored = None;
    // The data directory's owner: the caller for a directory not made yet.
    let dir_owner = std::fs::metadata(data_dir)
        .map(|m| m.uid())
        .unwrap_or_else(|_| drydock_runtime::identity::Identity::current().uid);
    let trusted_file = |p: &Path, owners: &[u32]| -> Result<(), String> {
        let m = std::fs::metadata(p).map_err(|e| e.to_string())?;
        if !owners.contains(&m.uid()) {
            return Err(format!(
                "{} belongs to {}, not to root or the data directory's owner",
                p.display(),
                drydock_runtime::identity::Identity::of_uid(m.uid()).name
            ));
        }
        if m.mode() & 0o022 != 0 {
            return Err(format!(
                "{} is writable by others (mode {:04o})",
                p.display(),
                m.mode() & 0o7777
            ));
        }
        Ok(())
    };
    if !listed.is_empty() {
        match trusted_file(config_path, &[0, dir_owner]) {
            Ok(()) => admins.extend(listed),
            Err(why) => {
                ignored = Some(format!(
                    "`admins` in {} were ignored: {why}; admins come from {SYSTEM_CONFIG} (owned by root) or the data directory owner's config",
                    config_path.display()
                ))
            }
        }
    }
    let system = Path::new(SYSTEM_CONFIG);
    if system != config_path && system.exists() {
        if let (Ok(()), Ok(c)) = (trusted_file(system, &[0]), load_config(system, false)) {
            admins.extend(c.admins);
        }
    }
    (admins, ignored)
}

/// Resolves the settings from flags, environment and config file.
pub fn resolve(
    data_dir_flag: Option<PathBuf>,
    runbook_dir_flags: Vec<PathBuf>,
    config_flag: Option<PathBuf>,
    region_flag: Option<String>,
    profile_flag: Option<String>,
) -> Result<Settings, CliError> {
    let explicit = config_flag.is_some();
    let config_path = config_flag
        .unwrap_or_else(|| xdg("XDG_CONFIG_HOME", ".config").join("drydock/config.toml"));
    let config = load_config(&config_path, explicit)?;
    let data_dir = data_dir_flag
        .or(config.data_dir)
        .unwrap_or_else(|| xdg("XDG_DATA_HOME", ".local/share").join("drydock"));
    let mut runbook_dirs = runbook_dir_flags;
    if let Some(path) = std::env::var_os("DRYDOCK_RUNBOOK_PATH") {
        runbook_dirs.extend(std::env::split_paths(&path).filter(|p| !p.as_os_str().is_empty()));
    }
    runbook_dirs.extend(config.runbook_dirs);
    runbook_dirs.push(data_dir.join("runbooks"));
    // The region comes from this invocation or its config, never from
    // state another command left behind.
    let region = region_flag
        .or_else(|| {
            std::env::var("DRYDOCK_REGION")
                .ok()
                .filter(|r| !r.is_empty())
        })
        .or(config.region)
        .unwrap_or_else(|| "region-a".to_string());
    let profile = profile_flag
        .or_else(|| {
            std::env::var("DRYDOCK_PROFILE")
                .ok()
                .filter(|p| !p.is_empty())
        })
        .or(config.profile)
        .unwrap_or_else(|| "default".to_string());
    let group = std::env::var("DRYDOCK_GROUP")
        .ok()
        .filter(|g| !g.trim().is_empty())
        .or(config.group);
    if let Some(g) = &group {
        if drydock_runtime::identity::group_id(g).is_none() {
            return Err(CliError::usage(format!(
                "the sharing group `{g}` (DRYDOCK_GROUP or `group` in the config) does not exist; create it or unset it"
            )));
        }
    }
    let owner = match &config.owner {
        None => None,
        Some(name) => Some(drydock_runtime::identity::user_id(name).ok_or_else(|| {
            CliError::usage(format!(
                "`owner = {name:?}` in {}: no such account",
                config_path.display()
            ))
        })?),
    };
    let (admins, ignored_admins) = trusted_admins(&config_path, config.admins, &data_dir);
    Ok(Settings {
        data_dir,
        runbook_dirs,
        region,
        profile,
        group,
        admins,
        owner,
        override_bundled: config.override_bundled,
        ignored_admins,
    })
}

/// Who is acting: the account of this process. `--as NAME` is accepted
/// only when it names that account (drydock cannot verify any other
/// claim), so scripts that pass it keep working and nobody can pose as
/// someone else.
pub fn actor(claimed: Option<&str>) -> Result<drydock_runtime::identity::Identity, CliError> {
    let me = drydock_runtime::identity::Identity::current();
    match claimed {
        Some(name) if name.trim() != me.name => Err(CliError::usage(format!(
            "--as {:?}: you are {} (uid {}); drydock acts as the account that runs it and cannot take a name on trust. Run the command as that user (e.g. `sudo -u {} drydock …`), or drop --as",
            drydock_ops::display::shown(name),
            me.name,
            me.uid,
            drydock_ops::display::shown(name.trim()),
        ))),
        _ => Ok(me),
    }
}
