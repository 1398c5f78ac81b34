//! Deterministic benchmark corpus for scripts/bench: `generate` writes a tree of many
//! small source-like files and a few large ones, `change` applies a small change set.
//! Everything is a function of the seed and the size parameters, so two machines (or two
//! tools on one machine) see byte-identical data.
//!
//! ```text
//! cairn-corpus generate DIR [--seed S] [--files N] [--large-mib M] [--tiny] [--xattrs P] [--per-dir K]
//! cairn-corpus change DIR [--seed S]
//! ```
//! Small files: log-normal sizes (median 4 KiB, 2% empty, capped at 2 MiB; `--tiny`:
//! median 400 B, for the memory-scaling series), ~30 per directory in a 3-level tree
//! (`--per-dir K`: K per directory in a 5-level tree, a directory-heavy tree like /usr);
//! 62% text-like (compressible), 28% random, 10% copies of earlier files. With
//! `--xattrs P`, P per mille of them carry a `user.xdg.origin.url` attribute, as files a
//! browser downloaded do on Linux (real home directories have a few such `user.` xattrs,
//! and rarely ACLs or SELinux labels outside Fedora-like systems).
//! Large files (M MiB in total): random, text log, a VM-image-like file (zero runs,
//! repeated blocks), and two files sharing most content at shifted offsets.
//! Change set: 1% of small files rewritten, 0.3% appended to, 0.3% deleted, 0.3% added,
//! 4 KiB inserted in the middle of the text log.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// splitmix64: tiny, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEECE66D)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        // Box-Muller.
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    fn fill(&mut self, out: &mut Vec<u8>, n: usize) {
        let start = out.len();
        out.reserve(n);
        while out.len() < start + n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(start + n);
    }
}

/// Text-like bytes from a fixed vocabulary: compresses about 3x with zstd, like source.
struct Text {
    words: Vec<Vec<u8>>,
}

impl Text {
    fn new() -> Text {
        let mut r = Rng::new(42);
        let words = (0..4096)
            .map(|_| {
                let len = 2 + r.below(9) as usize;
                (0..len).map(|_| b'a' + r.below(26) as u8).collect()
            })
            .collect();
        Text { words }
    }
    fn fill(&self, r: &mut Rng, out: &mut Vec<u8>, n: usize) {
        let start = out.len();
        let mut col = 0;
        while out.len() < start + n {
            // Zipf-ish: small indices much more often.
            let i = ((r.unit().powi(3)) * self.words.len() as f64) as usize;
            out.extend_from_slice(&self.words[i.min(self.words.len() - 1)]);
            col += 1;
            match r.below(12) {
                0 => out.extend_from_slice(b";\n    "),
                1 => out.extend_from_slice(b"(x, y) {\n"),
                _ if col % 9 == 0 => out.push(b'\n'),
                _ => out.push(b' '),
            }
        }
        out.truncate(start + n);
    }
}

struct Opts {
    dir: PathBuf,
    seed: u64,
    files: u64,
    large_mib: u64,
    tiny: bool,
    xattrs_per_mille: u64,
    /// Small files per directory: 30 in a 3-level tree, or another number in a 5-level one.
    per_dir: u64,
}

fn small_size(r: &mut Rng, tiny: bool) -> usize {
    if r.below(50) == 0 {
        return 0;
    }
    let median: f64 = if tiny { 400.0 } else { 4096.0 };
    let s = (median.ln() + 1.3 * r.normal()).exp();
    (s as usize).min(if tiny { 64 << 10 } else { 2 << 20 })
}

fn small_path(o: &Opts, i: u64) -> PathBuf {
    let dir = &o.dir;
    if o.per_dir != 30 {
        let d = i / o.per_dir.max(1);
        return dir.join(format!(
            "src/a{:x}/b{:x}/c{:x}/d{:x}/f{i:07}.{}",
            d / 4096,
            (d / 256) % 16,
            (d / 16) % 16,
            d % 16,
            ["rs", "c", "txt", "json", "bin"][(i % 5) as usize]
        ));
    }
    let d = i / 30;
    dir.join(format!(
        "src/m{:02x}/p{:x}/q{:x}/f{i:07}.{}",
        d / 256,
        (d / 16) % 16,
        d % 16,
        ["rs", "c", "txt", "json", "bin"][(i % 5) as usize]
    ))
}

/// Content of small file `i` (version `v`: 0 = original, > 0 = rewritten by a change).
fn small_content(o: &Opts, text: &Text, i: u64, v: u64, out: &mut Vec<u8>) {
    out.clear();
    let mut r = Rng::new(o.seed ^ i.wrapping_mul(0x100000001B3) ^ (v << 56));
    let kind = r.below(100);
    if kind >= 90 && i > 0 && v == 0 {
        // A copy of an earlier file (duplicates across the tree).
        let j = r.below(i);
        return small_content(o, text, j, 0, out);
    }
    let n = small_size(&mut r, o.tiny);
    if kind < 62 {
        text.fill(&mut r, out, n)
    } else {
        r.fill(out, n)
    }
}

fn write_file(p: &Path, data: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// Write `total` bytes produced in 1 MiB pieces by `piece`.
fn write_large(p: &Path, total: u64, mut piece: impl FnMut(u64, &mut Vec<u8>)) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut w = BufWriter::with_capacity(1 << 20, fs::File::create(p).unwrap());
    let mut buf = Vec::with_capacity(1 << 20);
    let mut done = 0;
    let mut k = 0;
    while done < total {
        buf.clear();
        piece(k, &mut buf);
        let n = buf.len().min((total - done) as usize);
        w.write_all(&buf[..n]).unwrap();
        done += n as u64;
        k += 1;
    }
    w.flush().unwrap();
}

fn generate(o: &Opts) {
    let text = Text::new();
    let mut buf = Vec::new();
    let mut x = Rng::new(o.seed ^ 6);
    for i in 0..o.files {
        small_content(o, &text, i, 0, &mut buf);
        let p = small_path(o, i);
        write_file(&p, &buf);
        if x.below(1000) < o.xattrs_per_mille {
            let url = format!("https://downloads.example.org/{:x}/f{i}", x.next());
            cairn::sys::set_xattr(&p, b"user.xdg.origin.url", url.as_bytes()).expect("setting a user. xattr");
        }
    }
    if o.large_mib == 0 {
        return;
    }
    let unit = (o.large_mib << 20) / 8;
    let big = o.dir.join("big");
    let mut r = Rng::new(o.seed ^ 1);
    write_large(&big.join("random.bin"), 2 * unit, |_, b| r.fill(b, 1 << 20));
    let mut r = Rng::new(o.seed ^ 2);
    write_large(&big.join("text.log"), 2 * unit, |_, b| text.fill(&mut r, b, 1 << 20));
    // VM image: 64 KiB blocks, 40% zeros, 20% repeats of an earlier block, the rest data.
    let mut r = Rng::new(o.seed ^ 3);
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    write_large(&big.join("vm.img"), 2 * unit, |_, b| {
        for _ in 0..16 {
            match r.below(10) {
                0..=3 => b.resize(b.len() + (64 << 10), 0),
                4 | 5 if !blocks.is_empty() => {
                    let i = r.below(blocks.len() as u64) as usize;
                    b.extend_from_slice(&blocks[i]);
                }
                k => {
                    let mut blk = Vec::with_capacity(64 << 10);
                    if k % 2 == 0 {
                        text.fill(&mut r, &mut blk, 64 << 10)
                    } else {
                        r.fill(&mut blk, 64 << 10)
                    }
                    if blocks.len() < 256 {
                        blocks.push(blk.clone());
                    }
                    b.extend_from_slice(&blk);
                }
            }
        }
    });
    // Two files sharing most content at shifted offsets: b = a with small insertions.
    let seed_a = o.seed ^ 4;
    let mut r = Rng::new(seed_a);
    write_large(&big.join("shifted-a.bin"), unit, |_, b| r.fill(b, 1 << 20));
    let mut r = Rng::new(seed_a);
    let mut ins = Rng::new(o.seed ^ 5);
    write_large(&big.join("shifted-b.bin"), unit, |k, b| {
        if k % 8 == 0 {
            let n = 1 + ins.below(3000) as usize;
            ins.fill(b, n);
        }
        r.fill(b, 1 << 20);
    });
}

fn change(o: &Opts) {
    let text = Text::new();
    let mut r = Rng::new(o.seed ^ 0x00C4_A96E);
    let mut buf = Vec::new();
    for i in 0..o.files {
        let p = small_path(o, i);
        match r.below(1000) {
            0..=9 => {
                small_content(o, &text, i, 1, &mut buf);
                write_file(&p, &buf);
            }
            10..=12 => {
                let mut extra = Vec::new();
                let n = 1024 + r.below(100 << 10) as usize;
                text.fill(&mut r, &mut extra, n);
                // Created if an earlier change deleted it (changes are applied day after day).
                let mut f = fs::OpenOptions::new().append(true).create(true).open(&p).unwrap();
                f.write_all(&extra).unwrap();
            }
            13..=15 => {
                let _ = fs::remove_file(&p);
            }
            16..=18 => {
                small_content(o, &text, i, 2, &mut buf);
                write_file(&p.with_extension("new"), &buf);
            }
            _ => {}
        }
    }
    let log = o.dir.join("big/text.log");
    if let Ok(mut data) = fs::read(&log) {
        let mid = data.len() / 2;
        let mut ins = Vec::new();
        text.fill(&mut r, &mut ins, 4096);
        data.splice(mid..mid, ins);
        fs::write(&log, data).unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: cairn-corpus generate|change DIR [--seed S] [--files N] [--large-mib M] [--tiny] [--xattrs P] [--per-dir K]";
    if args.len() < 3 {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let mut o = Opts {
        dir: PathBuf::from(&args[2]),
        seed: 1,
        files: 10_000,
        large_mib: 256,
        tiny: false,
        xattrs_per_mille: 0,
        per_dir: 30,
    };
    let mut i = 3;
    while i < args.len() {
        let val = || args.get(i + 1).and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| panic!("{usage}"));
        match args[i].as_str() {
            "--seed" => o.seed = val(),
            "--files" => o.files = val(),
            "--large-mib" => o.large_mib = val(),
            "--xattrs" => o.xattrs_per_mille = val(),
            "--per-dir" => o.per_dir = val(),
            "--tiny" => {
                o.tiny = true;
                i -= 1;
            }
            _ => panic!("{usage}"),
        }
        i += 2;
    }
    match args[1].as_str() {
        "generate" => generate(&o),
        "change" => change(&o),
        _ => panic!("{usage}"),
    }
}
