//! The guest's SSH server: Dropbear and the libraries it links, from
//! Debian's packages as the rest of the image. Its host key is made at the
//! guest's first boot and announced on the serial console (the guest's
//! `sshd` service), where the host reads it to pin it.

use std::path::{Path, PathBuf};

use super::packages::{self, PackageVersion};
use super::ImageError;

/// The packages the SSH server comes from: the server and what it links.
pub const PACKAGES: &[&str] = &[
    "dropbear-bin",
    "libc6",
    "libcrypt1",
    "libtomcrypt1",
    "libtommath1",
    "libgmp10",
    "zlib1g",
];

/// The programs taken from dropbear-bin.
const PROGRAMS: &[&str] = &["usr/sbin/dropbear", "usr/bin/dropbearkey"];

/// Where the libraries are (in the packages and in the guest).
const LIBRARY_DIRS: &[&str] = &["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64"];

/// The versions of [`PACKAGES`] the build uses.
pub fn resolve() -> Result<Vec<PackageVersion>, ImageError> {
    PACKAGES.iter().map(|p| packages::resolve(p)).collect()
}

/// Fetches the packages (cached) and puts the server, its key tool and
/// their libraries into the root tree `tree`.
pub fn install(tree: &Path, versions: &[PackageVersion], cache: &Path) -> Result<(), ImageError> {
    let unpacked: Vec<PathBuf> = versions
        .iter()
        .map(|v| packages::fetch(v, cache))
        .collect::<Result<_, _>>()?;
    for pkg in &unpacked {
        for program in PROGRAMS {
            let from = pkg.join(program);
            if from.is_file() {
                copy(&from, &tree.join(program))?;
            }
        }
        for dir in LIBRARY_DIRS {
            let Ok(entries) = std::fs::read_dir(pkg.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let text = name.to_string_lossy();
                if !text.contains(".so") {
                    continue;
                }
                let to = tree.join(dir).join(&name);
                let meta = std::fs::symlink_metadata(e.path())
                    .map_err(|err| ImageError::io("read", &e.path(), err))?;
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(e.path())
                        .map_err(|err| ImageError::io("read", &e.path(), err))?;
                    if let Some(parent) = to.parent() {
                        make_dir(parent)?;
                    }
                    let _ = std::fs::remove_file(&to);
                    std::os::unix::fs::symlink(&target, &to)
                        .map_err(|err| ImageError::io("link", &to, err))?;
                } else if meta.is_file() {
                    copy(&e.path(), &to)?;
                }
            }
        }
    }
    for program in PROGRAMS {
        if !tree.join(program).is_file() {
            return Err(ImageError::Recipe(format!(
                "the SSH server's package did not hold {program}"
            )));
        }
    }
    Ok(())
}

/// Makes `dir` and its missing parents with the guest's mode (0755),
/// whatever the builder's umask.
fn make_dir(dir: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
    for d in missing.into_iter().rev() {
        std::fs::create_dir(d).map_err(|e| ImageError::io("create", d, e))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| ImageError::io("chmod", d, e))?;
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = to.parent() {
        make_dir(parent)?;
    }
    std::fs::copy(from, to).map_err(|e| ImageError::io("copy", from, e))?;
    // The guest's modes, whatever the (private) package cache has.
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| ImageError::io("chmod", to, e))
}
