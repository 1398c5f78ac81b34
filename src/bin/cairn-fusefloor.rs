//! The floor a FUSE filesystem's listings meet on this machine: a read-only mount of a
//! local directory tree's names and attributes, all held in RAM, answering LOOKUP,
//! GETATTR and READDIRPLUS straight from memory, with the protocol choices cairn's mount
//! makes (READDIRPLUS, no OPENDIR, no xattrs, attributes cached for a year, four
//! threads). `ls -lR` through it costs what the kernel and its round trips cost, with no
//! work behind each request: scripts/bench lists the same trees through it beside cairn's
//! mount (docs/benchmarks.md). Files read as empty; it is a measuring tool, not a
//! filesystem to use. Memory: every name and attribute of the tree (~200 B per entry).
//!
//! Usage: cairn-fusefloor SOURCE MOUNTPOINT (serves until unmounted).

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, KernelConfig, MountOption, OpenFlags,
    ReplyAttr, ReplyDirectory, ReplyDirectoryPlus, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

const TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// One inode: its attributes and, for a directory, its entries in name order.
struct Node {
    attr: FileAttr,
    parent: u64,
    children: Vec<(OsString, u64)>,
}

struct Floor {
    /// Inode `i` is `nodes[i - 1]`.
    nodes: Vec<Node>,
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::new(s, nsecs as u32),
        Err(_) => UNIX_EPOCH,
    }
}

fn attr_of(ino: u64, m: &std::fs::Metadata) -> FileAttr {
    let t = m.file_type();
    let kind = if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else if t.is_fifo() {
        FileType::NamedPipe
    } else if t.is_char_device() {
        FileType::CharDevice
    } else if t.is_block_device() {
        FileType::BlockDevice
    } else if t.is_socket() {
        FileType::Socket
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(ino),
        size: m.size(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: time(m.mtime(), m.mtime_nsec()),
        kind,
        perm: (m.mode() & 0o7777) as u16,
        nlink: 1,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: 1 << 20,
        flags: 0,
    }
}

impl Floor {
    /// Read the whole tree under `root` (names and attributes; no file contents).
    fn load(root: &Path) -> std::io::Result<Floor> {
        let mut f = Floor { nodes: Vec::new() };
        let m = std::fs::symlink_metadata(root)?;
        f.nodes.push(Node { attr: attr_of(1, &m), parent: 1, children: Vec::new() });
        let mut stack = vec![(root.to_path_buf(), 1u64)];
        while let Some((dir, ino)) = stack.pop() {
            let mut names: Vec<OsString> =
                std::fs::read_dir(&dir)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
            names.sort();
            for name in names {
                let path = dir.join(&name);
                let m = std::fs::symlink_metadata(&path)?;
                let child = f.nodes.len() as u64 + 1;
                f.nodes.push(Node { attr: attr_of(child, &m), parent: ino, children: Vec::new() });
                f.nodes[ino as usize - 1].children.push((name, child));
                if m.is_dir() {
                    stack.push((path, child));
                }
            }
        }
        Ok(f)
    }

    fn node(&self, ino: INodeNo) -> Option<&Node> {
        self.nodes.get((ino.0 as usize).checked_sub(1)?)
    }
}

impl Filesystem for Floor {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        cairn::mount::add_capabilities(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.node(parent).and_then(|p| {
            let i = p.children.binary_search_by(|(n, _)| n.as_os_str().cmp(name)).ok()?;
            self.node(INodeNo(p.children[i].1))
        });
        match found {
            Some(n) => reply.entry(&TTL, &n.attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Some(n) => reply.attr(&TTL, &n.attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS)
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS)
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(n) = self.node(ino) else { return reply.error(Errno::ENOENT) };
        for (i, (name, child)) in self.entries(ino.0, n).enumerate().skip(offset as usize) {
            let kind = self.nodes[child as usize - 1].attr.kind;
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let Some(n) = self.node(ino) else { return reply.error(Errno::ENOENT) };
        for (i, (name, child)) in self.entries(ino.0, n).enumerate().skip(offset as usize) {
            let attr = &self.nodes[child as usize - 1].attr;
            if reply.add(INodeNo(child), i as u64 + 1, name, &TTL, attr, Generation(0)) {
                break;
            }
        }
        reply.ok()
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS)
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS)
    }
}

impl Floor {
    /// "." and "..", then the directory's entries, with their inodes.
    fn entries<'a>(&'a self, ino: u64, n: &'a Node) -> impl Iterator<Item = (&'a OsStr, u64)> + 'a {
        [(OsStr::new("."), ino), (OsStr::new(".."), n.parent)]
            .into_iter()
            .chain(n.children.iter().map(|(name, c)| (name.as_os_str(), *c)))
    }
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let [source, mountpoint] = &args[..] else {
        eprintln!("usage: cairn-fusefloor SOURCE MOUNTPOINT");
        std::process::exit(2);
    };
    let floor = match Floor::load(Path::new(source)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cairn-fusefloor: reading {}: {e}", Path::new(source).display());
            std::process::exit(1);
        }
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![MountOption::FSName("cairn-fusefloor".into()), MountOption::RO];
    config.n_threads = Some(4);
    if let Err(e) = fuser::mount(floor, Path::new(mountpoint), &config) {
        eprintln!("cairn-fusefloor: mounting {}: {e}", Path::new(mountpoint).display());
        std::process::exit(1);
    }
}
