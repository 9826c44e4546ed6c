//! What the REPL knows about the functions it can call, generated from the
//! engine's function metadata ([`drydock_stdlib::doc::entries`]), so help
//! and completion list exactly what is installed, with the parameter names
//! and documentation each function was registered with (next to its code:
//! [`drydock_stdlib::doc`]). A function registered without documentation
//! still appears, with its signature, and a unit test fails until it is
//! documented.

use drydock_stdlib::doc::{entries, Entry};
use rhai::Engine;

/// One callable (all overloads of one name).
#[derive(Debug, Clone, PartialEq)]
pub struct FnDoc {
    /// `instance`, `console`… or None for a global function.
    pub module: Option<String>,
    pub name: String,
    /// For methods and properties: the type of the receiver (`ExpectSession`).
    pub receiver: Option<String>,
    /// One rendered signature per overload, with parameter names
    /// (`console::open(instance, options) -> ExpectSession`).
    pub signatures: Vec<String>,
    /// The summary line of the first overload's documentation.
    pub description: String,
    /// Every overload, as registered: typed signature and documentation.
    pub overloads: Vec<Entry>,
}

impl FnDoc {
    /// `module::name` or `name`.
    pub fn qualified(&self) -> String {
        match &self.module {
            Some(m) => format!("{m}::{}", self.name),
            None => self.name.clone(),
        }
    }

    /// `:help NAME`: each overload's typed signature, and its documentation
    /// (once for overloads documented alike).
    fn full(&self, out: &mut String) {
        for (i, o) in self.overloads.iter().enumerate() {
            out.push_str(&format!("  {}\n", o.signature(true)));
            let next_same = self.overloads.get(i + 1).is_some_and(|n| n.doc == o.doc);
            if !next_same {
                for line in &o.doc {
                    out.push_str(&format!("      {line}\n"));
                }
            }
        }
    }
}

/// Module constants with what they mean (Rhai's metadata has functions
/// only): documented beside their registration in the stdlib.
pub fn constants() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    drydock_stdlib::doc::sections().flat_map(|s| s.constants.iter())
}

/// Every function of an engine, with docs.
#[derive(Debug, Clone, Default)]
pub struct FunctionIndex {
    pub functions: Vec<FnDoc>,
}

impl FunctionIndex {
    /// Builds the index from what `engine` has registered (standard
    /// packages excluded), documentation included.
    pub fn from_engine(engine: &Engine) -> Self {
        let mut functions: Vec<FnDoc> = Vec::new();
        for e in entries(engine) {
            let same =
                |f: &FnDoc| f.module == e.module && f.receiver == e.receiver && f.name == e.name;
            let signature = e.signature(false);
            match functions.iter_mut().find(|f| same(f)) {
                Some(f) => {
                    if !f.signatures.contains(&signature) {
                        f.signatures.push(signature);
                    }
                    f.overloads.push(e);
                }
                None => functions.push(FnDoc {
                    module: e.module.clone(),
                    name: e.name.clone(),
                    receiver: e.receiver.clone(),
                    signatures: vec![signature],
                    description: e.summary().to_string(),
                    overloads: vec![e],
                }),
            }
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
                out.push_str(
                    "methods and properties of handles (let c = console::open(id); c.expect(…)):\n",
                );
                for f in self.methods() {
                    line(&mut out, f);
                }
                out.push_str("constants:\n");
                for (c, d) in constants() {
                    out.push_str(&format!("  {c:<58} {d}\n"));
                }
            }
            Some(t) => {
                let t = t.trim_end_matches("::").trim_end_matches("()");
                // A module or a handle type: its functions, one line each.
                for f in self
                    .functions
                    .iter()
                    .filter(|f| f.module.as_deref() == Some(t) || f.receiver.as_deref() == Some(t))
                {
                    line(&mut out, f);
                }
                // A function or method: every overload with its documentation.
                for f in self.functions.iter().filter(|f| {
                    f.qualified() == t
                        || f.name == t
                        || f.receiver
                            .as_ref()
                            .is_some_and(|r| format!("{r}.{}", f.name) == t)
                }) {
                    f.full(&mut out);
                }
                for (c, d) in constants().filter(|(c, _)| c.starts_with(t)) {
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
                "console::open(instance) -> ExpectSession",
                "console::open(instance, options) -> ExpectSession"
            ]
        );
        assert!(open.description.starts_with("An expect session on"));
        let help = idx.help(Some("console::open"));
        assert!(
            help.contains("console::open(instance: string, options: map) -> ExpectSession"),
            "{help}"
        );
        assert!(
            help.contains("      Example: `let c = console::open("),
            "{help}"
        );
        let id = idx.help(Some("DirHandle.id"));
        assert!(id.contains("DirHandle.id -> map"), "{id}");
        let sleep = idx.help(Some("sleep"));
        assert_eq!(
            sleep.matches("Waits").count(),
            1,
            "one text for alike overloads: {sleep}"
        );
        assert!(idx.modules().contains(&"instance".to_string()));
        let expect = idx.methods().find(|f| f.name == "expect").unwrap();
        assert_eq!(expect.receiver.as_deref(), Some("ExpectSession"));
        assert!(idx
            .help(Some("volume"))
            .contains("volume::attach(volume, instance)"));
        assert!(idx.help(Some("nope")).contains("no function"));
    }

    /// A function registered without documentation (drydock_stdlib::doc)
    /// still shows, with its signature, but this test fails: the stdlib's,
    /// the runtime's and the REPL's own functions are all documented.
    #[test]
    fn every_registered_function_is_described() {
        let missing: Vec<String> = index()
            .functions
            .iter()
            .filter(|f| {
                f.overloads
                    .iter()
                    .any(|o| o.doc.is_empty() || o.params.iter().any(|(n, _)| n == "_"))
            })
            .map(|f| f.signatures.join(" | "))
            .collect();
        assert!(
            missing.is_empty(),
            "document these where they are registered (drydock_stdlib::doc::doc): {missing:?}"
        );
    }
}
