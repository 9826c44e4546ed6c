//! `drydock rules`: event rules — an event of the stream (or a pattern on
//! any instance's serial console) starts a runbook — and the part of
//! `drydock serve` that follows the stream and fires them.
//!
//! Exactly once per (rule, event): the firing is claimed in the journal
//! before its execution is created, the execution is recorded with the
//! firing before its runner starts, and the reader's place in the stream
//! moves only past events it has handled. A serve killed in between
//! finishes a claimed firing on its next pass (an execution recorded but
//! not started is resumed by host recovery, as a schedule's is).

use std::collections::BTreeMap;
use std::process::Child;

use drydock_ops::rules::{check_params, event_spec, matches, render_params, CONSOLE_EVENT};
use drydock_runtime::journal::rules::RuleRecord;
use drydock_runtime::journal::stream::{StreamEvent, StreamFilter};
use drydock_runtime::params::ParamType;
use drydock_runtime::{StartError, StartOptions};

use super::{clip, print_json, shown, table, when, Context};
use crate::cli::{RuleAddArgs, RulesCommand};
use crate::failure::CliError;

pub fn run(ctx: &Context, action: Option<RulesCommand>) -> Result<i32, CliError> {
    match action.unwrap_or(RulesCommand::List) {
        RulesCommand::List => list(ctx),
        RulesCommand::Add(args) => add(ctx, args),
        RulesCommand::Remove { name } => {
            ctx.executor.journal()?.remove_rule(&name)?;
            if !ctx.json {
                println!("rule {} removed", shown(&name));
            } else {
                print_json(&serde_json::json!({ "removed": name }));
            }
            Ok(0)
        }
        RulesCommand::Show { name } => show(ctx, &name),
    }
}

fn add(ctx: &Context, a: RuleAddArgs) -> Result<i32, CliError> {
    let name_ok = !a.name.is_empty()
        && a.name.len() <= 64
        && a.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        return Err(CliError::usage(format!(
            "rule name `{}`: use 1-64 letters, digits, - and _",
            shown(&a.name)
        )));
    }
    if a.max_per_hour == 0 {
        return Err(CliError::usage(
            "--max-per-hour must be at least 1 (remove the rule to stop it)",
        ));
    }
    let (event_type, matches) = match (&a.event, &a.console) {
        (Some(spec), None) => event_spec(spec, &a.matches)?,
        (None, Some(pattern)) => {
            if pattern.len() > 512 {
                return Err(CliError::usage("--console: at most 512 characters"));
            }
            regex::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    CliError::usage(format!(
                        "--console `{}` is not a regular expression: {e}",
                        shown(pattern)
                    ))
                })?;
            let (_, m) = event_spec(CONSOLE_EVENT, &a.matches)?;
            (CONSOLE_EVENT.to_string(), m)
        }
        _ => {
            return Err(CliError::usage(
                "give the event (--event 'instance.status impaired') or a console pattern (--console REGEX), one of them",
            ))
        }
    };
    if let Some(url) = &a.webhook {
        return add_webhook(ctx, &a, url, event_type, matches);
    }
    let runbook = ctx
        .executor
        .catalog()
        .find(a.runbook.as_deref().unwrap_or_default())?;
    let mut params = serde_json::Map::new();
    for p in &a.params {
        let Some((k, v)) = p.split_once('=') else {
            return Err(CliError::usage(format!(
                "--param expects NAME=VALUE, got `{}`",
                shown(p)
            )));
        };
        let k = k.trim();
        // A rule is stored: a secret given in clear would sit in the
        // journal. Secrets come from the parameter store.
        if let Some(spec) = runbook.params.iter().find(|s| s.name == k) {
            if spec.kind == ParamType::Secret && !v.starts_with("param:") {
                return Err(CliError::usage(format!(
                    "parameter {k} is a secret: a rule keeps its parameters, so give it as param:NAME (stored encrypted with `drydock param put NAME --secure`)"
                )));
            }
        }
        params.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    check_params(&runbook, &params)?;
    for who in &a.approvers {
        let account = !who.is_empty()
            && who.len() <= 64
            && who
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !account {
            return Err(CliError::usage(format!(
                "--approvers: `{}` is not an account name",
                shown(who)
            )));
        }
    }
    let me = drydock_runtime::identity::Identity::current();
    let rule = RuleRecord {
        name: a.name.clone(),
        event_type,
        matches,
        console_pattern: a.console.clone(),
        runbook: runbook.name.clone(),
        webhook: None,
        webhook_secret: None,
        webhook_private: false,
        params,
        approvers: a.approvers.clone(),
        max_per_hour: a.max_per_hour,
        created_by: me.name.clone(),
        created_by_uid: me.uid,
        created_at: drydock_runtime::journal::now_ms(),
    };
    ctx.executor.journal()?.add_rule(&rule)?;
    if ctx.json {
        print_json(&rule);
    } else {
        println!(
            "rule {} added: {} starts {}{} (`drydock serve` runs it; at most {} per hour)",
            rule.name,
            describe_trigger(&rule),
            rule.runbook,
            if rule.approvers.is_empty() {
                String::new()
            } else {
                format!(" after approval by {}", rule.approvers.join(", "))
            },
            rule.max_per_hour
        );
    }
    Ok(0)
}

/// A rule whose target is a webhook.
fn add_webhook(
    ctx: &Context,
    a: &RuleAddArgs,
    url: &str,
    event_type: String,
    matches: Vec<(String, String)>,
) -> Result<i32, CliError> {
    if !a.params.is_empty() || !a.approvers.is_empty() {
        return Err(CliError::usage(
            "a webhook rule sends the event itself: --param and --approvers belong to runbook rules",
        ));
    }
    let secret = a.webhook_secret.clone().unwrap_or_default();
    let Some(name) = secret.strip_prefix("param:") else {
        return Err(CliError::usage(
            "--webhook-secret takes param:NAME, a key of the parameter store (`drydock param put NAME --secure`): a rule never holds the key itself",
        ));
    };
    super::webhook::check_url(url, a.allow_private).map_err(CliError::usage)?;
    // There now (a missing key would fail every delivery).
    signing_key(ctx, name)?;
    let me = drydock_runtime::identity::Identity::current();
    let rule = RuleRecord {
        name: a.name.clone(),
        event_type,
        matches,
        console_pattern: a.console.clone(),
        runbook: String::new(),
        webhook: Some(url.to_string()),
        webhook_secret: Some(secret.clone()),
        webhook_private: a.allow_private,
        params: Default::default(),
        approvers: Vec::new(),
        max_per_hour: a.max_per_hour,
        created_by: me.name.clone(),
        created_by_uid: me.uid,
        created_at: drydock_runtime::journal::now_ms(),
    };
    ctx.executor.journal()?.add_rule(&rule)?;
    if ctx.json {
        print_json(&rule);
    } else {
        println!(
            "rule {} added: {} is posted to {url}, signed with {secret} (`drydock serve` sends it; at most {} per hour)",
            rule.name,
            describe_trigger(&rule),
            rule.max_per_hour
        );
    }
    Ok(0)
}

/// A webhook's signing key from the parameter store.
fn signing_key(ctx: &Context, name: &str) -> Result<Vec<u8>, CliError> {
    let journal = ctx.executor.journal()?;
    let (name, which) = drydock_runtime::journal::Selector::split(name);
    let (value, secure) =
        drydock_runtime::parameters::read_parameter(&ctx.settings.data_dir, &journal, name, &which)
            .map_err(|e| CliError::usage(format!("--webhook-secret: {e}")))?;
    if !secure {
        return Err(CliError::usage(format!(
            "--webhook-secret: parameter {name} is stored in clear; a signing key must be a SecureString (`drydock param put {name} --secure`)"
        )));
    }
    Ok(value.into_bytes())
}

fn describe_trigger(r: &RuleRecord) -> String {
    let mut t = match &r.console_pattern {
        Some(p) => format!("a console line matching /{p}/"),
        None => r.event_type.clone(),
    };
    for (k, v) in &r.matches {
        t.push_str(&format!(" {k}={v}"));
    }
    t
}

fn list(ctx: &Context) -> Result<i32, CliError> {
    let rules = ctx.executor.journal()?.rules()?;
    if ctx.json {
        print_json(&serde_json::json!({ "rules": rules }));
        return Ok(0);
    }
    if rules.is_empty() {
        println!("no rules (add one with `drydock rules add NAME --event 'instance.status impaired' --runbook R -p instance='{{{{event.instance}}}}'`)");
        return Ok(0);
    }
    let mut t = table(&[
        "NAME",
        "WHEN",
        "TARGET",
        "PARAMETERS",
        "APPROVERS",
        "PER HOUR",
    ]);
    for r in &rules {
        let params: Vec<String> = r
            .params
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                )
            })
            .collect();
        t.add_row(vec![
            shown(&r.name),
            clip(&shown(&describe_trigger(r)), 60),
            match &r.webhook {
                Some(url) => clip(&shown(url), 50),
                None => r.runbook.clone(),
            },
            clip(&shown(&params.join(" ")), 60),
            if r.approvers.is_empty() {
                "-".into()
            } else {
                shown(&r.approvers.join(","))
            },
            r.max_per_hour.to_string(),
        ]);
    }
    println!("{t}");
    Ok(0)
}

fn show(ctx: &Context, name: &str) -> Result<i32, CliError> {
    let journal = ctx.executor.journal()?;
    let rule = journal.rule(name)?;
    let firings = journal.firings(name, 50)?;
    if ctx.json {
        print_json(&serde_json::json!({ "rule": rule, "firings": firings }));
        return Ok(0);
    }
    println!("rule     {}", shown(&rule.name));
    println!("when     {}", shown(&describe_trigger(&rule)));
    match &rule.webhook {
        Some(url) => println!(
            "webhook  {} (signed with {})",
            shown(url),
            shown(rule.webhook_secret.as_deref().unwrap_or("-"))
        ),
        None => println!("runbook  {}", shown(&rule.runbook)),
    }
    for (k, v) in &rule.params {
        println!(
            "  -p {}={}",
            shown(k),
            shown(
                &v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            )
        );
    }
    println!(
        "by       {} at {}",
        shown(&rule.created_by),
        when(rule.created_at)
    );
    if firings.is_empty() {
        println!("it has not fired");
        return Ok(0);
    }
    let mut t = table(&["EVENT", "WHEN", "OUTCOME", "EXECUTION"]);
    for f in &firings {
        t.add_row(vec![
            f.event_seq.to_string(),
            when(f.at),
            clip(&shown(&f.outcome), 60),
            f.execution_id.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    println!("{t}");
    Ok(0)
}

/// One pass of serve over the events after its place: fires the rules
/// that match. Returns lines for serve's log.
pub fn rules_tick(ctx: &Context, children: &mut Vec<Child>) -> Result<Vec<String>, CliError> {
    let mut journal = ctx.executor.journal()?;
    let rules = journal.rules()?;
    let cursor = journal.rules_cursor()?;
    let events = journal.stream_events(&StreamFilter {
        after_seq: Some(cursor),
        limit: Some(200),
        ..Default::default()
    })?;
    let mut said = Vec::new();
    if rules.is_empty() {
        if let Some(last) = events.last() {
            journal.set_rules_cursor(last.seq)?;
        }
        return Ok(said);
    }
    for e in &events {
        for r in &rules {
            if e.seq <= journal.rule_starts_after(&r.name)? || !matches(r, e) {
                continue;
            }
            if let Some(line) = fire(ctx, r, e, children)? {
                said.push(line);
            }
        }
        journal.set_rules_cursor(e.seq)?;
    }
    Ok(said)
}

/// Fires `rule` for `event` unless it was (a firing claimed by a serve
/// that died before creating its execution is finished here).
fn fire(
    ctx: &Context,
    rule: &RuleRecord,
    event: &StreamEvent,
    children: &mut Vec<Child>,
) -> Result<Option<String>, CliError> {
    let mut journal = ctx.executor.journal()?;
    let hour_ago = drydock_runtime::journal::now_ms() - 3_600_000;
    let started = journal.firings_started_since(&rule.name, hour_ago)?;
    if !journal.claim_firing(&rule.name, event.seq)? {
        match journal.firing(&rule.name, event.seq)? {
            // Claimed by a serve that stopped before recording what it
            // started: an execution it created in that moment is taken
            // over, not made a second time.
            Some(f) if f.outcome == "claimed" && f.execution_id.is_none() => {
                if let Some(id) = orphan(&journal, rule, f.at)? {
                    journal.set_firing(&rule.name, event.seq, "started", Some(&id))?;
                    let (child, _) = super::run::start_background(ctx, &id)?;
                    children.push(child);
                    return Ok(Some(format!(
                        "rule {}: event {} took over {id}, left by a serve that stopped",
                        rule.name, event.seq
                    )));
                }
            }
            _ => return Ok(None),
        }
    } else if started >= rule.max_per_hour {
        journal.set_firing(&rule.name, event.seq, "rate-limited", None)?;
        return Ok(Some(format!(
            "rule {}: event {} not run: {} runs in the last hour already (at most {})",
            rule.name, event.seq, started, rule.max_per_hour
        )));
    }
    if let Some(url) = &rule.webhook {
        journal.set_firing(&rule.name, event.seq, "delivering", None)?;
        send_webhook(ctx, rule.clone(), url.clone(), event.clone());
        return Ok(Some(format!(
            "rule {}: event {} ({}) posted to {url}",
            rule.name, event.seq, event.kind
        )));
    }
    let outcome = start(ctx, rule, event, &mut |id| {
        ctx.executor
            .journal()?
            .set_firing(&rule.name, event.seq, "claimed", Some(id))?;
        Ok(())
    });
    match outcome {
        Ok((id, child)) => {
            children.push(child);
            journal.set_firing(&rule.name, event.seq, "started", Some(&id))?;
            Ok(Some(format!(
                "rule {}: event {} ({}) started {id} ({})",
                rule.name, event.seq, event.kind, rule.runbook
            )))
        }
        Err(e) => {
            journal.set_firing(&rule.name, event.seq, &format!("failed: {e}"), None)?;
            Ok(Some(format!(
                "rule {}: event {} could not start {}: {e}",
                rule.name, event.seq, rule.runbook
            )))
        }
    }
}

/// An execution of the rule's runbook, by its author, created in the
/// seconds after a firing was claimed and named by no firing: what a
/// serve stopped between creating it and recording it left.
fn orphan(
    journal: &drydock_runtime::Journal,
    rule: &RuleRecord,
    claimed_at: i64,
) -> Result<Option<String>, CliError> {
    let list = journal.executions(&drydock_runtime::journal::ExecutionFilter {
        state: Some(drydock_runtime::ExecutionState::Pending),
        runbook: Some(rule.runbook.clone()),
        include_children: false,
        limit: Some(50),
    })?;
    let named: Vec<String> = journal
        .firings(&rule.name, 1000)?
        .into_iter()
        .filter_map(|f| f.execution_id)
        .collect();
    Ok(list
        .into_iter()
        .find(|e| {
            e.requested_by == rule.created_by
                && (claimed_at..claimed_at + 10_000).contains(&e.created_at)
                && !named.contains(&e.id)
        })
        .map(|e| e.id))
}

/// Delivers in a thread of its own (retries take seconds); the firing
/// says how it went. A serve that stops before the answer sends it again
/// when it starts (`resume_deliveries`): the delivery id lets the
/// receiver drop the duplicate.
fn send_webhook(ctx: &Context, rule: RuleRecord, url: String, event: StreamEvent) {
    let data_dir = ctx.settings.data_dir.clone();
    let key = rule
        .webhook_secret
        .as_deref()
        .and_then(|s| s.strip_prefix("param:"))
        .map(|name| signing_key(ctx, name));
    std::thread::spawn(move || {
        let outcome = match key {
            Some(Ok(key)) => {
                let body = serde_json::to_vec(&event).unwrap_or_default();
                let delivery = format!("{}-{}", rule.name, event.seq);
                match super::webhook::deliver(
                    &url,
                    rule.webhook_private,
                    &key,
                    &event.kind,
                    &delivery,
                    &body,
                ) {
                    Ok(status) => format!("delivered ({status})"),
                    Err(e) => format!("failed: {e}"),
                }
            }
            Some(Err(e)) => format!("failed: {e}"),
            None => "failed: the rule has no signing key".to_string(),
        };
        match drydock_runtime::Journal::open(&data_dir) {
            Ok(mut j) => {
                let _ = j.set_firing(&rule.name, event.seq, &outcome, None);
            }
            Err(e) => tracing::warn!("cannot record a webhook delivery: {e}"),
        }
    });
}

/// Webhook deliveries a stopped serve left unanswered: sent again.
pub fn resume_deliveries(ctx: &Context) -> Result<usize, CliError> {
    let journal = ctx.executor.journal()?;
    let mut n = 0;
    for rule in journal.rules()? {
        let Some(url) = rule.webhook.clone() else {
            continue;
        };
        for f in journal.firings(&rule.name, 1000)? {
            if f.outcome != "delivering" {
                continue;
            }
            let event = journal.stream_events(&StreamFilter {
                after_seq: Some(f.event_seq - 1),
                limit: Some(1),
                ..Default::default()
            })?;
            if let Some(e) = event.into_iter().find(|e| e.seq == f.event_seq) {
                send_webhook(ctx, rule.clone(), url.clone(), e);
                n += 1;
            }
        }
    }
    Ok(n)
}

fn start(
    ctx: &Context,
    rule: &RuleRecord,
    event: &StreamEvent,
    recorded: &mut dyn FnMut(&str) -> Result<(), CliError>,
) -> Result<(String, Child), CliError> {
    let runbook = ctx.executor.catalog().find(&rule.runbook)?;
    let supplied: BTreeMap<_, _> = render_params(&rule.params, event).map_err(CliError::usage)?;
    // Requested by whoever added the rule: they do not approve their own
    // rule's runs.
    let requester = drydock_runtime::identity::Identity {
        uid: rule.created_by_uid,
        name: rule.created_by.clone(),
    };
    let gate = (!rule.approvers.is_empty()).then(|| {
        format!(
            "rule {} fired on event {} ({}): {} — run {}?",
            rule.name,
            event.seq,
            event.kind,
            clip(&event.detail, 200),
            rule.runbook
        )
    });
    let id = match ctx.executor.create_execution(
        &runbook,
        &supplied,
        &StartOptions {
            gate,
            gate_approvers: rule.approvers.clone(),
            requester: Some(requester),
            ..Default::default()
        },
    ) {
        Ok(id) => id,
        Err(StartError::Params(e)) => {
            return Err(CliError::usage(format!(
                "the parameters filled from event {} are refused by runbook {}: {e}",
                event.seq, runbook.name
            )))
        }
        Err(StartError::Journal(e)) => return Err(e.into()),
    };
    recorded(&id)?;
    let (child, _log) = super::run::start_background(ctx, &id)?;
    Ok((id, child))
}
