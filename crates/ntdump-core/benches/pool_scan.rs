//! Pool tag scan (criterion): `pool::scan::scan_pages` over every mapped kernel page against the time
//! to touch every one of those bytes once (`pool::scan::touch_pages`, same pages, same threads).
//!
//! Input: a 64-bit full dump written into the temp dir (`$TMPDIR/ntdump-bench-pool-rs-<MiB>m.dmp`,
//! reused while its header matches), `NTDUMP_BENCH_MIB` MiB of RAM (default 512). Memory from PFN 0x200
//! is mapped at kernel VA 0xFFFFC08000000000 with 2 MiB pages (PML4 at PFN 0x10, PDPT 0x11, PDs from
//! 0x12) and filled with pool pages: chains of x64 POOL_HEADERs (16-byte units, Vista+ PoolType
//! encoding, build 7601), 16 tags, block sizes from a xorshift stream seeded by the PFN.
//!
//! Run: `cargo bench -p ntdump-core --bench pool_scan` (`-- --quick` for a smoke run); after the
//! criterion groups it prints an interleaved touch / scan comparison (min of `NTDUMP_BENCH_ROUNDS`).
//! The Python side-by-side (Volatility 3) is `benchmarks/pool_scan.py`; numbers are in docs/pool.md.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ntdump_core::pool::scan::{kernel_pages, scan_pages, touch_pages, PageRef};
use ntdump_core::pool::{ScanOptions, TagPattern};
use ntdump_core::Dump;

const PAGE: usize = 4096;
const VA_BASE: u64 = 0xFFFF_C080_0000_0000;
const PML4: u64 = 0x10;
const PDPT: u64 = 0x11;
const PD0: u64 = 0x12;
const DATA_PFN: u64 = 0x200;
const STAMP: &[u8; 16] = b"ntdump-poolbench";
const TAGS: [&[u8; 4]; 16] = [
    b"Thre", b"File", b"Proc", b"MmCm", b"None", b"Ntfx", b"CM31", b"Irp ", b"Even", b"ObNm",
    b"Toke", b"Key ", b"Vad ", b"MmSt", b"Sema", b"Muta",
];

fn put(out: &mut [u8], off: usize, v: u64) {
    out[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// The bytes of page `pfn` in a dump of `pages` pages.
fn page_bytes(pfn: u64, pages: u64, out: &mut [u8; PAGE]) {
    out.fill(0);
    let n2m = (pages - DATA_PFN) / 512;
    if pfn == PML4 {
        put(
            out,
            8 * ((VA_BASE >> 39) & 0x1FF) as usize,
            (PDPT << 12) | 0x63,
        );
    } else if pfn == PDPT {
        for k in 0..n2m.div_ceil(512) {
            let va = VA_BASE + (k << 30);
            put(
                out,
                8 * ((va >> 30) & 0x1FF) as usize,
                ((PD0 + k) << 12) | 0x63,
            );
        }
    } else if (PD0..PD0 + n2m.div_ceil(512)).contains(&pfn) {
        for i in 0..512 {
            let idx = (pfn - PD0) * 512 + i;
            if idx < n2m {
                put(out, 8 * i as usize, ((DATA_PFN + 512 * idx) << 12) | 0xE3);
            }
        }
    } else if pfn >= DATA_PFN {
        let mut x = pfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut off, mut prev) = (0usize, 0usize);
        while off < PAGE {
            let mut size = (2 + (next() % 63) as usize) * 16;
            if off + size > PAGE || PAGE - (off + size) < 32 {
                size = PAGE - off;
            }
            let r = next();
            let ty = if r % 7 == 0 {
                0
            } else {
                2 | (r >> 8 & 1) as u8
            };
            out[off] = (prev / 16) as u8;
            out[off + 2] = (size / 16) as u8;
            out[off + 3] = ty;
            out[off + 4..off + 8].copy_from_slice(TAGS[(r >> 16) as usize % 16]);
            for (j, b) in out[off + 16..off + size].iter_mut().enumerate() {
                *b = if j % 16 == 4 {
                    0
                } else {
                    (r >> (j % 56)) as u8
                };
            }
            prev = size;
            off += size;
        }
    }
}

fn header(runs: &[(u64, u64)], size: u64) -> Vec<u8> {
    let mut h = vec![0u8; 0x2000];
    for c in h.chunks_mut(4) {
        c.copy_from_slice(b"PAGE");
    }
    let p32 = |h: &mut Vec<u8>, o: usize, v: u32| h[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let p64 = |h: &mut Vec<u8>, o: usize, v: u64| h[o..o + 8].copy_from_slice(&v.to_le_bytes());
    h[4..8].copy_from_slice(b"DU64");
    p32(&mut h, 0x8, 0xF);
    p32(&mut h, 0xC, 7601);
    p64(&mut h, 0x10, PML4 << 12);
    p64(&mut h, 0x80, 0); // no KDBG
    p32(&mut h, 0x30, 0x8664);
    p32(&mut h, 0x34, 2);
    p32(&mut h, 0x38, 0x161);
    p32(&mut h, 0x88, runs.len() as u32);
    p64(&mut h, 0x90, runs.iter().map(|r| r.1).sum());
    for (i, &(b, c)) in runs.iter().enumerate() {
        p64(&mut h, 0x98 + 16 * i, b);
        p64(&mut h, 0xA0 + 16 * i, c);
    }
    p32(&mut h, 0xF98, 1);
    p64(&mut h, 0xFA0, size);
    h[0xFB0..0xFC0].copy_from_slice(STAMP);
    h
}

fn write_dump(mib: u64) -> PathBuf {
    let path = std::env::temp_dir().join(format!("ntdump-bench-pool-rs-{mib}m.dmp"));
    let pages = mib << 8;
    let runs = [(0x1u64, 0x9Fu64), (0x100, pages - 0x100)];
    let size = 0x2000 + runs.iter().map(|r| r.1).sum::<u64>() * PAGE as u64;
    let hdr = header(&runs, size);
    let ok = || -> std::io::Result<bool> {
        let mut head = vec![0u8; 0x2000];
        let mut f = File::open(&path)?;
        f.read_exact(&mut head)?;
        Ok(f.metadata()?.len() == size && head == hdr)
    };
    if ok().unwrap_or(false) {
        return path;
    }
    eprintln!("writing {} ({mib} MiB of RAM)…", path.display());
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp).expect("create"));
    w.write_all(&hdr).expect("write");
    let mut page = [0u8; PAGE];
    for &(b, c) in &runs {
        for pfn in b..b + c {
            page_bytes(pfn, pages, &mut page);
            w.write_all(&page).expect("write");
        }
    }
    w.into_inner().expect("flush").sync_all().ok();
    fs::rename(&tmp, &path).expect("rename");
    path
}

/// Alternate touch and scan rounds (one tag, every tag) and print the fastest of each and their
/// ratios: on a machine with other load or drifting memory speed, the minimum of interleaved rounds
/// is the fairest comparison. Rounds: `NTDUMP_BENCH_ROUNDS` (default 15).
fn interleaved(d: &Dump, pages: &[PageRef], one: &ScanOptions, all: &ScanOptions) {
    let rounds: usize = std::env::var("NTDUMP_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let mut min = [f64::MAX; 3];
    for _ in 0..rounds {
        let t = Instant::now();
        black_box(touch_pages(d, pages));
        min[0] = min[0].min(t.elapsed().as_secs_f64());
        for (i, o) in [(1, one), (2, all)] {
            let t = Instant::now();
            black_box(scan_pages(d, pages, o).len());
            min[i] = min[i].min(t.elapsed().as_secs_f64());
        }
    }
    let gib = (pages.len() * PAGE) as f64 / (1u64 << 30) as f64;
    eprintln!(
        "interleaved: touch {:.1} ms ({:.1} GiB/s), one tag {:.1} ms ({:.2}x touch), every tag \
         {:.1} ms ({:.2}x touch) (min of {rounds})",
        min[0] * 1e3,
        gib / min[0],
        min[1] * 1e3,
        min[1] / min[0],
        min[2] * 1e3,
        min[2] / min[0],
    );
}

fn benches(c: &mut Criterion) {
    let mib: u64 = std::env::var("NTDUMP_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let d = Dump::open(write_dump(mib)).expect("open bench dump");
    let (pages, _) = kernel_pages(&d, None, usize::MAX).expect("list pages");
    assert!(!pages.is_empty());
    let bytes = (pages.len() * PAGE) as u64;
    let mut g = c.benchmark_group("pool_scan");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("touch", |b| b.iter(|| black_box(touch_pages(&d, &pages))));
    let all = ScanOptions::default();
    g.bench_function("scan_all_tags", |b| {
        b.iter(|| black_box(scan_pages(&d, &pages, &all).len()))
    });
    let one = ScanOptions {
        tags: Some(vec![TagPattern::parse(b"Thre").expect("tag")]),
        ..ScanOptions::default()
    };
    g.bench_function("scan_one_tag", |b| {
        b.iter(|| black_box(scan_pages(&d, &pages, &one).len()))
    });
    g.finish();
    interleaved(&d, &pages, &one, &all);
}

criterion_group!(pool_scan, benches);
criterion_main!(pool_scan);
