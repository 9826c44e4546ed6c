//! Driver packs: a small ext4 file system holding the kernel modules an
//! instance needs for another device generation (virtio_pci for n2),
//! taken from the Debian kernel package matching the guest's kernel
//! release, with a script the guest runs to install them. The guest needs
//! no network: the host fetches the package (or finds it in its package
//! cache), and the pack reaches the guest as a volume.
//!
//! Layout of the file system (label `drivers`):
//!
//! ```text
//! /RELEASE          the kernel release the modules are built for
//! /drivers          the drivers asked for, one a line
//! /modules/...      the .ko files, at their paths under /lib/modules/RELEASE
//! /modules.dep      their modules.dep lines
//! /install.sh       sh install.sh [ROOT]: copy, register, rebuild the initramfs
//! ```

use std::path::{Path, PathBuf};

use super::{modules, packages, ImageError};

/// What a pack holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DriverPack {
    pub release: String,
    /// The drivers asked for.
    pub drivers: Vec<String>,
    /// Every module in the pack, dependencies first.
    pub modules: Vec<String>,
    /// The package they came from (name=version).
    pub package: String,
}

/// The installer the guest runs (busybox sh).
const INSTALL: &str = include_str!("guest/install-drivers.sh");

/// Checks a kernel release string before it names a package or a path.
pub fn check_release(release: &str) -> Result<(), ImageError> {
    let ok = !release.is_empty()
        && release.len() <= 64
        && release
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
        && release.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ImageError::Recipe(format!(
            "`{release}` is not a kernel release (like 6.1.0-29-cloud-amd64: what `uname -r` prints in the guest)"
        )))
    }
}

/// The Debian package holding kernel `release`, from apt or, on a host
/// without network, from the package cache.
pub fn kernel_package(release: &str, cache: &Path) -> Result<packages::PackageVersion, ImageError> {
    check_release(release)?;
    let name = format!("linux-image-{release}");
    if let Ok(Some(version)) = packages::candidate(&name) {
        return Ok(packages::PackageVersion { name, version });
    }
    // Unpacked earlier (the image build fetched it).
    let prefix = format!("{name}_");
    if let Ok(dir) = std::fs::read_dir(cache) {
        for e in dir.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if let Some(v) = file.strip_prefix(&prefix) {
                if e.path().join(".complete").exists() {
                    return Ok(packages::PackageVersion {
                        name,
                        version: v.to_string(),
                    });
                }
            }
        }
    }
    Err(ImageError::Recipe(format!(
        "no Debian package holds kernel {release} ({name} is neither in apt's sources nor in the package cache {}): upgrade the instance's kernel to one apt offers, or add the source that has it",
        cache.display()
    )))
}

/// Builds the pack's file tree in `tree` for `drivers` of kernel
/// `release`; returns what it holds.
pub fn stage(
    cache: &Path,
    release: &str,
    drivers: &[String],
    tree: &Path,
) -> Result<DriverPack, ImageError> {
    if drivers.is_empty() {
        return Err(ImageError::Recipe(
            "name at least one driver (e.g. virtio_pci)".into(),
        ));
    }
    for d in drivers {
        if d.is_empty()
            || d.len() > 64
            || !d
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ImageError::Recipe(format!(
                "`{d}` is not a kernel module name (letters, digits, _ and -)"
            )));
        }
    }
    let package = kernel_package(release, cache)?;
    let unpacked = packages::fetch(&package, cache)?;
    let modules_dir = unpacked.join("lib/modules").join(release);
    let index = modules::index(&modules_dir)
        .map_err(|e| ImageError::io("read modules in", &modules_dir, e))?;
    let wanted: Vec<String> = drivers.iter().map(|d| d.replace('-', "_")).collect();
    let order = modules::load_order(&index, &wanted).map_err(ImageError::Recipe)?;
    let (files, dep) =
        modules::for_volume(&index, &modules_dir, &order).map_err(ImageError::Recipe)?;
    let write = |path: PathBuf, data: &[u8], mode: u32| -> Result<(), ImageError> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| ImageError::io("create", parent, e))?;
        }
        std::fs::write(&path, data).map_err(|e| ImageError::io("write", &path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| ImageError::io("set the mode of", &path, e))
    };
    for (rel, from) in &files {
        let bytes = std::fs::read(from).map_err(|e| ImageError::io("read", from, e))?;
        write(tree.join("modules").join(rel), &bytes, 0o644)?;
    }
    write(tree.join("modules.dep"), dep.as_bytes(), 0o644)?;
    write(
        tree.join("RELEASE"),
        format!("{release}\n").as_bytes(),
        0o644,
    )?;
    write(
        tree.join("drivers"),
        (wanted.join("\n") + "\n").as_bytes(),
        0o644,
    )?;
    write(tree.join("install.sh"), INSTALL.as_bytes(), 0o755)?;
    Ok(DriverPack {
        release: release.to_string(),
        drivers: wanted,
        modules: order,
        package: format!("{}={}", package.name, package.version),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_and_driver_names_are_checked_before_use() {
        for bad in [
            "",
            "../etc",
            "6.1 x",
            "cloud-amd64",
            "6.1.0-29-cloud-amd64;rm",
        ] {
            assert!(check_release(bad).is_err(), "{bad:?}");
        }
        check_release("6.1.0-29-cloud-amd64").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = stage(dir.path(), "6.1.0-29-cloud-amd64", &[], dir.path()).unwrap_err();
        assert!(err.to_string().contains("at least one driver"));
        let err = stage(
            dir.path(),
            "6.1.0-29-cloud-amd64",
            &["virtio_pci; reboot".into()],
            dir.path(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("not a kernel module name"),
            "{err}"
        );
    }
}
