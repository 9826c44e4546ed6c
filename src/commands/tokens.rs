//! `drydock tokens`: access tokens for the web console and HTTP API.

use drydock_runtime::identity::Identity;
use drydock_runtime::journal::TokenScope;
use serde_json::json;

use super::{print_json, shown, table, when, Context};
use crate::cli::TokensCommand;
use crate::failure::CliError;

/// `drydock tokens …`.
pub fn run(ctx: &Context, cmd: Option<TokensCommand>) -> Result<i32, CliError> {
    let me = Identity::current();
    let mut journal = ctx.executor.journal()?;
    match cmd {
        None | Some(TokensCommand::List) => {
            let list = journal.tokens((!me.is_root()).then_some(me.name.as_str()))?;
            if ctx.json {
                print_json(&list);
                return Ok(0);
            }
            let mut t = table(&[
                "TOKEN ID",
                "ACCOUNT",
                "LABEL",
                "SCOPE",
                "CREATED",
                "EXPIRES",
                "LAST USED",
            ]);
            for tk in &list {
                let expires = match tk.expires_at {
                    Some(e) if tk.expired => format!("expired {}", when(e)),
                    Some(e) => when(e),
                    None => "expired (no expiry recorded)".into(),
                };
                t.add_row(vec![
                    tk.id.clone(),
                    shown(&tk.account),
                    shown(&tk.label),
                    tk.scope.to_string(),
                    when(tk.created_at),
                    expires,
                    tk.last_used_at.map(when).unwrap_or_else(|| "never".into()),
                ]);
            }
            println!("{t}");
        }
        Some(TokensCommand::Create {
            label,
            expires,
            scope,
        }) => {
            let lifetime = lifetime(&expires)?;
            let scope = scope_of(&scope)?;
            let (id, token) = journal.create_token(&me.name, me.uid, &label, lifetime, scope)?;
            let expires_at = drydock_runtime::journal::now_ms() + lifetime.as_millis() as i64;
            if ctx.json {
                print_json(&json!({
                    "id": id, "token": token, "account": me.name, "expires_at": expires_at,
                    "scope": scope,
                }));
            } else {
                println!("{token}");
                eprintln!(
                    "token {id} acts as {} in the web console and HTTP API until {}, with scope {scope} ({}); it is shown only now (revoke with `drydock tokens revoke {id}`)",
                    me.name,
                    when(expires_at),
                    scope_text(scope)
                );
            }
        }
        Some(TokensCommand::Revoke { id }) => {
            journal.revoke_token(&id, &me)?;
            if !ctx.json {
                println!("token {id} revoked");
            }
        }
    }
    Ok(0)
}

/// `--scope`: one of the scopes, by name.
fn scope_of(text: &str) -> Result<TokenScope, CliError> {
    TokenScope::parse(text.trim()).ok_or_else(|| {
        let names: Vec<&str> = TokenScope::ALL.iter().map(|s| s.as_str()).collect();
        CliError::usage(format!(
            "--scope {}: not a scope; give one of {} (read, the default, only reads; admin may do everything)",
            shown(text),
            names.join(", ")
        ))
    })
}

/// What a scope allows, for people.
fn scope_text(scope: TokenScope) -> &'static str {
    match scope {
        TokenScope::Read => "it may only read",
        TokenScope::Approve => "it may read, approve and reject",
        TokenScope::Run => "it may read, and start, cancel and resume runs",
        TokenScope::Console => "it may read and use instances' consoles",
        TokenScope::Admin => "it may do everything you may",
    }
}

/// `--expires`: a duration of at most a year; "never" is refused with the
/// reason (a token that never expires outlives the need for it, and a
/// leaked one works for as long as nobody notices).
fn lifetime(text: &str) -> Result<std::time::Duration, CliError> {
    use drydock_runtime::journal::TOKEN_LIFETIME_MAX;
    let max_days = TOKEN_LIFETIME_MAX.as_secs() / 86400;
    if matches!(text.trim(), "never" | "none" | "0" | "infinite") {
        return Err(CliError::usage(format!(
            "--expires {text}: tokens always expire (a leaked token that never expires works until someone notices); \
             give a duration of at most {max_days}d, e.g. --expires 90d, and create a new token before it ends"
        )));
    }
    let d = drydock_runtime::duration::parse_duration(text)
        .map_err(|e| CliError::usage(format!("--expires: {e}")))?;
    if d.is_zero() || d > TOKEN_LIFETIME_MAX {
        return Err(CliError::usage(format!(
            "--expires {text}: a token lives more than 0 and at most {max_days}d; create a new one when it ends"
        )));
    }
    Ok(d)
}
