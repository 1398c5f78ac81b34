//! A lock file: its 9-byte file header, then the payload as it is after the seal is
//! opened (the seal itself is covered by `repo`). Every payload that decodes must encode
//! back to the same bytes, and deciding whether it is stale must not panic.
#![no_main]
use cairn::format::lock::LockInfo;
use cairn::format::FileKind;
use cairn::id::FileId;
use cairn::repo::Repository;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = FileId::default();
    let Ok(payload) = FileKind::Lock.check_header(data, &id) else { return };
    if let Ok(l) = LockInfo::decode(payload, &id) {
        assert_eq!(l.encode(), payload, "lock file does not round-trip");
        let _ = Repository::lock_is_stale(&l, std::time::Duration::from_secs(1800));
    }
});
