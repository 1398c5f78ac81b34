//! Whole pack files read through `Repository::read_pack_header`: the file header, the
//! trailer and the header length against the file's length, the sealed header, then the
//! records against the blob area, and (when it all holds) every blob streamed and opened
//! as `check --read-data` does.
//!
//! Input: a mode byte. Mode bit 0 clear: the rest is the pack file as is (the seeds are
//! the fixture's real packs, whose sealed parts open with the fixture's key). Bit 0 set:
//! a u32 length P, then the file up to its sealed header, then P bytes of header
//! plaintext, which the target seals with the repository's key, so mutations of the
//! records reach the decoder; the trailer is the sealed length plus `(mode >> 2) - 32`.
#![no_main]
use std::sync::OnceLock;

use cairn::format::FileKind;
use cairn::id::FileId;
use cairn::repo::Repository;
use cairn_fuzz::open_fixture_copy;
use libfuzzer_sys::fuzz_target;

fn repo() -> &'static (tempfile::TempDir, Repository) {
    static REPO: OnceLock<(tempfile::TempDir, Repository)> = OnceLock::new();
    REPO.get_or_init(|| open_fixture_copy(2))
}

fn build(data: &[u8], repo: &Repository) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    if mode & 1 == 0 {
        return Some(rest.to_vec());
    }
    if rest.len() < 4 {
        return None;
    }
    let p = (u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize).min(rest.len() - 4);
    let body = &rest[4..];
    let (prefix, plain) = body.split_at(body.len() - p);
    let sealed = repo.keys().seal(&FileKind::Pack.header(), plain);
    let trailer = (sealed.len() as i64 + (mode >> 2) as i64 - 32).clamp(0, u32::MAX as i64) as u32;
    let mut file = prefix.to_vec();
    file.extend_from_slice(&sealed);
    file.extend_from_slice(&trailer.to_le_bytes());
    Some(file)
}

fuzz_target!(|data: &[u8]| {
    let (_dir, repo) = repo();
    let Some(file) = build(data, repo) else { return };
    let id = FileId::of(&file);
    let path = repo.pack_path(&id);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &file).unwrap();
    if let Ok(h) = repo.read_pack_header(&id) {
        let mut end = cairn::format::HEADER_LEN as u64;
        for (b, off) in &h.blobs {
            assert_eq!(*off, end, "blob offsets do not follow the lengths");
            end += b.stored_len as u64;
        }
        assert!(end <= file.len() as u64, "blobs reach past the file");
        let mut plain = Vec::new();
        let streamed = repo.stream_pack(&h, &mut |b, loc, sealed| {
            if repo.open_blob_into(&b.id, b.kind, loc, sealed, &mut plain).is_ok()
                && b.kind == cairn::format::BlobKind::Tree
            {
                let _ = cairn::format::tree::decode(&plain, &b.id);
            }
            Ok(())
        });
        if let Ok(matches) = streamed {
            assert!(matches, "a pack named by its hash must hash to its name");
        }
    }
    let _ = std::fs::remove_file(&path);
});
