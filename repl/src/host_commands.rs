//! The REPL's `:commands` over the embedded host: `:use` (the focused
//! instance), `:console`, `:instances`, `:region` and `:profile`.

use crate::functions::FunctionIndex;
use crate::render::{table, when};
use drydock_runtime::identity::Identity;

use crate::commands::Repl;

impl Repl<'_> {
    pub(crate) fn host(&self) -> Result<drydock_host::Host, String> {
        drydock_ops::host::open(&drydock_ops::host::HostOptions {
            data_dir: &self.data_dir,
            region: self.session.region(),
            profile: self.session.profile(),
        })
        .map_err(|e| e.to_string())
    }

    pub(crate) fn use_focus(&mut self, id: &str) -> Result<String, String> {
        if id.is_empty() || id == "-" {
            self.session.set_focus(None);
            self.set_shared_focus(None);
            return Ok("no instance focused".into());
        }
        let host = self.host()?;
        let inst = host
            .store()
            .map_err(|e| e.to_string())?
            .instance(id)
            .map_err(|e| e.to_string())?;
        let inst = host
            .in_region(id, &inst.region.clone(), inst)
            .map_err(|e| e.to_string())?;
        self.session.set_focus(Some(inst.id.clone()));
        self.set_shared_focus(Some(inst.id.clone()));
        Ok(format!(
            "focused {} ({} {}): `target()`, `console::open()`, `:console` act on it",
            inst.id,
            inst.state.as_str(),
            inst.instance_type
        ))
    }

    pub(crate) fn set_shared_focus(&self, id: Option<String>) {
        if let Ok(mut f) = self.shared.focus.write() {
            *f = id;
        }
    }

    pub(crate) fn console(&mut self, arg: &str) -> Result<String, String> {
        use drydock_host::console_client::{connect, run_terminal, ConsoleStart, Detached};
        let (id, read_only) = match arg.split_whitespace().collect::<Vec<_>>()[..] {
            [] => (None, false),
            ["--read-only"] => (None, true),
            [id] => (Some(id.to_string()), false),
            [id, "--read-only"] | ["--read-only", id] => (Some(id.to_string()), true),
            _ => return Err("usage: :console [ID] [--read-only]".into()),
        };
        let id = id
            .or_else(|| self.session.focus())
            .ok_or("which instance? `:console i-…`, or focus one with `:use i-…`")?;
        let host = self.host()?;
        let inst = host
            .store()
            .map_err(|e| e.to_string())?
            .instance(&id)
            .map_err(|e| e.to_string())?;
        let inst = host
            .in_region(&id, &inst.region.clone(), inst)
            .map_err(|e| e.to_string())?;
        let dir = host.instance_dir(&inst.id);
        let who = format!(
            "{} (drydock repl, pid {})",
            Identity::current().name,
            std::process::id()
        );
        let conn = connect(&dir, &inst.id, !read_only, &who, false, ConsoleStart::Tail)
            .map_err(|e| e.to_string())?;
        eprint!(
            "[console of {} in {}; Ctrl-] then q returns to the REPL, b sends a break, s<key> SysRq <key>]\r\n",
            inst.id,
            host.region()
        );
        let why = run_terminal(&conn, &dir, read_only).map_err(|e| e.to_string())?;
        Ok(match why {
            Detached::ConsoleClosed => format!("\r\n[the console of {} closed]", inst.id),
            _ => format!("\r\n[back from the console of {}]", inst.id),
        })
    }

    pub(crate) fn instances(&self) -> Result<String, String> {
        let store = drydock_host::HostStore::open(&self.data_dir).map_err(|e| e.to_string())?;
        let list = store
            .instances(Some(self.session.region()))
            .map_err(|e| e.to_string())?;
        if list.is_empty() {
            return Ok(format!("no instances in {}", self.session.region()));
        }
        Ok(table(
            &["INSTANCE", "STATE", "TYPE", "IMAGE", "ROOT VOLUME", "SINCE"],
            list.iter()
                .map(|i| {
                    vec![
                        i.id.clone(),
                        i.state.as_str().to_string(),
                        i.instance_type.clone(),
                        i.image_id.clone(),
                        i.root_volume.clone(),
                        when(i.state_since),
                    ]
                })
                .collect(),
        ))
    }

    pub(crate) fn location(&mut self, cmd: &str, name: &str) -> Result<String, String> {
        if name.is_empty() {
            return Ok(format!(
                "region {}, profile {}",
                self.session.region(),
                self.session.profile()
            ));
        }
        let (region, profile) = if cmd == ":region" {
            drydock_host::check_region(name).map_err(|e| e.to_string())?;
            (name.to_string(), self.session.profile().to_string())
        } else {
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "`{name}` is not a profile name (letters, digits, - and _)"
                ));
            }
            (self.session.region().to_string(), name.to_string())
        };
        self.session.set_location(&region, &profile, self.install);
        if let Ok(mut r) = self.shared.region.write() {
            r.clone_from(&region);
        }
        if let Ok(mut p) = self.shared.profile.write() {
            p.clone_from(&profile);
        }
        if let Ok(mut f) = self.shared.functions.write() {
            *f = FunctionIndex::from_engine(self.session.engine());
        }
        self.shared.poke();
        if let Some(executor) = self.executor.take() {
            self.executor = Some(executor.with_location(&region, &profile));
        }
        Ok(format!("now in {region} as profile {profile}"))
    }
}
