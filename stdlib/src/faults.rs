//! Fault injection in Rhai (`fault::…`), for drills and recovery
//! practice on instances launched with `--allow-faults`:
//!
//! ```rhai
//! instance::stop(params.instance);
//! let f = fault::inject(params.instance, "fstab-missing-disk");
//! instance::start(params.instance);   // the boot stops at the fstab prompt
//! // ... recover ...
//! fault::revert(params.instance, f.id);   // or fault::revert(id) for all
//! fault::list(params.instance);
//! fault::kinds();
//! ```
//!
//! Faults go into the root volume of a stopped instance; inside a step,
//! what was injected lands in the journal as the step's output.

use drydock_host::faults::CATALOG;
use drydock_host::{Host, HostError};
use drydock_runtime::RunContext;
use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, Module, Position};

use crate::doc::doc;

type R<T> = Result<T, Box<EvalAltResult>>;

fn fail(e: HostError) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(e.to_string().into(), Position::NONE).into()
}

fn to_dynamic<T: serde::Serialize>(v: &T) -> Dynamic {
    rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT)
}

/// Registers the `fault` module.
pub fn install(engine: &mut Engine, ctx: &RunContext) {
    let open = {
        let open_host = crate::instances::host_opener(ctx);
        move || -> R<Host> { open_host().map_err(fail) }
    };
    let mut m = Module::new();
    let o = open.clone();
    let sites = ctx.call_sites.clone();
    doc("fault::inject(instance, kind)", &[
        "Puts a fault (`fault::kinds()`) into a stopped instance launched with `--allow-faults`; returns the fault's record (`id`, `kind`…).",
        "Fails when the instance runs or does not allow faults. Example: `fault::inject(id, \"fstab-missing-disk\")`",
    ])
    .set_in(&mut m, move |instance: &str, name: &str| -> R<Map> {
        let token = sites.next("fault").map(|c| c.token);
        let rec = o()?
            .inject_fault(instance, name, None, token.as_deref())
            .map_err(fail)?;
        Ok(to_dynamic(&rec).try_cast::<Map>().unwrap_or_default())
    });
    // fault::inject(id, "stop-service", "syslogd")
    let o = open.clone();
    let sites = ctx.call_sites.clone();
    doc(
        "fault::inject(instance, kind, target)",
        &[
            "Puts a fault aimed at `target` into a stopped instance; returns the fault's record.",
            "Example: `fault::inject(id, \"stop-service\", \"syslogd\")`",
        ],
    )
    .set_in(
        &mut m,
        move |instance: &str, name: &str, target: &str| -> R<Map> {
            let token = sites.next("fault").map(|c| c.token);
            let rec = o()?
                .inject_fault(instance, name, Some(target), token.as_deref())
                .map_err(fail)?;
            Ok(to_dynamic(&rec).try_cast::<Map>().unwrap_or_default())
        },
    );
    let o = open.clone();
    doc(
        "fault::revert(instance)",
        &["Undoes every fault put into a stopped instance; returns the faults reverted."],
    )
    .set_in(&mut m, move |instance: &str| -> R<Array> {
        let done = o()?.revert_faults(instance, None).map_err(fail)?;
        Ok(done.iter().map(to_dynamic).collect())
    });
    let o = open.clone();
    doc("fault::revert(instance, fault)", &[
        "Undoes one fault (its id, or every fault of a kind) of a stopped instance; returns the faults reverted.",
    ])
    .set_in(&mut m, move |instance: &str, which: &str| -> R<Array> {
        let done = o()?.revert_faults(instance, Some(which)).map_err(fail)?;
        Ok(done.iter().map(to_dynamic).collect())
    });
    let o = open.clone();
    doc(
        "fault::list(instance)",
        &["The faults put into an instance and not reverted."],
    )
    .set_in(&mut m, move |instance: &str| -> R<Array> {
        let list = o()?.faults(Some(instance)).map_err(fail)?;
        Ok(list.iter().map(to_dynamic).collect())
    });
    doc(
        "fault::kinds()",
        &["The faults drydock can put in: `[#{ name, description, symptom }]`."],
    )
    .set_in(&mut m, || -> R<Array> {
        Ok(CATALOG
            .iter()
            .map(|k| {
                let mut m = Map::new();
                m.insert("name".into(), k.name.into());
                m.insert("description".into(), k.description.into());
                m.insert("symptom".into(), k.symptom.into());
                Dynamic::from(m)
            })
            .collect())
    });
    engine.register_static_module("fault", m.into());
}
