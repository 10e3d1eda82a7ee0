//! Writing a file a user names (`pgkeep cat -o PATH`) so that the plaintext it holds reaches
//! nobody else and replaces nothing it should not.
//!
//! A regular file (or a new name) is written to a temporary file created exclusively
//! (`O_EXCL | O_NOFOLLOW`, an unpredictable name, mode 0600) in the target's directory and
//! renamed over the target only when complete: another local user can neither pre-create the
//! temporary file nor read it. A character device or FIFO (`/dev/stdout`, `/dev/null`, a pipe)
//! is written straight into, never renamed over. A symbolic link, a directory, a block device
//! or a socket is refused. An [`OutputFile`] dropped before [`OutputFile::commit`] (an error,
//! Ctrl-C) removes its temporary file.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;
use tokio::io::AsyncWriteExt;

use crate::ops::ErrorKind;

/// How many unpredictable temporary names to try before giving up (a collision means someone
/// is creating names in the directory on purpose).
const TEMP_ATTEMPTS: usize = 8;

/// Why an output file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The path is a symbolic link; following it could write anywhere its owner chose.
    #[error("refusing to write to {}: it is a symbolic link; name the file it points to instead", path.display())]
    Symlink {
        /// The path given.
        path: PathBuf,
    },
    /// The path is something a file cannot be written to or replace.
    #[error("refusing to write to {}: it is {what}; name a regular file, a character device or a FIFO", path.display())]
    Unsupported {
        /// The path given.
        path: PathBuf,
        /// What it is ("a directory", ...).
        what: &'static str,
    },
    /// Reading, creating, writing or renaming failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl OutputError {
    /// The class of this failure: a path that cannot be used is the caller's mistake.
    pub fn kind(&self) -> ErrorKind {
        match self {
            OutputError::Symlink { .. } | OutputError::Unsupported { .. } => ErrorKind::Config,
            OutputError::Io { .. } => ErrorKind::Storage,
        }
    }
}

/// An output file being written; see the module documentation.
pub struct OutputFile {
    file: tokio::fs::File,
    path: PathBuf,
    /// The temporary file renamed over `path` on commit; `None` when writing straight into a
    /// device or FIFO, or once committed.
    temp: Option<PathBuf>,
}

impl OutputFile {
    /// Opens `path` for writing: a temporary file beside it, or the device or FIFO itself.
    pub async fn create(path: &Path) -> Result<OutputFile, OutputError> {
        let io_err = |context| {
            move |source| OutputError::Io {
                context,
                path: path.to_owned(),
                source,
            }
        };
        match tokio::fs::symlink_metadata(path).await {
            Ok(meta) => match what(&meta) {
                Kind::Regular => {}
                Kind::Stream => {
                    let file = tokio::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(flags(OFlags::NOFOLLOW | OFlags::NOCTTY))
                        .open(path)
                        .await
                        .map_err(io_err("opening"))?;
                    // Whatever was opened must still be a device or FIFO: never write into a
                    // regular file that replaced it without the temporary file's protection.
                    let opened = file.metadata().await.map_err(io_err("inspecting"))?;
                    if what(&opened) != Kind::Stream {
                        return Err(OutputError::Unsupported {
                            path: path.to_owned(),
                            what: "no longer a device or FIFO (it changed while being opened)",
                        });
                    }
                    return Ok(OutputFile {
                        file,
                        path: path.to_owned(),
                        temp: None,
                    });
                }
                Kind::Refused(OutputRefusal::Symlink) => {
                    return Err(OutputError::Symlink {
                        path: path.to_owned(),
                    })
                }
                Kind::Refused(OutputRefusal::Other(what)) => {
                    return Err(OutputError::Unsupported {
                        path: path.to_owned(),
                        what,
                    })
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspecting")(e)),
        }
        let name = path.file_name().ok_or_else(|| OutputError::Unsupported {
            path: path.to_owned(),
            what: "not a file name",
        })?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        for _ in 0..TEMP_ATTEMPTS {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random).map_err(|e| OutputError::Io {
                context: "naming a temporary file beside",
                path: path.to_owned(),
                source: io::Error::other(e.to_string()),
            })?;
            let temp = dir.join(format!(
                ".{}.pgkeep-partial-{}",
                name.to_string_lossy(),
                hex::encode(random)
            ));
            match create_exclusive(&temp).await {
                Ok(file) => {
                    return Ok(OutputFile {
                        file,
                        path: path.to_owned(),
                        temp: Some(temp),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(OutputError::Io {
                        context: "creating a temporary file for",
                        path: path.to_owned(),
                        source,
                    })
                }
            }
        }
        Err(OutputError::Io {
            context: "creating a temporary file for",
            path: path.to_owned(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "every unpredictable name tried already existed; is someone else creating files in that directory?",
            ),
        })
    }

    /// Whether the output is a regular file (seekable), not a device or FIFO.
    pub fn is_regular_file(&self) -> bool {
        self.temp.is_some()
    }

    /// Where the output goes.
    pub fn writer(&mut self) -> &mut tokio::fs::File {
        &mut self.file
    }

    /// Finishes the output: a temporary file is synced and renamed over the target (unless
    /// the target has meanwhile become something other than a regular file).
    pub async fn commit(mut self) -> Result<(), OutputError> {
        let path = self.path.clone();
        let io_err = |context| {
            let path = path.clone();
            move |source| OutputError::Io {
                context,
                path,
                source,
            }
        };
        self.file.flush().await.map_err(io_err("writing"))?;
        let Some(temp) = self.temp.clone() else {
            return Ok(());
        };
        self.file.sync_all().await.map_err(io_err("syncing"))?;
        match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) => match what(&meta) {
                Kind::Regular => {}
                Kind::Refused(OutputRefusal::Symlink) => {
                    return Err(OutputError::Symlink { path });
                }
                _ => {
                    return Err(OutputError::Unsupported {
                        path,
                        what: "no longer a regular file (it changed during the write)",
                    })
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspecting")(e)),
        }
        tokio::fs::rename(&temp, &path)
            .await
            .map_err(io_err("moving the finished output into place at"))?;
        self.temp = None;
        let dir = temp.parent().map(Path::to_owned).unwrap_or_default();
        let _ = tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all()).await;
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some(temp) = &self.temp {
            match std::fs::remove_file(temp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(path = %temp.display(), error = %e, "could not remove the unfinished output; remove it by hand (it holds plaintext)")
                }
            }
        }
    }
}

/// Creates `path` only if nothing (not even a dangling symlink) is there, readable by the
/// owner alone.
async fn create_exclusive(path: &Path) -> io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(flags(OFlags::NOFOLLOW))
        .open(path)
        .await
}

/// Open flags as `OpenOptionsExt::custom_flags` takes them (std already adds `O_CLOEXEC`).
pub(crate) fn flags(f: OFlags) -> i32 {
    f.bits() as i32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Replaced through a temporary file and a rename.
    Regular,
    /// Written straight into.
    Stream,
    Refused(OutputRefusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputRefusal {
    Symlink,
    Other(&'static str),
}

fn what(meta: &Metadata) -> Kind {
    let t = meta.file_type();
    if t.is_file() {
        Kind::Regular
    } else if t.is_char_device() || t.is_fifo() {
        Kind::Stream
    } else if t.is_symlink() {
        Kind::Refused(OutputRefusal::Symlink)
    } else if t.is_dir() {
        Kind::Refused(OutputRefusal::Other("a directory"))
    } else if t.is_block_device() {
        Kind::Refused(OutputRefusal::Other("a block device"))
    } else if t.is_socket() {
        Kind::Refused(OutputRefusal::Other("a socket"))
    } else {
        Kind::Refused(OutputRefusal::Other("not a regular file"))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    async fn write(path: &Path, data: &[u8]) -> Result<(), OutputError> {
        let mut out = OutputFile::create(path).await?;
        out.writer().write_all(data).await.unwrap();
        out.commit().await
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_new_or_existing_regular_file_is_replaced_whole_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.dump");
        write(&path, b"one").await.unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&path, b"two").await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(entries(dir.path()), vec!["out.dump"]);
    }

    #[tokio::test]
    async fn a_symlink_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = write(&link, b"secret").await.unwrap_err();
        assert!(matches!(err, OutputError::Symlink { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(entries(dir.path()), vec!["link", "victim"]);
    }

    #[tokio::test]
    async fn a_device_is_written_into_not_replaced() {
        write(Path::new("/dev/null"), b"secret").await.unwrap();
        let meta = std::fs::symlink_metadata("/dev/null").unwrap();
        assert!(meta.file_type().is_char_device());
    }

    #[tokio::test]
    async fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = write(dir.path(), b"x").await.unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
    }

    #[tokio::test]
    async fn an_existing_temporary_name_is_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let planted = dir.path().join("planted");
        std::fs::write(&planted, b"theirs").unwrap();
        let err = create_exclusive(&planted).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        // Nor a dangling symlink planted where the file would be created.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        let err = create_exclusive(&link).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(std::fs::read(&planted).unwrap(), b"theirs");
    }

    #[tokio::test]
    async fn dropping_an_unfinished_output_removes_its_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.dump");
        let mut out = OutputFile::create(&path).await.unwrap();
        out.writer().write_all(b"half").await.unwrap();
        assert_eq!(entries(dir.path()).len(), 1);
        drop(out);
        assert!(entries(dir.path()).is_empty());
    }
}
