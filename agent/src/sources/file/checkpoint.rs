//! File checkpoints: how far each file (by identity) has been acknowledged.
//! Written atomically: temp file, fsync, rename, fsync of the directory.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where one file stands: every line before `offset` is in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckpoint {
    pub path: PathBuf,
    pub offset: u64,
    /// Events acknowledged so far (the last acknowledged event's seq).
    pub seq: u64,
    /// Random id of this incarnation of the file (a new one after
    /// truncation or inode reuse): part of every event's de-duplication id,
    /// so ids never repeat across incarnations.
    pub nonce: String,
    /// CRC-32 of the first `fp_len` bytes: tells a reused inode apart.
    #[serde(default)]
    pub fp_len: u64,
    #[serde(default)]
    pub fp: u32,
    /// The last acknowledged event that was published (`seq` may be
    /// higher: events dropped under the rate limit consume seqs too); `None`
    /// in checkpoints written before this was kept, meaning `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_seq: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    files: BTreeMap<String, FileCheckpoint>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "checkpoint file {path} is corrupt ({message}); move it aside to start over (lines may then be sent again)"
    )]
    Corrupt { path: PathBuf, message: String },
}

/// The checkpoints of one file source.
pub struct Checkpoints {
    path: PathBuf,
    files: BTreeMap<String, FileCheckpoint>,
    /// True when no checkpoint file existed at start (a first run).
    pub fresh: bool,
    dirty: bool,
}

impl Checkpoints {
    pub fn load(path: PathBuf) -> Result<Self, CheckpointError> {
        let io = |source| CheckpointError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        match std::fs::read(&path) {
            Ok(bytes) => {
                let disk: OnDisk = serde_json::from_slice(&bytes)
                    .map_err(|e| CheckpointError::Corrupt { path: path.clone(), message: e.to_string() })?;
                Ok(Checkpoints { path, files: disk.files, fresh: false, dirty: false })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Checkpoints { path, files: BTreeMap::new(), fresh: true, dirty: false })
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Every checkpoint, by file identity.
    pub fn entries(&self) -> Vec<(String, FileCheckpoint)> {
        self.files.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn get(&self, key: &str) -> Option<&FileCheckpoint> {
        self.files.get(key)
    }

    pub fn set(&mut self, key: &str, cp: FileCheckpoint) {
        if self.files.get(key) != Some(&cp) {
            self.files.insert(key.to_string(), cp);
            self.dirty = true;
        }
    }

    pub fn remove(&mut self, key: &str) {
        if self.files.remove(key).is_some() {
            self.dirty = true;
        }
    }

    /// Write the file if anything changed since the last save.
    pub fn save(&mut self) -> Result<(), CheckpointError> {
        if !self.dirty {
            return Ok(());
        }
        let io = |source| CheckpointError::Io { path: self.path.clone(), source };
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&OnDisk { files: self.files.clone() }).unwrap_or_default();
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.dirty = false;
        Ok(())
    }
}

/// Where a file source keeps its checkpoints.
pub fn path_for(data_dir: &Path, source: &str) -> PathBuf {
    data_dir.join("checkpoints").join(format!("{source}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "file-0");
        let mut c = Checkpoints::load(path.clone()).unwrap();
        assert!(c.fresh);
        c.set(
            "1:2",
            FileCheckpoint {
                path: "/a".into(),
                offset: 10,
                seq: 2,
                nonce: "n".into(),
                fp_len: 3,
                fp: 7,
                published_seq: None,
            },
        );
        c.save().unwrap();
        let c = Checkpoints::load(path.clone()).unwrap();
        assert!(!c.fresh);
        assert_eq!(c.get("1:2").unwrap().offset, 10);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(Checkpoints::load(path), Err(CheckpointError::Corrupt { .. })));
    }
}
