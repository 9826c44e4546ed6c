//! Values shown for people: lists of records as tables, maps
//! pretty-printed, text as it is; secrets masked.

use drydock_runtime::secrets::Secrets;
use rhai::{Dynamic, Map};

const MAX_COLUMNS: usize = 8;
const MAX_CELL: usize = 40;

fn cell(v: &Dynamic) -> String {
    let s = if v.is_unit() {
        "-".to_string()
    } else if v.is_string() {
        v.to_string()
    } else {
        serde_json::to_string(v).unwrap_or_else(|_| v.to_string())
    };
    let s = s.replace(['\n', '\r'], " ");
    if s.chars().count() > MAX_CELL {
        format!("{}…", s.chars().take(MAX_CELL - 1).collect::<String>())
    } else {
        s
    }
}

/// A table of records (maps), columns in order of first appearance.
pub fn table(rows: &[Map]) -> String {
    let mut columns: Vec<String> = Vec::new();
    for r in rows {
        for k in r.keys() {
            if !columns.iter().any(|c| c == k.as_str()) {
                columns.push(k.to_string());
            }
        }
    }
    // The id first, as in drydock's own listings.
    if let Some(i) = columns.iter().position(|c| c == "id") {
        let id = columns.remove(i);
        columns.insert(0, id);
    }
    let hidden = columns.len().saturating_sub(MAX_COLUMNS);
    columns.truncate(MAX_COLUMNS);
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    t.set_header(columns.iter().map(|c| c.to_uppercase()));
    for r in rows {
        t.add_row(
            columns
                .iter()
                .map(|c| r.get(c.as_str()).map(cell).unwrap_or_else(|| "-".into())),
        );
    }
    let mut out = t.to_string();
    if hidden > 0 {
        out.push_str(&format!("\n({hidden} more fields; index a row to see all)"));
    }
    out
}

/// How a value is shown.
pub fn show(v: &Dynamic, secrets: &Secrets) -> String {
    let text = if v.is_string() {
        v.to_string()
    } else if let Some(a) = v.read_lock::<rhai::Array>() {
        let maps: Vec<Map> = a
            .iter()
            .filter_map(|x| x.clone().try_cast::<Map>())
            .collect();
        if !a.is_empty() && maps.len() == a.len() {
            table(&maps)
        } else {
            pretty(v)
        }
    } else if v.is_map() {
        pretty(v)
    } else {
        v.to_string()
    };
    secrets.mask(&text)
}

fn pretty(v: &Dynamic) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| serde_json::to_string_pretty(&j).ok())
        .unwrap_or_else(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_maps() {
        let e = rhai::Engine::new();
        let s = Secrets::new();
        let v: Dynamic = e
            .eval(r#"[#{ state: "running", id: "i-1" }, #{ id: "i-2", state: "stopped", type: "m1" }]"#)
            .unwrap();
        let t = show(&v, &s);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].contains("ID") && lines[0].contains("STATE") && lines[0].contains("TYPE"),
            "{t}"
        );
        assert!(
            lines[1].contains("i-1") && lines[1].contains("running"),
            "{t}"
        );
        let v: Dynamic = e.eval(r#"#{ a: 1, b: #{ c: "x" } }"#).unwrap();
        assert_eq!(
            show(&v, &s),
            "{\n  \"a\": 1,\n  \"b\": {\n    \"c\": \"x\"\n  }\n}"
        );
        let v: Dynamic = e.eval(r#""line\n""#).unwrap();
        assert_eq!(show(&v, &s), "line\n");
    }
}
