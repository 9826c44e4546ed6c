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

/// Whether an address is one a webhook may reach without
/// `--allow-private`: not loopback, private, link-local (the metadata
/// address among them), shared (100.64/10), unspecified or multicast.
fn public(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v) => {
            let o = v.octets();
            !(v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_multicast()
                || v.is_documentation()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0)
        }
        std::net::IpAddr::V6(v) => {
            let seg = v.segments();
            !(v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || v.to_ipv4_mapped().is_some_and(|m| !public(m.into())))
        }
    }
}

/// `host:port` of an http(s) URL.
fn authority(url: &str) -> Option<(String, u16)> {
    let (rest, default) = match url.strip_prefix("https://") {
        Some(r) => (r, 443),
        None => (url.strip_prefix("http://")?, 80),
    };
    let host = rest.split(['/', '?', '#']).next()?;
    if let Some(v6) = host.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .map_or(Some(default), |p| p.parse().ok())?;
        return Some((addr.to_string(), port));
    }
    match host.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((host.to_string(), default)),
    }
}

/// Refuses a URL whose host resolves to an address that is not public,
/// unless allowed.
fn check_addresses(url: &str, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    use std::net::ToSocketAddrs;
    let (host, port) = authority(url).ok_or_else(|| format!("`{url}` names no host"))?;
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if let Some(a) = addrs.iter().find(|a| !public(a.ip())) {
        return Err(format!(
            "the webhook's host {host} is at {}, a loopback, private or link-local address: a rule does not make the host reach into its own network unless its author says so (--allow-private)",
            a.ip()
        ));
    }
    Ok(())
}

/// Checks a webhook URL when a rule is added.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
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
    check_addresses(url, allow_private)
}

/// Delivers `body` (an event) to `url`; returns the answer's status, or
/// why every attempt failed.
pub fn deliver(
    url: &str,
    allow_private: bool,
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
        // Resolved again at each attempt: a name that now points inside
        // is refused (the client resolves it once more to connect; a
        // rebinding in between is not caught).
        check_addresses(url, allow_private)?;
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
                // A client error or a redirect (not followed) will not
                // change by trying again.
                if (300..500).contains(&status) && status != 429 {
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
        assert!(check_url("https://203.0.113.1.nip.invalid/hooks/1", true).is_ok());
        assert!(check_url("http://127.0.0.1:9000/h", true).is_ok());
        for inside in [
            "http://127.0.0.1:9000/h",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.1.1.4/",
            "http://100.64.0.1/",
            "http://[::1]:8080/",
            "http://[fe80::1]/",
            "http://localhost/",
        ] {
            let e = check_url(inside, false).unwrap_err();
            assert!(
                e.contains("--allow-private") || e.contains("cannot resolve"),
                "{inside}: {e}"
            );
        }
        assert!(
            check_url("http://8.8.8.8/", false).is_ok(),
            "a public address (nothing is sent)"
        );
        for bad in [
            "ftp://x/",
            "https://",
            "https://user:pw@host/",
            "http://a b/",
            "chat.example",
        ] {
            assert!(check_url(bad, true).is_err(), "{bad}");
        }
        assert_eq!(
            authority("https://h.example:8443/x"),
            Some(("h.example".into(), 8443))
        );
        assert_eq!(authority("http://[::1]/x"), Some(("::1".into(), 80)));
    }
}
