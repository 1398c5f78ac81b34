//! Snapshots: the file header (its version byte chooses the layout), then the payload as
//! it is once the seal is opened. A version-2 payload must encode back to the same bytes;
//! a version-1 one to the same bytes plus the xattr byte version 2 adds.
#![no_main]
use cairn::format::snapshot::Snapshot;
use cairn::format::FileKind;
use cairn::id::FileId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = FileId::of(data);
    let Ok(payload) = FileKind::Snapshot.check_header(data, &id) else { return };
    let version = data[8];
    if let Ok(s) = Snapshot::decode(payload, version, &id) {
        let enc = s.encode();
        match version {
            1 => assert_eq!(&enc[..enc.len() - 1], payload, "v1 snapshot does not round-trip"),
            _ => assert_eq!(enc, payload, "snapshot does not round-trip"),
        }
        let _ = s.summary.files();
    }
});
