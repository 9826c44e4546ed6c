//! `runbooks` and `validate`.

use drydock_runtime::{Runbook, RunbookOrigin};
use serde_json::json;

use super::{clip, print_json, shown, shown_path, table, Context};
use crate::cli::ValidateArgs;
use crate::failure::CliError;

fn params_text(rb: &Runbook) -> String {
    rb.params
        .iter()
        .map(|p| {
            if p.required {
                format!("{}: {}", p.name, p.kind)
            } else {
                format!("[{}: {}]", p.name, p.kind)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `drydock runbooks`.
pub fn list(ctx: &Context) -> Result<i32, CliError> {
    let entries = ctx.executor.catalog().entries();
    if ctx.json {
        // The same description the web console's catalogue and run form get.
        let out: Vec<_> = entries
            .iter()
            .map(drydock_ops::runbooks::RunbookInfo::of_entry)
            .collect();
        print_json(&out);
        return Ok(0);
    }
    let mut t = table(&["NAME", "DESCRIPTION", "PARAMETERS", "SOURCE"]);
    for e in &entries {
        let source = match &e.origin {
            RunbookOrigin::Bundled(_) if e.shadowed => {
                "bundled (hidden by a user runbook)".to_string()
            }
            RunbookOrigin::Bundled(_) => "bundled".to_string(),
            RunbookOrigin::File(p) => shown_path(p),
        };
        match &e.runbook {
            Ok(rb) => t.add_row(vec![
                shown(&rb.name),
                clip(&rb.description, 60),
                params_text(rb),
                source,
            ]),
            Err(err) => t.add_row(vec![
                "(invalid)".into(),
                clip(&err.to_string(), 60),
                String::new(),
                source,
            ]),
        };
    }
    println!("{t}");
    let dirs: Vec<String> = ctx
        .executor
        .catalog()
        .dirs()
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    println!("runbook directories searched: {}", dirs.join(", "));
    Ok(0)
}

/// `drydock validate FILE...`: exit 2 when any file is invalid.
pub fn validate(ctx: &Context, args: ValidateArgs) -> Result<i32, CliError> {
    let mut results = Vec::new();
    let mut bad = 0;
    for file in &args.files {
        let result = drydock_runtime::input_file::read_to_string(
            file,
            drydock_runtime::input_file::InputKind::Runbook,
        )
        .map_err(|e| e.to_string())
        .and_then(|src| {
            Runbook::parse(src, RunbookOrigin::File(file.clone())).map_err(|e| e.to_string())
        });
        if result.is_err() {
            bad += 1;
        }
        results.push((file, result));
    }
    if ctx.json {
        let out: Vec<_> = results
            .iter()
            .map(|(f, r)| match r {
                Ok(rb) => {
                    json!({ "file": f, "valid": true, "name": rb.name, "params": drydock_ops::runbooks::RunbookInfo::of(rb, false).params })
                }
                Err(e) => json!({ "file": f, "valid": false, "error": e }),
            })
            .collect();
        print_json(&out);
    } else {
        for (f, r) in &results {
            match r {
                Ok(rb) => println!(
                    "ok: {} (runbook `{}`, {} parameters)",
                    f.display(),
                    rb.name,
                    rb.params.len()
                ),
                Err(e) => eprintln!("error: {e}"),
            }
        }
    }
    Ok(if bad > 0 { 2 } else { 0 })
}
