//! Options a runbook passes to `step`, `cleanup` and `approve`.

use std::time::Duration;

use rhai::{Dynamic, FnPtr, Map};

use crate::duration::parse_duration;

/// What to do when a step has failed its last attempt.
#[derive(Clone)]
pub enum OnFailure {
    /// Fail the execution (the default).
    Abort,
    /// Record the failure and go on; the step returns `()`.
    Continue,
    /// Run this closure as a compensation step, then fail the execution.
    Compensate(FnPtr),
}

/// Retry, timeout and failure policy of one step.
#[derive(Clone)]
pub struct StepOptions {
    pub attempts: u32,
    pub backoff: Duration,
    pub backoff_factor: f64,
    pub max_backoff: Duration,
    pub timeout: Option<Duration>,
    pub on_failure: OnFailure,
}

impl Default for StepOptions {
    fn default() -> Self {
        Self {
            attempts: 1,
            backoff: Duration::from_secs(1),
            backoff_factor: 2.0,
            max_backoff: Duration::from_secs(60),
            timeout: None,
            on_failure: OnFailure::Abort,
        }
    }
}

/// Reads a duration given as "90s"-style text or as a number of seconds.
pub fn duration_value(key: &str, v: &Dynamic) -> Result<Duration, String> {
    if let Ok(s) = v.clone().into_string() {
        return parse_duration(&s).map_err(|e| format!("`{key}`: {e}"));
    }
    if let Ok(n) = v.as_int() {
        if n >= 0 {
            return crate::duration::seconds(n as f64, &n.to_string())
                .map_err(|e| format!("`{key}`: {e}"));
        }
    }
    if let Ok(f) = v.as_float() {
        if f >= 0.0 && f.is_finite() {
            return crate::duration::seconds(f, &f.to_string())
                .map_err(|e| format!("`{key}`: {e}"));
        }
    }
    Err(format!(
        "`{key}` must be a duration like \"30s\" or a number of seconds, got {v}"
    ))
}

impl StepOptions {
    /// Parses the options map of `step(name, #{ ... }, || ...)`.
    pub fn from_map(map: &Map) -> Result<Self, String> {
        let mut o = Self::default();
        for (key, v) in map {
            match key.as_str() {
                "attempts" | "max_attempts" => {
                    let n = v.as_int().map_err(|_| "`attempts` must be an integer".to_string())?;
                    if !(1..=100).contains(&n) {
                        return Err(format!("`attempts` must be between 1 and 100, got {n}"));
                    }
                    o.attempts = n as u32;
                }
                "backoff" => o.backoff = duration_value(key, v)?,
                "max_backoff" => o.max_backoff = duration_value(key, v)?,
                "backoff_factor" => {
                    o.backoff_factor = v
                        .as_float()
                        .or_else(|_| v.as_int().map(|i| i as f64))
                        .map_err(|_| "`backoff_factor` must be a number".to_string())?;
                    if !(1.0..=10.0).contains(&o.backoff_factor) {
                        return Err("`backoff_factor` must be between 1 and 10".into());
                    }
                }
                "timeout" => o.timeout = Some(duration_value(key, v)?),
                "on_failure" => {
                    o.on_failure = if let Some(f) = v.clone().try_cast::<FnPtr>() {
                        OnFailure::Compensate(f)
                    } else {
                        match v.clone().into_string().as_deref() {
                            Ok("abort") => OnFailure::Abort,
                            Ok("continue") => OnFailure::Continue,
                            _ => {
                                return Err(format!(
                                    "`on_failure` must be \"abort\", \"continue\" or a compensation closure, got {v}"
                                ))
                            }
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "unknown step option `{other}`; expected attempts, backoff, backoff_factor, max_backoff, timeout, on_failure"
                    ))
                }
            }
        }
        Ok(o)
    }

    /// The delay before attempt `next` (2, 3, ...).
    pub fn delay_before(&self, next: u32) -> Duration {
        let factor = self.backoff_factor.powi(next.saturating_sub(2) as i32);
        Duration::try_from_secs_f64(self.backoff.as_secs_f64() * factor)
            .unwrap_or(Duration::MAX)
            .min(self.max_backoff)
    }
}

/// What a runbook does when an approval is rejected or times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unapproved {
    /// End the execution Rejected / TimedOut (the default).
    Abort,
    /// Return the decision to the script, which branches on it.
    Continue,
}

/// Options of `approve(#{ ... })`.
#[derive(Debug, Clone)]
pub struct ApprovalOptions {
    pub message: String,
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    pub timeout: Duration,
    pub on_reject: Unapproved,
    pub on_timeout: Unapproved,
    /// The requester may approve their own execution.
    pub allow_self_approval: bool,
    /// `--auto-approve` may settle this approval (otherwise only an
    /// admin's `--auto-approve` can).
    pub auto_approve_allowed: bool,
}

/// Checks one entry of an approver list: an account name, `@group`, or
/// `*` (anyone but the requester).
fn approver_entry(v: &Dynamic) -> Result<String, String> {
    let entry = v
        .clone()
        .into_string()
        .map_err(|_| format!("`approvers` must list account names as strings, got {v}"))?;
    let entry = entry.trim().to_string();
    let name = entry.strip_prefix('@').unwrap_or(&entry);
    let valid = entry == "*"
        || (!name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '$')));
    if valid {
        Ok(entry)
    } else {
        Err(format!(
            "approver {entry:?} is not an account name, @group or *; approvers are OS accounts (see `id`)"
        ))
    }
}

fn unapproved(key: &str, v: &Dynamic) -> Result<Unapproved, String> {
    match v.clone().into_string().as_deref() {
        Ok("abort") => Ok(Unapproved::Abort),
        Ok("continue") => Ok(Unapproved::Continue),
        _ => Err(format!(
            "`{key}` must be \"abort\" or \"continue\", got {v}"
        )),
    }
}

impl ApprovalOptions {
    /// The override approval a closed change calendar asks before a
    /// scheduled run: anyone but the requester, one decision, one day.
    pub fn gate() -> Self {
        Self {
            message: String::new(),
            approvers: Vec::new(),
            min_approvals: 1,
            timeout: Duration::from_secs(86400),
            on_reject: Unapproved::Abort,
            on_timeout: Unapproved::Abort,
            allow_self_approval: false,
            auto_approve_allowed: false,
        }
    }

    /// Parses the map given to `approve`.
    pub fn from_map(map: &Map) -> Result<Self, String> {
        let mut o = Self {
            message: String::new(),
            approvers: Vec::new(),
            min_approvals: 1,
            timeout: Duration::from_secs(7 * 86400),
            on_reject: Unapproved::Abort,
            on_timeout: Unapproved::Abort,
            allow_self_approval: false,
            auto_approve_allowed: false,
        };
        for (key, v) in map {
            match key.as_str() {
                "message" => o.message = v.to_string(),
                "approvers" => {
                    let list = v
                        .clone()
                        .into_array()
                        .map_err(|_| "`approvers` must be a list of names".to_string())?;
                    o.approvers = list.iter().map(approver_entry).collect::<Result<_, _>>()?;
                    o.approvers.dedup();
                }
                "min_approvals" => {
                    let n = v.as_int().map_err(|_| "`min_approvals` must be an integer".to_string())?;
                    if n < 1 {
                        return Err(format!("`min_approvals` must be at least 1, got {n}"));
                    }
                    o.min_approvals = n as u32;
                }
                "timeout" => o.timeout = duration_value(key, v)?,
                "on_reject" => o.on_reject = unapproved(key, v)?,
                "on_timeout" => o.on_timeout = unapproved(key, v)?,
                "allow_self_approval" => {
                    o.allow_self_approval = v
                        .as_bool()
                        .map_err(|_| "`allow_self_approval` must be true or false".to_string())?
                }
                "auto_approve" => {
                    o.auto_approve_allowed = match v.clone().into_string().as_deref() {
                        Ok("allowed") => true,
                        Ok("admins") => false,
                        _ => {
                            return Err(format!(
                                "`auto_approve` must be \"allowed\" or \"admins\", got {v}"
                            ))
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "unknown approval option `{other}`; expected message, approvers, min_approvals, timeout, on_reject, on_timeout, allow_self_approval, auto_approve"
                    ))
                }
            }
        }
        if o.message.is_empty() {
            return Err("approve() needs a `message` telling approvers what they approve".into());
        }
        let only_names = o.approvers.iter().all(|a| !a.starts_with('@') && a != "*");
        if !o.approvers.is_empty() && only_names && o.min_approvals as usize > o.approvers.len() {
            return Err(format!(
                "`min_approvals` is {} but only {} approvers are listed",
                o.min_approvals,
                o.approvers.len()
            ));
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(script: &str) -> Map {
        rhai::Engine::new().eval::<Map>(script).unwrap()
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let o = StepOptions::from_map(&map(
            r#"#{ attempts: 5, backoff: "1s", max_backoff: "3s" }"#,
        ))
        .unwrap();
        assert_eq!(o.delay_before(2), Duration::from_secs(1));
        assert_eq!(o.delay_before(3), Duration::from_secs(2));
        assert_eq!(o.delay_before(4), Duration::from_secs(3));
    }

    #[test]
    fn bad_options_are_named() {
        for (src, want) in [
            ("#{ attempts: 0 }", "between 1 and 100"),
            ("#{ timeout: \"soon\" }", "`timeout`"),
            ("#{ on_failure: \"retry\" }", "on_failure"),
            ("#{ colour: 1 }", "unknown step option `colour`"),
        ] {
            let err = StepOptions::from_map(&map(src)).err().unwrap();
            assert!(err.contains(want), "{src}: {err}");
        }
        let err = ApprovalOptions::from_map(&map(
            r#"#{ message: "m", approvers: ["a"], min_approvals: 2 }"#,
        ))
        .unwrap_err();
        assert!(err.contains("only 1 approvers"), "{err}");
        assert!(ApprovalOptions::from_map(&map("#{}"))
            .unwrap_err()
            .contains("message"));
    }
}
