//! docs/primitives.md is generated from the documentation every primitive
//! is registered with (drydock_stdlib::doc): this test fails when the file
//! differs from what the registrations say, and when a registered function
//! has no documentation.
//!
//! `UPDATE_DOCS=1 cargo test -p drydock-stdlib --test primitives_doc`
//! rewrites the file.

use std::path::PathBuf;

use drydock_stdlib::doc::{entries, markdown, metadata_context, section_entries, sections};

const UPDATE: &str = "UPDATE_DOCS=1 cargo test -p drydock-stdlib --test primitives_doc";

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/primitives.md")
}

#[test]
fn primitives_md_is_generated_from_the_registrations() {
    let want = markdown();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(path(), &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(path()).unwrap_or_default();
    if have == want {
        return;
    }
    let (n, (h, w)) = have
        .lines()
        .chain(std::iter::repeat(""))
        .zip(want.lines().chain(std::iter::repeat("")))
        .enumerate()
        .find(|(_, (h, w))| h != w)
        .unwrap_or((0, ("", "")));
    panic!(
        "docs/primitives.md is not what the functions' registrations say; `{UPDATE}` rewrites it.\n\
         first difference, line {}:\n  in the file:   {h}\n  generated:     {w}",
        n + 1
    );
}

#[test]
fn every_registered_primitive_is_documented() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = metadata_context(dir.path());
    let mut undocumented = Vec::new();
    let mut total = 0;
    for s in sections() {
        let found = section_entries(s, &ctx);
        assert!(!found.is_empty(), "section {} registers nothing", s.name);
        assert!(!s.about.is_empty(), "section {} says nothing", s.name);
        for e in found {
            total += 1;
            let unnamed = e.params.iter().any(|(n, t)| n == "_" || t.is_empty());
            if e.summary().trim().is_empty() || unnamed {
                undocumented.push(e.signature(true));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "registered without documentation or parameter names — document them where they are \
         registered (drydock_stdlib::doc::doc(\"name(params)\", &[summary, …])), then `{UPDATE}`: \
         {undocumented:?}"
    );
    // The sections are all that `install` registers.
    let mut engine = rhai::Engine::new_raw();
    drydock_stdlib::install(&mut engine, &ctx);
    let stdlib: usize = drydock_stdlib::SECTIONS
        .iter()
        .map(|s| section_entries(s, &ctx).len())
        .sum();
    assert_eq!(entries(&engine).len(), stdlib);
    assert!(
        total > stdlib,
        "the runtime's primitives are in the reference too"
    );
}
