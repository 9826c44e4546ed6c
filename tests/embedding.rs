//! The library API an embedding program uses: custom primitives next to
//! the stdlib, parameters, observers, and the journal it leaves behind.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use drydock_runtime::journal::StepKind;
use drydock_runtime::observer::{Observer, StepEvent, StepOutcome};
use drydock_runtime::{
    Catalog, ExecutionState, Executor, RunOptions, StartOptions, StepState, SuppliedValue,
};

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Observer for Recorder {
    fn step_finished(&self, step: &StepEvent, outcome: &StepOutcome) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{}:{}:{}", step.path, step.name, outcome.state));
    }
    fn printed(&self, _id: &str, line: &str) {
        self.0.lock().unwrap().push(format!("print:{line}"));
    }
}

#[test]
fn an_embedder_registers_a_primitive_and_runs_a_runbook() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = vec![(
        "greet.rhai".to_string(),
        r#"
runbook(#{ name: "greet", params: #{ who: #{ type: "string" } } });
let g = step("greet", || shout(params.who));
print(g);
g
"#
        .to_string(),
    )];
    let executor = Executor::new(dir.path().to_path_buf(), Catalog::new(bundled, vec![]))
        .with_primitives(drydock_stdlib::install)
        .with_primitives(|engine, ctx| {
            let id = ctx.execution_id.clone();
            engine.register_fn("shout", move |s: &str| {
                format!("{}! ({id})", s.to_uppercase())
            });
        });
    let runbook = executor.catalog().find("greet").unwrap();
    let mut params = BTreeMap::new();
    params.insert("who".to_string(), SuppliedValue::Text("operator".into()));
    let id = executor
        .create_execution(&runbook, &params, &StartOptions::default())
        .unwrap();
    let recorder = Arc::new(Recorder::default());
    let outcome = executor
        .run(&id, recorder.clone(), RunOptions::default())
        .unwrap();
    assert_eq!(outcome.state, ExecutionState::Success);
    assert_eq!(
        outcome.output,
        serde_json::json!(format!("OPERATOR! ({id})"))
    );
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            "1:greet:succeeded".to_string(),
            format!("print:OPERATOR! ({id})")
        ]
    );
    let journal = executor.journal().unwrap();
    let steps = journal.steps(&id).unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].kind, StepKind::Step);
    assert_eq!(steps[0].state, StepState::Succeeded);
}
