//! Hostile files: each gives a typed error (at open or on read), allocates no more than a few MiB, and
//! never panics. A counting global allocator measures the peak of what opening and reading allocate.

mod common;
use common::*;
use ntdump_core::{Dump, Error, Pa, Va};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

struct Counting;
static CUR: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let n = CUR.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(n, Relaxed);
        // SAFETY: forwarding to the system allocator with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CUR.fetch_sub(l.size(), Relaxed);
        // SAFETY: `p` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const LIMIT: usize = 4 << 20;

/// Tests in this file run one at a time, so that the allocation counters see only one test.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Open `bytes`, then read a few addresses; return the open error if any. Asserts the allocation peak
/// (beyond the input itself) stays under LIMIT.
fn check(name: &str, bytes: Vec<u8>) -> Option<Error> {
    let base = CUR.load(Relaxed);
    PEAK.store(base, Relaxed);
    let r = Dump::from_bytes(bytes);
    let err = match r {
        Ok(d) => {
            for pa in [0u64, 0x1000, 0x4141_4141_4000, u64::MAX - 0x10] {
                let mut b = [0u8; 0x20];
                if let Err(e) = d.read_phys(Pa(pa), &mut b) {
                    assert!(e.is_translation(), "{name}: read_phys({pa:#x}) gave {e}");
                }
            }
            for va in [0xFFFF_F800_0000_0000u64, 0x1000, u64::MAX - 4] {
                let mut b = [0u8; 0x20];
                if let Err(e) = d.read_virt(Va(va), &mut b) {
                    assert!(e.is_translation(), "{name}: read_virt({va:#x}) gave {e}");
                }
            }
            None
        }
        Err(e) => {
            assert!(matches!(e, Error::Format { .. }), "{name}: {e:?}");
            Some(e)
        }
    };
    let peak = PEAK.load(Relaxed).saturating_sub(base);
    assert!(peak < LIMIT, "{name}: allocated {peak} bytes; err {err:?}");
    err
}

#[test]
fn empty_and_tiny() {
    let _g = serial();
    assert!(check("empty", vec![]).is_some());
    assert!(check("8 bytes", b"PAGEDU64".to_vec()).is_some());
    assert!(check("not a dump", vec![0x41; 0x3000]).is_some());
    let mut md = vec![0u8; 0x100];
    md[..4].copy_from_slice(b"MDMP");
    let e = check("minidump", md).unwrap();
    assert!(e.to_string().contains("user-mode minidump"), "{e}");
}

#[test]
fn header_only_with_runs_claiming_pages() {
    let _g = serial();
    let f = header64(1, Some(&[(0, 0x1000), (0x2000, 0x4000)]));
    assert!(check("header only", f.clone()).is_none());
    let d = Dump::from_bytes(f).unwrap();
    assert_eq!(d.phys().present_pages(), 0);
    assert_eq!(d.phys().missing_pages, 0x5000);
    assert!(matches!(
        d.read_phys(Pa(0x10), &mut [0u8; 4]),
        Err(Error::NotInDump { pa: Pa(0x10), .. })
    ));
}

#[test]
fn huge_run_table() {
    let _g = serial();
    let runs: Vec<(u64, u64)> = (0..32u64)
        .map(|i| (i * 0x4141414141, 0x4141414141))
        .collect();
    // 32 x 0x4141414141 pages run past 52-bit physical addresses: a format error, not an allocation.
    assert!(check("32 huge runs", header64(1, Some(&runs))).is_some());
    let runs: Vec<(u64, u64)> = (0..8u64).map(|i| (i * 0x41414141, 0x41414141)).collect();
    assert!(check("8 big runs", header64(1, Some(&runs))).is_none());
    // Overlapping runs: a format error.
    let runs: Vec<(u64, u64)> = (0..32u64).map(|_| (0, 0x4141414141)).collect();
    assert!(check("32 overlapping runs", header64(1, Some(&runs))).is_some());
    // More runs than the header holds.
    let mut f = header64(1, Some(&[(0, 1)]));
    f[0x88..0x8C].copy_from_slice(&1000u32.to_le_bytes());
    assert!(check("1000 runs", f).is_some());
    // Overflowing PFNs and offsets.
    assert!(check("overflow", header64(1, Some(&[(u64::MAX - 1, 4)]))).is_some());
    assert!(check(
        "overflow2",
        header64(
            1,
            Some(&[(0, 1 << 39), (1 << 39, 1 << 39), (2 << 39, u64::MAX / 2)])
        )
    )
    .is_some());
}

#[test]
fn bitmap_cases() {
    let _g = serial();
    let good = bitmap64(0x100, &[1, 2, 3, 0x80, 0xFF]);
    let d = Dump::from_bytes(good.clone()).unwrap();
    assert_eq!(d.phys().present_pages(), 5);
    let mut b = [0u8; 8];
    d.read_phys(Pa(0x80 * 0x1000), &mut b).unwrap();
    assert_eq!(u64::from_le_bytes(b), 0x80);
    assert!(d.read_phys(Pa(0x4000), &mut b).is_err());
    // Data missing: header and bitmap only.
    let first = u64::from_le_bytes(good[0x2020..0x2028].try_into().unwrap()) as usize;
    assert!(check("bitmap without data", good[..first].to_vec()).is_none());
    let d = Dump::from_bytes(good[..first].to_vec()).unwrap();
    assert_eq!(d.phys().missing_pages, 5);
    // Cut at 50%.
    let half = good.len() / 2;
    let d = Dump::from_bytes(good[..half].to_vec()).unwrap();
    assert!(d.phys().missing_pages > 0 && d.phys().present_pages() > 0);
    // Bitmap larger than the file.
    let mut f = good.clone();
    f[0x2030..0x2038].copy_from_slice(&(1u64 << 36).to_le_bytes());
    let e = check("bitmap larger than file", f).unwrap();
    assert!(e.to_string().contains("larger than the file"), "{e}");
    // Absurd bit count.
    let mut f = good.clone();
    f[0x2030..0x2038].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(check("bitmap u64::MAX bits", f).is_some());
    // First page inside the bitmap; overflowing first page.
    let mut f = good.clone();
    f[0x2020..0x2028].copy_from_slice(&0x2000u64.to_le_bytes());
    assert!(check("first page in header", f).is_some());
    let mut f = good;
    f[0x2020..0x2028].copy_from_slice(&(u64::MAX - 0x10).to_le_bytes());
    assert!(check("first page overflows", f).is_none());
}

#[test]
fn full_dump_cut_in_half() {
    let _g = serial();
    let mut f = header64(1, Some(&[(0, 8), (0x10, 8)]));
    for pfn in (0..8u64).chain(0x10..0x18) {
        let mut page = vec![0u8; PAGE];
        page[..8].copy_from_slice(&pfn.to_le_bytes());
        f.extend_from_slice(&page);
    }
    let half = f.len() / 2 + 0x800;
    let d = Dump::from_bytes(f[..half].to_vec()).unwrap();
    let mut b = [0u8; 8];
    d.read_phys(Pa(0x3000), &mut b).unwrap();
    assert_eq!(u64::from_le_bytes(b), 3);
    match d.read_phys(Pa(0x12000), &mut b) {
        Err(Error::NotInDump { pa, .. }) => assert_eq!(pa, Pa(0x12000)),
        other => panic!("{other:?}"),
    }
    assert!(check("cut", f[..half].to_vec()).is_none());
}

#[test]
fn triage_and_range_garbage() {
    let _g = serial();
    let mut f = header64(4, None);
    f.resize(0x3000, 0xFF);
    // Every triage offset 0xFFFFFFFF and counts huge.
    assert!(check("triage ff", f.clone()).is_none());
    let mut f = header64(8, None);
    f.resize(0x3000, 0);
    f[0x2004..0x2008].copy_from_slice(b"RDMP");
    f[0x2010..0x2018].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(check("rdmp metadata huge", f.clone()).is_some());
    f[0x2010..0x2018].copy_from_slice(&0x20u64.to_le_bytes());
    f[0x2018..0x2020].copy_from_slice(&u64::MAX.to_le_bytes());
    f[0x2030..0x2040].copy_from_slice(&[0x41; 16]);
    // PFN 0x4141414141414141 is past any physical address: a format error.
    assert!(check("rdmp first page huge", f).is_some());
}

#[test]
fn random_bytes_after_valid_header_never_panic() {
    let _g = serial();
    // A small deterministic fuzz: flip bytes of a valid bitmap dump's first 0x3000 bytes.
    let good = bitmap64(0x400, &[1, 5, 9, 0x3FF]);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..3000 {
        let mut f = good.clone();
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let pos = (x as usize) % 0x2100;
            f[pos] = (x >> 32) as u8;
        }
        let _ = check("flip", f);
    }
}

#[test]
fn arm64_headers_parse_translation_is_a_clear_error() {
    let _g = serial();
    let mut f = header64(1, Some(&[(0, 2)]));
    f[0x30..0x34].copy_from_slice(&0xAA64u32.to_le_bytes());
    f.extend_from_slice(&vec![0u8; 2 * PAGE]);
    let d = Dump::from_bytes(f).unwrap();
    assert_eq!(d.header.machine, ntdump_core::Machine::Arm64);
    assert!(d.mode().is_none());
    let mut b = [0u8; 8];
    d.read_phys(Pa(0x1000), &mut b).unwrap();
    match d.translate(Va(0xFFFF_8000_0000_0000)) {
        Err(Error::Unsupported(m)) => assert!(m.contains("ARM64"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Every reader of the page tables says the same (search, mapped ranges, the pool scan's pages).
    let opts = ntdump_core::search::SearchOptions::default();
    let r = ntdump_core::search::search(&d, &[b"x"], ntdump_core::search::Target::Kernel, &opts);
    assert!(matches!(r, Err(Error::Unsupported(_))), "{r:?}");
    let r = ntdump_core::search::kernel_ranges(&d);
    assert!(matches!(r, Err(Error::Unsupported(_))), "{r:?}");
    let r = ntdump_core::pool::scan::kernel_pages(&d, None, 10);
    assert!(matches!(r, Err(Error::Unsupported(_))), "{r:?}");
    assert!(matches!(d.leaves(), Err(Error::Unsupported(_))));
}
