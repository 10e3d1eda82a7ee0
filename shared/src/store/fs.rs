//! A directory as an object store: the embedded default.
//!
//! Writes go to a hidden temporary file beside the target, are fsynced, and are renamed into
//! place only on commit (then the directory is fsynced), so a crash or a failed backup never
//! leaves a partial object under a real key.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::fs::File;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{
    validate_key, ObjectMeta, ObjectReader, ObjectStore, ObjectUpload, PartialUpload, PresignedGet,
    StoreError,
};

/// Objects as files under a root directory; keys map to relative paths.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// A store rooted at `root`; the directory is created on first write.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsStore { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn io(&self, op: &'static str, key: &str) -> impl FnOnce(io::Error) -> StoreError {
        let store = self.location();
        let key = key.to_owned();
        move |source| {
            if source.kind() == io::ErrorKind::NotFound && op != "create directory for" {
                StoreError::NotFound { store, key }
            } else {
                StoreError::Io {
                    op,
                    store,
                    key,
                    source,
                }
            }
        }
    }

    async fn temp_file(&self, key: &str) -> Result<(PathBuf, PathBuf, File), StoreError> {
        let target = self.path(key)?;
        let dir = target
            .parent()
            .expect("validated keys have a parent")
            .to_owned();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(self.io("create directory for", key))?;
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).map_err(|e| StoreError::Io {
            op: "name a temporary file for",
            store: self.location(),
            key: key.to_owned(),
            source: io::Error::other(e.to_string()),
        })?;
        let name = target
            .file_name()
            .expect("keys end in a name")
            .to_string_lossy();
        let temp = dir.join(format!(".{name}.tmp-{}", hex::encode(suffix)));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await
            .map_err(self.io("create temporary file for", key))?;
        Ok((target, temp, file))
    }
}

/// Makes a rename durable: the directory entry itself must reach the disk.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

/// Renames `temp` to `target` unless `target` exists (a hard link fails on an existing name,
/// which makes the no-overwrite check atomic), then removes `temp`.
async fn publish(temp: &Path, target: &Path) -> io::Result<()> {
    tokio::fs::hard_link(temp, target).await?;
    tokio::fs::remove_file(temp).await?;
    sync_dir(target.parent().expect("targets have a parent")).await
}

#[async_trait]
impl ObjectStore for FsStore {
    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectUpload>, StoreError> {
        let (target, temp, file) = self.temp_file(key).await?;
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(StoreError::AlreadyExists {
                store: self.location(),
                key: key.to_owned(),
            });
        }
        Ok(Box::new(FsUpload {
            store: self.clone(),
            key: key.to_owned(),
            target,
            temp: Some(temp),
            file,
        }))
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let (target, temp, mut file) = self.temp_file(key).await?;
        let result = async {
            file.write_all(&bytes).await?;
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&temp, &target).await?;
            sync_dir(target.parent().expect("targets have a parent")).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result.map_err(self.io("write", key))
    }

    async fn open(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let path = self.path(key)?;
        let file = File::open(&path).await.map_err(self.io("open", key))?;
        Ok(Box::new(file))
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path(key)?;
        tokio::fs::read(&path).await.map_err(self.io("read", key))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: meta.len(),
                modified: meta.modified().ok().map(DateTime::<Utc>::from),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("inspect", key)(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("delete", key)(e)),
        }
        sync_dir(path.parent().expect("keys have a parent"))
            .await
            .map_err(self.io("delete", key))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let store = self.location();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &prefix, &mut out).map_err(|source| StoreError::Io {
                op: "list",
                store,
                key: prefix.clone(),
                source,
            })?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Io {
            op: "list",
            store: self.location(),
            key: String::new(),
            source: io::Error::other(e),
        })?
    }

    /// Removes the hidden temporary files (`.NAME.tmp-…`) of unfinished writes whose key
    /// starts with `prefix`, last written before `older_than`: what a killed run leaves.
    /// Symbolic links are never followed.
    async fn abort_incomplete_uploads(
        &self,
        prefix: &str,
        older_than: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let root = self.root.clone();
        let prefix_owned = prefix.to_owned();
        let found = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk_partials(&root, &root, &prefix_owned, &mut out).map(|()| out)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r)
        .map_err(self.io("list unfinished writes under", prefix))?;
        let mut removed = 0;
        for partial in found {
            if partial.started.is_some_and(|m| m >= older_than) {
                continue;
            }
            match tokio::fs::remove_file(self.root.join(&partial.handle)).await {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io("remove unfinished write", prefix)(e)),
            }
        }
        Ok(removed)
    }

    /// The hidden temporary files (`.NAME.tmp-HEX`) of unfinished writes, by the key they
    /// would publish; symbolic links are never followed.
    async fn partial_uploads(&self, prefix: &str) -> Result<Vec<PartialUpload>, StoreError> {
        let root = self.root.clone();
        let prefix_owned = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk_partials(&root, &root, &prefix_owned, &mut out).map(|()| out)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r)
        .map_err(self.io("list unfinished writes under", prefix))
    }

    /// Removes the temporary file, only if it still is a regular file named like ours (a
    /// symlink put in its place is left alone).
    async fn discard_partial_upload(&self, upload: &PartialUpload) -> Result<(), StoreError> {
        let relative = Path::new(&upload.handle);
        let ours = relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
            && relative
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(partial_target)
                .is_some();
        if !ours {
            return Err(StoreError::InvalidKey {
                key: upload.handle.clone(),
                why: "not the temporary file of an unfinished write",
            });
        }
        let path = self.root.join(relative);
        match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) if meta.file_type().is_file() => {}
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("inspect unfinished write", &upload.key)(e)),
        }
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("remove unfinished write", &upload.key)(e)),
        }
    }

    async fn presign_get(
        &self,
        key: &str,
        _ttl: std::time::Duration,
        _signed_at: DateTime<Utc>,
    ) -> Result<PresignedGet, StoreError> {
        validate_key(key)?;
        Err(StoreError::Unsupported {
            store: self.location(),
            message: "download URLs are not supported on a filesystem repository; use `pgkeep cat ID` (or copy the object file and decrypt it with docs/pgkeep_decrypt.py)".into(),
        })
    }
}

/// Collects regular files under `dir` whose key starts with `prefix`, skipping hidden
/// (temporary) files and directories that cannot contain a match.
fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectMeta>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let key = path
            .strip_prefix(root)
            .expect("walked paths are under the root")
            .to_string_lossy()
            .into_owned();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let as_dir = format!("{key}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(root, &path, prefix, out)?;
            }
        } else if meta.is_file() && key.starts_with(prefix) {
            out.push(ObjectMeta {
                key,
                size: meta.len(),
                modified: meta.modified().ok().map(DateTime::<Utc>::from),
            });
        }
    }
    Ok(())
}

/// The key a hidden temporary file (`.NAME.tmp-HEX`) in `dir` was writing, if it is one.
fn partial_target(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('.')?;
    let (target, suffix) = rest.rsplit_once(".tmp-")?;
    (!target.is_empty() && !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(target)
}

/// Collects the temporary files of unfinished writes under `dir` whose target key starts with
/// `prefix`, with their sizes and modification times; symlinks (files or directories) are
/// skipped.
fn walk_partials(
    root: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<PartialUpload>,
) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // Does not follow symlinks: a link is neither a directory nor a file here.
        let kind = entry.file_type()?;
        let path = entry.path();
        let relative = path
            .strip_prefix(root)
            .expect("walked paths are under the root")
            .to_string_lossy()
            .into_owned();
        if kind.is_dir() && !name.starts_with('.') {
            let as_dir = format!("{relative}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk_partials(root, &path, prefix, out)?;
            }
        } else if kind.is_file() {
            let Some(target) = partial_target(name) else {
                continue;
            };
            let key = match relative.rsplit_once('/') {
                Some((parent, _)) => format!("{parent}/{target}"),
                None => target.to_owned(),
            };
            if key.starts_with(prefix) {
                let meta = entry.metadata()?;
                out.push(PartialUpload {
                    key,
                    handle: relative,
                    size: Some(meta.len()),
                    started: meta.modified().ok().map(DateTime::<Utc>::from),
                });
            }
        }
    }
    Ok(())
}

/// An object being written to a temporary file.
struct FsUpload {
    store: FsStore,
    key: String,
    target: PathBuf,
    /// `None` once published or removed, so Drop knows there is nothing to clean.
    temp: Option<PathBuf>,
    file: File,
}

impl AsyncWrite for FsUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }
}

#[async_trait]
impl ObjectUpload for FsUpload {
    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let temp = self.temp.clone().expect("an upload commits once");
        let result = async {
            self.file.flush().await?;
            self.file.sync_all().await?;
            publish(&temp, &self.target).await
        }
        .await;
        match result {
            Ok(()) => {
                self.temp = None;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StoreError::AlreadyExists {
                store: self.store.location(),
                key: self.key.clone(),
            }),
            Err(e) => Err(self.store.io("commit", &self.key)(e)),
        }
        // On error, Drop removes the temporary file.
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        if let Some(temp) = self.temp.take() {
            match tokio::fs::remove_file(&temp).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.store.io("abort", &self.key)(e)),
            }
        }
        Ok(())
    }
}

impl Drop for FsUpload {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn store() -> (tempfile::TempDir, FsStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path().join("repo"));
        (dir, store)
    }

    fn files_under(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        fn rec(root: &Path, dir: &Path, out: &mut Vec<String>) {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        rec(root, &p, out);
                    } else {
                        out.push(p.strip_prefix(root).unwrap().display().to_string());
                    }
                }
            }
        }
        rec(root, root, &mut out);
        out.sort();
        out
    }

    #[tokio::test]
    async fn fs_store_meets_the_contract() {
        let (_dir, store) = store();
        crate::store::contract::run(&store, 3 << 20).await;
        // Nothing hidden stays behind either (temporary files of aborted uploads).
        assert!(files_under(store.root())
            .iter()
            .all(|f| !f.contains(".tmp-")));
    }

    #[tokio::test]
    async fn committed_upload_is_readable_and_listed() {
        let (_dir, store) = store();
        let mut up = store.create("db/2026/11/a.pgkeep").await.unwrap();
        up.write_all(b"hello ").await.unwrap();
        up.write_all(b"world").await.unwrap();
        up.shutdown().await.unwrap();
        assert!(store.head("db/2026/11/a.pgkeep").await.unwrap().is_none());
        up.commit().await.unwrap();
        let mut r = store.open("db/2026/11/a.pgkeep").await.unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
        let listed = store.list("db/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size, 11);
        assert!(store.list("other/").await.unwrap().is_empty());
        assert_eq!(files_under(store.root()), vec!["db/2026/11/a.pgkeep"]);
    }

    #[tokio::test]
    async fn aborted_or_dropped_upload_leaves_nothing() {
        let (_dir, store) = store();
        let mut up = store.create("db/x.pgkeep").await.unwrap();
        up.write_all(b"partial").await.unwrap();
        up.abort().await.unwrap();
        let mut up = store.create("db/y.pgkeep").await.unwrap();
        up.write_all(b"partial").await.unwrap();
        drop(up);
        assert!(files_under(store.root()).is_empty());
    }

    #[tokio::test]
    async fn objects_are_never_overwritten() {
        let (_dir, store) = store();
        let mut up = store.create("db/x.pgkeep").await.unwrap();
        up.write_all(b"one").await.unwrap();
        let mut second = store.create("db/x.pgkeep").await.unwrap();
        up.commit().await.unwrap();
        second.write_all(b"two").await.unwrap();
        assert!(matches!(
            second.commit().await,
            Err(StoreError::AlreadyExists { .. })
        ));
        assert!(matches!(
            store.create("db/x.pgkeep").await,
            Err(StoreError::AlreadyExists { .. })
        ));
        assert_eq!(store.get("db/x.pgkeep").await.unwrap(), b"one");
        assert_eq!(files_under(store.root()), vec!["db/x.pgkeep"]);
    }

    #[tokio::test]
    async fn put_get_delete_and_missing_objects() {
        let (_dir, store) = store();
        store.put("db/m.json", b"{}".to_vec()).await.unwrap();
        store.put("db/m.json", b"{\"a\":1}".to_vec()).await.unwrap();
        assert_eq!(store.get("db/m.json").await.unwrap(), b"{\"a\":1}");
        store.delete("db/m.json").await.unwrap();
        store.delete("db/m.json").await.unwrap();
        assert!(matches!(
            store.get("db/m.json").await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.open("db/m.json").await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.get("../escape").await,
            Err(StoreError::InvalidKey { .. })
        ));
    }
}
