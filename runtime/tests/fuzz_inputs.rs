//! Property tests of what drydock parses from people and files:
//! durations, parameter values of every type, and masking of secrets.
//! Nothing may panic; what is accepted must be within bounds.

use std::collections::BTreeMap;

use drydock_runtime::duration::{parse_duration, MAX};
use drydock_runtime::params::{resolve_params, ParamSpec, ParamType};
use drydock_runtime::secrets::Secrets;
use drydock_runtime::SuppliedValue;
use proptest::prelude::*;

fn spec(kind: &str) -> ParamSpec {
    ParamSpec {
        name: "p".into(),
        kind: ParamType::parse(kind).unwrap(),
        description: String::new(),
        required: true,
        default: None,
        allowed: vec![],
        pattern: None,
        min: None,
        max: None,
    }
}

proptest! {
    #[test]
    fn durations_never_panic_and_stay_bounded(text in "\\PC{0,40}") {
        if let Ok(d) = parse_duration(&text) {
            prop_assert!(d <= MAX);
        }
    }

    #[test]
    fn numeric_durations_never_panic(secs in any::<f64>(), unit in "(ms|s|m|h|d|)") {
        if let Ok(d) = parse_duration(&format!("{secs}{unit}")) {
            prop_assert!(d <= MAX);
        }
    }

    #[test]
    fn parameter_values_of_every_type_never_panic(
        kind in "(string|int|bool|list|map|duration|secret|instance|volume|snapshot|image|region)",
        value in "\\PC{0,80}",
    ) {
        let mut given = BTreeMap::new();
        given.insert("p".to_string(), SuppliedValue::Text(value.clone()));
        let _ = resolve_params(&[spec(&kind)], &given);
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&value) {
            given.insert("p".to_string(), SuppliedValue::Json(json));
            let _ = resolve_params(&[spec(&kind)], &given);
        }
    }

    #[test]
    fn a_masked_text_never_holds_the_secret(
        secret in "[a-zA-Z0-9!@#%&]{1,24}",
        before in "\\PC{0,40}",
        after in "\\PC{0,40}",
    ) {
        let s = Secrets::new();
        s.add(&secret);
        let text = format!("{before}{secret}{after}{secret}");
        prop_assert!(!s.mask(&text).contains(&secret));
        prop_assert!(!String::from_utf8_lossy(&s.mask_bytes(text.as_bytes())).contains(&secret));
    }
}
