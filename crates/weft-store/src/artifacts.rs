//! Component files, stored under the SHA-256 of their bytes.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// The SHA-256 of an artifact's bytes, as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        let hash = Sha256::digest(bytes);
        Digest(hash.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, enough to tell versions apart in output.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Digest(s))
        } else {
            Err(format!(
                "`{s}` is not a SHA-256 digest: expected 64 lowercase hex digits"
            ))
        }
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact {0} is not stored: upload it first with PUT /v1/artifacts/{0}")]
    Missing(Digest),
    #[error("the uploaded bytes hash to {actual}, not {expected}: the upload was corrupted or the digest is wrong")]
    Mismatch { expected: Digest, actual: Digest },
    #[error("cannot write artifact under {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The folder of component files.
#[derive(Debug, Clone)]
pub struct Artifacts {
    dir: PathBuf,
}

impl Artifacts {
    pub fn open(dir: &Path) -> Result<Artifacts, ArtifactError> {
        std::fs::create_dir_all(dir).map_err(|source| ArtifactError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Artifacts { dir: dir.to_path_buf() })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{digest}.wasm"))
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Stores `bytes`, checking them against `expected` when given. Writes
    /// to a temporary file, syncs it and renames it, so a crash never leaves
    /// a partial artifact under its digest.
    pub fn put(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Digest, ArtifactError> {
        let actual = Digest::of(bytes);
        if let Some(expected) = expected
            && *expected != actual
        {
            return Err(ArtifactError::Mismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let path = self.path(&actual);
        if path.is_file() {
            return Ok(actual);
        }
        let tmp = self.dir.join(format!(".{actual}.{}.tmp", std::process::id()));
        let io = |source| ArtifactError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(actual)
    }

    pub fn get(&self, digest: &Digest) -> Result<Vec<u8>, ArtifactError> {
        std::fs::read(self.path(digest)).map_err(|_| ArtifactError::Missing(digest.clone()))
    }
}
