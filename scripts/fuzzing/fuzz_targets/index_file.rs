//! Index files: the file header, then the payload as it is once the seal is opened.
//! Writers need not list packs canonically, so the check is decode(encode(x)) == x.
#![no_main]
use cairn::format::index;
use cairn::format::FileKind;
use cairn::id::FileId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = FileId::of(data);
    let Ok(payload) = FileKind::Index.check_header(data, &id) else { return };
    if let Ok(entries) = index::decode(payload, &id) {
        let mut again = entries.clone();
        let enc = index::encode(&mut again);
        assert_eq!(index::decode(&enc, &id).expect("re-encoded index decodes"), entries);
    }
});
