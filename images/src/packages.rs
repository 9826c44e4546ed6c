//! Debian packages the guest image is made of, fetched with the system's
//! own package tools (`apt-cache`, `apt-get download`, `dpkg-deb -x`) and
//! kept unpacked in a cache keyed by package version.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::ImageError;

/// A package at an exact version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackageVersion {
    pub name: String,
    pub version: String,
}

fn run(cmd: &mut Command, what: &str) -> Result<String, ImageError> {
    let out = cmd.output().map_err(|e| ImageError::Tool {
        what: what.to_string(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(ImageError::Tool {
            what: what.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The version apt would install, if it knows the package.
pub fn candidate(name: &str) -> Result<Option<String>, ImageError> {
    let out = run(
        Command::new("apt-cache").args(["policy", name]),
        "apt-cache policy",
    )?;
    Ok(out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_string())
        .filter(|v| v != "(none)"))
}

/// Makes sure apt's package lists are present (a fresh machine has none).
pub fn ensure_package_lists(probe: &str) -> Result<(), ImageError> {
    if candidate(probe)?.is_some() {
        return Ok(());
    }
    run(Command::new("apt-get").arg("update"), "apt-get update").map_err(|e| match e {
        ImageError::Tool { detail, .. } => ImageError::Tool {
            what: "apt-get update".into(),
            detail: format!("{detail} (apt's package lists are empty; run `sudo apt-get update` once and retry)"),
        },
        other => other,
    })?;
    Ok(())
}

/// The concrete kernel package behind a meta package such as
/// `linux-image-cloud-amd64`.
pub fn resolve_meta(meta: &str) -> Result<String, ImageError> {
    let out = run(
        Command::new("apt-cache").args(["depends", meta]),
        "apt-cache depends",
    )?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|d| d.trim().to_string())
        .find(|d| d.starts_with("linux-image-"))
        .ok_or_else(|| ImageError::Tool {
            what: "apt-cache depends".into(),
            detail: format!("{meta} does not depend on a linux-image package"),
        })
}

/// Resolves a package name to the version apt would fetch.
pub fn resolve(name: &str) -> Result<PackageVersion, ImageError> {
    let version = candidate(name)?.ok_or_else(|| ImageError::Tool {
        what: "apt-cache policy".into(),
        detail: format!("no installable version of {name}; check the apt sources"),
    })?;
    Ok(PackageVersion {
        name: name.to_string(),
        version,
    })
}

/// Downloads and unpacks a package once; returns its unpacked tree.
pub fn fetch(pkg: &PackageVersion, cache: &Path) -> Result<PathBuf, ImageError> {
    let safe_version = pkg.version.replace([':', '/'], "_");
    let dest = cache.join(format!("{}_{safe_version}", pkg.name));
    if dest.join(".complete").exists() {
        return Ok(dest);
    }
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(cache)
        .map_err(|e| ImageError::io("create a download directory", cache, e))?;
    run(
        Command::new("apt-get")
            .current_dir(work.path())
            .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
            .arg(format!("{}={}", pkg.name, pkg.version)),
        &format!("apt-get download {}", pkg.name),
    )?;
    let deb = std::fs::read_dir(work.path())
        .map_err(|e| ImageError::io("list", work.path(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| ImageError::Tool {
            what: format!("apt-get download {}", pkg.name),
            detail: "no .deb file was downloaded".into(),
        })?;
    let tree = work.path().join("tree");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree),
        "dpkg-deb -x",
    )?;
    // dpkg-deb keeps the package's modes (0644, 0755): narrow them to the
    // data directory's (the tree is read by drydock only).
    drydock_runtime::private::tighten_tree(&tree);
    std::fs::write(
        tree.join(".complete"),
        format!("{} {}\n", pkg.name, pkg.version),
    )
    .map_err(|e| ImageError::io("write", &tree, e))?;
    if let Err(e) = std::fs::rename(&tree, &dest) {
        // Another build may have unpacked the same package meanwhile.
        if !dest.join(".complete").exists() {
            return Err(ImageError::io("move into the cache", &dest, e));
        }
    }
    Ok(dest)
}
