//! A drill's timeline as an SVG picture: one row per step (of the drill
//! and of its restore executions in the target region), a bar from its
//! start to its end coloured by how it ended, the RTO target as a line
//! from the drill's start, and where each restored instance met its
//! steady state. Everything drawn comes from the journal; text is escaped
//! (step names come from runbooks).

use std::fmt::Write;

/// One row.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Where it ran: the source or the target region.
    pub lane: String,
    pub label: String,
    pub start_ms: i64,
    /// `None`: still running (drawn to the end of the picture).
    pub end_ms: Option<i64>,
    /// completed, failed, replayed, running, …
    pub state: String,
}

/// A moment worth a mark (a steady state met in the target).
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub label: String,
    pub at_ms: i64,
}

/// What the picture shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub title: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub bars: Vec<Bar>,
    pub marks: Vec<Mark>,
    /// The RTO target, from `start_ms`.
    pub rto_target_ms: Option<i64>,
}

const LABEL_W: f64 = 330.0;
const PLOT_W: f64 = 560.0;
const ROW_H: f64 = 22.0;
const TOP: f64 = 56.0;

/// Escapes text for SVG (XML) content and attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn colour(state: &str) -> &'static str {
    match state {
        "succeeded" | "ok" => "#2e7d32",
        "replayed" => "#81c784",
        "failed" | "failed_continued" | "timed_out" | "cancelled" | "rejected" => "#c62828",
        "running" | "waiting" => "#f9a825",
        _ => "#757575",
    }
}

fn seconds(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 120.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

impl Timeline {
    /// The span drawn: the drill's, stretched to the RTO target.
    fn span_ms(&self) -> i64 {
        let end = self
            .rto_target_ms
            .map_or(self.end_ms, |t| self.end_ms.max(self.start_ms + t));
        (end - self.start_ms).max(1)
    }

    /// The x coordinate of `at_ms`.
    pub fn x(&self, at_ms: i64) -> f64 {
        let off = (at_ms - self.start_ms).clamp(0, self.span_ms()) as f64;
        LABEL_W + PLOT_W * off / self.span_ms() as f64
    }

    /// The picture.
    pub fn svg(&self) -> String {
        let rows = self.bars.len() as f64;
        let height = TOP + rows * ROW_H + 40.0;
        let width = LABEL_W + PLOT_W + 30.0;
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(
            s,
            r#"<title>{}</title><text x="8" y="20" font-size="15" font-weight="bold">{}</text>"#,
            escape(&self.title),
            escape(&self.title)
        );
        // The time axis: 5 ticks.
        let span = self.span_ms();
        for i in 0..=5 {
            let at = self.start_ms + span * i / 5;
            let x = self.x(at);
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
                TOP - 6.0,
                TOP + rows * ROW_H,
                TOP - 10.0,
                escape(&seconds(at - self.start_ms))
            );
        }
        for (i, b) in self.bars.iter().enumerate() {
            let y = TOP + i as f64 * ROW_H;
            let x1 = self.x(b.start_ms);
            let x2 = self.x(b.end_ms.unwrap_or(self.end_ms)).max(x1 + 2.0);
            let took = b.end_ms.map(|e| seconds(e - b.start_ms));
            let _ = write!(
                s,
                r##"<g class="step" data-state="{}"><text x="8" y="{:.1}" fill="#222">{}</text><rect x="{x1:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="3" fill="{}"><title>{} — {} {}</title></rect></g>"##,
                escape(&b.state),
                y + 15.0,
                escape(&drydock_ops::display::clip(
                    &format!("[{}] {}", b.lane, b.label),
                    52
                )),
                y + 4.0,
                x2 - x1,
                ROW_H - 8.0,
                colour(&b.state),
                escape(&b.label),
                escape(&b.state),
                escape(&took.unwrap_or_else(|| "still running".into())),
            );
        }
        let bottom = TOP + rows * ROW_H;
        if let Some(t) = self.rto_target_ms {
            let x = self.x(self.start_ms + t);
            let _ = write!(
                s,
                r##"<line class="rto-target" x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{bottom:.1}" stroke="#c62828" stroke-dasharray="5,3"/><text x="{x:.1}" y="{:.1}" text-anchor="end" fill="#c62828">RTO target {}</text>"##,
                TOP - 4.0,
                bottom + 16.0,
                escape(&seconds(t))
            );
        }
        for m in &self.marks {
            let x = self.x(m.at_ms);
            let _ = write!(
                s,
                r##"<g class="mark"><line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{bottom:.1}" stroke="#1565c0"/><text x="{x:.1}" y="{:.1}" fill="#1565c0">{} ({})</text></g>"##,
                TOP - 4.0,
                bottom + 32.0,
                escape(&m.label),
                escape(&seconds(m.at_ms - self.start_ms))
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline() -> Timeline {
        Timeline {
            title: "drill <ex-1> met".into(),
            start_ms: 1_000_000,
            end_ms: 1_060_000,
            bars: vec![
                Bar {
                    lane: "region-a".into(),
                    label: "steady state of i-1 (source)".into(),
                    start_ms: 1_000_000,
                    end_ms: Some(1_030_000),
                    state: "succeeded".into(),
                },
                Bar {
                    lane: "region-b".into(),
                    label: "launch from <img>&\"x\"".into(),
                    start_ms: 1_030_000,
                    end_ms: None,
                    state: "running".into(),
                },
            ],
            marks: vec![Mark {
                label: "i-2 steady".into(),
                at_ms: 1_050_000,
            }],
            rto_target_ms: Some(120_000),
        }
    }

    #[test]
    fn bars_are_placed_on_a_span_stretched_to_the_rto_target() {
        let t = timeline();
        // 120 s span (the RTO target is past the drill's end).
        assert_eq!(t.x(1_000_000), LABEL_W);
        assert_eq!(t.x(1_060_000), LABEL_W + PLOT_W / 2.0);
        assert_eq!(t.x(1_120_000), LABEL_W + PLOT_W);
        // Out of range is clamped.
        assert_eq!(t.x(0), LABEL_W);
        assert_eq!(t.x(i64::MAX / 2), LABEL_W + PLOT_W);
    }

    #[test]
    fn the_picture_has_a_row_per_step_the_target_and_the_marks_all_escaped() {
        let svg = timeline().svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(svg.matches("<g class=\"step\"").count(), 2);
        assert!(svg.contains("data-state=\"running\""));
        assert!(svg.contains("still running"));
        assert!(svg.contains("class=\"rto-target\""));
        assert!(svg.contains("RTO target 2.0 min"));
        assert!(svg.contains("i-2 steady (50.0 s)"));
        assert!(svg.contains("launch from &lt;img&gt;&amp;&quot;x&quot;"));
        assert!(!svg.contains("<img>"));
        assert!(svg.contains("drill &lt;ex-1&gt; met"));
        // Well-formed enough for a browser: every opened group is closed.
        assert_eq!(svg.matches("<g ").count(), svg.matches("</g>").count());
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn escape_drops_control_characters() {
        assert_eq!(escape("a\u{1b}[31mb\n"), "a [31mb ");
    }
}
