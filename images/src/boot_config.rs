//! The boot configuration a root volume carries, in extlinux.conf syntax
//! (syslinux's, as U-Boot's distro boot reads it too):
//!
//! ```text
//! DEFAULT linux
//! FALLBACK previous
//! LABEL linux
//!     KERNEL /boot/vmlinuz-6.1.0-29-cloud-amd64
//!     INITRD /boot/initrd.img-6.1.0-29-cloud-amd64
//!     APPEND quiet
//! LABEL previous
//!     KERNEL /boot/vmlinuz-6.1.0-29-cloud-amd64
//!     INITRD /boot/initrd.img-6.1.0-29-cloud-amd64.old
//!     APPEND quiet
//! ```
//!
//! Keywords are case-insensitive; `LINUX` is a synonym of `KERNEL`;
//! `FALLBACK` names the entry booted when the default cannot be (U-Boot's
//! keyword); other syslinux keywords (`TIMEOUT`, `PROMPT`, `MENU …`) are
//! accepted and ignored. The file belongs to the guest: it is hostile
//! input, so its size, its number of entries, the length of every value
//! and the paths it names are bounded, and a path must be absolute, under
//! `/boot/` and free of `..`.

/// Where the boot configuration is on the root volume.
pub const CONFIG_PATH: &str = "/boot/extlinux/extlinux.conf";
/// The largest boot configuration read.
pub const MAX_CONFIG_BYTES: u64 = 64 << 10;
/// The most entries (`LABEL`s) a configuration may have.
pub const MAX_ENTRIES: usize = 32;
/// The longest `APPEND` (the kernel's own limit is 2048 with drydock's part).
pub const MAX_APPEND: usize = 1024;
/// The longest path or label.
pub const MAX_NAME: usize = 255;

/// One `LABEL` of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    pub label: String,
    /// Absolute path on the volume, under `/boot/`.
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub append: String,
}

/// A parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// The `DEFAULT` label, or the first entry's when there is none.
    pub default: String,
    pub fallback: Option<String>,
    pub entries: Vec<BootEntry>,
}

impl BootConfig {
    /// Parses extlinux.conf text; the error names the line and the fix.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut default = None;
        let mut fallback = None;
        let mut entries: Vec<BootEntry> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = match line.split_once(|c: char| c.is_ascii_whitespace()) {
                Some((k, v)) => (k, v.trim()),
                None => (line, ""),
            };
            let at = |what: &str| format!("{CONFIG_PATH} line {line_no}: {what}");
            if value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(at("control characters in a value"));
            }
            match key.to_ascii_lowercase().as_str() {
                "default" => default = Some(name(value, &at)?),
                "fallback" => fallback = Some(name(value, &at)?),
                "label" => {
                    if entries.len() == MAX_ENTRIES {
                        return Err(at(&format!(
                            "more than {MAX_ENTRIES} entries; keep the current and the previous one"
                        )));
                    }
                    let label = name(value, &at)?;
                    if entries.iter().any(|e| e.label == label) {
                        return Err(at(&format!("a second entry labelled `{label}`")));
                    }
                    entries.push(BootEntry {
                        label,
                        kernel: None,
                        initrd: None,
                        append: String::new(),
                    });
                }
                "kernel" | "linux" | "initrd" | "append" => {
                    let Some(entry) = entries.last_mut() else {
                        return Err(at(&format!(
                            "{key} before any LABEL; start the entry with `LABEL name`"
                        )));
                    };
                    match key.to_ascii_lowercase().as_str() {
                        "append" => {
                            if value.len() > MAX_APPEND {
                                return Err(at(&format!(
                                    "APPEND longer than {MAX_APPEND} bytes"
                                )));
                            }
                            entry.append = value.to_string();
                        }
                        "initrd" => entry.initrd = Some(boot_path(value, &at)?),
                        _ => entry.kernel = Some(boot_path(value, &at)?),
                    }
                }
                // syslinux's menu and prompt keywords: nothing to choose
                // from on a serial console without a person.
                "timeout" | "prompt" | "menu" | "say" | "ontimeout" | "totaltimeout"
                | "serial" | "ui" | "implicit" | "nohalt" | "console" => {}
                other => {
                    return Err(at(&format!(
                        "unknown keyword `{other}`; use DEFAULT, FALLBACK, LABEL, KERNEL, INITRD, APPEND"
                    )))
                }
            }
        }
        let Some(first) = entries.first() else {
            return Err(format!(
                "{CONFIG_PATH} has no entry; add `LABEL linux` with KERNEL, INITRD and APPEND lines"
            ));
        };
        let default = default.unwrap_or_else(|| first.label.clone());
        let config = Self {
            default,
            fallback,
            entries,
        };
        if config.entry(&config.default).is_none() {
            return Err(format!(
                "{CONFIG_PATH}: DEFAULT `{}` names no LABEL",
                config.default
            ));
        }
        if let Some(f) = &config.fallback {
            if config.entry(f).is_none() {
                return Err(format!("{CONFIG_PATH}: FALLBACK `{f}` names no LABEL"));
            }
        }
        Ok(config)
    }

    pub fn entry(&self, label: &str) -> Option<&BootEntry> {
        self.entries.iter().find(|e| e.label == label)
    }

    /// The entries to try, in order: the default, then the fallback (when
    /// it is another entry). No other entry is booted by itself.
    pub fn boot_order(&self) -> Vec<&BootEntry> {
        let mut order: Vec<&BootEntry> = self.entry(&self.default).into_iter().collect();
        if let Some(f) = self.fallback.as_deref().and_then(|f| self.entry(f)) {
            if f.label != self.default {
                order.push(f);
            }
        }
        order
    }
}

fn name(value: &str, at: &dyn Fn(&str) -> String) -> Result<String, String> {
    if value.is_empty() {
        return Err(at("a name is missing"));
    }
    if value.len() > MAX_NAME {
        return Err(at(&format!("a name longer than {MAX_NAME} bytes")));
    }
    Ok(value.to_string())
}

/// A path the host may read: absolute, under /boot, no `..` or `.`
/// components, no empty components.
fn boot_path(value: &str, at: &dyn Fn(&str) -> String) -> Result<String, String> {
    let path = name(value, at)?;
    let Some(rest) = path.strip_prefix("/boot/") else {
        return Err(at(&format!(
            "`{path}` is not under /boot/; give the absolute path, e.g. /boot/vmlinuz-VERSION"
        )));
    };
    if path.contains(char::is_whitespace)
        || rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(at(&format!(
            "`{path}` is not a plain path under /boot/ (no spaces, `..`, `.` or `//`)"
        )));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# drydock
DEFAULT linux
FALLBACK previous
TIMEOUT 0
label linux
    kernel /boot/vmlinuz-6.1
    initrd /boot/initrd.img-6.1
    append quiet
LABEL previous
    LINUX /boot/vmlinuz-6.1
    INITRD /boot/initrd.img-6.1.old
";

    #[test]
    fn default_then_fallback() {
        let c = BootConfig::parse(GOOD).unwrap();
        let order: Vec<&str> = c.boot_order().iter().map(|e| e.label.as_str()).collect();
        assert_eq!(order, ["linux", "previous"]);
        assert_eq!(c.entries[0].append, "quiet");
        assert_eq!(
            c.entries[1].initrd.as_deref(),
            Some("/boot/initrd.img-6.1.old")
        );
        // No DEFAULT: the first entry; no FALLBACK: nothing else.
        let c = BootConfig::parse("LABEL a\nKERNEL /boot/k\nLABEL b\nKERNEL /boot/k2\n").unwrap();
        assert_eq!(c.boot_order().len(), 1);
        assert_eq!(c.boot_order()[0].label, "a");
    }

    #[test]
    fn hostile_configurations_are_refused_with_the_line() {
        for (text, want) in [
            ("", "has no entry"),
            ("DEFAULT x\nLABEL a\nKERNEL /boot/k\n", "names no LABEL"),
            ("KERNEL /boot/k\n", "before any LABEL"),
            ("LABEL a\nKERNEL /etc/shadow\n", "not under /boot/"),
            ("LABEL a\nKERNEL /boot/../etc/shadow\n", "not a plain path"),
            ("LABEL a\nKERNEL boot/k\n", "not under /boot/"),
            ("LABEL a\nINITRD /boot//x\n", "not a plain path"),
            ("LABEL a\nLABEL a\n", "second entry"),
            ("LABEL a\nFROB 1\n", "unknown keyword"),
            ("LABEL a\nAPPEND a\x07b\n", "control characters"),
            ("LABEL a\nFALLBACK b\n", "FALLBACK `b` names no LABEL"),
        ] {
            let err = BootConfig::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let many: String = (0..=MAX_ENTRIES).map(|i| format!("LABEL e{i}\n")).collect();
        assert!(BootConfig::parse(&many)
            .unwrap_err()
            .contains("more than 32 entries"));
        let long = format!("LABEL a\nAPPEND {}\n", "x".repeat(MAX_APPEND + 1));
        assert!(BootConfig::parse(&long)
            .unwrap_err()
            .contains("APPEND longer"));
    }
}
