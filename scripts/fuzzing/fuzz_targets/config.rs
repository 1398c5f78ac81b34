//! The config file: its 9-byte file header, then the payload as it is after the seal is
//! opened (a fuzzer without the key cannot get past the seal; `repo` covers the seal).
//! Every payload that decodes must encode back to the same bytes.
#![no_main]
use cairn::format::config::Config;
use cairn::format::FileKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = FileKind::Config.check_header(data, &"config") else { return };
    if let Ok(c) = Config::decode(payload) {
        assert_eq!(c.encode(), payload, "config does not round-trip");
    }
});
