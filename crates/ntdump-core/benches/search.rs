//! Search benchmarks (criterion): a dword search over ~1 GiB of kernel VA against the time to touch every
//! byte of the same slices once (a sum of their words, on all cores). Goal (DESIGN.md): search ≤ 1.5 × touch.
//!
//! Input: a 64-bit full dump (DumpType 1) written by [`write_dump`] into the temp dir
//! (`$TMPDIR/ntdump-bench-search-<MiB>m.dmp`), reused when the header matches. One run of RAM from PFN 1;
//! page tables at PFN 0x10..; data pages after them, filled with a xorshift stream (no zero pages, so the
//! page cache holds real data). Two views of the same data frames, 4 KiB pages each:
//! * `contiguous`: VA [`VA_A`] + i·4 KiB → data page i, so the search sees one slice of the file;
//! * `scattered`: VA [`VA_B`] + i·4 KiB → data page (i·ODD) mod N: no two VA-adjacent pages are adjacent
//!   in the file, so every page is its own slice and every page boundary is a seam.
//!
//! Size: `NTDUMP_BENCH_SEARCH_MIB` MiB of mapped data (default 1024). Run:
//! `cargo bench -p ntdump-core --bench search` (add `-- --quick` for a smoke run).

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{BufWriter, Read, Seek, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ntdump_core::search::{search, SearchOptions, Target, CHUNK_SIZE};
use ntdump_core::{Dump, Va};
use rayon::prelude::*;

const PAGE: u64 = 4096;
/// Kernel VA of the contiguous view.
const VA_A: u64 = 0xFFFF_F800_0000_0000;
/// Kernel VA of the scattered view (a different PML4 slot).
const VA_B: u64 = 0xFFFF_F880_0000_0000;
const PML4_PFN: u64 = 0x10;
const PDPT_A_PFN: u64 = 0x11;
const PDPT_B_PFN: u64 = 0x12;
/// Page directories start here: one per GiB per view.
const PD_PFN: u64 = 0x20;
/// Multiplier of the scattered view's permutation (odd, so a bijection mod a power of two).
const ODD: u64 = 0x9E37_79B9;
const STAMP: &[u8; 16] = b"ntdump-bench-s2\0";
/// The value searched for (`s -d … e0894d1f` of the founding story).
const NEEDLE: u32 = 0xE089_4D1F;

struct Layout {
    data_pages: u64,
    gib: u64,
}

impl Layout {
    fn new(mib: u64) -> Self {
        let data_pages = mib << 8;
        Layout {
            data_pages,
            gib: data_pages.div_ceil(1 << 18),
        }
    }
    fn pds(&self) -> u64 {
        2 * self.gib
    }
    fn pt_pfn(&self) -> u64 {
        PD_PFN + self.pds()
    }
    fn pts_per_view(&self) -> u64 {
        self.data_pages.div_ceil(512)
    }
    /// First data page (after the page tables, 2 MiB aligned).
    fn data_pfn(&self) -> u64 {
        (self.pt_pfn() + 2 * self.pts_per_view()).next_multiple_of(512)
    }
    fn total_pages(&self) -> u64 {
        self.data_pfn() - 1 + self.data_pages
    }
    /// Data page (index from 0) the scattered view maps at VA page `i`.
    fn scatter(&self, i: u64) -> u64 {
        (i.wrapping_mul(ODD).wrapping_add(12345)) & (self.data_pages - 1)
    }
}

fn page_bytes(l: &Layout, pfn: u64, out: &mut [u8; PAGE as usize]) {
    let entry = |out: &mut [u8; PAGE as usize], i: u64, v: u64| {
        out[i as usize * 8..i as usize * 8 + 8].copy_from_slice(&v.to_le_bytes())
    };
    const TABLE: u64 = 0x63;
    out.fill(0);
    let pts = l.pts_per_view();
    if pfn == PML4_PFN {
        entry(out, (VA_A >> 39) & 0x1FF, (PDPT_A_PFN << 12) | TABLE);
        entry(out, (VA_B >> 39) & 0x1FF, (PDPT_B_PFN << 12) | TABLE);
    } else if pfn == PDPT_A_PFN || pfn == PDPT_B_PFN {
        let view = pfn - PDPT_A_PFN;
        for g in 0..l.gib {
            entry(out, g, ((PD_PFN + view * l.gib + g) << 12) | TABLE);
        }
    } else if (PD_PFN..PD_PFN + l.pds()).contains(&pfn) {
        let view = (pfn - PD_PFN) / l.gib;
        let g = (pfn - PD_PFN) % l.gib;
        for i in 0..512 {
            let pt = g * 512 + i;
            if pt < pts {
                entry(out, i, ((l.pt_pfn() + view * pts + pt) << 12) | TABLE);
            }
        }
    } else if (l.pt_pfn()..l.pt_pfn() + 2 * pts).contains(&pfn) {
        let view = (pfn - l.pt_pfn()) / pts;
        let pt = (pfn - l.pt_pfn()) % pts;
        for i in 0..512 {
            let va_page = pt * 512 + i;
            if va_page < l.data_pages {
                let data = if view == 0 {
                    va_page
                } else {
                    l.scatter(va_page)
                };
                entry(out, i, ((l.data_pfn() + data) << 12) | TABLE);
            }
        }
    } else if pfn >= l.data_pfn() {
        let mut x = pfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for i in 0..512 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            entry(out, i, x);
        }
    }
}

fn header(l: &Layout, file_size: u64) -> Vec<u8> {
    let mut h = b"PAGE".repeat(0x2000 / 4);
    let put32 =
        |h: &mut [u8], off: usize, v: u32| h[off..off + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |h: &mut [u8], off: usize, v: u64| h[off..off + 8].copy_from_slice(&v.to_le_bytes());
    h[4..8].copy_from_slice(b"DU64");
    put32(&mut h, 0x8, 0xF);
    put32(&mut h, 0xC, 19041);
    put64(&mut h, 0x10, PML4_PFN << 12);
    put32(&mut h, 0x30, 0x8664);
    put32(&mut h, 0x34, 2);
    put32(&mut h, 0x38, 0x161);
    put32(&mut h, 0x88, 1);
    put64(&mut h, 0x90, l.total_pages());
    put64(&mut h, 0x98, 1);
    put64(&mut h, 0xA0, l.total_pages());
    put32(&mut h, 0xF98, 1);
    put64(&mut h, 0xFA0, file_size);
    h[0xFB0..0xFC0].copy_from_slice(STAMP);
    h
}

fn write_dump(mib: u64) -> PathBuf {
    let path = std::env::temp_dir().join(format!("ntdump-bench-search-{mib}m.dmp"));
    let l = Layout::new(mib);
    let size = 0x2000 + l.total_pages() * PAGE;
    let hdr = header(&l, size);
    let existing = || -> std::io::Result<bool> {
        let mut head = vec![0u8; 0x2000];
        let mut f = File::open(&path)?;
        f.read_exact(&mut head)?;
        Ok(f.metadata()?.len() == size && head == hdr)
    };
    if existing().unwrap_or(false) {
        return path;
    }
    eprintln!("writing {} ({size} bytes)…", path.display());
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp).expect("create bench dump"));
    w.write_all(&hdr).unwrap();
    let mut page = [0u8; PAGE as usize];
    for pfn in 1..=l.total_pages() {
        page_bytes(&l, pfn, &mut page);
        w.write_all(&page).unwrap();
    }
    let mut f = w.into_inner().unwrap();
    assert_eq!(f.stream_position().unwrap(), size);
    drop(f);
    fs::rename(&tmp, &path).expect("rename bench dump");
    path
}

/// The slices the search reads for `[va, va + len)`, page by page, joined where the file is contiguous.
fn slices(d: &Dump, va: u64, len: u64) -> Vec<&[u8]> {
    let file = d.file();
    let base = file.as_ptr() as usize;
    let mut out: Vec<(usize, usize)> = Vec::new();
    for p in (0..len).step_by(PAGE as usize) {
        let page = d.virt_page(Va(va + p)).expect("mapped");
        let off = page.as_ptr() as usize - base;
        match out.last_mut() {
            Some(last) if last.0 + last.1 == off => last.1 += PAGE as usize,
            _ => out.push((off, PAGE as usize)),
        }
    }
    out.into_iter().map(|(o, n)| &file[o..o + n]).collect()
}

/// Sum every byte of `slices` on rayon, in tasks of ≥ 1 MiB / ≤ 16 MiB (as the search splits its work).
fn touch(slices: &[&[u8]]) -> u64 {
    let mut tasks: Vec<Vec<&[u8]>> = Vec::new();
    let mut cur: Vec<&[u8]> = Vec::new();
    let mut n = 0usize;
    for s in slices {
        for c in s.chunks(CHUNK_SIZE) {
            cur.push(c);
            n += c.len();
            if n >= 1 << 20 {
                tasks.push(std::mem::take(&mut cur));
                n = 0;
            }
        }
    }
    tasks.push(cur);
    tasks
        .par_iter()
        .map(|t| t.iter().map(|s| sum(s)).fold(0u64, u64::wrapping_add))
        .reduce(|| 0, u64::wrapping_add)
}

/// Every byte of `s` read once: a wrapping sum of its little-endian u64 words (the tail as bytes). The
/// compiler vectorises this loop; a byte-by-byte sum into a u64 runs several times slower and would flatter
/// the search.
fn sum(s: &[u8]) -> u64 {
    let words = s.chunks_exact(8);
    let tail: u64 = words.remainder().iter().map(|&b| b as u64).sum();
    words
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
        .fold(tail, u64::wrapping_add)
}

/// Alternate touch and search rounds and print the fastest of each and their ratio: on a machine with
/// other load, the minimum of interleaved rounds is the fairest comparison. Rounds: `NTDUMP_BENCH_ROUNDS`
/// (default 15).
fn interleaved(
    d: &Dump,
    len: u64,
    contiguous: &[&[u8]],
    scattered: &[&[u8]],
    opts: &SearchOptions,
) {
    let rounds: usize = std::env::var("NTDUMP_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let needle = NEEDLE.to_le_bytes();
    for (name, slices, va) in [
        ("contiguous", contiguous, VA_A),
        ("scattered", scattered, VA_B),
    ] {
        let (mut touch_min, mut search_min) = (f64::MAX, f64::MAX);
        for _ in 0..rounds {
            let t = Instant::now();
            black_box(touch(slices));
            touch_min = touch_min.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            black_box(search(d, &[needle], Target::Virtual(&[(va, len)]), opts).unwrap());
            search_min = search_min.min(t.elapsed().as_secs_f64());
        }
        let gib = len as f64 / (1u64 << 30) as f64;
        eprintln!(
            "interleaved {name}: touch {:.1} ms ({:.2} GiB/s), search {:.1} ms ({:.2} GiB/s), \
             search/touch {:.2} (min of {rounds})",
            touch_min * 1e3,
            gib / touch_min,
            search_min * 1e3,
            gib / search_min,
            search_min / touch_min
        );
    }
}

fn benches(c: &mut Criterion) {
    let mib: u64 = std::env::var("NTDUMP_BENCH_SEARCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    assert!(
        mib.is_power_of_two() && mib >= 4,
        "NTDUMP_BENCH_SEARCH_MIB must be a power of two >= 4"
    );
    let path = write_dump(mib);
    let d = Dump::open(&path).expect("open bench dump");
    let len = mib << 20;
    let contiguous = slices(&d, VA_A, len);
    let scattered = slices(&d, VA_B, len);
    assert_eq!(contiguous.len(), 1);
    assert_eq!(scattered.len() as u64, len / PAGE);
    // Sanity (not timed): both views hold the same bytes, and the search agrees with a plain scan.
    assert_eq!(touch(&contiguous), touch(&scattered));
    let needle = NEEDLE.to_le_bytes();
    let opts = SearchOptions {
        align: 4,
        ..Default::default()
    };
    let want: Vec<u64> = contiguous[0]
        .chunks_exact(4)
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| VA_A + 4 * i as u64)
        .collect();
    let got = search(&d, &[needle], Target::Virtual(&[(VA_A, len)]), &opts).unwrap();
    assert_eq!(got.addresses, want);
    eprintln!(
        "{} MiB mapped, {} hits of {NEEDLE:#x}, {} rayon threads",
        mib,
        want.len(),
        rayon::current_num_threads()
    );

    interleaved(&d, len, &contiguous, &scattered, &opts);

    let mut g = c.benchmark_group(format!("search_{mib}MiB"));
    g.throughput(Throughput::Bytes(len));
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    g.bench_function("touch_contiguous", |b| {
        b.iter(|| black_box(touch(&contiguous)))
    });
    g.bench_function("search_dword_contiguous", |b| {
        b.iter(|| {
            black_box(search(
                &d,
                &[needle],
                Target::Virtual(&[(VA_A, len)]),
                &opts,
            ))
        })
    });
    g.bench_function("touch_scattered", |b| {
        b.iter(|| black_box(touch(&scattered)))
    });
    g.bench_function("search_dword_scattered", |b| {
        b.iter(|| {
            black_box(search(
                &d,
                &[needle],
                Target::Virtual(&[(VA_B, len)]),
                &opts,
            ))
        })
    });
    let three: [&[u8]; 3] = [&needle, b"ExAllocatePool", b"\x00N\x00o\x00n\x00e"];
    g.bench_function("search_3_patterns_contiguous", |b| {
        b.iter(|| {
            let r = search(
                &d,
                &three,
                Target::Virtual(&[(VA_A, len)]),
                &SearchOptions::default(),
            );
            black_box(r)
        })
    });
    g.finish();
    // Both views: 2 × the data, found by walking the page tables of the whole kernel half.
    let mut g = c.benchmark_group(format!("search_kernel_half_{}MiB", 2 * mib));
    g.throughput(Throughput::Bytes(2 * len));
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    g.bench_function("search_dword_kernel", |b| {
        b.iter(|| black_box(search(&d, &[needle], Target::Kernel, &opts)))
    });
    g.finish();
}

criterion_group!(search_benches, benches);
criterion_main!(search_benches);
