//! `cairn mount`: the FUSE adapter over [`crate::vfs::Vfs`]. It only translates fuser's
//! calls and maps errors to errnos, in one place ([`errno`]): damaged data is EIO for that
//! call alone (with a log line naming the blob and pack), writes are EROFS, and no
//! callback panics on repository data. ENOSYS is only ever the protocol's way to switch
//! a request kind off for the whole mount (OPEN, and xattrs where no snapshot has any),
//! never the answer to an error.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, InitFlags, KernelConfig, MountOption,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyXattr, Request,
};

use crate::error::{Error, Result};
use crate::vfs::{self, Attr, FileKind, Vfs, ViewError};

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Let other users see the mount (then the kernel enforces the snapshot's modes).
    pub allow_other: bool,
    /// Threads answering the kernel.
    pub threads: usize,
}

struct Fs {
    vfs: Vfs,
    /// Where damaged data met is logged: stderr, or the `--log` file (a background
    /// mount's only voice).
    log: std::sync::Mutex<Box<dyn std::io::Write + Send>>,
}

impl Fs {
    /// The errno for a view error; damaged data is logged (it names the blob and pack).
    fn errno(&self, e: &ViewError) -> Errno {
        match e {
            ViewError::NoEntry => Errno::ENOENT,
            ViewError::NotDir => Errno::ENOTDIR,
            ViewError::NotFile => Errno::EISDIR,
            ViewError::NotLink => Errno::EINVAL,
            ViewError::Repo(e) => {
                log_line(&self.log, &e.to_string());
                Errno::EIO
            }
        }
    }
}

/// One line of the mount's log, with the time and the process id.
fn log_line(log: &std::sync::Mutex<Box<dyn std::io::Write + Send>>, msg: &str) {
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(log, "{now} cairn mount[{}]: {msg}", std::process::id());
    let _ = log.flush();
}

/// The answer for extended attribute `name` (`None`: the list of names) when the
/// snapshots say it is on no inode, without looking at one; `None` when they may hold it.
/// - No snapshot holds any xattr: ENOSYS, which tells the kernel that this filesystem has
///   none, so it answers every later getxattr and listxattr itself (EOPNOTSUPP), as for
///   OPEN (see [`Fs::open`]): `cp -a` then makes one request per file instead of four.
/// - No snapshot holds this `security.*` or `system.*` name (by the names snapshots
///   list, or else by class): EOPNOTSUPP, what a filesystem without SELinux labels or
///   ACLs answers, which `ls -l` remembers for the whole mount (it asks for
///   `security.selinux` and an ACL on every file otherwise: two requests per file). A
///   single file with a capability (`security.capability`) no longer costs that.
/// - Other names (`user.*`, `trusted.*`): ENODATA, as for any absent attribute.
fn xattr_absent(vfs: &Vfs, name: Option<&[u8]>) -> Option<Errno> {
    if !vfs.has_xattrs() {
        return Some(Errno::ENOSYS);
    }
    let name = name?;
    if vfs.may_have_xattr(name) {
        None
    } else if name.starts_with(b"security.") || name.starts_with(b"system.") {
        Some(Errno::EOPNOTSUPP)
    } else {
        Some(Errno::NO_XATTR)
    }
}

/// Ask the kernel for what the mount relies on, each only where the kernel has it:
/// listings with attributes (no lookup per entry), lookups in one directory in parallel,
/// symlink targets cached by the kernel, no OPEN and OPENDIR (see [`Fs::open`] and
/// [`Fs::opendir`]). Public for `cairn-fusefloor`, which measures the listing floor with
/// the same choices.
pub fn add_capabilities(config: &mut KernelConfig) {
    for cap in [
        InitFlags::FUSE_DO_READDIRPLUS,
        InitFlags::FUSE_PARALLEL_DIROPS,
        InitFlags::FUSE_CACHE_SYMLINKS,
        InitFlags::FUSE_NO_OPEN_SUPPORT,
        InitFlags::FUSE_NO_OPENDIR_SUPPORT,
    ] {
        let _ = config.add_capabilities(cap);
    }
}

fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::Dir => FileType::Directory,
        FileKind::File => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

fn attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.allocated.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.mtime,
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 1 << 20,
        flags: 0,
    }
}

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // The largest readahead the kernel allows (it answers with its maximum).
        if let Err(max) = config.set_max_readahead(u32::MAX) {
            let _ = config.set_max_readahead(max);
        }
        add_capabilities(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.vfs.lookup(parent.0, name.as_bytes()) {
            Ok(a) => reply.entry(&vfs::TTL, &attr(&a), Generation(0)),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.vfs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.vfs.getattr(ino.0) {
            Ok(a) => reply.attr(&vfs::TTL, &attr(&a)),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.vfs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        // Reads need no handle (the view keys them by inode): ENOSYS tells the kernel to
        // stop sending OPEN and RELEASE for files (FUSE_NO_OPEN_SUPPORT). It then keeps
        // file pages across opens, as with FOPEN_KEEP_CACHE: snapshots never change.
        reply.error(Errno::ENOSYS)
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        if offset == 0 {
            self.vfs.starts_file(ino.0, req.pid());
        }
        match self.vfs.read(ino.0, offset, size as usize) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    /// SEEK_DATA and SEEK_HOLE (the kernel answers the other kinds itself), so `cp` and
    /// `tar --sparse` read a sparse file's data and skip its holes. Never ENOSYS: the
    /// kernel would take every file as all data for the rest of the mount.
    fn lseek(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        let hole = match whence {
            libc::SEEK_DATA => false,
            libc::SEEK_HOLE => true,
            _ => return reply.error(Errno::EINVAL),
        };
        let Ok(offset) = u64::try_from(offset) else { return reply.error(Errno::ENXIO) };
        match self.vfs.seek_data(ino.0, offset, hole) {
            Ok(Some(at)) => reply.offset(at as i64),
            Ok(None) => reply.error(Errno::ENXIO),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // As for files (see [`Fs::open`]): listings need no handle (the view keys them by
        // inode and offset), and ENOSYS tells the kernel to send no OPENDIR and
        // RELEASEDIR from now on (FUSE_NO_OPENDIR_SUPPORT) and to cache listings, as
        // FOPEN_CACHE_DIR does: two round trips fewer per directory, none for a
        // directory listed again.
        reply.error(Errno::ENOSYS)
    }

    fn readdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        if offset == 0 {
            self.vfs.listed_by(ino.0, req.pid());
        }
        let r = self.vfs.readdir(ino.0, offset, &mut |name, k, ino, next| {
            !reply.add(INodeNo(ino), next, kind(k), OsStr::from_bytes(name))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn readdirplus(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        if offset == 0 {
            self.vfs.listed_by(ino.0, req.pid());
        }
        let r = self.vfs.readdirplus(ino.0, offset, &mut |name, a, next| {
            !reply.add(INodeNo(a.ino), next, OsStr::from_bytes(name), &vfs::TTL, &attr(a), Generation(0))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 1 << 20, 255, 1 << 20);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if let Some(e) = xattr_absent(&self.vfs, Some(name.as_bytes())) {
            return reply.error(e);
        }
        match self.vfs.xattrs(ino.0) {
            Ok(xs) => match xs.iter().find(|(n, _)| n.as_slice() == name.as_bytes()) {
                None => reply.error(Errno::NO_XATTR),
                Some((_, v)) if size == 0 => reply.size(v.len() as u32),
                Some((_, v)) if v.len() > size as usize => reply.error(Errno::ERANGE),
                Some((_, v)) => reply.data(v),
            },
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if let Some(e) = xattr_absent(&self.vfs, None) {
            return reply.error(e);
        }
        match self.vfs.xattrs(ino.0) {
            Ok(xs) => {
                let mut list = Vec::new();
                for (n, _) in &xs {
                    list.extend_from_slice(n);
                    list.push(0);
                }
                if size == 0 {
                    reply.size(list.len() as u32)
                } else if list.len() > size as usize {
                    reply.error(Errno::ERANGE)
                } else {
                    reply.data(&list)
                }
            }
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        if mask.bits() & libc::W_OK != 0 {
            return reply.error(Errno::EROFS);
        }
        match self.vfs.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(self.errno(&e)),
        }
    }
}

/// Refuse a mount point that cannot take a fresh mount before anything is started: it
/// must be a directory, not already a mount point (a second mount would stack on the
/// first, hiding it), and empty unless `nonempty`. Also say plainly when FUSE itself is
/// unavailable (`/dev/fuse` missing or not readable and writable by this user), which
/// otherwise surfaces as an error about the mount point.
pub fn check_mountpoint(mountpoint: &Path, nonempty: bool) -> Result<()> {
    let io = |e: std::io::Error| Error::Io { path: mountpoint.to_path_buf(), err: e };
    let bad = |why: &str| Error::InvalidInput(format!("mount point {}: {why}", mountpoint.display()));
    let meta = std::fs::metadata(mountpoint).map_err(io)?;
    if !meta.is_dir() {
        return Err(bad("not a directory (mount on an empty directory)"));
    }
    let canonical = std::fs::canonicalize(mountpoint).map_err(io)?;
    if crate::sys::is_mount_point(&canonical) {
        return Err(bad("already a mount point (`fusermount3 -u` it first)"));
    }
    if !nonempty && std::fs::read_dir(mountpoint).map_err(io)?.next().is_some() {
        return Err(bad("not empty (--nonempty mounts over its contents, hiding them)"));
    }
    let dev = Path::new("/dev/fuse");
    crate::sys::access_rw(dev).map_err(|e| {
        Error::InvalidInput(format!(
            "{}: {e}: FUSE is not available to this user (the device must exist and be readable and \
             writable, as distributions set it: mode 0666; `modprobe fuse` loads the module)",
            dev.display()
        ))
    })
}

/// Mount `vfs` at `mountpoint` and serve it until SIGINT/SIGTERM (then unmount) or until
/// it is unmounted from outside (`fusermount3 -u`). `log` receives the errors met (damaged
/// data, with its blob and pack); `ready` is called once the kernel has the mount.
pub fn mount(
    vfs: Vfs,
    mountpoint: &Path,
    opts: &MountOptions,
    stop: &AtomicBool,
    log: Box<dyn std::io::Write + Send>,
    ready: &mut dyn FnMut(),
) -> Result<()> {
    let mut options = vec![
        MountOption::FSName("cairn".into()),
        MountOption::Subtype("cairn".into()),
        MountOption::RO,
        MountOption::NoAtime,
    ];
    let mut config = fuser::Config::default();
    if opts.allow_other {
        // Others see it, so the kernel must enforce the snapshot's modes.
        options.push(MountOption::DefaultPermissions);
        config.acl = fuser::SessionACL::All;
    }
    config.mount_options = options;
    config.n_threads = Some(opts.threads.max(1));
    let io = |e: std::io::Error| Error::Io { path: mountpoint.to_path_buf(), err: e };
    let sink = vfs.sink_handle();
    let session = fuser::spawn_mount(Fs { vfs, log: std::sync::Mutex::new(log) }, mountpoint, &config).map_err(io)?;
    ready();
    // Small files loaded ahead of a reader go into the kernel's page cache of their
    // inode (FUSE_NOTIFY_STORE): reading them then needs no READ request. An inode the
    // kernel has dropped meanwhile is refused (ENOENT) and read as usual.
    let notifier = session.notifier();
    let _ = sink.set(Box::new(move |ino, data| {
        let _ = notifier.store(INodeNo(ino), 0, data);
    }));
    while !session.guard.is_finished() {
        if stop.load(Ordering::Relaxed) {
            return match session.umount_and_join() {
                // Files are still open in the mount: detach it now (it leaves the
                // namespace; those files fail from here on) rather than leave a dead
                // mount behind when this process ends.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    eprintln!("cairn mount: {} is busy (open files); detaching it", mountpoint.display());
                    crate::sys::detach_mount(mountpoint).map_err(io)
                }
                r => r.map_err(io),
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    session.join().map_err(io)
}
