//! Human durations ("90s", "1h30m", "500ms", "7d") as runbooks write them.

use std::time::Duration;

/// The longest duration drydock takes (100 years): deadlines computed from
/// it stay far from the clock's limits.
pub const MAX: Duration = Duration::from_secs(100 * 365 * 86400);

/// Parses a duration written as one or more `<number><unit>` parts
/// (`ms`, `s`, `m`, `h`, `d`), e.g. `90s`, `1h30m`, `250ms`.
/// A bare number is taken as seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration; write e.g. \"90s\", \"5m\" or \"1h30m\"".into());
    }
    if let Ok(secs) = trimmed.parse::<f64>() {
        return seconds(secs, text);
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| bad(text))?;
        if digits == 0 {
            return Err(bad(text));
        }
        let number: f64 = rest[..digits].parse().map_err(|_| bad(text))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            _ => return Err(bad(text)),
        };
        rest = &rest[unit_len..];
        total = total
            .checked_add(seconds(number * factor, text)?)
            .filter(|t| *t <= MAX)
            .ok_or_else(|| too_long(text))?;
    }
    Ok(total)
}

/// Seconds as a duration, refusing what is negative, not a number, or
/// longer than [`MAX`].
pub fn seconds(secs: f64, text: &str) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad(text));
    }
    if secs > MAX.as_secs_f64() {
        return Err(too_long(text));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn too_long(text: &str) -> String {
    format!("`{text}` is longer than the longest duration drydock takes (100 years)")
}

fn bad(text: &str) -> String {
    format!("`{text}` is not a duration; write e.g. \"90s\", \"5m\", \"1h30m\" or \"250ms\"")
}

/// Formats a duration compactly for people: `850ms`, `12.3s`, `4m05s`, `2h10m`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        for bad in ["", "abc", "10x", "s", "-5s", "1h-3m"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("90s"), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(format_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(format_duration(Duration::from_secs(7800)), "2h10m");
    }
}
