//! A pack's header plaintext (the records, as they are once the sealed header is opened)
//! against the length of the blob area, which the first 8 bytes give. Offsets must
//! follow from the lengths, and the records must encode back to the same bytes.
#![no_main]
use cairn::format::pack::{decode_header, encode_header};
use cairn::format::HEADER_LEN;
use cairn::id::FileId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let blobs_len = u64::from_le_bytes(data[..8].try_into().unwrap());
    let plain = &data[8..];
    let id = FileId::of(data);
    if let Ok(blobs) = decode_header(plain, &id, blobs_len) {
        let mut at = HEADER_LEN as u64;
        for (b, off) in &blobs {
            assert_eq!(*off, at, "offsets do not follow the lengths");
            at += b.stored_len as u64;
        }
        assert_eq!(at, HEADER_LEN as u64 + blobs_len);
        let recs: Vec<_> = blobs.iter().map(|(b, _)| *b).collect();
        assert_eq!(encode_header(&recs), plain, "pack header does not round-trip");
    }
});
