//! The parameter store as runbooks and commands read it: a value opened
//! (a secure one unsealed with the data directory's key), values sealed by
//! older drydocks bound to their versions, and the `param()`/`secret()`
//! primitives. It sits above both the journal (where values are stored)
//! and the secrets (how they are sealed and masked), so neither needs the
//! other's module.

use std::path::{Path, PathBuf};

use crate::secrets::{open_parameter, seal_parameter, SecretKey, Secrets};

/// Seals every parameter value stored before versions were bound again,
/// bound to its version. Returns how many were resealed.
pub fn reseal_legacy_parameters(
    key: &SecretKey,
    journal: &mut crate::journal::Journal,
) -> Result<usize, String> {
    let mut n = 0;
    for (name, version, stored) in journal
        .legacy_sealed_parameters()
        .map_err(|e| e.to_string())?
    {
        let plain = key
            .open(&name, &stored)
            .map_err(|e| format!("parameter {name} version {version}: {e}"))?;
        let sealed = seal_parameter(key, &name, version, &plain).map_err(|e| e.to_string())?;
        journal
            .replace_sealed_value(&name, version, &stored, &sealed)
            .map_err(|e| e.to_string())?;
        n += 1;
    }
    Ok(n)
}

/// A value of the parameter store, opened when it is secure; says
/// whether it was.
pub fn read_parameter(
    data_dir: &Path,
    journal: &crate::journal::Journal,
    name: &str,
    which: &crate::journal::Selector,
) -> Result<(String, bool), String> {
    let rec = journal.parameter(name, which).map_err(|e| e.to_string())?;
    if !rec.secure {
        return Ok((rec.value, false));
    }
    SecretKey::load_or_create(data_dir)
        .and_then(|k| open_parameter(&k, &rec.name, rec.version, &rec.value))
        .map(|v| (v, true))
        .map_err(|e| format!("parameter {}: {e}", rec.name))
}

/// Registers `param("NAME[:VERSION|:LABEL]")` (a value of the parameter
/// store; a secure one is registered as a secret) and `secret(value)`
/// (masks a value obtained at run time from now on).
pub fn install_primitives(engine: &mut rhai::Engine, data_dir: PathBuf, secrets: Secrets) {
    use rhai::{EvalAltResult, FuncRegistration, NativeCallContext};
    let s = secrets.clone();
    // The documentation is Rhai metadata: help and docs/primitives.md read it.
    FuncRegistration::new("param")
        .with_params_info(["reference: string", "string"])
        .with_comments([
            "/// A value of drydock's parameter store: `\"NAME\"`, `\"NAME:VERSION\"` or `\"NAME:LABEL\"`.\n\
             /// A SecureString is masked (`****`) in everything the execution writes from then on.\n\
             /// Fails when there is no such parameter or version. Example: `param(\"db-password:prod\")`",
        ])
        .register_into_engine(
        engine,
        move |ctx: NativeCallContext, reference: &str| -> Result<String, Box<EvalAltResult>> {
            let fail = |e: String| -> Box<EvalAltResult> {
                EvalAltResult::ErrorRuntime(
                    format!("param({:?}): {e}", crate::display::sanitize(reference)).into(),
                    ctx.call_position(),
                )
                .into()
            };
            let (name, which) = crate::journal::Selector::split(reference);
            let journal =
                crate::journal::Journal::open(&data_dir).map_err(|e| fail(e.to_string()))?;
            let (value, secure) =
                read_parameter(&data_dir, &journal, name, &which).map_err(fail)?;
            if secure {
                s.add(&value);
            }
            Ok(value)
        },
    );
    FuncRegistration::new("secret")
        .with_params_info(["value: string", "string"])
        .with_comments([
            "/// Marks a value obtained at run time as secret: masked (`****`) in output, history,\n\
             /// transcripts and the journal from now on; returns the value.",
        ])
        .register_into_engine(engine, move |value: &str| -> String {
        secrets.add(value);
        value.to_string()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_value_is_resealed_for_its_version_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::load_or_create(dir.path()).unwrap();
        // A legacy value (bound to the name only) is resealed for its version.
        let mut j = crate::journal::Journal::open(dir.path()).unwrap();
        let legacy = key.seal("api/token", "t0k").unwrap();
        j.put_parameter("api/token", &legacy, true, "", "root")
            .unwrap();
        assert_eq!(reseal_legacy_parameters(&key, &mut j).unwrap(), 1);
        let rec = j
            .parameter("api/token", &crate::journal::Selector::Latest)
            .unwrap();
        assert!(
            rec.value.starts_with(crate::secrets::VERSIONED),
            "{}",
            rec.value
        );
        assert_eq!(
            open_parameter(&key, "api/token", 1, &rec.value).unwrap(),
            "t0k"
        );
        assert_eq!(reseal_legacy_parameters(&key, &mut j).unwrap(), 0);
        let (value, secure) = read_parameter(
            dir.path(),
            &j,
            "api/token",
            &crate::journal::Selector::Latest,
        )
        .unwrap();
        assert_eq!((value.as_str(), secure), ("t0k", true));
    }
}
