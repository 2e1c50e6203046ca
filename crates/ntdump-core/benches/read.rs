//! Read-path benchmarks of the core (criterion): sequential physical reads against the memcpy limit,
//! kernel VA translation (against a hand-written walk) and 4 KiB virtual reads.
//!
//! Input: a 64-bit full dump (DumpType 1) written by [`write_dump`] below into the temp dir
//! (`$TMPDIR/ntdump-bench-read-<MiB>m.dmp`), reused when it is already there with the right size and a
//! matching stamp. No network, no fixture files. Size: `NTDUMP_BENCH_MIB` (default 512 MiB of RAM).
//!
//! Layout (WINDOWS_INTERNALS.md §1.2, §1.5): runs (0x1, 0x9F), (0x100, low), a 2 MiB hole, (…, high);
//! pages from file offset 0x2000, run after run. Every data page is filled with a non-zero pattern
//! derived from its PFN (no sparse holes: the page cache holds real data). Page tables (x64, 4 KiB leaves)
//! at PFN 0x10.. map `MAPPED_MIB` MiB of kernel VA at `VA_BASE` onto the physical pages from PFN 0x100.
//!
//! Run: `cargo bench -p ntdump-core --bench read` (add `-- --quick` for a smoke run);
//! `python benchmarks/criterion_summary.py` prints GiB/s and the read_phys / memcpy ratio.
//!
//! Before the criterion groups, `NTDUMP_BENCH_PAIRED` (default 21, 0 to skip) rounds of one memcpy pass
//! and one read_phys pass, interleaved, give a second read_phys / memcpy ratio that machine drift between
//! criterion's two separate measurements cannot bias (`<target>/criterion/phys_seq_paired.json`).

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{BufWriter, Read, Seek, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use ntdump_core::{Dump, Pa, Va};

const PAGE: u64 = 4096;
const CHUNK: usize = 1 << 20;
/// Kernel VA of the first mapped page.
const VA_BASE: u64 = 0xFFFF_F800_0000_0000;
/// MiB of VA mapped with 4 KiB pages (one PT per 2 MiB).
const MAPPED_MIB: u64 = 64;
const PML4_PFN: u64 = 0x10;
const PDPT_PFN: u64 = 0x11;
const PD_PFN: u64 = 0x12;
const PT0_PFN: u64 = 0x13;
/// First physical page the VA range maps to (start of the second run).
const DATA_PFN: u64 = 0x100;
/// Bumped when the layout or fill changes, so an old temp file is rewritten.
const STAMP: &[u8; 16] = b"ntdump-bench-v1\0";

fn runs_for(mib: u64) -> Vec<(u64, u64)> {
    let pages = mib << 8;
    let low = ((pages - 0x100) / 2) & !0x1FF;
    let high = pages - 0x100 - low;
    vec![(0x1, 0x9F), (0x100, low), (0x100 + low + 0x200, high)]
}

/// The 4 KiB of page `pfn` as written to the dump (page tables included).
fn page_bytes(pfn: u64, out: &mut [u8; PAGE as usize]) {
    let entry = |v: u64, out: &mut [u8; PAGE as usize], i: usize| {
        out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes())
    };
    let pts = MAPPED_MIB / 2;
    out.fill(0);
    const TABLE: u64 = 0x63; // P | RW | A | D
    const LEAF: u64 = 0x63;
    match pfn {
        PML4_PFN => entry(
            (PDPT_PFN << 12) | TABLE,
            out,
            ((VA_BASE >> 39) & 0x1FF) as usize,
        ),
        PDPT_PFN => entry(
            (PD_PFN << 12) | TABLE,
            out,
            ((VA_BASE >> 30) & 0x1FF) as usize,
        ),
        PD_PFN => {
            for i in 0..pts {
                entry(
                    ((PT0_PFN + i) << 12) | TABLE,
                    out,
                    (((VA_BASE >> 21) & 0x1FF) + i) as usize,
                );
            }
        }
        p if (PT0_PFN..PT0_PFN + pts).contains(&p) => {
            for i in 0..512 {
                let data = DATA_PFN + (p - PT0_PFN) * 512 + i;
                entry((data << 12) | LEAF, out, i as usize);
            }
        }
        _ => {
            // Non-zero, PFN-dependent fill: the PFN, then a xorshift stream seeded by it.
            let mut x = pfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            entry(pfn, out, 0);
            for i in 1..512 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                entry(x, out, i);
            }
        }
    }
}

fn header(runs: &[(u64, u64)], file_size: u64) -> Vec<u8> {
    let mut h = vec![0u8; 0x2000];
    for c in h.chunks_mut(4) {
        c.copy_from_slice(b"PAGE");
    }
    let put32 =
        |h: &mut Vec<u8>, off: usize, v: u32| h[off..off + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |h: &mut Vec<u8>, off: usize, v: u64| h[off..off + 8].copy_from_slice(&v.to_le_bytes());
    h[4..8].copy_from_slice(b"DU64");
    put32(&mut h, 0x8, 0xF); // MajorVersion
    put32(&mut h, 0xC, 19041); // MinorVersion (build)
    put64(&mut h, 0x10, PML4_PFN << 12); // DirectoryTableBase
    put32(&mut h, 0x30, 0x8664); // MachineImageType
    put32(&mut h, 0x34, 2); // NumberProcessors
    put32(&mut h, 0x38, 0x161); // BugCheckCode
    put32(&mut h, 0x88, runs.len() as u32); // NumberOfRuns
    put64(&mut h, 0x90, runs.iter().map(|r| r.1).sum()); // NumberOfPages
    for (i, &(base, count)) in runs.iter().enumerate() {
        put64(&mut h, 0x98 + 16 * i, base);
        put64(&mut h, 0xA0 + 16 * i, count);
    }
    put32(&mut h, 0xF98, 1); // DumpType: full
    put64(&mut h, 0xFA0, file_size); // RequiredDumpSpace
    h[0xFB0..0xFC0].copy_from_slice(STAMP); // Comment
    h
}

/// Write the dump (or keep the one already there). Returns its path.
fn write_dump(mib: u64) -> PathBuf {
    let path = std::env::temp_dir().join(format!("ntdump-bench-read-{mib}m.dmp"));
    let runs = runs_for(mib);
    let pages: u64 = runs.iter().map(|r| r.1).sum();
    let size = 0x2000 + pages * PAGE;
    let hdr = header(&runs, size);
    let existing = || -> std::io::Result<bool> {
        let mut head = vec![0u8; 0x2000];
        let mut f = File::open(&path)?;
        f.read_exact(&mut head)?;
        Ok(f.metadata()?.len() == size && head == hdr)
    };
    if existing().unwrap_or(false) {
        return path;
    }
    eprintln!(
        "writing {} ({} MiB of RAM, {} bytes)…",
        path.display(),
        mib,
        size
    );
    let tmp = path.with_extension("tmp");
    let f = File::create(&tmp).expect("create bench dump");
    let mut w = BufWriter::with_capacity(CHUNK, f);
    w.write_all(&hdr).unwrap();
    let mut page = [0u8; PAGE as usize];
    for &(base, count) in &runs {
        for pfn in base..base + count {
            page_bytes(pfn, &mut page);
            w.write_all(&page).unwrap();
        }
    }
    let mut f = w.into_inner().unwrap();
    assert_eq!(f.stream_position().unwrap(), size);
    f.sync_all().ok();
    drop(f);
    fs::rename(&tmp, &path).expect("rename bench dump");
    path
}

/// The 1 MiB chunks of a sequential pass: (PA, file offset, length), within runs.
fn chunks(d: &Dump) -> Vec<(u64, usize, usize)> {
    let mut out = Vec::new();
    for r in d.phys().runs() {
        let bytes = r.pages * PAGE;
        let mut off = 0u64;
        while off < bytes {
            let n = (bytes - off).min(CHUNK as u64);
            out.push((
                (r.base_pfn << 12) + off,
                (r.file_offset + off) as usize,
                n as usize,
            ));
            off += n;
        }
    }
    out
}

fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// A reference x64 walk for comparison with [`Dump::translate`]: the four entry reads straight out of
/// [`Dump::phys_page`], valid entries and 2 MiB / 1 GiB leaves only, no step record, no error values.
/// What a translation costs when it does nothing else (not a replacement: no software PTEs, no checks).
fn walk_floor(d: &Dump, va: u64) -> Option<u64> {
    const FRAME: u64 = 0x000F_FFFF_FFFF_F000;
    let mut table = d.dtb() & FRAME;
    for shift in [39u32, 30, 21, 12] {
        let i = ((va >> shift) & 0x1FF) as usize * 8;
        let page = d.phys_page(table >> 12)?;
        let e = u64::from_le_bytes(page[i..i + 8].try_into().ok()?);
        if e & 1 == 0 {
            return None;
        }
        if (shift == 30 || shift == 21) && e & 0x80 != 0 {
            let size = 1u64 << shift;
            return Some((e & FRAME & !(size - 1)) | (va & (size - 1)));
        }
        table = e & FRAME;
    }
    Some(table | (va & (PAGE - 1)))
}

/// Sequential-read ratio measured with the two variants interleaved (memcpy pass, read_phys pass, …), so
/// that drift of the machine's memory bandwidth between criterion's two separate measurements cannot bias
/// the ratio. Prints the medians and writes them to `<target>/criterion/phys_seq_paired.json`.
fn paired_ratio(d: &Dump, plan: &[(u64, usize, usize)], total: u64, rounds: usize) {
    let mut buf = vec![0u8; CHUNK];
    let file = d.file();
    let (mut t_copy, mut t_read, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t0 = Instant::now();
        for &(_, off, n) in plan {
            buf[..n].copy_from_slice(&file[off..off + n]);
            black_box(&buf);
        }
        let t1 = Instant::now();
        for &(pa, _, n) in plan {
            d.read_phys(Pa(pa), &mut buf[..n]).unwrap();
            black_box(&buf);
        }
        let t2 = Instant::now();
        let (c, r) = ((t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64());
        t_copy.push(c);
        t_read.push(r);
        ratios.push(c / r);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (c, r, q) = (
        median(&mut t_copy),
        median(&mut t_read),
        median(&mut ratios),
    );
    let gib = |t: f64| total as f64 / t / (1u64 << 30) as f64;
    println!(
        "phys_seq paired ({rounds} interleaved rounds): memcpy {:.2} GiB/s, read_phys {:.2} GiB/s, \
         median per-round ratio read_phys/memcpy {:.1} % (range {:.1} - {:.1} %)",
        gib(c),
        gib(r),
        q * 100.0,
        ratios[0] * 100.0,
        ratios[ratios.len() - 1] * 100.0
    );
    let json = format!(
        "{{\"rounds\": {rounds}, \"bytes\": {total}, \"memcpy_s\": {c}, \"read_phys_s\": {r}, \"ratio_median\": {q}, \
         \"ratio_min\": {}, \"ratio_max\": {}}}",
        ratios[0],
        ratios[ratios.len() - 1]
    );
    // <target>/release/deps/read-… → <target>/criterion (where criterion writes too).
    if let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()))
    {
        let dir = target.join("criterion");
        let _ = fs::create_dir_all(&dir)
            .and_then(|_| fs::write(dir.join("phys_seq_paired.json"), json));
    }
}

fn benches(c: &mut Criterion) {
    let mib: u64 = std::env::var("NTDUMP_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    assert!(
        mib >= 2 * MAPPED_MIB + 4 && mib.is_multiple_of(2),
        "NTDUMP_BENCH_MIB must be even and >= {}",
        2 * MAPPED_MIB + 4
    );
    let path = write_dump(mib);
    let d = Dump::open(&path).expect("open bench dump");
    let plan = chunks(&d);
    let total: u64 = plan.iter().map(|c| c.2 as u64).sum();
    assert_eq!(total, d.phys().present_pages() * PAGE);

    // Sanity (not timed): read_phys and the raw map agree, and the page tables translate.
    let mut a = vec![0u8; CHUNK];
    for &(pa, off, n) in plan.iter().step_by(17) {
        d.read_phys(Pa(pa), &mut a[..n]).unwrap();
        assert!(
            a[..n] == d.file()[off..off + n],
            "read_phys mismatch at {pa:#x}"
        );
    }
    let last = VA_BASE + (MAPPED_MIB << 20) - PAGE;
    assert_eq!(
        d.translate(Va(last)).unwrap().0,
        (DATA_PFN << 12) + (MAPPED_MIB << 20) - PAGE
    );

    // Touch every page once so that no measurement pays the first-touch page faults of the mapping.
    let mut buf = vec![0u8; CHUNK];
    for &(pa, _, n) in &plan {
        d.read_phys(Pa(pa), &mut buf[..n]).unwrap();
    }
    let rounds = std::env::var("NTDUMP_BENCH_PAIRED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(21);
    if rounds > 0 {
        paired_ratio(&d, &plan, total, rounds);
    }

    let mut g = c.benchmark_group("phys_seq");
    g.throughput(Throughput::Bytes(total));
    g.sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    g.bench_function("memcpy_1MiB", |b| {
        let file = d.file();
        b.iter(|| {
            for &(_, off, n) in &plan {
                buf[..n].copy_from_slice(&file[off..off + n]);
                black_box(&buf);
            }
        })
    });
    g.bench_function("read_phys_1MiB", |b| {
        b.iter(|| {
            for &(pa, _, n) in &plan {
                d.read_phys(Pa(pa), &mut buf[..n]).unwrap();
                black_box(&buf);
            }
        })
    });
    g.finish();

    // Random kernel VAs, page aligned, inside the mapped range (same list for every bench below).
    let mut seed = 0x5EED_u64;
    let npages = (MAPPED_MIB << 20) / PAGE;
    let vas: Vec<u64> = (0..4096)
        .map(|_| VA_BASE + (xorshift(&mut seed) % npages) * PAGE)
        .collect();
    for &va in &vas {
        assert_eq!(walk_floor(&d, va), Some(d.translate(Va(va)).unwrap().0));
    }
    let mut g = c.benchmark_group("virt_random");
    g.throughput(Throughput::Elements(vas.len() as u64));
    g.bench_function("translate", |b| {
        b.iter(|| {
            for &va in &vas {
                black_box(d.translate(Va(va)).unwrap());
            }
        })
    });
    g.bench_function("translate_floor_hand_walk", |b| {
        b.iter(|| {
            for &va in &vas {
                black_box(walk_floor(&d, va).unwrap());
            }
        })
    });
    let mut page = [0u8; PAGE as usize];
    g.bench_function("read_virt_4KiB", |b| {
        b.iter(|| {
            for &va in &vas {
                d.read_virt(Va(va), &mut page).unwrap();
                black_box(&page);
            }
        })
    });
    g.bench_function("virt_page_4KiB_zero_copy", |b| {
        b.iter(|| {
            for &va in &vas {
                black_box(d.virt_page(Va(va)).unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(read, benches);
criterion_main!(read);
