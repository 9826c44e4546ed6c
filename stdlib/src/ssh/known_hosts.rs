//! drydock's own `known_hosts` (OpenSSH's line format) and the host-key
//! policy of `ssh::connect`: `strict` (the default: only known keys),
//! `accept-new` (record the first key seen, refuse a changed one) or a
//! pinned `SHA256:…` fingerprint.
//!
//! Lines are `PATTERNS KEYTYPE BASE64 [COMMENT]`, optionally preceded by a
//! `@revoked` or `@cert-authority` marker. PATTERNS is a comma-separated
//! list of host names or `[host]:port` (for ports other than 22) with `*`,
//! `?` and `!` negation. Hashed names (`|1|…`) are not matched: drydock
//! writes plain names, and copies from `~/.ssh/known_hosts` should be made
//! with `ssh-keygen -F host` (which prints plain names).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// What `host_key` in the connect options asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Only keys already in known_hosts (the default).
    Strict,
    /// Record the key of a host seen for the first time; refuse a changed key.
    AcceptNew,
    /// Only the key with this SHA-256 digest (known_hosts is not consulted).
    Pinned([u8; 32]),
    /// Only a key a drydock instance announced on its serial console
    /// (known_hosts is not consulted).
    Announced {
        instance: String,
        digests: Vec<[u8; 32]>,
    },
}

impl HostKeyPolicy {
    pub const HELP: &'static str = "host_key must be \"strict\" (the default: only hosts already in drydock's known_hosts), \"accept-new\" (record the key of a new host, refuse a changed one) or a pinned fingerprint \"SHA256:…\" as `ssh-keygen -lf` prints it";

    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "strict" | "yes" => Ok(Self::Strict),
            "accept-new" => Ok(Self::AcceptNew),
            t if t.starts_with("SHA256:") => {
                let digest = decode_base64(&t["SHA256:".len()..])
                    .and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok())
                    .ok_or_else(|| {
                        format!(
                            "host_key {t:?} is not a SHA-256 fingerprint (43 base64 characters after `SHA256:`); {}",
                            Self::HELP
                        )
                    })?;
                Ok(Self::Pinned(digest))
            }
            other => Err(format!("unknown host_key {other:?}; {}", Self::HELP)),
        }
    }
}

/// The key type named inside a public-key blob (`ssh-ed25519`, `ssh-rsa`,
/// `ecdsa-sha2-nistp256`…), read defensively: the blob comes from the server.
pub fn key_type(blob: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4usize.checked_add(len)?)?;
    let name = std::str::from_utf8(name).ok()?;
    (!name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| name.to_string())
}

/// OpenSSH's fingerprint of a public-key blob: `SHA256:` and the unpadded
/// base64 of its SHA-256 digest.
pub fn fingerprint(blob: &[u8]) -> String {
    fingerprint_of_digest(&Sha256::digest(blob).into())
}

pub fn fingerprint_of_digest(digest: &[u8; 32]) -> String {
    format!("SHA256:{}", encode_base64(digest, false))
}

pub fn digest(blob: &[u8]) -> [u8; 32] {
    Sha256::digest(blob).into()
}

/// The name a host is recorded under: `host` on port 22, `[host]:port` otherwise.
pub fn host_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// Whether `host` can be written into a known_hosts line as is.
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:%".contains(&b))
}

/// One known_hosts line that names the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number in the file.
    pub line: usize,
    pub key_type: String,
    pub blob: Vec<u8>,
    pub revoked: bool,
}

/// What the file says about the key a server offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A line records this key for this host.
    Known { line: usize },
    /// No line names this host.
    Unknown,
    /// The host is known with other keys: possible impostor.
    Changed { recorded: Entry },
    /// The key is marked `@revoked`.
    Revoked { line: usize },
}

/// The lines of `text` that name `name` (as [`host_name`] builds it).
pub fn entries_for(text: &str, name: &str) -> Vec<Entry> {
    let mut found = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let mut revoked = false;
        if let Some(marker) = first.strip_prefix('@') {
            match marker {
                "revoked" => revoked = true,
                // Certificates are not supported; such lines never match.
                _ => continue,
            }
            first = fields.next().unwrap_or_default();
        }
        let (Some(key_type), Some(b64)) = (fields.next(), fields.next()) else {
            tracing::debug!(line = i + 1, "known_hosts: malformed line ignored");
            continue;
        };
        if !patterns_match(first, name) {
            continue;
        }
        let Some(blob) = decode_base64(b64) else {
            tracing::warn!(line = i + 1, "known_hosts: key is not base64; line ignored");
            continue;
        };
        found.push(Entry {
            line: i + 1,
            key_type: key_type.to_string(),
            blob,
            revoked,
        });
    }
    found
}

/// Checks the offered key `blob` against the entries for its host.
pub fn check(entries: &[Entry], blob: &[u8]) -> Verdict {
    if let Some(e) = entries.iter().find(|e| e.revoked && e.blob == blob) {
        return Verdict::Revoked { line: e.line };
    }
    if let Some(e) = entries.iter().find(|e| !e.revoked && e.blob == blob) {
        return Verdict::Known { line: e.line };
    }
    match entries.iter().find(|e| !e.revoked) {
        Some(e) => Verdict::Changed {
            recorded: e.clone(),
        },
        None => Verdict::Unknown,
    }
}

/// Host-key algorithms to ask the server for, so that a known host is
/// asked for the kind of key drydock recorded (as OpenSSH does).
pub fn preferred_algorithms(entries: &[Entry]) -> Option<String> {
    let mut algos: Vec<&str> = Vec::new();
    for e in entries.iter().filter(|e| !e.revoked) {
        let names: &[&str] = match e.key_type.as_str() {
            "ssh-rsa" => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
            "ssh-ed25519" => &["ssh-ed25519"],
            "ecdsa-sha2-nistp256" => &["ecdsa-sha2-nistp256"],
            "ecdsa-sha2-nistp384" => &["ecdsa-sha2-nistp384"],
            "ecdsa-sha2-nistp521" => &["ecdsa-sha2-nistp521"],
            _ => &[],
        };
        for n in names {
            if !algos.contains(n) {
                algos.push(n);
            }
        }
    }
    (!algos.is_empty()).then(|| algos.join(","))
}

/// Appends a line for `name` to the file (directory 0700, file 0600).
pub fn append(path: &Path, name: &str, key_type: &str, blob: &[u8]) -> std::io::Result<usize> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let existing = match drydock_runtime::input_file::read(
        path,
        drydock_runtime::input_file::InputKind::KnownHosts,
    ) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e.into_io()),
    };
    let mut line = String::new();
    if !existing.is_empty() && !existing.ends_with(b"\n") {
        line.push('\n');
    }
    line.push_str(&format!(
        "{name} {key_type} {}\n",
        encode_base64(blob, true)
    ));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(line.as_bytes())?;
    f.sync_all()?;
    let line_no = existing.iter().filter(|&&b| b == b'\n').count()
        + usize::from(!existing.is_empty() && !existing.ends_with(b"\n"))
        + 1;
    Ok(line_no)
}

/// OpenSSH's pattern lists: comma-separated, `*` and `?` wildcards, a
/// leading `!` negates (a negated match wins).
fn patterns_match(list: &str, name: &str) -> bool {
    let mut matched = false;
    for pat in list.split(',') {
        if let Some(neg) = pat.strip_prefix('!') {
            if glob(&neg.to_ascii_lowercase(), name) {
                return false;
            }
        } else if glob(&pat.to_ascii_lowercase(), name) {
            matched = true;
        }
    }
    matched
}

fn glob(pat: &str, text: &str) -> bool {
    let (p, t) = (pat.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64, padded or not.
pub fn encode_base64(data: &[u8], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with or without padding; `None` for anything else.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in body.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_the_standard() {
        for (raw, padded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"\xff\xfe\x00", "//4A"),
        ] {
            assert_eq!(encode_base64(raw, true), padded);
            assert_eq!(decode_base64(padded).unwrap(), raw);
            assert_eq!(decode_base64(padded.trim_end_matches('=')).unwrap(), raw);
        }
        assert!(decode_base64("Zm9v!").is_none());
        assert!(decode_base64("Z").is_none());
        assert!(decode_base64("Zg===").is_none());
    }

    #[test]
    fn fingerprints_are_openssh_style() {
        // The digest of an empty blob, as `ssh-keygen -lf` would print it.
        assert_eq!(
            fingerprint(b""),
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        );
        let p = HostKeyPolicy::parse("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU").unwrap();
        assert_eq!(p, HostKeyPolicy::Pinned(digest(b"")));
        assert!(HostKeyPolicy::parse("SHA256:short").is_err());
        assert!(HostKeyPolicy::parse("no").is_err());
        assert_eq!(
            HostKeyPolicy::parse("accept-new").unwrap(),
            HostKeyPolicy::AcceptNew
        );
    }

    #[test]
    fn key_type_is_read_defensively() {
        let mut blob = vec![0, 0, 0, 11];
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 32]);
        assert_eq!(key_type(&blob).as_deref(), Some("ssh-ed25519"));
        assert_eq!(key_type(&[0, 0, 0]), None);
        assert_eq!(key_type(&[0xff, 0xff, 0xff, 0xff, b'a']), None);
        assert_eq!(key_type(&[0, 0, 0, 2, b'a', b'\n']), None);
    }

    #[test]
    fn lines_match_hosts_ports_patterns_and_markers() {
        let a = encode_base64(b"key-a", true);
        let b = encode_base64(b"key-b", true);
        let text = format!(
            "# comment\n\n[127.0.0.1]:2222 ssh-ed25519 {a}\nweb*,!web9 ssh-ed25519 {b} c\n\
             @revoked bad ssh-ed25519 {a}\n@cert-authority * ssh-ed25519 {a}\nbroken\n\
             |1|salt|hash ssh-ed25519 {a}\n"
        );
        let e = entries_for(&text, &host_name("127.0.0.1", 2222));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 3);
        assert_eq!(check(&e, b"key-a"), Verdict::Known { line: 3 });
        assert!(matches!(check(&e, b"key-b"), Verdict::Changed { .. }));
        assert_eq!(
            check(&entries_for(&text, "127.0.0.1"), b"key-a"),
            Verdict::Unknown
        );
        assert_eq!(
            check(&entries_for(&text, "web1"), b"key-b"),
            Verdict::Known { line: 4 }
        );
        assert_eq!(
            check(&entries_for(&text, "web9"), b"key-b"),
            Verdict::Unknown
        );
        assert_eq!(
            check(&entries_for(&text, "bad"), b"key-a"),
            Verdict::Revoked { line: 5 }
        );
        assert_eq!(
            preferred_algorithms(&entries_for(&text, "web1")).as_deref(),
            Some("ssh-ed25519")
        );
    }

    #[test]
    fn append_creates_private_files_and_counts_lines() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh").join("known_hosts");
        assert_eq!(append(&path, "[h]:2", "ssh-ed25519", b"k1").unwrap(), 1);
        assert_eq!(append(&path, "h2", "ssh-ed25519", b"k2").unwrap(), 2);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            check(&entries_for(&text, "h2"), b"k2"),
            Verdict::Known { line: 2 }
        );
        assert!(!valid_host("a b") && !valid_host("a\nb") && !valid_host("a,b"));
        assert!(valid_host("10.0.0.5") && valid_host("::1") && valid_host("web-1.example"));
    }
}
