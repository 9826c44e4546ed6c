//! The host environment: `env(name)` (or `()` when unset), `hostname()`,
//! `now_unix()`. Values that change between runs belong inside steps, so a
//! resumed execution replays what the first run saw.

use rhai::{Dynamic, Engine};

use crate::doc::doc;

/// Registers the environment functions.
pub fn install(engine: &mut Engine) {
    doc(
        "env(name)",
        &["An environment variable of this process, or `()` when it is not set."],
    )
    .volatile()
    .register(engine, |name: &str| -> Dynamic {
        std::env::var(name)
            .map(Dynamic::from)
            .unwrap_or(Dynamic::UNIT)
    });
    doc("hostname()", &["This host's name (empty when unknown)."])
        .volatile()
        .register(engine, || -> String {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        });
    doc("now_unix()", &[
        "Seconds since the Unix epoch. Read clocks inside a step: its output is journaled and replayed.",
    ])
    .volatile()
    .register(engine, || -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    // Milliseconds, for measuring (a drill's RTO). Like any reading of the
    // world, call it inside a step: its output is journaled and replayed.
    doc("now_ms()", &[
        "Milliseconds since the Unix epoch, for measuring (a drill's RTO). Read clocks inside a step.",
    ])
    .volatile()
    .register(engine, || -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    });
}
