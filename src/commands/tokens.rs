//! `drydock tokens`: access tokens for the web console and HTTP API.

use drydock_runtime::identity::Identity;
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
                    when(tk.created_at),
                    expires,
                    tk.last_used_at.map(when).unwrap_or_else(|| "never".into()),
                ]);
            }
            println!("{t}");
        }
        Some(TokensCommand::Create { label, expires }) => {
            let lifetime = lifetime(&expires)?;
            let (id, token) = journal.create_token(&me.name, me.uid, &label, lifetime)?;
            let expires_at = drydock_runtime::journal::now_ms() + lifetime.as_millis() as i64;
            if ctx.json {
                print_json(&json!({
                    "id": id, "token": token, "account": me.name, "expires_at": expires_at,
                }));
            } else {
                println!("{token}");
                eprintln!(
                    "token {id} acts as {} in the web console and HTTP API until {}; it is shown only now (revoke with `drydock tokens revoke {id}`)",
                    me.name,
                    when(expires_at)
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
