//! The runbooks bundled with drydock, embedded in the binary at build time
//! from the `.rhai` files beside this crate's `Cargo.toml`.

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// The bundled runbooks as owned (file name, source) pairs.
pub fn bundled() -> Vec<(String, String)> {
    BUNDLED
        .iter()
        .map(|(f, s)| (f.to_string(), s.to_string()))
        .collect()
}
