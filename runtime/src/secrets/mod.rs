//! Secrets: sealed at rest, masked everywhere they could be shown.
//!
//! - [`SecretKey`] is a 256-bit key in `DATA_DIR/keys/secrets.key` (0600,
//!   created on first use, readable only by its owner). [`SecretKey::seal`]
//!   encrypts with ChaCha20-Poly1305 (a fresh random nonce per value; the
//!   context — a parameter's name — is authenticated, so a sealed value
//!   cannot be moved to another name).
//! - [`Secrets`] is the set of secret values an execution (or a REPL) has
//!   seen; [`Secrets::mask`] replaces each of them with `****` in any text
//!   before it is journaled, printed or written to a transcript.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// What a masked secret looks like.
pub const MASK: &str = "****";

/// The JSON key of a sealed value in stored parameters.
pub const SEALED_KEY: &str = "$sealed";
/// The JSON key of a reference to the parameter store.
pub const PARAM_REF_KEY: &str = "$param";

const PREFIX: &str = "v1:";

mod masking;
pub use masking::{Secrets, StreamMask, MAX_PIECED, MIN_PIECE};

/// Errors from sealing and opening secrets.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot use the secrets key {path}: {source}")]
    Key {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the secrets key {path} is not a 32-byte key file; restore it from a backup (sealed values cannot be opened without it)")]
    BadKey { path: PathBuf },
    #[error(
        "the secrets key {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    KeyExposed { path: PathBuf, mode: u32 },
    #[error("a sealed value cannot be opened with this data directory's key (wrong key, or the value was altered)")]
    Open,
    #[error("the system's random source failed: {0}")]
    Random(String),
}

/// The key that seals secrets at rest.
pub struct SecretKey {
    cipher: ChaCha20Poly1305,
}

impl SecretKey {
    /// Where a data directory keeps its key.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("keys").join("secrets.key")
    }

    /// Loads the data directory's key, creating it (0600) on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, SecretError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let path = Self::path(data_dir);
        let key_err = |source| SecretError::Key {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(key_err)?;
        }
        let mut bytes = Vec::new();
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut f) => {
                let mut key = [0u8; 32];
                getrandom::getrandom(&mut key).map_err(|e| SecretError::Random(e.to_string()))?;
                f.write_all(&key).map_err(key_err)?;
                f.sync_all().map_err(key_err)?;
                bytes.extend_from_slice(&key);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let (mut f, _) =
                    crate::input_file::open(&path, crate::input_file::InputKind::SecretKey)
                        .map_err(|e| key_err(e.into_io()))?;
                let mode = f.metadata().map_err(key_err)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(SecretError::KeyExposed { path, mode });
                }
                Read::by_ref(&mut f)
                    .take(64)
                    .read_to_end(&mut bytes)
                    .map_err(key_err)?;
            }
            Err(e) => return Err(key_err(e)),
        }
        if bytes.len() != 32 {
            return Err(SecretError::BadKey { path });
        }
        Ok(Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)),
        })
    }

    /// Encrypts `plain`, authenticating `context` with it.
    pub fn seal(&self, context: &str, plain: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce).map_err(|e| SecretError::Random(e.to_string()))?;
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Open)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Decrypts what [`seal`](Self::seal) made with the same context.
    pub fn open(&self, context: &str, sealed: &str) -> Result<String, SecretError> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter(|raw| raw.len() > 12)
            .ok_or(SecretError::Open)?;
        let (nonce, body) = raw.split_at(12);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Open)?;
        String::from_utf8(plain).map_err(|_| SecretError::Open)
    }
}

/// What a parameter store value is sealed for: its name and its version,
/// so a ciphertext copied over another version of the same name (or
/// another name) does not open. Values sealed before versions were bound
/// (`{PREFIX}` without [`VERSIONED`]) open with the name alone until
/// [`crate::parameters::reseal_legacy_parameters`] binds them.
pub fn parameter_context(name: &str, version: i64) -> String {
    format!("parameter {name} version {version}")
}

/// Marks a parameter value sealed for its name and version.
pub const VERSIONED: &str = "v2:";

/// Seals a parameter store value for `name` at `version`.
pub fn seal_parameter(
    key: &SecretKey,
    name: &str,
    version: i64,
    plain: &str,
) -> Result<String, SecretError> {
    Ok(format!(
        "{VERSIONED}{}",
        key.seal(&parameter_context(name, version), plain)?
    ))
}

/// Opens a parameter store value (bound to its version, or a legacy one
/// bound to its name only).
pub fn open_parameter(
    key: &SecretKey,
    name: &str,
    version: i64,
    stored: &str,
) -> Result<String, SecretError> {
    match stored.strip_prefix(VERSIONED) {
        Some(sealed) => key.open(&parameter_context(name, version), sealed),
        None => key.open(name, stored),
    }
}

/// Stored parameters as people may see them: sealed values and store
/// references become `****`.
pub fn redact_params(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(m) if m.contains_key(SEALED_KEY) => Value::String(MASK.into()),
        Value::Object(m) if m.contains_key(PARAM_REF_KEY) => Value::String(format!(
            "{MASK} (param:{} v{})",
            m.get(PARAM_REF_KEY).and_then(Value::as_str).unwrap_or("?"),
            m.get("version").and_then(Value::as_i64).unwrap_or(0)
        )),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), redact_params(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact_params).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_secret_split_across_pieces_is_masked_in_a_stream() {
        let secrets = Secrets::new();
        secrets.add("hunter2-long");
        let mut m = StreamMask::default();
        let mut out = Vec::new();
        for piece in [
            &b"Password: hun"[..],
            b"ter2",
            b"-lo",
            b"ng\r\n# ok",
            b" done",
        ] {
            out.extend(m.push(&secrets, piece));
        }
        out.extend(m.finish(&secrets));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Password: ****\r\n# ok done"
        );
        // Without secrets nothing is held back.
        let mut plain = StreamMask::default();
        assert_eq!(plain.push(&Secrets::new(), b"abc"), b"abc");
        // One byte at a time.
        let mut m = StreamMask::default();
        let mut out = Vec::new();
        for b in b"x hunter2-long y hunter2-long" {
            out.extend(m.push(&secrets, &[*b]));
        }
        out.extend(m.finish(&secrets));
        assert_eq!(String::from_utf8(out).unwrap(), "x **** y ****");
    }

    use super::*;

    #[test]
    fn a_parameter_value_opens_only_as_the_version_it_was_sealed_for() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::load_or_create(dir.path()).unwrap();
        let v1 = seal_parameter(&key, "db/pass", 1, "old").unwrap();
        let v2 = seal_parameter(&key, "db/pass", 2, "new").unwrap();
        assert_eq!(open_parameter(&key, "db/pass", 1, &v1).unwrap(), "old");
        assert_eq!(open_parameter(&key, "db/pass", 2, &v2).unwrap(), "new");
        // Version 1's ciphertext copied over version 2 (or another name).
        assert!(open_parameter(&key, "db/pass", 2, &v1).is_err());
        assert!(open_parameter(&key, "db/other", 1, &v1).is_err());
    }

    #[test]
    fn sealed_values_open_only_with_their_context_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::load_or_create(dir.path()).unwrap();
        let sealed = key.seal("password", "hunter2").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            key.seal("password", "hunter2").unwrap(),
            "fresh nonce"
        );
        assert_eq!(key.open("password", &sealed).unwrap(), "hunter2");
        assert!(key.open("other", &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(key.open("password", &tampered).is_err());
        // The same key is loaded again; another data dir's key cannot open it.
        let again = SecretKey::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open("password", &sealed).unwrap(), "hunter2");
        let other = tempfile::tempdir().unwrap();
        assert!(SecretKey::load_or_create(other.path())
            .unwrap()
            .open("password", &sealed)
            .is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(SecretKey::path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_exposed_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        SecretKey::load_or_create(dir.path()).unwrap();
        std::fs::set_permissions(
            SecretKey::path(dir.path()),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let err = SecretKey::load_or_create(dir.path()).err().unwrap();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn masking_covers_text_json_and_bytes() {
        let s = Secrets::new();
        s.add("hunter2");
        s.add("hunter2-long");
        assert_eq!(
            s.mask("login root/hunter2-long then hunter2"),
            "login root/**** then ****"
        );
        assert_eq!(
            s.mask_json(&serde_json::json!({"a": ["x hunter2 y"]})),
            serde_json::json!({"a": ["x **** y"]})
        );
        assert_eq!(&*s.mask_bytes(b"\xffhunter2\r\n"), b"\xff****\r\n");
        assert!(s.contains_secret("..hunter2.."));
        assert!(!s.contains_secret("hunte"));
    }

    #[test]
    fn derived_forms_of_a_secret_are_masked_too() {
        use base64::Engine;
        let s = Secrets::new();
        let secret = "Tr0ub4dor&3-horse";
        s.add(secret);
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        for (text, why) in [
            (format!("upper {}", secret.to_uppercase()), "upper case"),
            (format!("lower {}", secret.to_lowercase()), "lower case"),
            (format!("b64 {b64}"), "base64"),
            (format!("hex {hex}"), "hex"),
            (format!("hex {}", hex.to_uppercase()), "upper hex"),
            (format!("piece {}", &secret[3..11]), "a piece of 8"),
            (format!("piece {}", &secret[5..11]), "a piece of 6"),
        ] {
            let masked = s.mask(&text);
            assert!(masked.ends_with(" ****"), "{why}: {masked}");
            assert!(s.contains_secret(&text), "{why}");
        }
        // Pieces shorter than 6 stay (they say nothing), overlapping forms
        // become one mask.
        assert_eq!(s.mask("4dor&"), "4dor&");
        assert_eq!(
            s.mask(&format!("{secret}{}", secret.to_uppercase())),
            "****"
        );
        // In a stream, cut anywhere.
        let text = format!("a {b64} b {} c", &secret[2..12]);
        let mut m = StreamMask::default();
        let mut out = Vec::new();
        for b in text.as_bytes() {
            out.extend(m.push(&s, &[*b]));
        }
        out.extend(m.finish(&s));
        assert_eq!(String::from_utf8(out).unwrap(), "a **** b **** c");
    }
}
