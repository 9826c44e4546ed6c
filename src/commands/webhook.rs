//! Webhook targets of event rules: the event as JSON, POSTed with an
//! HMAC-SHA256 signature of the body (`X-Drydock-Signature:
//! sha256=HEX`, GitHub's convention), the event type and a delivery id
//! (`RULE-SEQ`, the same on every retry, for a receiver to drop
//! duplicates), tried again with backoff (1, 2, 4, 8 s) on a failure or
//! a 5xx/429 answer. The signing key comes from the parameter store.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Attempts per delivery.
pub const ATTEMPTS: u32 = 5;

/// `sha256=HEX` of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Checks a webhook URL when a rule is added.
pub fn check_url(url: &str) -> Result<(), String> {
    let fix = "give an http:// or https:// URL, like https://chat.example/hooks/ops";
    if url.len() > 2048 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("the webhook URL is not a URL: {fix}"));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("the webhook URL `{url}` is neither http:// nor https://: {fix}"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return Err(format!(
            "the webhook URL `{url}` names no host (or carries credentials): {fix}"
        ));
    }
    Ok(())
}

/// Delivers `body` (an event) to `url`; returns the answer's status, or
/// why every attempt failed.
pub fn deliver(
    url: &str,
    key: &[u8],
    event_type: &str,
    delivery: &str,
    body: &[u8],
) -> Result<u16, String> {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::NativeTls)
                .build(),
        )
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let sig = signature(key, body);
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(1 << (attempt - 1)));
        }
        match agent
            .post(url)
            .header("Content-Type", "application/json")
            .header("User-Agent", "drydock-webhook")
            .header("X-Drydock-Event", event_type)
            .header("X-Drydock-Delivery", delivery)
            .header("X-Drydock-Signature", &sig)
            .send(body)
        {
            Ok(r) => {
                let status = r.status().as_u16();
                if status < 300 {
                    return Ok(status);
                }
                last = format!("the webhook answered {status}");
                // A client error will not change by trying again.
                if (400..500).contains(&status) && status != 429 {
                    return Err(last);
                }
            }
            Err(e) => last = format!("cannot reach the webhook: {e}"),
        }
    }
    Err(format!("{last} (after {ATTEMPTS} attempts)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_and_urls_are_checked() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(check_url("https://chat.example/hooks/1").is_ok());
        assert!(check_url("http://127.0.0.1:9000/h").is_ok());
        for bad in [
            "ftp://x/",
            "https://",
            "https://user:pw@host/",
            "http://a b/",
            "chat.example",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
