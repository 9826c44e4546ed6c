//! Where a primitive is called from, as a stable name: the client token
//! that makes create primitives idempotent across a crash of their runner
//! (EC2's `ClientToken`).
//!
//! A resumed execution runs the body of a step that did not complete
//! again, from its start. A create primitive called there must return the
//! resource its first run created (perhaps just before the runner died),
//! not create another one. So each such call is named by
//! - the execution,
//! - the innermost step's journal path (`3`, `3.2`, …),
//! - that step's *generation*: how many of its attempts ended (failed)
//!   before this one — an attempt cut off by a crash never ended, so the
//!   attempt that resumes it has the same generation, while a retry after
//!   a failure is a new generation and creates anew,
//! - the call's index among the create calls of that step attempt.
//!
//! Outside a runbook (the REPL) there is no token: each call creates.

use std::sync::{Arc, Mutex};

/// One step attempt being run: its path, generation and the number of
/// create calls made in it so far.
#[derive(Debug, Clone)]
struct Scope {
    path: String,
    generation: u32,
    calls: u32,
}

/// The call sites of one execution (shared by the session, which enters and
/// leaves steps, and the primitives, which ask for tokens).
#[derive(Clone, Default)]
pub struct CallSites {
    execution: Option<String>,
    scopes: Arc<Mutex<Vec<Scope>>>,
}

/// A token naming one create call of an execution, and where it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallToken {
    /// `EXECUTION/PATH/gGENERATION/KIND#N`.
    pub token: String,
    pub execution: String,
    /// The journal path of the step making the call (`""` at the top level).
    pub step_path: String,
}

impl CallSites {
    /// Call sites of `execution`, at its top level.
    pub fn for_execution(execution: &str) -> Self {
        Self {
            execution: Some(execution.to_string()),
            scopes: Arc::new(Mutex::new(vec![Scope {
                path: String::new(),
                generation: 0,
                calls: 0,
            }])),
        }
    }

    /// No execution (the REPL): no tokens.
    pub fn none() -> Self {
        Self::default()
    }

    fn scopes(&self) -> std::sync::MutexGuard<'_, Vec<Scope>> {
        // A panic while holding this lock leaves plain data behind.
        self.scopes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A step attempt starts (`generation`: its ended attempts before it).
    pub(crate) fn enter(&self, path: &str, generation: u32) {
        self.scopes().push(Scope {
            path: path.to_string(),
            generation,
            calls: 0,
        });
    }

    /// The step attempt entered last ends.
    pub(crate) fn leave(&self) {
        let mut s = self.scopes();
        if s.len() > 1 {
            s.pop();
        }
    }

    /// The token of the next create call of `kind` (`launch`, `volume`, …)
    /// made here, or `None` outside an execution.
    pub fn next(&self, kind: &str) -> Option<CallToken> {
        let execution = self.execution.as_ref()?;
        let mut s = self.scopes();
        let scope = s.last_mut()?;
        scope.calls += 1;
        let path = if scope.path.is_empty() {
            "top"
        } else {
            &scope.path
        };
        Some(CallToken {
            token: format!(
                "{execution}/{path}/g{}/{kind}#{}",
                scope.generation, scope.calls
            ),
            execution: execution.clone(),
            step_path: scope.path.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_the_step_its_generation_and_the_call() {
        let c = CallSites::for_execution("ex-1");
        assert_eq!(c.next("launch").unwrap().token, "ex-1/top/g0/launch#1");
        c.enter("3", 0);
        assert_eq!(c.next("launch").unwrap().token, "ex-1/3/g0/launch#1");
        assert_eq!(c.next("volume").unwrap().token, "ex-1/3/g0/volume#2");
        c.enter("3.1", 2);
        let t = c.next("snapshot").unwrap();
        assert_eq!(t.token, "ex-1/3.1/g2/snapshot#1");
        assert_eq!(t.step_path, "3.1");
        c.leave();
        assert_eq!(c.next("image").unwrap().token, "ex-1/3/g0/image#3");
        c.leave();
        c.leave(); // never below the top level
        assert_eq!(c.next("launch").unwrap().token, "ex-1/top/g0/launch#2");
    }

    #[test]
    fn the_same_calls_after_a_restart_get_the_same_tokens() {
        let run = || {
            let c = CallSites::for_execution("ex-2");
            c.enter("1", 1);
            let a = c.next("launch").unwrap();
            let b = c.next("launch").unwrap();
            (a, b)
        };
        assert_eq!(run(), run());
        assert_ne!(run().0, run().1);
    }

    #[test]
    fn no_execution_no_token() {
        assert!(CallSites::none().next("launch").is_none());
    }
}
