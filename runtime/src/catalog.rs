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
}

/// The runbooks drydock knows about.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    bundled: Vec<(String, String)>,
    dirs: Vec<PathBuf>,
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
        Self { bundled, dirs }
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
            let runbook = load_file(&path).map_err(|e| match e {
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
            return load_file(as_path);
        }
        for entry in self.entries() {
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
        load_file(Path::new(origin))
    }
}

fn load_file(path: &Path) -> Result<Runbook, CatalogError> {
    // Read by the name the user gave (errors name it, not what a link
    // points to), recorded by its canonical path.
    let source = read_bounded(path).map_err(|source| CatalogError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let path = fs::canonicalize(path).map_err(|source| CatalogError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Runbook::parse(source, RunbookOrigin::File(path))?)
}

/// Reads a runbook file through the shared reader: a regular file only
/// (a FIFO named *.rhai must not hang the catalog), refused by size when
/// larger than a runbook may be.
fn read_bounded(path: &Path) -> std::io::Result<String> {
    crate::input_file::read_to_string(path, crate::input_file::InputKind::Runbook)
        .map_err(crate::input_file::InputFileError::into_io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_runbooks_shadow_bundled_ones_and_unknown_names_list_known() {
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
        assert_eq!(cat.find("hello").unwrap().description, "user");
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
