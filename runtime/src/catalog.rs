//! Where runbooks come from: those bundled in the binary and the user's
//! runbook directories (which take precedence over bundled ones by name).

use std::fs;
use std::path::{Path, PathBuf};

use crate::runbook::{Runbook, RunbookError, RunbookOrigin};

/// Errors finding or loading a runbook.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no runbook named `{name}`; known runbooks: {known}. List them with `drydock runbooks`, or give a path to a .rhai file")]
    NotFound { name: String, known: String },
    #[error("cannot read runbook {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] RunbookError),
    /// A file another account could have written, or a name two runbooks claim.
    #[error("{0}")]
    Untrusted(String),
}

/// The runbooks drydock knows about.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    bundled: Vec<(String, String)>,
    dirs: Vec<PathBuf>,
    /// Whose runbook files may run.
    trust: crate::provenance::Trust,
    /// Names of bundled runbooks a user runbook may replace (the config's
    /// `override_bundled`); any other same-named pair is refused.
    overrides: Vec<String>,
}

/// A runbook as listed, valid or not.
#[derive(Debug)]
pub struct CatalogEntry {
    pub origin: RunbookOrigin,
    pub runbook: Result<Runbook, RunbookError>,
    /// A user runbook of the same name hides this one.
    pub shadowed: bool,
}

impl Catalog {
    /// A catalog of bundled runbooks (file name, source) and user directories.
    pub fn new(bundled: Vec<(String, String)>, dirs: Vec<PathBuf>) -> Self {
        Self {
            bundled,
            dirs,
            trust: crate::provenance::Trust::default(),
            overrides: Vec::new(),
        }
    }

    /// Whose files may run (the caller and root by default).
    pub fn with_trust(mut self, trust: crate::provenance::Trust) -> Self {
        self.trust = trust;
        self
    }

    /// Bundled runbooks that a user runbook of the same name replaces.
    pub fn with_overrides(mut self, names: Vec<String>) -> Self {
        self.overrides = names;
        self
    }

    /// The runbook directory a file is in (its top for the ownership
    /// check), else the directory holding it.
    fn top_of(&self, canonical: &Path) -> PathBuf {
        for d in &self.dirs {
            if let Ok(c) = fs::canonicalize(d) {
                if canonical.starts_with(&c) {
                    return c;
                }
            }
        }
        canonical
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"))
    }

    fn load_file(&self, path: &Path) -> Result<Runbook, CatalogError> {
        load_file(path, |canonical| self.top_of(canonical), &self.trust)
    }

    /// The user directories searched, in order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    fn user_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for dir in &self.dirs {
            let Ok(read) = fs::read_dir(dir) else {
                continue;
            };
            let mut found: Vec<PathBuf> = read
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
                .collect();
            found.sort();
            files.extend(found);
        }
        files
    }

    /// Every runbook, user ones first, each parsed.
    pub fn entries(&self) -> Vec<CatalogEntry> {
        let mut entries: Vec<CatalogEntry> = Vec::new();
        for path in self.user_files() {
            let runbook = self.load_file(&path).map_err(|e| match e {
                CatalogError::Invalid(e) => e,
                other => RunbookError {
                    origin: path.display().to_string(),
                    line: None,
                    column: None,
                    message: other.to_string(),
                },
            });
            entries.push(CatalogEntry {
                origin: RunbookOrigin::File(path),
                runbook,
                shadowed: false,
            });
        }
        for (file, source) in &self.bundled {
            let origin = RunbookOrigin::Bundled(file.clone());
            let runbook = Runbook::parse(source.clone(), origin.clone());
            let shadowed = match &runbook {
                Ok(rb) => entries
                    .iter()
                    .any(|e| e.runbook.as_ref().is_ok_and(|u| u.name == rb.name)),
                Err(_) => false,
            };
            entries.push(CatalogEntry {
                origin,
                runbook,
                shadowed,
            });
        }
        entries
    }

    /// Finds a runbook by name (metadata name or file stem) or by path.
    pub fn find(&self, name_or_path: &str) -> Result<Runbook, CatalogError> {
        let as_path = Path::new(name_or_path);
        if name_or_path.ends_with(".rhai") || name_or_path.contains('/') {
            return self.load_file(as_path);
        }
        let entries = self.entries();
        // A user runbook never silently takes a bundled one's place.
        for bundled in entries.iter().filter(|e| e.shadowed) {
            let Ok(b) = &bundled.runbook else { continue };
            let stem = match &bundled.origin {
                RunbookOrigin::Bundled(f) => f.strip_suffix(".rhai").unwrap_or(f).to_string(),
                RunbookOrigin::File(_) => continue,
            };
            if (b.name == name_or_path || stem == name_or_path)
                && !self.overrides.iter().any(|o| o == &b.name)
            {
                let user = entries
                    .iter()
                    .find(|e| {
                        matches!(e.origin, RunbookOrigin::File(_))
                            && e.runbook.as_ref().is_ok_and(|u| u.name == b.name)
                    })
                    .map(|e| e.origin.to_string())
                    .unwrap_or_default();
                return Err(CatalogError::Untrusted(format!(
                    "two runbooks are named `{}`: {user} and the bundled {}; drydock does not let one silently replace the other.                      Rename yours (its `name` and file), run it by path, or pin it in the config: override_bundled = [\"{}\"]",
                    b.name, bundled.origin, b.name
                )));
            }
        }
        for entry in entries {
            let stem_matches = match &entry.origin {
                RunbookOrigin::File(p) => p.file_stem().is_some_and(|s| s == name_or_path),
                RunbookOrigin::Bundled(f) => f.strip_suffix(".rhai") == Some(name_or_path),
            };
            let name_matches = entry.runbook.as_ref().is_ok_and(|r| r.name == name_or_path);
            if stem_matches || name_matches {
                return entry.runbook.map_err(CatalogError::Invalid);
            }
        }
        let mut known: Vec<String> = self
            .entries()
            .into_iter()
            .filter_map(|e| e.runbook.ok().map(|r| r.name))
            .collect();
        known.dedup();
        Err(CatalogError::NotFound {
            name: name_or_path.to_string(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        })
    }

    /// Loads a runbook from the origin recorded with an execution.
    pub fn load(&self, origin: &str) -> Result<Runbook, CatalogError> {
        if let Some(file) = origin.strip_prefix("<bundled>/") {
            let (_, source) = self
                .bundled
                .iter()
                .find(|(f, _)| f == file)
                .ok_or_else(|| CatalogError::NotFound {
                    name: origin.to_string(),
                    known: "this drydock binary no longer bundles it".into(),
                })?;
            return Ok(Runbook::parse(
                source.clone(),
                RunbookOrigin::Bundled(file.to_string()),
            )?);
        }
        self.load_file(Path::new(origin))
    }
}

/// Loads a runbook file through the shared reader (a regular file only: a
/// FIFO named *.rhai must not hang the catalog; refused by size when
/// larger than a runbook may be), after checking who could have written it
/// and the directories above it up to `top` ([`crate::provenance`]).
fn load_file(
    path: &Path,
    top: impl Fn(&Path) -> PathBuf,
    trust: &crate::provenance::Trust,
) -> Result<Runbook, CatalogError> {
    use crate::input_file::{open, InputFileError, InputKind};
    use std::io::Read;
    let read_err = |source: std::io::Error| CatalogError::Read {
        path: path.to_path_buf(),
        source,
    };
    // Read by the name the user gave (errors name it, not what a link
    // points to), recorded by its canonical path.
    let (file, _) =
        open(path, InputKind::Runbook).map_err(|e| read_err(InputFileError::into_io(e)))?;
    let limit = InputKind::Runbook.limit();
    let canonical = fs::canonicalize(path).map_err(read_err)?;
    let (uid, mode) = crate::provenance::check(&file, path, &canonical, &top(&canonical), trust)
        .map_err(CatalogError::Untrusted)?;
    let mut bytes = Vec::new();
    (&file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > limit {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than a runbook may be ({limit} bytes)"),
        )));
    }
    let source = String::from_utf8(bytes).map_err(|_| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })?;
    let sha256 = crate::runbook::source_digest(&source);
    let mut runbook = Runbook::parse(source, RunbookOrigin::File(canonical.clone()))?;
    runbook.provenance = Some(crate::provenance::Provenance {
        path: canonical,
        owner_uid: uid,
        owner: crate::identity::user_name(uid).unwrap_or_else(|| format!("uid {uid}")),
        mode: mode & 0o7777,
        sha256,
    });
    Ok(runbook)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_runbook_never_silently_shadows_a_bundled_one_and_unknown_names_list_known() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("mine.rhai"),
            "runbook(#{ name: \"hello\", description: \"user\" });",
        )
        .unwrap();
        let cat = Catalog::new(
            vec![(
                "hello.rhai".into(),
                "runbook(#{ name: \"hello\", description: \"bundled\" });".into(),
            )],
            vec![dir.path().to_path_buf()],
        );
        // Two runbooks of one name: refused, naming both, unless pinned.
        let err = cat.find("hello").unwrap_err().to_string();
        assert!(
            err.contains("two runbooks are named `hello`")
                && err.contains("mine.rhai")
                && err.contains("<bundled>/hello.rhai")
                && err.contains("override_bundled"),
            "{err}"
        );
        let pinned = cat.clone().with_overrides(vec!["hello".into()]);
        assert_eq!(pinned.find("hello").unwrap().description, "user");
        let entries = cat.entries();
        assert!(entries.iter().any(|e| e.shadowed));
        let err = cat.find("nope").unwrap_err().to_string();
        assert!(
            err.contains("no runbook named `nope`") && err.contains("hello"),
            "{err}"
        );
        assert_eq!(
            cat.load("<bundled>/hello.rhai").unwrap().description,
            "bundled"
        );
    }
}
