//! Key files, whole (they are not sealed as a whole; only the wrapped key is). A file
//! that decodes must encode back to the same bytes; its KDF parameters are validated as
//! a reader does before deriving (the derivation itself is left to `repo`).
#![no_main]
use cairn::format::key::KeyFile;
use cairn::id::FileId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = FileId::of(data);
    if let Ok(k) = KeyFile::decode(data, &id) {
        assert_eq!(k.encode(), data, "key file does not round-trip");
        let _ = k.kdf.validate();
    }
});
