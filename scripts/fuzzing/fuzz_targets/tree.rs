//! Tree nodes (the plaintext of tree blobs). A node that decodes must encode back to the
//! same bytes.
#![no_main]
use cairn::format::tree;
use cairn::id::BlobId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = BlobId(*blake3::hash(data).as_bytes());
    if let Ok(node) = tree::decode(data, &id) {
        assert_eq!(tree::encode(&node), data, "tree node does not round-trip");
    }
});
