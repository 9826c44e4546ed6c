//! What the REPL knows about the functions it can call, generated from the
//! engine's registered functions (`Engine::gen_fn_metadata_to_json`), so
//! help and completion list exactly what is installed. Rhai keeps no
//! parameter names for native functions: a table here adds names and a
//! one-line description; a function missing from it still appears, with
//! its generated signature (and a unit test fails until it is described).

use std::collections::BTreeMap;

use rhai::Engine;
use serde_json::Value;

/// One callable (all overloads of one name).
#[derive(Debug, Clone, PartialEq)]
pub struct FnDoc {
    /// `instance`, `console`… or None for a global function.
    pub module: Option<String>,
    pub name: String,
    /// For methods: the type of the receiver (`ExpectSession`).
    pub receiver: Option<String>,
    /// One rendered signature per overload.
    pub signatures: Vec<String>,
    pub description: String,
}

impl FnDoc {
    /// `module::name` or `name`.
    pub fn qualified(&self) -> String {
        match &self.module {
            Some(m) => format!("{m}::{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// (qualified name or `Receiver.method`, parameter lists by overload, description).
type Doc = (&'static str, &'static [&'static str], &'static str);

const DOCS: &[Doc] = &[
    (
        "instance::list",
        &["#{ tag: \"KEY=VALUE\" }"],
        "the region's instances (with their tags), optionally only those with a tag",
    ),
    (
        "instance::tag",
        &["id", "#{ KEY: VALUE }"],
        "sets tags on an instance; returns all its tags",
    ),
    (
        "instance::untag",
        &["id", "key"],
        "removes a tag from an instance; returns the tags left",
    ),
    (
        "volume::list",
        &["#{ tag: \"KEY=VALUE\" }"],
        "the region's volumes (with their tags), optionally only those with a tag",
    ),
    (
        "volume::tag",
        &["id", "#{ KEY: VALUE }"],
        "sets tags on a volume; returns all its tags",
    ),
    (
        "volume::untag",
        &["id", "key"],
        "removes a tag from a volume; returns the tags left",
    ),
    (
        "instance::describe",
        &["id"],
        "an instance's record: state, type, image, root volume, attached volumes",
    ),
    (
        "instance::launch",
        &["#{ image, type, root_password, user_data, hostname, tags, client_token }"],
        "launch an instance from an image; returns its id (idempotent within a runbook step)",
    ),
    ("instance::start", &["id"], "start a stopped instance"),
    (
        "instance::ensure_running",
        &["id", "id, #{ boot_timeout, after_outage_only }"],
        "start the instance unless it runs (after a host outage); with boot_timeout, wait for its login prompt",
    ),
    (
        "instance::stop",
        &["id"],
        "stop cleanly (SysRq sync, remount read-only, power off)",
    ),
    ("instance::reboot", &["id"], "reboot an instance"),
    (
        "instance::terminate",
        &["id"],
        "terminate an instance (its delete-on-termination volumes go)",
    ),
    (
        "instance::force_stop",
        &["id"],
        "pull the plug on an instance",
    ),
    (
        "instance::modify_type",
        &["id, type"],
        "change the type of a stopped instance",
    ),
    (
        "volume::create",
        &["#{ size_mib, ext4_label, snapshot, tags, client_token }"],
        "create a volume; returns its id (idempotent within a runbook step)",
    ),
    (
        "volume::attach",
        &["volume, instance"],
        "attach a data volume (hot-plugged into running n2 instances)",
    ),
    (
        "volume::attach_root",
        &["volume, instance"],
        "attach a volume as an instance's root",
    ),
    (
        "volume::detach",
        &["volume"],
        "detach a volume (refused while mounted)",
    ),
    (
        "volume::force_detach",
        &["volume"],
        "detach a volume even if in use",
    ),
    ("volume::delete", &["volume"], "delete a detached volume"),
    (
        "volume::describe",
        &["volume"],
        "a volume's record: size, kind, attachment",
    ),
    (
        "snapshot::create",
        &["volume"],
        "snapshot a volume; returns the snapshot id",
    ),
    (
        "image::create",
        &["instance, name", "instance, name, #{ no_stop }"],
        "make an image of an instance (no_stop: paused, not stopped); returns its id",
    ),
    (
        "image::copy",
        &["image, region"],
        "copy an image to another region; returns the new id",
    ),
    ("image::deregister", &["image"], "remove an image"),
    (
        "image::describe",
        &["image"],
        "an image's id, name, region and source",
    ),
    (
        "fault::inject",
        &["instance, kind", "instance, kind, target"],
        "put a fault into a stopped instance allowed to be broken",
    ),
    (
        "fault::revert",
        &["instance", "instance, fault-or-kind"],
        "undo faults of a stopped instance (all, or one)",
    ),
    (
        "fault::list",
        &["instance"],
        "the faults put into an instance",
    ),
    (
        "fault::kinds",
        &[""],
        "the faults drydock can put in, with their symptoms",
    ),
    (
        "drivers::needed",
        &["instance_type"],
        "the drivers a type's guests need to find their disks",
    ),
    (
        "drivers::kernel_package",
        &["release"],
        "the Debian package holding a kernel release, or an error",
    ),
    (
        "drivers::volume",
        &["release, drivers"],
        "build a driver volume for a kernel release; returns its id",
    ),
    (
        "drivers::volume_kernel",
        &["volume"],
        "the kernel release a stopped root volume boots",
    ),
    (
        "console::open",
        &["instance", "instance, options"],
        "an expect session on an instance's serial console",
    ),
    (
        "serial::open",
        &["device, baud"],
        "an expect session on a serial port",
    ),
    (
        "ssh::connect",
        &["host, #{ user, key, password, port, host_key }"],
        "an SSH connection (host key checked first)",
    ),
    (
        "dir::open",
        &["path", "path, #{ expect: handle.id }"],
        "open a directory (no symlink followed) for work a swapped path cannot redirect",
    ),
    (
        "DirHandle.list",
        &[""],
        "#{ entries: [#{ name, kind, size, mtime, ino }], skipped: [names not UTF-8] }",
    ),
    (
        "DirHandle.remove",
        &["name", "name, #{ ino }"],
        "remove a regular file of the directory (still that inode), never a link",
    ),
    (
        "DirHandle.write",
        &["name, text"],
        "write a file of the directory (0600), never through a link",
    ),
    (
        "glob_match",
        &["pattern, name"],
        "whether a name matches a shell glob (fnmatch)",
    ),
    (
        "ExpectSession.drain",
        &[""],
        "drop what the console shows until it is quiet (old prompts are not answered)",
    ),
    (
        "ExpectSession.logout",
        &[""],
        "leave the shell login opened (also done when the handle goes)",
    ),
    (
        "ExpectSession.expect",
        &["patterns", "patterns, timeout"],
        "wait for the leftmost match: #{ index, before, matched, captures }",
    ),
    ("ExpectSession.send", &["text"], "send text as is"),
    (
        "ExpectSession.send_line",
        &["text"],
        "send text and a newline",
    ),
    (
        "ExpectSession.send_key",
        &["key"],
        "send one key (\"S\", \"Enter\", \"Ctrl-C\"…)",
    ),
    (
        "ExpectSession.login",
        &["user, password"],
        "log in, whether or not the prompt is already there",
    ),
    (
        "ExpectSession.run",
        &["command", "command, timeout"],
        "run a shell command: #{ stdout, exit_code }",
    ),
    (
        "ExpectSession.wait_for_boot",
        &["", "timeout"],
        "wait until the guest shows a login prompt",
    ),
    (
        "ExpectSession.set_timeout",
        &["timeout"],
        "default timeout of expect/run",
    ),
    (
        "ExpectSession.describe",
        &[""],
        "what this session is connected to",
    ),
    (
        "SshSession.exec",
        &["command", "command, options"],
        "run a remote command: #{ stdout, stderr, exit_code, utf8 }",
    ),
    (
        "SshSession.upload",
        &["local, remote", "local, remote, options"],
        "copy a file to the remote host",
    ),
    (
        "SshSession.download",
        &["remote, local", "remote, local, options"],
        "copy a file from the remote host",
    ),
    (
        "SshSession.shell",
        &[""],
        "an expect session on a remote shell",
    ),
    (
        "shell",
        &["script", "script, options"],
        "run a shell script on this host; its stdout (fails on a non-zero exit)",
    ),
    (
        "shell_result",
        &["script", "script, options"],
        "run a shell script: #{ stdout, stderr, exit_code }",
    ),
    (
        "exec",
        &["argv", "argv, options"],
        "run a program without a shell; its stdout",
    ),
    (
        "exec_result",
        &["argv", "argv, options"],
        "run a program without a shell: #{ stdout, stderr, exit_code }",
    ),
    ("shell_quote", &["word or words"], "quote for a POSIX shell"),
    ("read_file", &["path"], "a file's text"),
    ("write_file", &["path, text"], "write a file atomically"),
    ("append_file", &["path, text"], "append to a file"),
    ("file_exists", &["path"], "whether a path exists"),
    ("env", &["name"], "an environment variable, or ()"),
    ("hostname", &[""], "this host's name"),
    ("now_unix", &[""], "seconds since the epoch"),
    ("now_ms", &[""], "milliseconds since the epoch"),
    (
        "calendar::state",
        &["name"],
        "\"open\" or \"closed\": a change calendar's state now",
    ),
    (
        "calendar::reason",
        &["name"],
        "why a change calendar is closed now (empty when open)",
    ),
    (
        "run_runbook",
        &["name", "name, params", "name, params, options"],
        "runbooks only (a child execution belongs to a step): in the REPL use `:run NAME k=v`",
    ),
    (
        "approve",
        &["", "#{ … }"],
        "runbooks only (an approval belongs to an execution): `:save` the steps as a runbook and `:run` it",
    ),
    (
        "cleanup",
        &["name, f", "name, options, f"],
        "runbooks only (a cleanup runs when its execution ends)",
    ),
    ("re", &["pattern"], "a regex pattern for expect"),
    (
        "secret",
        &["value"],
        "mark a value secret: masked in output, history and journal",
    ),
    ("param", &["name"], "a value from drydock's parameter store"),
    (
        "sleep",
        &["duration"],
        "wait (\"30s\", seconds); Ctrl-C stops it",
    ),
    (
        "duration_secs",
        &["duration"],
        "a duration (\"1m30s\") in seconds",
    ),
    (
        "step",
        &["name, || body", "name, options, || body"],
        "run the body (in a runbook: a journaled step)",
    ),
    (
        "target",
        &[""],
        "the focused instance (`:use i-…`), or an error when none",
    ),
];

/// Module constants (not in Rhai's function metadata).
pub const CONSTANTS: &[(&str, &str)] = &[
    (
        "console::TIMEOUT",
        "in an expect list: a timeout is a match",
    ),
    (
        "console::EOF",
        "in an expect list: end of stream is a match",
    ),
];

/// Every function of an engine, with docs.
#[derive(Debug, Clone, Default)]
pub struct FunctionIndex {
    pub functions: Vec<FnDoc>,
}

/// A Rust type name as an operator reads it.
fn short_type(t: &str) -> String {
    let t = t.trim();
    let t = t
        .strip_prefix("core::result::Result<")
        .and_then(|r| r.rsplit_once(','))
        .map_or(t, |(ok, _)| ok);
    let t = t.trim_start_matches("&mut ").trim_start_matches('&');
    if t.contains("BTreeMap") || t == "map" {
        return "map".into();
    }
    if t.contains("Dynamic") {
        return "any".into();
    }
    if t == "()" {
        return "()".into();
    }
    let last = t.rsplit("::").next().unwrap_or(t);
    match last {
        "String" | "str" | "ImmutableString" => "string".into(),
        "ExpectHandle" => "ExpectSession".into(),
        other => other.to_string(),
    }
}

fn doc(key: &str) -> Option<&'static Doc> {
    DOCS.iter().find(|d| d.0 == key)
}

impl FunctionIndex {
    /// Builds the index from what `engine` has registered (standard
    /// packages excluded).
    pub fn from_engine(engine: &Engine) -> Self {
        let json = match engine.gen_fn_metadata_to_json(false) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!("repl: no function metadata: {e}");
                return Self::default();
            }
        };
        let v: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
        // (module, name, receiver) -> overloads (param types, return type)
        type Key = (Option<String>, String, Option<String>);
        let mut by: BTreeMap<Key, Vec<(Vec<String>, String)>> = BTreeMap::new();
        let mut add = |module: Option<String>, f: &Value| {
            let name = f["name"].as_str().unwrap_or_default().to_string();
            if name.is_empty() || name.starts_with("anon$") || name.starts_with("get$") {
                return;
            }
            let params: Vec<String> = f["params"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| p["type"].as_str().unwrap_or("_").to_string())
                        .collect()
                })
                .unwrap_or_else(|| vec!["_".into(); f["numParams"].as_u64().unwrap_or(0) as usize]);
            let ret = f["returnType"].as_str().map(short_type).unwrap_or_default();
            let (receiver, params) = match params.first() {
                Some(p) if p.starts_with("&mut ") => (Some(short_type(p)), params[1..].to_vec()),
                _ => (None, params),
            };
            let params = params.iter().map(|p| short_type(p)).collect();
            by.entry((module, name, receiver))
                .or_default()
                .push((params, ret));
        };
        if let Some(fs) = v["functions"].as_array() {
            for f in fs {
                add(None, f);
            }
        }
        if let Some(mods) = v["modules"].as_object() {
            for (m, body) in mods {
                for f in body["functions"].as_array().into_iter().flatten() {
                    add(Some(m.clone()), f);
                }
            }
        }
        let mut functions = Vec::new();
        for ((module, name, receiver), mut overloads) in by {
            overloads.sort_by_key(|(p, _)| p.len());
            overloads.dedup_by_key(|(p, _)| p.len());
            let key = match (&module, &receiver) {
                (Some(m), _) => format!("{m}::{name}"),
                (None, Some(r)) => format!("{r}.{name}"),
                (None, None) => name.clone(),
            };
            let d = doc(&key);
            let prefix = match (&module, &receiver) {
                (Some(m), _) => format!("{m}::{name}"),
                (None, Some(r)) => format!("{r}.{name}"),
                (None, None) => name.clone(),
            };
            let signatures = overloads
                .iter()
                .map(|(params, ret)| {
                    let named = d.and_then(|d| {
                        d.1.iter().find(|p| {
                            let n = if p.is_empty() { 0 } else { count_params(p) };
                            n == params.len()
                        })
                    });
                    let args = match named {
                        Some(n) => n.to_string(),
                        None => params.join(", "),
                    };
                    let ret = match ret.as_str() {
                        "" | "_" | "()" => String::new(),
                        r => format!(" -> {r}"),
                    };
                    format!("{prefix}({args}){ret}")
                })
                .collect();
            functions.push(FnDoc {
                module,
                name,
                receiver,
                signatures,
                description: d.map(|d| d.2.to_string()).unwrap_or_default(),
            });
        }
        Self { functions }
    }

    /// Module names, sorted.
    pub fn modules(&self) -> Vec<String> {
        let mut m: Vec<String> = self
            .functions
            .iter()
            .filter_map(|f| f.module.clone())
            .collect();
        m.dedup();
        m.sort();
        m.dedup();
        m
    }

    /// Functions of `module` (None: global functions, not methods).
    pub fn in_module<'a>(&'a self, module: Option<&'a str>) -> impl Iterator<Item = &'a FnDoc> {
        self.functions
            .iter()
            .filter(move |f| f.module.as_deref() == module && f.receiver.is_none())
    }

    /// Methods (functions whose first parameter is a handle).
    pub fn methods(&self) -> impl Iterator<Item = &FnDoc> {
        self.functions.iter().filter(|f| f.receiver.is_some())
    }

    /// `:help TOPIC` / `:functions [MODULE]`: the signatures and
    /// descriptions of a module, function or method.
    pub fn help(&self, topic: Option<&str>) -> String {
        let mut out = String::new();
        let line = |out: &mut String, f: &FnDoc| {
            for (i, s) in f.signatures.iter().enumerate() {
                if i == 0 && !f.description.is_empty() {
                    out.push_str(&format!("  {s:<58} {}\n", f.description));
                } else {
                    out.push_str(&format!("  {s}\n"));
                }
            }
        };
        match topic.map(str::trim).filter(|t| !t.is_empty()) {
            None => {
                out.push_str("global functions:\n");
                for f in self.in_module(None) {
                    line(&mut out, f);
                }
                for m in self.modules() {
                    out.push_str(&format!("{m}::\n"));
                    for f in self.in_module(Some(&m)) {
                        line(&mut out, f);
                    }
                }
                out.push_str("methods of sessions (let c = console::open(id); c.expect(…)):\n");
                for f in self.methods() {
                    line(&mut out, f);
                }
                for (c, d) in CONSTANTS {
                    out.push_str(&format!("  {c:<58} {d}\n"));
                }
            }
            Some(t) => {
                let t = t.trim_end_matches("::").trim_end_matches("()");
                let matches: Vec<&FnDoc> = self
                    .functions
                    .iter()
                    .filter(|f| {
                        f.module.as_deref() == Some(t)
                            || f.qualified() == t
                            || f.name == t
                            || f.receiver.as_deref() == Some(t)
                            || f.receiver
                                .as_ref()
                                .is_some_and(|r| format!("{r}.{}", f.name) == t)
                    })
                    .collect();
                for f in &matches {
                    line(&mut out, f);
                }
                for (c, d) in CONSTANTS.iter().filter(|(c, _)| c.starts_with(t)) {
                    out.push_str(&format!("  {c:<58} {d}\n"));
                }
                if out.is_empty() {
                    out = format!(
                        "no function or module `{t}`; `:functions` lists them all, modules: {}\n",
                        self.modules().join(", ")
                    );
                }
            }
        }
        out
    }
}

fn count_params(list: &str) -> usize {
    // Commas inside `#{ … }` do not separate parameters.
    let mut depth = 0;
    let mut n = 1;
    for c in list.chars() {
        match c {
            '{' | '(' | '[' => depth += 1,
            '}' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => n += 1,
            _ => {}
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> FunctionIndex {
        let dir = tempfile::tempdir().unwrap();
        let s =
            crate::ReplSession::new(dir.path(), "region-a", "default", &drydock_stdlib::install);
        FunctionIndex::from_engine(s.engine())
    }

    #[test]
    fn generated_from_the_engine() {
        let idx = index();
        let open = idx
            .functions
            .iter()
            .find(|f| f.qualified() == "console::open")
            .unwrap();
        assert_eq!(
            open.signatures,
            vec![
                "console::open(instance)",
                "console::open(instance, options)"
            ]
        );
        assert!(idx.modules().contains(&"instance".to_string()));
        let expect = idx.methods().find(|f| f.name == "expect").unwrap();
        assert_eq!(expect.receiver.as_deref(), Some("ExpectSession"));
        assert!(idx
            .help(Some("volume"))
            .contains("volume::attach(volume, instance)"));
        assert!(idx.help(Some("nope")).contains("no function"));
    }

    /// A primitive added without a description still shows (with its
    /// generated signature), but this test asks for a line in DOCS.
    #[test]
    fn every_registered_function_is_described() {
        let missing: Vec<String> = index()
            .functions
            .iter()
            .filter(|f| f.description.is_empty())
            .map(|f| f.signatures.join(" | "))
            .collect();
        assert!(
            missing.is_empty(),
            "describe in repl/src/functions.rs: {missing:?}"
        );
    }
}
