//! The prompt: profile@region, the focused instance, the change
//! calendars closed now, and how many approvals wait for this user (read
//! from the background cache).

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use reedline::{
    Prompt, PromptEditMode, PromptHistorySearch, PromptHistorySearchStatus, PromptViMode,
};

use crate::complete::Shared;

pub struct ReplPrompt {
    pub shared: Arc<Shared>,
}

/// The left prompt's text.
pub fn left(shared: &Shared) -> String {
    let region = shared.region.read().map(|r| r.clone()).unwrap_or_default();
    let profile = shared.profile.read().map(|r| r.clone()).unwrap_or_default();
    let mut s = format!("drydock {profile}@{region}");
    if let Ok(f) = shared.focus.read() {
        if let Some(f) = f.as_ref() {
            s.push_str(&format!(" [{f}]"));
        }
    }
    if let Ok(closed) = shared.closed_calendars.read() {
        if !closed.is_empty() {
            let names: Vec<&str> = closed.iter().map(|(n, _)| n.as_str()).collect();
            s.push_str(&format!(
                " {{change calendar{} {} closed}}",
                if names.len() == 1 { "" } else { "s" },
                drydock_ops::display::shown(&names.join(", "))
            ));
        }
    }
    match shared.approvals_waiting.load(Ordering::SeqCst) {
        0 => {}
        1 => s.push_str(" (1 approval waits for you)"),
        n => s.push_str(&format!(" ({n} approvals wait for you)")),
    }
    s
}

impl Prompt for ReplPrompt {
    fn render_prompt_left(&self) -> Cow<'_, str> {
        Cow::Owned(left(&self.shared))
    }
    fn render_prompt_right(&self) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn render_prompt_indicator(&self, mode: PromptEditMode) -> Cow<'_, str> {
        match mode {
            PromptEditMode::Vi(PromptViMode::Normal) => Cow::Borrowed(" : "),
            _ => Cow::Borrowed(" > "),
        }
    }
    fn render_prompt_multiline_indicator(&self) -> Cow<'_, str> {
        Cow::Borrowed("… ")
    }
    fn render_prompt_history_search_indicator(&self, search: PromptHistorySearch) -> Cow<'_, str> {
        let failing = match search.status {
            PromptHistorySearchStatus::Passing => "",
            PromptHistorySearchStatus::Failing => "failing ",
        };
        Cow::Owned(format!("({failing}search: {}) ", search.term))
    }
}
