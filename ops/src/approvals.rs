//! Approvals: what waits for a decision and what the caller may do about
//! it, and deciding — `drydock approvals`/`approve`, the REPL's
//! `:approvals`/`:approve`/`:reject` and the web API's `/api/approvals`
//! and `…/decision` all call these.
//!
//! The journal enforces the rules when a decision is written (approver
//! lists, separation of duties, one decision per account, the deadline:
//! [`drydock_runtime::journal::ApprovalRecord::may_decide`] and
//! `Journal::decide`); this module adds the limit on comments and says,
//! before anything is written, what a caller may do, the same way for
//! every front end.

use drydock_runtime::identity::Identity;
use drydock_runtime::journal::{ApprovalRecord, ApprovalState, DecisionOutcome, ExecutionRecord};
use drydock_runtime::{Journal, JournalError, StepState};
use serde::Serialize;

use crate::OpsError;

/// The longest comment a decision may carry, in characters: a decision
/// is a record, not a document.
pub const MAX_COMMENT_CHARS: usize = 2000;

/// Refuses a comment longer than [`MAX_COMMENT_CHARS`].
pub fn check_comment(comment: &str) -> Result<(), OpsError> {
    if comment.len() > MAX_COMMENT_CHARS && comment.chars().nth(MAX_COMMENT_CHARS).is_some() {
        return Err(OpsError::Usage(format!(
            "a comment is limited to {MAX_COMMENT_CHARS} characters; put long reasoning in a ticket and link it"
        )));
    }
    Ok(())
}

/// What the caller may do about a pending approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "is", rename_all = "snake_case")]
pub enum YourPart {
    /// The caller may approve or reject it.
    MayDecide,
    /// The caller decided already (a quorum counts each account once).
    Decided { approved: bool },
    /// The caller requested the execution and may not approve it
    /// (separation of duties); rejecting, i.e. withdrawing, is allowed.
    OwnRequest { why: String },
    /// The caller is not among its approvers.
    NotAnApprover { why: String },
}

impl YourPart {
    /// What `me` may do about `approval` of an execution `requester` asked for.
    pub fn of(approval: &ApprovalRecord, me: &Identity, requester: &str) -> Self {
        if let Some(d) = approval.decisions.iter().find(|d| d.approver == me.name) {
            return Self::Decided {
                approved: d.approve,
            };
        }
        match approval.may_decide(me, requester, true) {
            Ok(()) => Self::MayDecide,
            Err(why) if me.name == requester => Self::OwnRequest { why },
            Err(why) => Self::NotAnApprover { why },
        }
    }

    /// Whether an approval by the caller would be accepted.
    pub fn may_approve(&self) -> bool {
        *self == Self::MayDecide
    }

    /// Why the caller may not approve, in a sentence; `None` when they may.
    pub fn why_not(&self) -> Option<String> {
        match self {
            Self::MayDecide => None,
            Self::Decided { approved } => Some(format!(
                "you already {} this request (a quorum counts each account once)",
                if *approved { "approved" } else { "rejected" }
            )),
            Self::OwnRequest { why } | Self::NotAnApprover { why } => Some(why.clone()),
        }
    }

    /// A table cell: `may decide`, `decided`, `your request`, `not an approver`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::MayDecide => "may decide",
            Self::Decided { .. } => "decided",
            Self::OwnRequest { .. } => "your request",
            Self::NotAnApprover { .. } => "not an approver",
        }
    }
}

/// A pending approval, the execution it belongs to, and what the caller
/// may do about it.
#[derive(Debug, Clone, Serialize)]
pub struct PendingApproval {
    pub approval: ApprovalRecord,
    pub execution: ExecutionRecord,
    /// The names of the steps the runbook completed so far.
    pub steps_done: Vec<String>,
    pub you: YourPart,
}

impl PendingApproval {
    /// Who may decide, for people: the approver list, or anyone but the
    /// requester when it is empty.
    pub fn approvers_text(&self) -> String {
        if self.approval.approvers.is_empty() {
            "anyone but the requester".to_string()
        } else {
            self.approval.approvers.join(", ")
        }
    }
}

/// Every approval waiting for a decision (oldest first), with what `me`
/// may do about each.
pub fn list(journal: &Journal, me: &Identity) -> Result<Vec<PendingApproval>, JournalError> {
    let mut out = Vec::new();
    for approval in journal.pending_approvals()? {
        let execution = journal.execution(&approval.execution_id)?;
        let steps_done = journal
            .steps(&approval.execution_id)?
            .into_iter()
            .filter(|s| s.state == StepState::Succeeded)
            .map(|s| s.name)
            .collect();
        let you = YourPart::of(&approval, me, &execution.requested_by);
        out.push(PendingApproval {
            approval,
            execution,
            steps_done,
            you,
        });
    }
    Ok(out)
}

/// A decision to record.
#[derive(Debug, Clone, Copy)]
pub struct DecideOptions<'a> {
    /// An execution id or a unique prefix of one.
    pub execution: &'a str,
    /// Approve, or reject.
    pub approve: bool,
    pub comment: &'a str,
    /// The account deciding: the OS account of the caller (the process,
    /// the socket peer, the token's creator), never a claimed name.
    pub who: &'a Identity,
}

/// A decision as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Decided {
    pub execution_id: String,
    pub approver: String,
    pub outcome: DecisionOutcome,
    /// Whether a runner is alive to act on it now (otherwise the decision
    /// is applied when the execution resumes).
    pub runner_alive: bool,
}

impl Decided {
    /// What happened, in one line for people (names escaped).
    pub fn summary(&self) -> String {
        let id = &self.execution_id;
        let who = crate::display::shown(&self.approver);
        let o = &self.outcome;
        match o.state {
            ApprovalState::Approved => format!(
                "{id}: approved by {who} ({} of {} needed)",
                o.approvals, o.required
            ),
            ApprovalState::Rejected => format!("{id}: rejected by {who}"),
            _ => {
                let more = o.required.saturating_sub(o.approvals);
                let from = if o.waiting_on.is_empty() {
                    String::new()
                } else {
                    format!(" from {}", crate::display::shown(&o.waiting_on.join(", ")))
                };
                format!(
                    "{id}: {who} approved; {} of {} approvals, waiting for {more} more{from}",
                    o.approvals, o.required
                )
            }
        }
    }

    /// Whether the decision settled the approval while no runner is alive
    /// to go on (`drydock resume` applies it).
    pub fn waits_for_resume(&self) -> bool {
        self.outcome.state != ApprovalState::Pending && !self.runner_alive
    }
}

/// Records a decision on an execution's pending approval, after checking
/// the comment's length; the journal checks who may decide.
pub fn decide(journal: &mut Journal, opts: &DecideOptions) -> Result<Decided, OpsError> {
    check_comment(opts.comment)?;
    let id = journal.resolve_execution(opts.execution)?;
    let outcome = journal.decide(&id, opts.who, opts.approve, opts.comment, false)?;
    let runner_alive = journal.execution(&id)?.has_live_runner();
    Ok(Decided {
        execution_id: id,
        approver: opts.who.name.clone(),
        outcome,
        runner_alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use drydock_runtime::journal::Decision;

    fn who(name: &str, uid: u32) -> Identity {
        Identity {
            uid,
            name: name.into(),
        }
    }

    fn approval(
        approvers: &[&str],
        allow_self: bool,
        decided_by: &[(&str, bool)],
    ) -> ApprovalRecord {
        ApprovalRecord {
            execution_id: "ex-1".into(),
            path: "2".into(),
            message: "go?".into(),
            approvers: approvers.iter().map(|s| s.to_string()).collect(),
            min_approvals: 2,
            deadline_at: i64::MAX,
            state: ApprovalState::Pending,
            created_at: 0,
            resolved_at: None,
            source_sha256: String::new(),
            allow_self,
            auto_allowed: false,
            decisions: decided_by
                .iter()
                .map(|(name, approve)| Decision {
                    approver: name.to_string(),
                    approve: *approve,
                    comment: String::new(),
                    auto: false,
                    decided_at: 1,
                    approver_uid: None,
                })
                .collect(),
        }
    }

    #[test]
    fn comments_are_limited_in_characters_not_bytes() {
        assert!(check_comment("").is_ok());
        assert!(check_comment(&"x".repeat(MAX_COMMENT_CHARS)).is_ok());
        // 2000 characters of two bytes each are still 2000 characters.
        assert!(check_comment(&"é".repeat(MAX_COMMENT_CHARS)).is_ok());
        let e = check_comment(&"x".repeat(MAX_COMMENT_CHARS + 1)).unwrap_err();
        assert!(matches!(e, OpsError::Usage(_)), "{e:?}");
        assert!(e.to_string().contains("limited to 2000 characters"), "{e}");
        assert!(check_comment(&"é".repeat(MAX_COMMENT_CHARS + 1)).is_err());
        assert!(check_comment(&"x".repeat(10_000_000)).is_err());
    }

    #[test]
    fn anyone_but_the_requester_by_default() {
        let a = approval(&[], false, &[]);
        assert_eq!(
            YourPart::of(&a, &who("alice", 1001), "bob"),
            YourPart::MayDecide
        );
        let own = YourPart::of(&a, &who("bob", 1002), "bob");
        assert!(matches!(own, YourPart::OwnRequest { .. }), "{own:?}");
        assert!(!own.may_approve());
        assert!(own.why_not().unwrap().contains("separation of duties"));
        assert_eq!(own.label(), "your request");
        // Unless the runbook allows it.
        let a = approval(&[], true, &[]);
        assert!(YourPart::of(&a, &who("bob", 1002), "bob").may_approve());
    }

    #[test]
    fn only_listed_approvers_and_each_once() {
        let a = approval(&["alice", "carol"], false, &[("carol", true)]);
        let mallory = YourPart::of(&a, &who("mallory", 1003), "bob");
        assert_eq!(mallory.label(), "not an approver");
        assert!(mallory
            .why_not()
            .unwrap()
            .contains("mallory is not an approver of this request"));
        assert_eq!(
            YourPart::of(&a, &who("alice", 1001), "bob").label(),
            "may decide"
        );
        let carol = YourPart::of(&a, &who("carol", 1004), "bob");
        assert_eq!(carol, YourPart::Decided { approved: true });
        assert!(!carol.may_approve());
        assert!(carol.why_not().unwrap().contains("already approved"));
        // A listed requester still may not approve their own request.
        let a = approval(&["bob", "alice"], false, &[]);
        assert_eq!(
            YourPart::of(&a, &who("bob", 1002), "bob").label(),
            "your request"
        );
    }

    #[test]
    fn a_summary_names_what_is_still_needed() {
        let d = |state, approvals, waiting_on: &[&str], alive| Decided {
            execution_id: "ex-1".into(),
            approver: "alice\x1b[2J".into(),
            outcome: DecisionOutcome {
                state,
                approvals,
                required: 2,
                waiting_on: waiting_on.iter().map(|s| s.to_string()).collect(),
            },
            runner_alive: alive,
        };
        let partial = d(ApprovalState::Pending, 1, &["bob", "carol"], false);
        assert_eq!(
            partial.summary(),
            "ex-1: alice\\x1b[2J approved; 1 of 2 approvals, waiting for 1 more from bob, carol"
        );
        assert!(!partial.waits_for_resume());
        let done = d(ApprovalState::Approved, 2, &[], false);
        assert_eq!(
            done.summary(),
            "ex-1: approved by alice\\x1b[2J (2 of 2 needed)"
        );
        assert!(done.waits_for_resume());
        assert!(!d(ApprovalState::Approved, 2, &[], true).waits_for_resume());
        assert_eq!(
            d(ApprovalState::Rejected, 0, &[], true).summary(),
            "ex-1: rejected by alice\\x1b[2J"
        );
    }

    #[test]
    fn deciding_through_the_journal_applies_the_limit_and_the_rules() {
        use drydock_runtime::journal::NewApproval;
        let (_dir, mut j) = crate::testing::journal();
        let id = crate::testing::execution(&mut j, "gated", "bob");
        j.create_approval(
            &id,
            "1",
            &NewApproval {
                message: "Restart\x1b]0;pwned\x07?".into(),
                approvers: vec![],
                min_approvals: 1,
                deadline_at: i64::MAX,
                source_sha256: "0".repeat(64),
                allow_self: false,
                auto_allowed: false,
            },
        )
        .unwrap();
        let (alice, bob) = (who("alice", 1001), who("bob", 1002));
        let pending = list(&j, &alice).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].you, YourPart::MayDecide);
        assert_eq!(pending[0].execution.requested_by, "bob");
        assert_eq!(pending[0].approvers_text(), "anyone but the requester");
        assert_eq!(list(&j, &bob).unwrap()[0].you.label(), "your request");

        let long = "x".repeat(MAX_COMMENT_CHARS + 1);
        let opts = |who, approve, comment| DecideOptions {
            execution: &id[..8],
            approve,
            comment,
            who,
        };
        let e = decide(&mut j, &opts(&alice, true, &long)).unwrap_err();
        assert!(matches!(e, OpsError::Usage(_)), "{e:?}");
        // Nothing was written.
        assert!(j.approvals_of(&id).unwrap()[0].decisions.is_empty());
        let e = decide(&mut j, &opts(&bob, true, "mine")).unwrap_err();
        assert!(e.to_string().contains("separation of duties"), "{e}");

        let d = decide(&mut j, &opts(&alice, true, "fine")).unwrap();
        assert_eq!(d.execution_id, id);
        assert_eq!(d.outcome.state, ApprovalState::Approved);
        assert!(!d.runner_alive && d.waits_for_resume());
        assert_eq!(
            d.summary(),
            format!("{id}: approved by alice (1 of 1 needed)")
        );
        assert!(list(&j, &alice).unwrap().is_empty());
        let a = &j.approvals_of(&id).unwrap()[0];
        assert_eq!(
            (
                a.decisions[0].approver.as_str(),
                a.decisions[0].comment.as_str()
            ),
            ("alice", "fine")
        );
    }
}
