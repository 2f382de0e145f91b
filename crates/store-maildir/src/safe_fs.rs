//! The openat layer: everything inside a Maildir is reached from a handle
//! on its directory, never through a path the kernel resolves again, and
//! nothing inside is followed when it is a symlink.
//!
//! A hosting customer may own his Maildir's files (FTP, SSH). Whatever he
//! puts there must not reach outside it nor stop the server: `cur` linked
//! to another tenant's `cur`, `dovecot-uidlist` linked to `/dev/zero`, a
//! FIFO, a planted `dovecot-uidlist.tmp` link. So:
//!
//! - directories are opened with `O_DIRECTORY|O_NOFOLLOW` relative to
//!   their parent's handle;
//! - files are opened with `O_NOFOLLOW|O_NONBLOCK` (a FIFO does not block
//!   the open), then only regular files are accepted (`fstat`);
//! - files popgate creates are created with `O_CREAT|O_EXCL`, which never
//!   follows a link nor reuses a planted file;
//! - metadata files are read up to a cap, never to the end of whatever
//!   they are.
//!
//! Files and directories popgate creates take the Maildir's owner, group
//! and permission bits ([`Perms`]), as Dovecot's do.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Stat, Uid};
use rustix::io::Errno;
use tracing::{debug, warn};

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);
const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);
const CREATE_FLAGS: OFlags = OFlags::WRONLY
    .union(OFlags::CREATE)
    .union(OFlags::EXCL)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

/// An open directory, and its path for messages.
#[derive(Debug)]
pub struct DirFd {
    fd: OwnedFd,
    path: PathBuf,
}

impl DirFd {
    /// Opens a directory by path, following symlinks: only for the part of
    /// a path that the operator controls (the template's fixed prefix).
    pub fn open_path(path: &Path) -> io::Result<DirFd> {
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        let fd = rfs::open(path, DIR_FLAGS, Mode::empty())?;
        Ok(DirFd {
            fd,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The directory's owner, group and mode.
    pub fn stat(&self) -> io::Result<Stat> {
        Ok(rfs::fstat(&self.fd)?)
    }

    /// Identifies the directory, whatever path reached it.
    pub fn id(&self) -> io::Result<(u64, u64)> {
        let st = self.stat()?;
        Ok((st.st_dev, st.st_ino))
    }

    /// A subdirectory. Unless `follow`, a symlink is refused (an error of
    /// kind `InvalidData`, whose message says what was found) and logged.
    pub fn open_dir(&self, name: &OsStr, follow: bool) -> io::Result<DirFd> {
        let flags = if follow {
            DIR_FLAGS
        } else {
            DIR_FLAGS | OFlags::NOFOLLOW
        };
        match rfs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => Ok(DirFd {
                fd,
                path: self.path.join(name),
            }),
            Err(e) if e == Errno::NOTDIR || e == Errno::LOOP => Err(self.not_a_dir(name, e)),
            Err(e) => Err(e.into()),
        }
    }

    fn not_a_dir(&self, name: &OsStr, e: Errno) -> io::Error {
        let path = self.path.join(name);
        let what = match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                "is a symlink, and symlinks inside a Maildir are not followed"
            }
            Ok(_) => "is not a directory",
            Err(_) => return e.into(),
        };
        warn!(path = %path.display(), "refusing a Maildir directory that {what}");
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} {what}", path.display()),
        )
    }

    /// Creates a subdirectory with `perms`, or opens the one that exists
    /// (see [`DirFd::open_dir`] for `follow`).
    pub fn create_dir(&self, name: &OsStr, perms: &Perms, follow: bool) -> io::Result<DirFd> {
        match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(perms.dir_mode)) {
            Ok(()) => {
                let dir = self.open_dir(name, false)?;
                perms.apply(dir.as_fd(), true)?;
                Ok(dir)
            }
            Err(Errno::EXIST) => self.open_dir(name, follow),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a regular file for reading. A symlink, FIFO, device or
    /// directory is refused at once (kind `Other`, so a temporary failure),
    /// without blocking on it.
    pub fn open_file(&self, name: &str) -> io::Result<File> {
        let fd = match rfs::openat(&self.fd, name, READ_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => return Err(self.refused(name, "is a symlink")),
            Err(e) => return Err(e.into()),
        };
        let st = rfs::fstat(&fd)?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            return Err(self.refused(name, &format!("is not a regular file ({kind:?})")));
        }
        let flags = rfs::fcntl_getfl(&fd)?;
        rfs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)?;
        Ok(File::from(fd))
    }

    fn refused(&self, name: &str, why: &str) -> io::Error {
        let path = self.path.join(name);
        warn!(path = %path.display(), "refusing a Maildir file that {why}");
        io::Error::other(format!("{}: refused, it {why}", path.display()))
    }

    /// Reads a whole metadata file of at most `cap` bytes; `None` when it
    /// does not exist. A larger file is an error, and is never read past
    /// the cap (it may be growing, or be endless).
    pub fn read_capped(&self, name: &str, cap: u64) -> io::Result<Option<Vec<u8>>> {
        let file = match self.open_file(name) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = file.metadata()?.len();
        if size > cap {
            return Err(self.refused(name, &format!("has {size} bytes, over the {cap} allowed")));
        }
        let mut data = Vec::with_capacity(size as usize);
        file.take(cap + 1).read_to_end(&mut data)?;
        if data.len() as u64 > cap {
            return Err(self.refused(name, &format!("grew over the {cap} bytes allowed")));
        }
        Ok(Some(data))
    }

    /// Creates a new file, exclusively: an existing file or link of that
    /// name is an `AlreadyExists` error and is left alone. The file gets
    /// `perms` before the caller writes to it.
    pub fn create_new(&self, name: &str, perms: &Perms) -> io::Result<File> {
        let fd = rfs::openat(
            &self.fd,
            name,
            CREATE_FLAGS,
            Mode::from_raw_mode(perms.file_mode),
        )?;
        if let Err(e) = perms.apply(fd.as_fd(), false) {
            let _ = rfs::unlinkat(&self.fd, name, AtFlags::empty());
            return Err(e);
        }
        Ok(File::from(fd))
    }

    /// Creates a temporary file that is renamed into place later (the
    /// caller holds the lock that serialises its writers). Whatever has
    /// its name is a leftover of a crash, or planted: it is unlinked (a
    /// symlink itself, never its target) and creation is tried again.
    pub fn create_temp(&self, name: &str, perms: &Perms) -> io::Result<File> {
        for _ in 0..3 {
            match self.create_new(name, perms) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    warn!(path = %self.path.join(name).display(), "removing a leftover temporary file");
                    match self.unlink(name) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                other => return other,
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{}: keeps reappearing", self.path.join(name).display()),
        ))
    }

    pub fn unlink(&self, name: &str) -> io::Result<()> {
        Ok(rfs::unlinkat(&self.fd, name, AtFlags::empty())?)
    }

    /// Renames `from` in this directory to `to` in `to_dir` (which may be
    /// this one), replacing what `to` names.
    pub fn rename(&self, from: &str, to_dir: &DirFd, to: &str) -> io::Result<()> {
        Ok(rfs::renameat(&self.fd, from, &to_dir.fd, to)?)
    }

    /// Hard-links `from` here as `to` in `to_dir`; never replaces.
    pub fn link(&self, from: &str, to_dir: &DirFd, to: &str) -> io::Result<()> {
        Ok(rfs::linkat(
            &self.fd,
            from,
            &to_dir.fd,
            to,
            AtFlags::empty(),
        )?)
    }

    /// The entry's own status (a symlink is not followed).
    pub fn stat_at(&self, name: &str) -> io::Result<Stat> {
        Ok(rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// The names in this directory and their types (from `readdir`, or
    /// `fstatat` without following when the filesystem does not say).
    pub fn entries(&self) -> io::Result<Vec<(Vec<u8>, FileType)>> {
        let mut out = Vec::new();
        for entry in rfs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let mut kind = entry.file_type();
            if kind == FileType::Unknown {
                match rfs::statat(&self.fd, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => kind = FileType::from_raw_mode(st.st_mode),
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            out.push((name.to_vec(), kind));
        }
        Ok(out)
    }

    /// fsyncs the directory (after a link or rename into it).
    pub fn sync(&self) {
        if let Err(e) = rfs::fsync(&self.fd) {
            warn!(dir = %self.path.display(), "fsync of directory: {e}");
        }
    }
}

/// The owner, group and modes that what popgate creates in a Maildir
/// takes, copied from the Maildir directory as Dovecot does: directories
/// its mode, files its mode without the execute bits (0700 gives 0600,
/// 0770 gives 0660), both its owner and group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perms {
    pub uid: u32,
    pub gid: u32,
    pub dir_mode: u32,
    pub file_mode: u32,
}

impl Perms {
    pub fn of(dir: &DirFd) -> io::Result<Perms> {
        let st = dir.stat()?;
        let mode = st.st_mode & 0o2777;
        Ok(Perms {
            uid: st.st_uid,
            gid: st.st_gid,
            dir_mode: mode,
            file_mode: mode & 0o666,
        })
    }

    /// Gives a just-created file or directory these owner, group and mode.
    /// Changing the owner needs root (or CAP_CHOWN); without it the group
    /// is still copied when the process is a member, as Dovecot does.
    pub fn apply(&self, fd: BorrowedFd<'_>, is_dir: bool) -> io::Result<()> {
        let st = rfs::fstat(fd)?;
        if st.st_uid != self.uid || st.st_gid != self.gid {
            let uid = (st.st_uid != self.uid).then(|| Uid::from_raw(self.uid));
            let gid = Some(Gid::from_raw(self.gid));
            match rfs::fchown(fd, uid, gid) {
                Ok(()) => {}
                Err(Errno::PERM) if st.st_gid != self.gid => {
                    if let Err(e) = rfs::fchown(fd, None, gid) {
                        debug!(
                            gid = self.gid,
                            "cannot give a new Maildir file the Maildir's group: {e}"
                        );
                    }
                }
                Err(Errno::PERM) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mode = if is_dir {
            self.dir_mode
        } else {
            self.file_mode
        };
        // Set it explicitly: the process umask must not narrow it.
        rfs::fchmod(fd, Mode::from_raw_mode(mode))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use std::os::unix::fs::{MetadataExt, symlink};

    #[test]
    fn directories_are_not_followed_below_the_handle() {
        let tmp = TempDir::new();
        std::fs::create_dir(tmp.path().join("real")).unwrap();
        symlink(tmp.path().join("real"), tmp.path().join("link")).unwrap();
        std::fs::write(tmp.path().join("file"), "x").unwrap();
        let dir = DirFd::open_path(tmp.path()).unwrap();
        assert!(dir.open_dir("real".as_ref(), false).is_ok());
        let e = dir.open_dir("link".as_ref(), false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("is a symlink"), "{e}");
        let e = dir.open_dir("file".as_ref(), false).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert!(
            dir.open_dir("link".as_ref(), true).is_ok(),
            "opt-in follows"
        );
        let e = dir.open_dir("missing".as_ref(), false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn only_regular_files_are_read_and_reads_are_capped() {
        let tmp = TempDir::new();
        let dir = DirFd::open_path(tmp.path()).unwrap();
        std::fs::write(tmp.path().join("small"), "12345").unwrap();
        symlink(tmp.path().join("small"), tmp.path().join("link")).unwrap();
        std::fs::create_dir(tmp.path().join("dir")).unwrap();
        rfs::mknodat(
            dir.as_fd(),
            "fifo",
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert_eq!(dir.read_capped("small", 5).unwrap().unwrap(), b"12345");
        assert!(dir.read_capped("missing", 5).unwrap().is_none());
        for (name, why) in [
            ("small", "over the 4 allowed"),
            ("link", "is a symlink"),
            ("dir", "not a regular file"),
            ("fifo", "not a regular file"),
        ] {
            let e = dir.read_capped(name, 4).unwrap_err();
            assert!(e.to_string().contains(why), "{name}: {e}");
            assert_eq!(e.kind(), io::ErrorKind::Other, "{name}: temporary");
        }
    }

    #[test]
    fn temp_files_never_follow_a_planted_link() {
        let tmp = TempDir::new();
        let dir = DirFd::open_path(tmp.path()).unwrap();
        let perms = Perms::of(&dir).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        symlink(&victim, tmp.path().join("x.tmp")).unwrap();
        let e = dir.create_new("x.tmp", &perms).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let mut f = dir.create_temp("x.tmp", &perms).unwrap();
        io::Write::write_all(&mut f, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let meta = std::fs::symlink_metadata(tmp.path().join("x.tmp")).unwrap();
        assert!(meta.is_file());
        assert_eq!(std::fs::read(tmp.path().join("x.tmp")).unwrap(), b"new");
    }

    #[test]
    fn new_files_take_the_directory_mode_without_execute_bits() {
        let tmp = TempDir::new();
        std::fs::create_dir(tmp.path().join("md")).unwrap();
        let md = DirFd::open_path(&tmp.path().join("md")).unwrap();
        for (dir_mode, file_mode) in [(0o700, 0o600), (0o770, 0o660), (0o2750, 0o640)] {
            rfs::fchmod(md.as_fd(), Mode::from_raw_mode(dir_mode)).unwrap();
            let perms = Perms::of(&md).unwrap();
            assert_eq!(perms.file_mode, file_mode);
            let name = format!("f{dir_mode:o}");
            drop(md.create_new(&name, &perms).unwrap());
            let meta = std::fs::metadata(md.path().join(&name)).unwrap();
            assert_eq!(meta.mode() & 0o7777, file_mode, "{dir_mode:o}");
            let sub = md
                .create_dir(format!("d{dir_mode:o}").as_ref(), &perms, false)
                .unwrap();
            assert_eq!(sub.stat().unwrap().st_mode & 0o7777, dir_mode);
        }
    }
}
