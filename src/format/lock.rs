//! Lock files (docs/format.md, "Locks"): who holds the repository, sealed under the
//! master key so nobody without the key can forge or read one.

use super::{Put, Reader};
use crate::error::Result;
use crate::id::FileId;

/// A decoded lock file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    /// When it was written (taken or last refreshed), Unix nanoseconds.
    pub time_ns: i64,
    /// Exclusive (prune, `repair index`) or shared (backup, restore, check).
    pub exclusive: bool,
    /// Process id of the holder.
    pub pid: u32,
    /// The holder's machine (8 hex digits of a hash of its host name and machine id), to tell
    /// whether `pid` can be checked here.
    pub machine: Vec<u8>,
    /// Host name of the holder (for messages).
    pub host: String,
    /// User name of the holder (for messages).
    pub user: String,
    /// The command holding it, e.g. `backup` (for messages).
    pub command: String,
}

impl LockInfo {
    /// Encode the plaintext payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64 + self.host.len() + self.user.len() + self.command.len());
        v.i64(self.time_ns);
        v.u8(self.exclusive as u8);
        v.u32(self.pid);
        v.bytes8(&self.machine);
        v.bytes16(self.host.as_bytes());
        v.bytes16(self.user.as_bytes());
        v.bytes16(self.command.as_bytes());
        v
    }

    /// Decode the plaintext payload of lock file `id`.
    pub fn decode(bytes: &[u8], id: &FileId) -> Result<LockInfo> {
        let mut r = Reader::new(bytes, "lock", id);
        let time_ns = r.i64()?;
        let exclusive = match r.u8()? {
            0 => false,
            1 => true,
            x => return Err(r.err(format!("bad exclusive flag {x}"))),
        };
        let pid = r.u32()?;
        let machine = r.bytes8()?.to_vec();
        let host = r.str16()?;
        let user = r.str16()?;
        let command = r.str16()?;
        r.finish()?;
        Ok(LockInfo { time_ns, exclusive, pid, machine, host, user, command })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip(t in any::<i64>(), x in any::<bool>(), pid in any::<u32>(), m in proptest::collection::vec(any::<u8>(), 0..8), host in ".{0,20}", cmd in "[a-z ]{0,12}") {
            let l = LockInfo { time_ns: t, exclusive: x, pid, machine: m, host, user: "u".into(), command: cmd };
            prop_assert_eq!(LockInfo::decode(&l.encode(), &FileId::default()).unwrap(), l.clone());
            // Every strict prefix and any byte more is refused, not misread.
            let b = l.encode();
            for n in 0..b.len() {
                prop_assert!(LockInfo::decode(&b[..n], &FileId::default()).is_err());
            }
            let mut longer = b.clone();
            longer.push(0);
            prop_assert!(LockInfo::decode(&longer, &FileId::default()).is_err());
        }
    }
}
