//! The directory of large blobs: one plain file per blob, so the write path of a large blob
//! is `pwrite` into the page cache, one `fsync` and one `rename`, instead of sled's log.
//!
//! Owns the files of its directory and nothing else: it never reads or writes sled. The
//! caller ([`super::Store`]) decides which blobs live here and keeps their outboards (and
//! every decision about visibility) in sled.
//!
//! | file           | content                                                  |
//! |----------------|----------------------------------------------------------|
//! | `<hex>.part`   | a blob being imported, groups written at their offsets (sparse until complete) |
//! | `<hex>`        | a complete blob, never written again                      |
//!
//! A complete file is made by `fsync` of the `.part` file, `rename` to `<hex>` and `fsync`
//! of the directory, so a crash leaves either the partial file (resumable: every group is
//! verified again when the import resumes) or the complete one.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The directory holding large blobs.
#[derive(Debug)]
pub(crate) struct Files {
    dir: PathBuf,
}

impl Files {
    /// Opens (creating it if needed) the directory of large blobs.
    pub(crate) fn open(dir: &Path) -> io::Result<Files> {
        std::fs::create_dir_all(dir)?;
        Ok(Files {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory itself.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a complete blob's file.
    pub(crate) fn complete(&self, hash: &blake3::Hash) -> PathBuf {
        self.dir.join(hash.to_hex().as_str())
    }

    /// Path of a blob's partial file.
    pub(crate) fn partial(&self, hash: &blake3::Hash) -> PathBuf {
        self.dir.join(format!("{}.part", hash.to_hex()))
    }

    /// Opens the partial file of `hash` for reading and writing, creating it with length
    /// `len` (sparse) if it does not exist. A complete file left by a crash between the
    /// rename and the sled commit is taken back as the partial file. Returns the file and
    /// whether it existed before (then its groups must be verified again).
    pub(crate) fn open_partial(&self, hash: &blake3::Hash, len: u64) -> io::Result<(File, bool)> {
        let part = self.partial(hash);
        let complete = self.complete(hash);
        let mut existed = part.exists();
        if !existed && complete.exists() {
            std::fs::rename(&complete, &part)?;
            existed = true;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)?;
        if file.metadata()?.len() != len {
            file.set_len(len)?;
        }
        Ok((file, existed))
    }

    /// Opens a complete blob's file for reading.
    pub(crate) fn open_complete(&self, hash: &blake3::Hash) -> io::Result<File> {
        File::open(self.complete(hash))
    }

    /// Makes the partial file of `hash` the complete one: `fsync` it, rename it, `fsync` the
    /// directory. After this returns, the complete file survives a crash.
    pub(crate) fn commit(&self, hash: &blake3::Hash, file: &File) -> io::Result<()> {
        file.sync_all()?;
        std::fs::rename(self.partial(hash), self.complete(hash))?;
        File::open(&self.dir)?.sync_all()
    }

    /// Removes both files of `hash`, if present.
    pub(crate) fn remove(&self, hash: &blake3::Hash) -> io::Result<()> {
        for path in [self.complete(hash), self.partial(hash)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every hash with a file here (complete or partial), to find files nothing refers to.
    /// Names that are not `<64 hex digits>[.part]` are left alone.
    pub(crate) fn hashes(&self) -> io::Result<Vec<blake3::Hash>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let hex = name.strip_suffix(".part").unwrap_or(name);
            if let Ok(hash) = blake3::Hash::from_hex(hex) {
                out.push(hash);
            }
        }
        Ok(out)
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`; `None` if it
/// cannot be asked (callers then go on as if there were room).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: `c` is a valid NUL-terminated path and `st` a zeroed statvfs that the
        // call fills; nothing is read from it unless the call succeeded.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Reads exactly `buf.len()` bytes at `offset` (a short file is `UnexpectedEof`).
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(buf, offset)
}

/// Writes `data` at `offset`, and asks the kernel to start writing it back now, so the
/// `fsync` at the end of an import finds little left to do (Linux; elsewhere the final
/// `fsync` does it all).
pub(crate) fn write_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    file.write_all_at(data, offset)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscall on a file descriptor we own; it only schedules writeback.
        // Its result is only a hint: the fsync in `commit` is what makes the data durable.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                data.len() as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    Ok(())
}
