//! The compiled-artifact cache: native code for each component, on disk,
//! keyed by the engine's compatibility hash and the component's SHA-256.
//!
//! A restart, or a redeploy of an unchanged component, reads the compiled
//! code back instead of compiling again. In memory, one compiled component
//! is shared by every function that deploys the same bytes.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use wasmtime::Engine;
use wasmtime::component::Component;

pub(crate) struct ArtifactCache {
    dir: PathBuf,
    loaded: Mutex<HashMap<String, Component>>,
}

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Already in memory for another function.
    Memory,
    /// Read back from the on-disk cache.
    Disk,
    /// Compiled now.
    Compiled,
}

impl ArtifactCache {
    pub(crate) fn open(engine: &Engine, root: &Path) -> std::io::Result<ArtifactCache> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = root.join(format!("{:016x}", hasher.finish()));
        std::fs::create_dir_all(&dir)?;
        Ok(ArtifactCache {
            dir,
            loaded: Mutex::new(HashMap::new()),
        })
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, HashMap<String, Component>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The compiled component for `bytes`, whose SHA-256 is `digest`.
    pub(crate) fn component(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, Source)> {
        if let Some(c) = self.loaded().get(digest) {
            return Ok((c.clone(), Source::Memory));
        }
        let path = self.dir.join(format!("{digest}.cwasm"));
        let (component, source) = match self.read(engine, &path) {
            Some(c) => (c, Source::Disk),
            None => {
                let component = Component::new(engine, bytes)?;
                if let Err(e) = self.write(&path, &component) {
                    tracing::warn!("could not write compiled artifact {}: {e}", path.display());
                }
                (component, Source::Compiled)
            }
        };
        self.loaded().insert(digest.to_string(), component.clone());
        Ok((component, source))
    }

    fn read(&self, engine: &Engine, path: &Path) -> Option<Component> {
        if !path.is_file() {
            return None;
        }
        // SAFETY: `deserialize_file` trusts the file to be native code that
        // this engine produced. Files in this directory are only written by
        // `write` below, from `Component::serialize` of this engine
        // configuration (the directory name is the engine's compatibility
        // hash), and are renamed into place only once complete. wasmtime
        // also checks the header's version and configuration and rejects a
        // mismatch, which we treat as a cache miss. The data directory must
        // be writable only by the user running weft.
        match unsafe { Component::deserialize_file(engine, path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("ignoring unusable compiled artifact {}: {e}", path.display());
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    fn write(&self, path: &Path, component: &Component) -> std::io::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Forgets in-memory components no function uses any more.
    pub(crate) fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        self.loaded().retain(|digest, _| keep(digest));
    }
}
