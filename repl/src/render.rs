//! How the REPL's `:commands` lay out what they show: tables in drydock's
//! style and rough times. Text from outside goes through
//! [`drydock_ops::display`] before it gets here.

/// A table with a header row, no borders.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    t.set_header(header.iter().copied());
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}

/// How long ago a timestamp (ms since the epoch) was: `5s ago`, `3m ago`…
pub(crate) fn when(ms: i64) -> String {
    drydock_ops::display::ago(ms, drydock_runtime::journal::now_ms())
}
