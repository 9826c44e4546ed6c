//! Documentation of the primitives, attached where each one is registered.
//!
//! A registration says what a function does next to its code, as Rhai's
//! own function metadata (the `metadata` feature: parameter names and types
//! and doc comments):
//!
//! ```ignore
//! doc("read_file(path)", &[
//!     "A file's text.",
//!     "Errors when the file cannot be read or is not UTF-8.",
//! ])
//! .register(engine, |ctx: NativeCallContext, path: &str| …);
//! ```
//!
//! The parameter names come from the signature, their types from the
//! function itself (a signature naming more or fewer parameters than the
//! function has panics at registration: every test that builds an engine
//! catches it). `Type.method(…)` documents a method (its receiver is the
//! function's `&mut` first parameter), `Type.property` a property getter,
//! `module::name(…)` a function of a module (the prefix is for the reader;
//! the module is the one the function is set into).
//!
//! [`entries`] reads the metadata back from an engine: the REPL's `:help`
//! and completion, and [`markdown`] (docs/primitives.md), are made from it.

use rhai::{Engine, FuncRegistration, Module, RhaiNativeFunc};
use serde_json::Value;

use drydock_runtime::RunContext;

/// What a registration documents (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct Doc {
    signature: &'static str,
    lines: &'static [&'static str],
    volatile: bool,
}

/// The documentation of one function: its signature with parameter names
/// and its lines: a one-line summary first, then what it returns, when it
/// fails, its options, an example.
pub const fn doc(signature: &'static str, lines: &'static [&'static str]) -> Doc {
    Doc {
        signature,
        lines,
        volatile: false,
    }
}

/// A signature taken apart.
struct Parsed<'a> {
    receiver: Option<&'a str>,
    name: &'a str,
    params: Vec<&'a str>,
    property: bool,
}

fn parse(signature: &str) -> Parsed<'_> {
    let (head, params, property) = match signature.split_once('(') {
        Some((head, rest)) => {
            let list = rest
                .trim_end()
                .strip_suffix(')')
                .unwrap_or_else(|| panic!("doc signature `{signature}`: no closing parenthesis"));
            let params: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            (head.trim(), params, false)
        }
        None => (signature.trim(), Vec::new(), true),
    };
    let (receiver, name) = match head.split_once('.') {
        Some((r, n)) => (Some(r), n),
        None => (None, head.rsplit("::").next().unwrap_or(head)),
    };
    assert!(
        !property || receiver.is_some(),
        "doc signature `{signature}`: a function needs its parameter list, a property `Type.name`"
    );
    Parsed {
        receiver,
        name,
        params,
        property,
    }
}

/// A Rust type name as a Rhai script sees it: `string`, `int`, `map`,
/// `array`, `any` (any value), `ExpectSession`…
pub fn rhai_type(rust: &str) -> String {
    let t = rust.trim();
    if let Some(inner) = t.strip_prefix("&mut ") {
        return format!("&mut {}", rhai_type(inner));
    }
    if let Some(inner) = t.strip_prefix("core::result::Result<") {
        // Result<T, Box<EvalAltResult>>: T.
        let mut depth = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '<' => depth += 1,
                '>' => depth -= 1,
                ',' if depth == 0 => return rhai_type(&inner[..i]),
                _ => {}
            }
        }
    }
    if t.starts_with("alloc::vec::Vec<") {
        return "array".into();
    }
    if t.contains("BTreeMap<") {
        return "map".into();
    }
    let last = t.rsplit("::").next().unwrap_or(t);
    match last {
        "&str" | "str" | "String" | "ImmutableString" => "string",
        "i64" => "int",
        "f64" => "float",
        "bool" => "bool",
        "()" => "()",
        "Dynamic" => "any",
        "FnPtr" => "Fn",
        "ExpectHandle" => "ExpectSession",
        other => other,
    }
    .into()
}

impl Doc {
    /// The function reads the world (a clock, the environment): never
    /// computed ahead of time.
    pub const fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    /// Its name as registered (a property's getter is `get$NAME`).
    pub fn name(&self) -> String {
        let p = parse(self.signature);
        if p.property {
            format!("get${}", p.name)
        } else {
            p.name.to_string()
        }
    }

    fn registration(&self, types: &[&str], returns: &str) -> FuncRegistration {
        let p = parse(self.signature);
        assert!(
            !self.lines.is_empty() && !self.lines[0].trim().is_empty(),
            "doc of `{}`: no summary line",
            self.signature
        );
        let mut names: Vec<&str> = Vec::new();
        if let Some(r) = p.receiver {
            let first = types.first().map(|t| rhai_type(t)).unwrap_or_default();
            assert_eq!(
                first,
                format!("&mut {r}"),
                "doc of `{}`: the function's first parameter is not a {r}",
                self.signature
            );
            names.push("self");
        }
        names.extend(&p.params);
        assert_eq!(
            names.len(),
            types.len(),
            "doc of `{}` names {} parameters, the function has {}",
            self.signature,
            names.len(),
            types.len()
        );
        let mut info: Vec<String> = names
            .iter()
            .zip(types)
            .map(|(n, t)| format!("{n}: {}", rhai_type(t)))
            .collect();
        let ret = rhai_type(returns);
        if ret != "()" {
            info.push(ret);
        }
        let comments: Vec<String> = self.lines.iter().map(|l| format!("/// {l}")).collect();
        let reg = if p.property {
            FuncRegistration::new_getter(p.name)
        } else {
            FuncRegistration::new(p.name)
        };
        let reg = reg
            .with_params_info(info)
            .with_comments([comments.join("\n")]);
        if self.volatile {
            reg.with_volatility(true)
        } else {
            reg
        }
    }

    /// Registers `f` into `engine` (a global function, a method or a
    /// property getter) with this documentation.
    pub fn register<A, const N: usize, const X: bool, R, const F: bool, FUNC>(
        self,
        engine: &mut Engine,
        f: FUNC,
    ) where
        A: 'static,
        // Rhai's `Variant` (not exported): any cloneable, shareable value.
        R: std::any::Any + Clone + Send + Sync,
        FUNC: RhaiNativeFunc<A, N, X, R, F> + Send + Sync + 'static,
    {
        self.registration(&FUNC::param_names(), FUNC::return_type_name())
            .register_into_engine(engine, f);
    }

    /// Sets `f` into `module` with this documentation (called
    /// `module::name(…)`).
    pub fn set_in<A, const N: usize, const X: bool, R, const F: bool, FUNC>(
        self,
        module: &mut Module,
        f: FUNC,
    ) where
        A: 'static,
        // Rhai's `Variant` (not exported): any cloneable, shareable value.
        R: std::any::Any + Clone + Send + Sync,
        FUNC: RhaiNativeFunc<A, N, X, R, F> + Send + Sync + 'static,
    {
        self.registration(&FUNC::param_names(), FUNC::return_type_name())
            .set_into_module(module, f);
    }
}

/// One registered function (one overload), as its metadata describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `instance`, `console`… or None for a global function or a method.
    pub module: Option<String>,
    pub name: String,
    /// For methods and properties: the type of the value they act on.
    pub receiver: Option<String>,
    /// A property (`handle.id`), not a function.
    pub property: bool,
    /// Parameter names and types (without the receiver); a name is `_`
    /// when the registration gave none.
    pub params: Vec<(String, String)>,
    /// The type of the value returned; empty for none.
    pub returns: String,
    /// The documentation's lines (summary first); empty when undocumented.
    pub doc: Vec<String>,
}

impl Entry {
    /// `module::name`, `Type.name` or `name`.
    pub fn qualified(&self) -> String {
        match (&self.module, &self.receiver) {
            (Some(m), _) => format!("{m}::{}", self.name),
            (None, Some(r)) => format!("{r}.{}", self.name),
            (None, None) => self.name.clone(),
        }
    }

    /// `console::open(instance, options) -> ExpectSession`; with `types`,
    /// `console::open(instance: string, options: map) -> ExpectSession`.
    pub fn signature(&self, types: bool) -> String {
        let ret = match self.returns.as_str() {
            "" | "()" => String::new(),
            r => format!(" -> {r}"),
        };
        if self.property {
            return format!("{}{ret}", self.qualified());
        }
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(n, t)| match (types, t.as_str()) {
                (true, t) if !t.is_empty() => format!("{n}: {t}"),
                _ => n.clone(),
            })
            .collect();
        format!("{}({}){ret}", self.qualified(), params.join(", "))
    }

    /// The first line of the documentation.
    pub fn summary(&self) -> &str {
        self.doc.first().map(String::as_str).unwrap_or("")
    }
}

/// The functions `engine` has registered (Rhai's standard packages left
/// out), from its metadata: module functions, global functions, then
/// methods and properties by type, each by name and number of parameters.
/// Anonymous functions are left out.
pub fn entries(engine: &Engine) -> Vec<Entry> {
    let json = match engine.gen_fn_metadata_to_json(false) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!("no function metadata: {e}");
            return Vec::new();
        }
    };
    let v: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
    let mut out = Vec::new();
    let mut add = |module: Option<&str>, f: &Value| {
        let raw = f["name"].as_str().unwrap_or_default();
        if raw.is_empty() || f["isAnonymous"].as_bool() == Some(true) || raw.starts_with("anon$") {
            return;
        }
        let (name, property) = match raw.strip_prefix("get$") {
            Some(p) => (p, true),
            None => (raw, false),
        };
        if raw.starts_with("set$") {
            return;
        }
        let mut params: Vec<(String, String)> = match f["params"].as_array() {
            Some(ps) => ps
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or("_").to_string(),
                        p["type"].as_str().map(rhai_type).unwrap_or_default(),
                    )
                })
                .collect(),
            None => {
                vec![("_".into(), String::new()); f["numParams"].as_u64().unwrap_or(0) as usize]
            }
        };
        let receiver = match params.first() {
            Some((_, t)) if t.starts_with("&mut ") => {
                let r = t.trim_start_matches("&mut ").to_string();
                params.remove(0);
                Some(r)
            }
            _ => None,
        };
        let doc = f["docComments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .flat_map(str::lines)
            .map(|l| {
                let l = l.trim_start();
                let l = l
                    .strip_prefix("///")
                    .or_else(|| l.strip_prefix("/**"))
                    .unwrap_or(l);
                l.strip_prefix(' ')
                    .unwrap_or(l)
                    .trim_end_matches("*/")
                    .to_string()
            })
            .collect();
        out.push(Entry {
            module: module.map(str::to_string),
            name: name.to_string(),
            receiver,
            property,
            params,
            returns: f["returnType"].as_str().map(rhai_type).unwrap_or_default(),
            doc,
        });
    };
    for f in v["functions"].as_array().into_iter().flatten() {
        add(None, f);
    }
    if let Some(mods) = v["modules"].as_object() {
        for (m, body) in mods {
            for f in body["functions"].as_array().into_iter().flatten() {
                add(Some(m), f);
            }
        }
    }
    // Module functions, then global functions, then methods and properties.
    out.sort_by_cached_key(|e| {
        (
            e.module.is_none(),
            e.module.clone(),
            e.receiver.clone(),
            e.property,
            e.name.clone(),
            e.params.len(),
            // Overloads with as many parameters, by their types: Rhai's
            // metadata comes out of a hash map.
            e.signature(true),
        )
    });
    out
}

/// A part of the reference: what one installer registers.
pub struct Section {
    /// A heading (`process`, `console`…).
    pub name: &'static str,
    /// What the section holds, for the reader.
    pub about: &'static str,
    /// Module constants (`console::TIMEOUT`) with what they mean: Rhai's
    /// metadata has functions only.
    pub constants: &'static [(&'static str, &'static str)],
    pub install: fn(&mut Engine, &RunContext),
}

/// Primitives drydock's runtime registers beside the stdlib, in runbooks
/// and in the REPL alike: the parameter store and secrets, calendars.
pub const RUNTIME_SECTIONS: &[Section] = &[
    Section {
        name: "parameters and secrets",
        about: "Values of drydock's parameter store, and values masked (`****`) in everything an execution writes or shows.",
        constants: &[],
        install: |engine, ctx| {
            drydock_runtime::parameters::install_primitives(
                engine,
                ctx.data_dir.clone(),
                ctx.secrets.clone(),
            )
        },
    },
    Section {
        name: "calendars",
        about: "Change calendars (`drydock calendar`): whether changes are allowed now.",
        constants: &[],
        install: |engine, ctx| {
            drydock_runtime::schedule::calendar::install(engine, ctx.data_dir.clone())
        },
    },
];

/// Every section of the reference: the stdlib's modules, then the
/// runtime's primitives.
pub fn sections() -> impl Iterator<Item = &'static Section> {
    crate::SECTIONS.iter().chain(RUNTIME_SECTIONS)
}

/// What `section` registers, from a fresh engine.
pub fn section_entries(section: &Section, ctx: &RunContext) -> Vec<Entry> {
    let mut engine = Engine::new_raw();
    (section.install)(&mut engine, ctx);
    entries(&engine)
}

/// A context for building engines only to read their metadata (nothing
/// registered runs).
pub fn metadata_context(data_dir: &std::path::Path) -> RunContext {
    RunContext {
        execution_id: "docs".into(),
        data_dir: data_dir.to_path_buf(),
        interrupt: std::sync::Arc::new(drydock_runtime::interrupt::Interrupt::never()),
        region: "region-a".into(),
        profile: "default".into(),
        secrets: drydock_runtime::secrets::Secrets::new(),
        call_sites: drydock_runtime::executor::CallSites::none(),
    }
}

/// GitHub's anchor of a heading made of lower-case words.
fn anchor(heading: &str) -> String {
    heading.to_lowercase().replace(' ', "-")
}

/// docs/primitives.md: every section's functions with their signatures
/// and documentation, generated from the registrations' metadata.
pub fn markdown() -> String {
    let dir = std::env::temp_dir();
    let ctx = metadata_context(&dir);
    let mut out = String::new();
    out.push_str("# Primitives\n\n");
    out.push_str(
        "<!-- Generated from the functions' registrations (drydock_stdlib::doc); do not edit.\n     \
         `UPDATE_DOCS=1 cargo test -p drydock-stdlib --test primitives_doc` rewrites it. -->\n\n",
    );
    out.push_str(
        "Every function drydock registers into the Rhai engine of a runbook and of the REPL\n\
         (`drydock repl`, where `:help NAME` shows the same text), with its parameters and\n\
         what it returns. Types: `string`, `int`, `float`, `bool`, `map` (`#{ … }`), `array`,\n\
         `any` (any value; a duration is `\"90s\"` or a number of seconds), and the handles\n\
         `ExpectSession`, `SshSession` and `DirHandle`, whose methods are called as\n\
         `handle.method(…)`. The runbook language itself — `step`, `cleanup`, `approve`,\n\
         `run_runbook`, `sleep`, `duration_secs` — is in [runbooks.md](runbooks.md).\n\n",
    );
    out.push_str("## Contents\n\n");
    for s in sections() {
        out.push_str(&format!("- [{}](#{})\n", s.name, anchor(s.name)));
    }
    for s in sections() {
        out.push_str(&format!("\n## {}\n\n{}\n", s.name, s.about));
        for e in section_entries(s, &ctx) {
            out.push_str(&format!(
                "\n### `{}`\n\n{}\n",
                e.signature(true),
                e.doc.join(" ")
            ));
        }
        for (c, what) in s.constants {
            out.push_str(&format!("\n### `{c}`\n\n{what}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_types_read_as_rhai_types() {
        for (rust, rhai) in [
            ("&str", "string"),
            ("rhai::ImmutableString", "string"),
            ("alloc::string::String", "string"),
            ("i64", "int"),
            ("alloc::vec::Vec<rhai::types::dynamic::Dynamic>", "array"),
            (
                "std::collections::btree::map::BTreeMap<smartstring::SmartString<smartstring::config::LazyCompact>, rhai::types::dynamic::Dynamic>",
                "map",
            ),
            (
                "core::result::Result<alloc::vec::Vec<rhai::types::dynamic::Dynamic>, alloc::boxed::Box<rhai::types::error::EvalAltResult>>",
                "array",
            ),
            ("&mut drydock_stdlib::console::ExpectHandle", "&mut ExpectSession"),
            ("rhai::types::dynamic::Dynamic", "any"),
        ] {
            assert_eq!(rhai_type(rust), rhai, "{rust}");
        }
    }

    #[test]
    fn a_registration_carries_names_types_and_lines() {
        let mut engine = Engine::new_raw();
        let mut m = Module::new();
        doc(
            "thing::twice(n)",
            &["Twice `n`.", "Example: `thing::twice(2)`"],
        )
        .set_in(&mut m, |n: i64| n * 2);
        engine.register_static_module("thing", m.into());
        doc("greet(name, options)", &["A greeting."]).register(
            &mut engine,
            |name: &str, _o: rhai::Map| -> Result<String, Box<rhai::EvalAltResult>> {
                Ok(format!("hi {name}"))
            },
        );
        let e = entries(&engine);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].signature(false), "thing::twice(n) -> int");
        assert_eq!(e[0].doc, ["Twice `n`.", "Example: `thing::twice(2)`"]);
        assert_eq!(
            e[1].signature(true),
            "greet(name: string, options: map) -> string"
        );
        assert_eq!(e[1].summary(), "A greeting.");
        assert_eq!(engine.eval::<i64>("thing::twice(21)").unwrap(), 42);
    }

    #[test]
    #[should_panic(expected = "names 1 parameters, the function has 2")]
    fn a_signature_that_does_not_fit_the_function_is_refused() {
        let mut engine = Engine::new_raw();
        doc("add(a)", &["Adds."]).register(&mut engine, |a: i64, b: i64| a + b);
    }
}
