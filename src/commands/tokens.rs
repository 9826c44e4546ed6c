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
            let mut t = table(&["TOKEN ID", "ACCOUNT", "LABEL", "CREATED"]);
            for tk in &list {
                t.add_row(vec![
                    tk.id.clone(),
                    shown(&tk.account),
                    shown(&tk.label),
                    when(tk.created_at),
                ]);
            }
            println!("{t}");
        }
        Some(TokensCommand::Create { label }) => {
            let (id, token) = journal.create_token(&me.name, me.uid, &label)?;
            if ctx.json {
                print_json(&json!({ "id": id, "token": token, "account": me.name }));
            } else {
                println!("{token}");
                eprintln!(
                    "token {id} acts as {} in the web console and HTTP API; it is shown only now (revoke with `drydock tokens revoke {id}`)",
                    me.name
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
