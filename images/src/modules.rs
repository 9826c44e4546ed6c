//! Kernel modules of the guest: find them in the unpacked kernel package
//! and order them so each loads after what it depends on (read from the
//! `depends=` field of each module's `.modinfo`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Finds every `*.ko` under `modules_dir`, by module name.
pub fn index(modules_dir: &Path) -> std::io::Result<BTreeMap<String, PathBuf>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![modules_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                found.insert(name.replace('-', "_"), path);
            }
        }
    }
    Ok(found)
}

/// The modules a module file says it depends on.
pub fn depends(module_file: &Path) -> std::io::Result<Vec<String>> {
    let bytes = std::fs::read(module_file)?;
    let needle = b"depends=";
    for (i, w) in bytes.windows(needle.len()).enumerate() {
        if w == needle && (i == 0 || bytes[i - 1] == 0) {
            let rest = &bytes[i + needle.len()..];
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let list = String::from_utf8_lossy(&rest[..end]).into_owned();
            return Ok(list
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect());
        }
    }
    Ok(Vec::new())
}

/// `wanted` plus everything they need, dependencies first.
pub fn load_order(
    index: &BTreeMap<String, PathBuf>,
    wanted: &[String],
) -> Result<Vec<String>, String> {
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        done: &mut BTreeSet<String>,
        active: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), String> {
        if done.contains(name) {
            return Ok(());
        }
        if !active.insert(name.to_string()) {
            return Err(format!("module dependency cycle through {name}"));
        }
        let file = index
            .get(name)
            .ok_or_else(|| format!("kernel module `{name}` is not in this kernel package"))?;
        for dep in depends(file).map_err(|e| format!("cannot read {}: {e}", file.display()))? {
            visit(&dep, index, done, active, order)?;
        }
        active.remove(name);
        done.insert(name.to_string());
        order.push(name.to_string());
        Ok(())
    }
    let mut order = Vec::new();
    let (mut done, mut active) = (BTreeSet::new(), BTreeSet::new());
    for w in wanted {
        visit(w, index, &mut done, &mut active, &mut order)?;
    }
    Ok(order)
}

/// The modules of `load_order` as they go into the root volume: (path
/// under /lib/modules/RELEASE, file in the package), and their
/// `modules.dep` (modprobe's format: `path: dependency paths`).
pub fn for_volume(
    index: &BTreeMap<String, PathBuf>,
    modules_dir: &Path,
    load_order: &[String],
) -> Result<(Vec<(PathBuf, PathBuf)>, String), String> {
    let rel = |name: &str| -> Result<PathBuf, String> {
        let file = index
            .get(name)
            .ok_or_else(|| format!("kernel module `{name}` is not in this kernel package"))?;
        Ok(file
            .strip_prefix(modules_dir)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| PathBuf::from(file.file_name().unwrap_or_default())))
    };
    let mut files = Vec::new();
    let mut dep = String::new();
    for name in load_order {
        let path = rel(name)?;
        // As depmod writes it: every module it needs, directly or not,
        // those loaded last first (modprobe loads the list from its end).
        let mut needs = self::load_order(index, std::slice::from_ref(name))?;
        needs.pop();
        needs.reverse();
        let deps: Result<Vec<String>, String> = needs
            .iter()
            .map(|d| rel(d).map(|p| p.display().to_string()))
            .collect();
        dep.push_str(&format!("{}: {}\n", path.display(), deps?.join(" ")));
        files.push((path, index[name].clone()));
    }
    Ok((files, dep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_load_first() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, deps: &str| {
            let p = dir.path().join(format!("{name}.ko"));
            std::fs::write(
                &p,
                format!("\x7fELF junk\0license=GPL\0depends={deps}\0vermagic=6.1\0"),
            )
            .unwrap();
        };
        write("virtio_ring", "");
        write("virtio", "virtio_ring");
        write("virtio_blk", "virtio,virtio_ring");
        let idx = index(dir.path()).unwrap();
        let order = load_order(&idx, &["virtio_blk".to_string()]).unwrap();
        assert_eq!(order, ["virtio_ring", "virtio", "virtio_blk"]);
        let err = load_order(&idx, &["nvme".to_string()]).unwrap_err();
        assert!(err.contains("`nvme` is not in this kernel package"));
    }
}
