//! The host environment: `env(name)` (or `()` when unset), `hostname()`,
//! `now_unix()`. Values that change between runs belong inside steps, so a
//! resumed execution replays what the first run saw.

use rhai::{Dynamic, Engine};

/// Registers the environment functions.
pub fn install(engine: &mut Engine) {
    engine.register_fn("env", |name: &str| -> Dynamic {
        std::env::var(name)
            .map(Dynamic::from)
            .unwrap_or(Dynamic::UNIT)
    });
    engine.register_fn("hostname", || -> String {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    });
    engine.register_fn("now_unix", || -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    // Milliseconds, for measuring (a drill's RTO). Like any reading of the
    // world, call it inside a step: its output is journaled and replayed.
    engine.register_fn("now_ms", || -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    });
}
