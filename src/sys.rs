//! The few operating-system calls std does not offer: extended attributes, device nodes,
//! fifos, timestamps without following links, user and group names, the host name.
//! This is one of the two modules allowed `unsafe` (with `wipe`); each block says why it
//! is sound.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::format::tree::Time;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Extended attributes, name and value, sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// All extended attributes of `path` (not following a final symlink), sorted by name.
/// Filesystems without xattr support yield an empty list.
pub fn xattrs(path: &Path) -> io::Result<Xattrs> {
    let c = cpath(path)?;
    read_xattrs(
        // SAFETY: `c` is a valid NUL-terminated path; the buffer pointer and length match.
        |buf: &mut [u8]| unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) },
        // SAFETY: valid C strings; the buffer pointer and length match.
        |name: &CStr, buf: &mut [u8]| unsafe {
            libc::lgetxattr(c.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        },
    )
}

/// All extended attributes of the open `file`, sorted by name: what [`xattrs`] gives for
/// its path, without looking the path up again.
pub fn file_xattrs(file: &std::fs::File) -> io::Result<Xattrs> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    read_xattrs(
        // SAFETY: `fd` is open for as long as `file` is borrowed; the buffer pointer and
        // length match.
        |buf: &mut [u8]| unsafe { libc::flistxattr(fd, buf.as_mut_ptr().cast(), buf.len()) },
        // SAFETY: as above; `name` is a valid C string.
        |name: &CStr, buf: &mut [u8]| unsafe { libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) },
    )
}

/// The xattrs that `list` (names, NUL-separated) and `get` (one value) give, each called
/// like the system calls: with an empty buffer they return the size needed, `ERANGE` if
/// the buffer is too small. One call per list and per value when they fit in 256 bytes,
/// as a SELinux label does (zeroing a 64 KiB value buffer per file, as before, was ~3% of
/// a first backup of tiny files).
fn read_xattrs(
    list: impl Fn(&mut [u8]) -> libc::ssize_t,
    get: impl Fn(&CStr, &mut [u8]) -> libc::ssize_t,
) -> io::Result<Xattrs> {
    let names = match sized(|buf| list(buf)) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let cname = CString::new(name).map_err(|_| io::Error::other("xattr name"))?;
        match sized(|buf| get(&cname, buf)) {
            Ok(value) => out.push((name.to_vec(), value)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue, // removed between list and get
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// The bytes a `listxattr`/`getxattr`-like `call` gives: into a small buffer, or else
/// asked for their size and read, again if they grew in between (a few times: then
/// `ERANGE`).
fn sized(call: impl Fn(&mut [u8]) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    let mut small = [0u8; 256];
    let n = call(&mut small);
    if n >= 0 {
        return Ok(small[..n as usize].to_vec());
    }
    let mut e = io::Error::last_os_error();
    for _ in 0..4 {
        if e.raw_os_error() != Some(libc::ERANGE) {
            break;
        }
        let len = call(&mut []);
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; len as usize];
        let n = call(&mut buf);
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        e = io::Error::last_os_error();
    }
    Err(e)
}

/// Set one extended attribute on `path` without following a final symlink.
pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let cname =
        CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: valid C strings; the value pointer and length match.
    check(unsafe { libc::lsetxattr(c.as_ptr(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

/// Create a device node, fifo or socket placeholder.
pub fn mknod(path: &Path, mode: libc::mode_t, dev: u64) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknod(c.as_ptr(), mode, dev as libc::dev_t) })
}

/// Set access and modification times without following a final symlink.
pub fn set_times(path: &Path, atime: Time, mtime: Time) -> io::Result<()> {
    let c = cpath(path)?;
    let ts = [
        libc::timespec { tv_sec: atime.sec as libc::time_t, tv_nsec: atime.nsec as libc::c_long },
        libc::timespec { tv_sec: mtime.sec as libc::time_t, tv_nsec: mtime.nsec as libc::c_long },
    ];
    // SAFETY: valid C string and a two-element timespec array, as utimensat requires.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

/// `name` (one path component, validated by the tree decoder) as a C string.
fn cname(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

/// Open directory `name` inside directory `dir` without following a symlink there
/// (`openat` with `O_DIRECTORY | O_NOFOLLOW`): whatever another user swaps in under that
/// name, this is a directory reached from `dir` itself, or an error.
pub fn open_dir_at(dir: &std::fs::File, name: &[u8]) -> io::Result<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let c = cname(name)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: open descriptor, valid C string; the result is a new descriptor we own.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Create regular file `name` in `dir`, which must not exist (`O_CREAT | O_EXCL |
/// O_NOFOLLOW`, mode 0600 until restore sets the real one), open for reading and writing
/// (restore's `--verify` reads it back).
pub fn create_file_at(dir: &std::fs::File, name: &[u8]) -> io::Result<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let c = cname(name)?;
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: open descriptor, valid C string, mode given for O_CREAT.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Create directory `name` in `dir`.
pub fn mkdir_at(dir: &std::fs::File, name: &[u8], mode: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let c = cname(name)?;
    // SAFETY: open descriptor, valid C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })
}

/// What is at `name` in `dir`, not following a symlink: its `st_mode`, `None` if nothing.
pub fn mode_at(dir: &std::fs::File, name: &[u8]) -> io::Result<Option<u32>> {
    Ok(stat_at(dir, name)?.map(|st| st.st_mode))
}

/// What is at `name` in `dir`, not following a symlink: its `stat`, `None` if nothing.
pub fn stat_at(dir: &std::fs::File, name: &[u8]) -> io::Result<Option<libc::stat>> {
    use std::os::fd::AsRawFd;
    let c = cname(name)?;
    // SAFETY: stat is plain old data, filled by the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: open descriptor, valid C string, valid stat buffer.
    let r = unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r == 0 {
        return Ok(Some(st));
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::NotFound {
        Ok(None)
    } else {
        Err(e)
    }
}

/// Open the existing regular file `name` in `dir` for reading and writing, following no
/// symlink and never blocking (a fifo swapped in does not hang the caller); `None` when
/// what is there is not a regular file of one link: a hard link may be another user's
/// file elsewhere, which must be neither written nor given new metadata.
pub fn open_own_file_at(dir: &std::fs::File, name: &[u8]) -> io::Result<Option<std::fs::File>> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::fs::MetadataExt;
    let c = cname(name)?;
    let flags = libc::O_RDWR | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: open descriptor, valid C string; the result is a new descriptor we own.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        // A symlink (ELOOP), a directory (EISDIR), a device without a driver (ENXIO), a
        // program being run (ETXTBSY): not a file to write in place.
        return match e.raw_os_error() {
            Some(libc::ELOOP | libc::EISDIR | libc::ENXIO | libc::ENOENT | libc::ETXTBSY) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    let m = f.metadata()?;
    Ok((m.file_type().is_file() && m.nlink() == 1).then_some(f))
}

/// Make `len` bytes at `offset` of `f` a hole (reading as zeros), or write zeros where
/// the filesystem cannot punch holes.
pub fn punch_hole(f: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: open descriptor; the range is plain numbers.
    if unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as libc::off_t, len as libc::off_t) } == 0 {
        return Ok(());
    }
    let zeros = vec![0u8; len.min(1 << 20) as usize];
    let mut at = offset;
    while at < offset + len {
        let n = (offset + len - at).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// The names in the open directory `dir` (not `.` and `..`), read through
/// `/proc/self/fd/N`, which the kernel resolves to that very directory.
pub fn dir_names(dir: &std::fs::File) -> io::Result<impl Iterator<Item = io::Result<Vec<u8>>>> {
    use std::os::unix::ffi::OsStringExt;
    let path = proc_path(dir).into_string().expect("ASCII");
    Ok(std::fs::read_dir(path)?.map(|e| e.map(|e| e.file_name().into_vec())))
}

/// Remove `name` from `dir` (an empty directory when `is_dir`).
pub fn unlink_at(dir: &std::fs::File, name: &[u8], is_dir: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let c = cname(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: open descriptor, valid C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })
}

/// Create symlink `name` in `dir` pointing at `target` (which is not followed).
pub fn symlink_at(target: &[u8], dir: &std::fs::File, name: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (t, c) = (cname(target)?, cname(name)?);
    // SAFETY: valid C strings, open descriptor.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })
}

/// Create a fifo or device node `name` in `dir`.
pub fn mknod_at(dir: &std::fs::File, name: &[u8], mode: libc::mode_t, dev: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let c = cname(name)?;
    // SAFETY: open descriptor, valid C string.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), mode, dev as libc::dev_t) })
}

/// Hard-link `from_name` in `from_dir` as `name` in `dir`, following no symlink.
pub fn link_at(from_dir: &std::fs::File, from_name: &[u8], dir: &std::fs::File, name: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (a, b) = (cname(from_name)?, cname(name)?);
    // SAFETY: open descriptors, valid C strings; flags 0 does not follow a symlink.
    check(unsafe { libc::linkat(from_dir.as_raw_fd(), a.as_ptr(), dir.as_raw_fd(), b.as_ptr(), 0) })
}

/// Set the times of `name` in `dir` without following a symlink.
pub fn set_times_at(dir: &std::fs::File, name: &[u8], atime: Time, mtime: Time) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let c = cname(name)?;
    let ts = [
        libc::timespec { tv_sec: atime.sec as libc::time_t, tv_nsec: atime.nsec as libc::c_long },
        libc::timespec { tv_sec: mtime.sec as libc::time_t, tv_nsec: mtime.nsec as libc::c_long },
    ];
    // SAFETY: open descriptor, valid C string, a two-element timespec array.
    check(unsafe { libc::utimensat(dir.as_raw_fd(), c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

/// Set an extended attribute of `name` in `dir` without following it: through the
/// directory's descriptor (`/proc/self/fd/N/name`, where `N` pins the directory and the
/// last component is not followed), as there is no `setxattrat` before Linux 6.13.
pub fn set_xattr_at(dir: &std::fs::File, name: &[u8], xname: &[u8], value: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    set_xattr(Path::new(OsStr::from_bytes(&p)), xname, value)
}

/// Open `name` in `dir` as a path only (`O_PATH | O_NOFOLLOW`): a handle on that very
/// inode, whatever it is (a symlink itself, a fifo without opening it, a device without
/// touching the driver), for checking it and setting its metadata without looking the
/// name up again.
pub fn open_path_at(dir: &std::fs::File, name: &[u8]) -> io::Result<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let c = cname(name)?;
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: open descriptor, valid C string; the result is a new descriptor we own.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// `/proc/self/fd/N` of an open file: a name the kernel resolves to that very inode
/// (it works for `O_PATH` descriptors, which `fchmod` and friends refuse).
fn proc_path(f: &std::fs::File) -> CString {
    use std::os::fd::AsRawFd;
    CString::new(format!("/proc/self/fd/{}", f.as_raw_fd())).expect("no NUL in a number")
}

/// Set the owner of the inode `f` holds (an `O_PATH` handle of a symlink included: the
/// link itself changes).
pub fn chown_handle(f: &std::fs::File, uid: u32, gid: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: open descriptor; an empty path with AT_EMPTY_PATH names the descriptor itself.
    check(unsafe { libc::fchownat(f.as_raw_fd(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) })
}

/// Set the mode of the inode `f` holds (not a symlink: it has none).
pub fn chmod_handle(f: &std::fs::File, mode: u32) -> io::Result<()> {
    let p = proc_path(f);
    // SAFETY: valid C string; the magic link resolves to the inode `f` holds.
    check(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) })
}

/// Set an extended attribute of the inode `f` holds (not a symlink).
pub fn set_xattr_handle(f: &std::fs::File, name: &[u8], value: &[u8]) -> io::Result<()> {
    let p = proc_path(f);
    let cname = cname(name)?;
    // SAFETY: valid C strings, matching value pointer and length.
    check(unsafe { libc::setxattr(p.as_ptr(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

/// Set the times of the inode `f` holds (not a symlink).
pub fn set_times_handle(f: &std::fs::File, atime: Time, mtime: Time) -> io::Result<()> {
    let p = proc_path(f);
    let ts = [
        libc::timespec { tv_sec: atime.sec as libc::time_t, tv_nsec: atime.nsec as libc::c_long },
        libc::timespec { tv_sec: mtime.sec as libc::time_t, tv_nsec: mtime.nsec as libc::c_long },
    ];
    // SAFETY: valid C string and a two-element timespec array.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), ts.as_ptr(), 0) })
}

/// Raise this process's soft limit on open files towards `want` (at most the hard
/// limit); returns the limit now in force.
pub fn raise_open_files(want: u64) -> u64 {
    // SAFETY: rlimit is plain old data, filled by getrlimit.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    if r.rlim_cur < want as libc::rlim_t {
        let new = libc::rlimit { rlim_cur: (want as libc::rlim_t).min(r.rlim_max), rlim_max: r.rlim_max };
        // SAFETY: valid pointer; only the soft limit changes, within the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            return new.rlim_cur as u64;
        }
    }
    r.rlim_cur as u64
}

/// Set owner, xattrs and times through an open file (no path lookups).
pub fn fchown(f: &std::fs::File, uid: u32, gid: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the duration of the call.
    check(unsafe { libc::fchown(f.as_raw_fd(), uid, gid) })
}

/// Set one extended attribute through an open file.
pub fn fset_xattr(f: &std::fs::File, name: &[u8], value: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let cname =
        CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: open descriptor, valid C string, matching value pointer and length.
    check(unsafe { libc::fsetxattr(f.as_raw_fd(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

/// Set access and modification times through an open file.
pub fn futimens(f: &std::fs::File, atime: Time, mtime: Time) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let ts = [
        libc::timespec { tv_sec: atime.sec as libc::time_t, tv_nsec: atime.nsec as libc::c_long },
        libc::timespec { tv_sec: mtime.sec as libc::time_t, tv_nsec: mtime.nsec as libc::c_long },
    ];
    // SAFETY: open descriptor and a two-element timespec array.
    check(unsafe { libc::futimens(f.as_raw_fd(), ts.as_ptr()) })
}

/// Can this process read and write `path` (by its real ids, as `access(2)` checks)?
pub fn access_rw(path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    check(unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::W_OK) })
}

/// Try to take an exclusive advisory lock on `f` without waiting; false if another
/// process holds it. Released when the file is closed.
pub fn try_lock(f: &std::fs::File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the duration of the call.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Turn `O_DIRECT` on or off for the open file `f`: writes then go from the caller's
/// buffer to the device, bypassing the page cache (buffer, file offset and length must
/// be aligned to the device's block size, or the write fails with `EINVAL`).
pub fn set_direct(f: &std::fs::File, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: the descriptor is open for the duration of both calls; F_GETFL and F_SETFL
    // take and return plain flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let want = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, want) })
}

/// Name of user `uid`, if it has one.
pub fn user_name(uid: u32) -> Option<Vec<u8>> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: passwd is plain old data; zeroed is a valid value to be overwritten.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut res = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; getpwuid_r writes only into `pw` and `buf`.
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut res) };
    if r != 0 || res.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
    Some(unsafe { CStr::from_ptr(pw.pw_name) }.to_bytes().to_vec())
}

/// Name of group `gid`, if it has one.
pub fn group_name(gid: u32) -> Option<Vec<u8>> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: group is plain old data.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut res = std::ptr::null_mut();
    // SAFETY: as for getpwuid_r.
    let r = unsafe { libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut res) };
    if r != 0 || res.is_null() {
        return None;
    }
    // SAFETY: on success gr_name points into `buf`.
    Some(unsafe { CStr::from_ptr(gr.gr_name) }.to_bytes().to_vec())
}

/// Uid of the user named `name` on this system.
pub fn uid_of(name: &[u8]) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: plain old data.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut res = std::ptr::null_mut();
    // SAFETY: valid pointers for the call.
    let r = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut res) };
    (r == 0 && !res.is_null()).then_some(pw.pw_uid)
}

/// Gid of the group named `name` on this system.
pub fn gid_of(name: &[u8]) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: plain old data.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut res = std::ptr::null_mut();
    // SAFETY: valid pointers for the call.
    let r = unsafe { libc::getgrnam_r(cname.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut res) };
    (r == 0 && !res.is_null()).then_some(gr.gr_gid)
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer pointer and length match.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return String::new();
    }
    let n = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Now, Unix nanoseconds (0 before 1970, saturating after 2262).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

/// Whether a process with id `pid` exists (it may belong to another user).
pub fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The effective group id.
pub fn egid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Set the calling thread's filesystem uid (the uid file access is checked against) and
/// return the one it had. Leaving 0 drops the capabilities that override file modes;
/// going back restores them. Tests use it to meet an unreadable file as root.
#[cfg(test)]
pub fn set_thread_fsuid(uid: u32) -> u32 {
    // SAFETY: setfsuid has no preconditions; it affects only the calling thread.
    unsafe { libc::setfsuid(uid) as u32 }
}

/// The name of the effective user, or its number.
pub fn username() -> String {
    let uid = euid();
    user_name(uid).map(|n| String::from_utf8_lossy(&n).into_owned()).unwrap_or_else(|| uid.to_string())
}

/// Peak resident set size of this process in bytes (VmHWM), 0 if unknown.
pub fn peak_rss() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Standard output that ends the process quietly when its reader is gone (`cairn ls |
/// head`), with the status a SIGPIPE would give (141), as other Unix tools do. The
/// signal itself stays ignored (Rust's default): a network write to a server that went
/// away must be an error the retry layer sees, not the end of the process (a backup to
/// S3 was killed by SIGPIPE when its server restarted).
pub struct QuietStdout(pub std::io::Stdout);

impl std::io::Write for QuietStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        quiet_pipe(self.0.write(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        quiet_pipe(self.0.flush())
    }
}

fn quiet_pipe<T>(r: std::io::Result<T>) -> std::io::Result<T> {
    if matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe) {
        std::process::exit(128 + libc::SIGPIPE);
    }
    r
}

/// Make glibc serve every allocation of 4 MiB or more with its own mapping, returned to
/// the system when freed. By default the threshold adapts upwards (to 32 MiB) after large
/// frees, and the index's filters and merge buffers, allocated and freed repeatedly, then
/// came from the heap, where freed memory stayed resident: RSS beyond the budget.
pub fn bound_allocator() {
    // SAFETY: mallopt only changes allocator tuning; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// The allocation size from which [`allocator_for_streaming`] has glibc map each
/// allocation on its own.
pub const STREAMING_MMAP_THRESHOLD: usize = 256 << 10;

/// Ask the scheduler to give the calling thread time slices of `ns` nanoseconds
/// (`sched_setattr` with `sched_runtime`, which Linux 6.12+ uses for normal threads).
/// The slice decides preemption between normal threads: one that wakes with a shorter
/// slice than the running one's preempts it at once, otherwise it waits for that slice
/// to end. Best effort: older kernels refuse or ignore it, and nothing else changes.
pub fn set_time_slice(ns: u64) {
    /// `struct sched_attr` (linux/sched/types.h), which the libc crate does not define.
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
        util_min: u32,
        util_max: u32,
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice: 0,
        priority: 0,
        runtime: ns,
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: pid 0 is the calling thread; `attr` is a valid sched_attr whose size field
    // says how much of it the kernel may read; the call only changes scheduling.
    unsafe {
        libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0);
    }
}

/// For a long-running process that streams chunks through a cache on several threads
/// (the mount): chunk buffers of 256 KiB or more get their own mapping, returned when
/// freed, and threads share two heaps. Measured on the benchmark corpus: with glibc's
/// defaults the mount's RSS kept growing past its cache (freed chunk buffers stayed
/// resident in per-thread heaps) to 252 MB after reading 3.1 GB with a 64 MiB cache.
pub fn allocator_for_streaming() {
    // SAFETY: mallopt only changes allocator tuning; glibc serialises it.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, STREAMING_MMAP_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Ask the kernel to back the capacity of `v` (allocated, not yet touched) with 2 MiB
/// pages where it can: a Bloom filter probed at random otherwise costs a TLB miss per
/// lookup. Best effort: without transparent huge pages nothing changes.
pub fn advise_hugepages<T>(v: &mut Vec<T>) {
    const HUGE: usize = 2 << 20;
    let at = v.as_mut_ptr() as usize;
    let start = at.next_multiple_of(HUGE);
    let end = (at + v.capacity() * std::mem::size_of::<T>()) / HUGE * HUGE;
    if end > start {
        // SAFETY: advice on whole pages inside the vector's own allocation; MADV_HUGEPAGE
        // changes how they are backed, never their contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

/// `OsStr` from bytes.
pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Is `path` (absolute, canonical) a mount point? (An entry of /proc/self/mounts, whose
/// paths escape space, tab, newline and backslash in octal.)
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read("/proc/self/mounts") else { return false };
    let mut want = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => want.extend_from_slice(format!("\\{b:03o}").as_bytes()),
            _ => want.push(b),
        }
    }
    mounts.split(|&b| b == b'\n').any(|l| l.split(|&b| b == b' ').nth(1) == Some(&want[..]))
}

/// Start `cmd`'s process in a session of its own (no controlling terminal: a daemon).
pub fn in_new_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the child between fork and exec and calls only setsid,
    // which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| if libc::setsid() < 0 { Err(io::Error::last_os_error()) } else { Ok(()) });
    }
}

/// Detach a mount lazily (it leaves the namespace now; open files keep it alive until
/// closed): `umount2(MNT_DETACH)` as root, `fusermount3 -u -z` otherwise.
pub fn detach_mount(path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let st = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg("--").arg(path).status()?;
    if st.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("fusermount3 -u -z exited with {st}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_roundtrip_where_supported() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        match set_xattr(&f, b"user.cairn", b"v1") {
            Ok(()) => assert_eq!(xattrs(&f).unwrap(), vec![(b"user.cairn".to_vec(), b"v1".to_vec())]),
            Err(e) => eprintln!("xattrs unsupported here: {e}"),
        }
    }

    /// Names and values past the first small buffer are read whole, by path and by file.
    #[test]
    fn xattrs_larger_than_the_first_buffer() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let mut want: Vec<(Vec<u8>, Vec<u8>)> =
            (0..20).map(|i| (format!("user.cairn.name-{i:02}").into_bytes(), vec![b'a' + i as u8; 3])).collect();
        want.push((b"user.cairn.long".to_vec(), (0..1000u32).map(|i| i as u8).collect()));
        want.push((b"user.cairn.empty".to_vec(), Vec::new()));
        want.sort();
        for (n, v) in &want {
            if let Err(e) = set_xattr(&f, n, v) {
                assert!(!crate::testutil::must_not_skip("CAIRN_REQUIRE_XATTRS"), "xattrs unsupported: {e}");
                eprintln!("xattrs unsupported here: {e}");
                return;
            }
        }
        let others =
            |x: Vec<(Vec<u8>, Vec<u8>)>| x.into_iter().filter(|(n, _)| n.starts_with(b"user.")).collect::<Vec<_>>();
        assert_eq!(others(xattrs(&f).unwrap()), want);
        assert_eq!(others(file_xattrs(&std::fs::File::open(&f).unwrap()).unwrap()), want);
        let none = t.path().join("none");
        std::fs::write(&none, b"").unwrap();
        assert_eq!(others(file_xattrs(&std::fs::File::open(&none).unwrap()).unwrap()), vec![]);
    }

    #[test]
    fn names_and_rss() {
        assert!(peak_rss() > 0);
        assert_eq!(user_name(0).as_deref(), Some(&b"root"[..]));
        assert_eq!(uid_of(b"root"), Some(0));
        assert!(!hostname().is_empty());
    }
}
