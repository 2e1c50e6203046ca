//! PE images in a raw x64 address space: real files from the shared data (Wine's ntoskrnl.exe and
//! drivers, laid out at their RVAs here), goblin against the own readers, and hostile images under an
//! allocation ceiling.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use common::{Phys, PAGE, X64};
use ntdump_core::pe::{PeImage, PeOptions, MAX_IMAGE_SIZE};
use ntdump_core::symbols::{ModuleRef, SymbolTable};
use ntdump_core::{Dump, Error, Machine, RawOptions, Va};

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
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let n = CUR.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(n, Relaxed);
        // SAFETY: as above; zeroed allocations keep the system's lazy zero pages.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CUR.fetch_sub(l.size(), Relaxed);
        // SAFETY: `p` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Peak bytes allocated while running `f`, beyond what was live before.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CUR.load(Relaxed);
    PEAK.store(base, Relaxed);
    let r = f();
    (r, PEAK.load(Relaxed).saturating_sub(base))
}

fn data_dir() -> Option<PathBuf> {
    let d = std::env::var_os("NTDUMP_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    if d.join("pe").is_dir() {
        Some(d)
    } else {
        eprintln!(
            "skipped: shared test data not found at {} (set NTDUMP_TEST_DATA)",
            d.display()
        );
        None
    }
}

fn u16_at(b: &[u8], o: usize) -> usize {
    u16::from_le_bytes([b[o], b[o + 1]]) as usize
}
fn u32_at(b: &[u8], o: usize) -> usize {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as usize
}

/// A PE file laid out at its RVAs (SectionAlignment 0x1000 files only), page-rounded.
fn layout(file: &[u8]) -> Vec<u8> {
    let nt = u32_at(file, 0x3C);
    let nsec = u16_at(file, nt + 6);
    let opt = nt + 0x18;
    let size = u32_at(file, opt + 0x38).div_ceil(PAGE) * PAGE;
    let headers = u32_at(file, opt + 0x3C).min(file.len());
    let mut img = vec![0u8; size];
    img[..headers].copy_from_slice(&file[..headers]);
    let secs = opt + u16_at(file, nt + 0x14);
    for i in 0..nsec {
        let s = secs + 40 * i;
        let (vsize, va, raw, ptr) = (
            u32_at(file, s + 8),
            u32_at(file, s + 12),
            u32_at(file, s + 16),
            u32_at(file, s + 20),
        );
        let n = raw.min(if vsize == 0 {
            raw
        } else {
            vsize.div_ceil(PAGE) * PAGE
        });
        let n = n
            .min(file.len().saturating_sub(ptr))
            .min(size.saturating_sub(va));
        img[va..va + n].copy_from_slice(&file[ptr..ptr + n]);
    }
    img
}

const BASE: u64 = 0xFFFF_F800_1000_0000;

/// A raw x64 image holding `images` at `BASE + i * 0x400000`; pages listed in `missing` (VAs) unmapped.
fn dump_with(images: &[Vec<u8>], missing: &[u64]) -> Dump {
    let total: usize = images.iter().map(|i| i.len() / PAGE).sum();
    let mut p = Phys::new(0x10 + 64 + total + 8);
    let t = X64::new(&mut p);
    for (k, img) in images.iter().enumerate() {
        let base = BASE + k as u64 * 0x40_0000;
        for (i, chunk) in img.chunks(PAGE).enumerate() {
            let va = base + (i * PAGE) as u64;
            let pa = p.alloc();
            p.mem[pa as usize..pa as usize + chunk.len()].copy_from_slice(chunk);
            if !missing.contains(&va) {
                t.map4k(&mut p, va, pa);
            }
        }
    }
    let opts = RawOptions {
        machine: Some(Machine::X64),
        pae: Some(false),
        dtb: Some(t.dtb),
    };
    Dump::raw_from_bytes(p.mem, opts).expect("raw image opens")
}

fn no_goblin() -> PeOptions {
    PeOptions {
        goblin: false,
        ..PeOptions::default()
    }
}

#[test]
fn wine_images_goblin_and_own_readers_agree() {
    let _g = serial();
    let Some(dir) = data_dir() else { return };
    let names = [
        "ntoskrnl.exe",
        "hal.dll",
        "hidclass.sys",
        "ndis.sys",
        "usbd.sys",
    ];
    let images: Vec<Vec<u8>> = names
        .iter()
        .map(|n| layout(&std::fs::read(dir.join("pe/wine-x86_64").join(n)).unwrap()))
        .collect();
    let d = dump_with(&images, &[]);
    for (k, n) in names.iter().enumerate() {
        let base = Va(BASE + k as u64 * 0x40_0000);
        let a = PeImage::read(&d, base, None).unwrap();
        let b = PeImage::read_with(&d, base, None, no_goblin()).unwrap();
        assert_eq!(a.headers, b.headers, "{n}");
        assert_eq!(a.sections, b.sections, "{n}");
        assert_eq!(a.exports, b.exports, "{n}");
        assert_eq!(a.imports, b.imports, "{n}");
        assert_eq!((&a.debug, &a.codeview), (&b.debug, &b.codeview), "{n}");
        assert!(a.warnings.is_empty(), "{n}: {:?}", a.warnings);
        assert!(a.missing_pages.is_empty());
        assert_eq!(a.bytes(), &images[k][..], "{n}: rebuilt bytes");
    }
    let nt = PeImage::read(&d, Va(BASE), None).unwrap();
    let exports = nt.exports.as_ref().unwrap();
    assert_eq!(exports.dll_name.as_deref(), Some("ntoskrnl.exe"));
    assert_eq!(
        exports.entries.len(),
        1656,
        "pefile counts 1656 exports in Wine's x64 ntoskrnl.exe"
    );
    let ex = exports
        .entries
        .iter()
        .find(|e| e.name.as_deref() == Some("ExAllocatePool"))
        .unwrap();

    // The symbol table over the same dump.
    let mods: Vec<ModuleRef> = names
        .iter()
        .enumerate()
        .map(|(k, n)| ModuleRef {
            name: n.to_string(),
            base: BASE + k as u64 * 0x40_0000,
            size: images[k].len() as u64,
        })
        .collect();
    let t = SymbolTable::build(&d, &mods);
    let addr = BASE + u64::from(ex.rva);
    assert_eq!(t.symbol("nt!ExAllocatePool").unwrap(), Va(addr));
    assert_eq!(t.ln(Va(addr)).unwrap(), "nt!ExAllocatePool");
    assert_eq!(t.ln(Va(addr + 3)).unwrap(), "nt!ExAllocatePool+0x3");
    // The IATs are not bound here: the import tables name the function, the pointer search finds nothing.
    let rows = t.importers(&d, "nt!ExAllocatePool", true).unwrap();
    let who: Vec<&str> = rows
        .iter()
        .map(|r| t.modules[r.module].kd_name.as_str())
        .collect();
    assert_eq!(who, ["hidclass", "usbd"]);
    assert!(rows.iter().all(|r| r
        .note
        .as_deref()
        .is_some_and(|n| n.contains("patched or bound elsewhere"))));
}

#[test]
fn discarded_import_pages_leave_the_iat() {
    let _g = serial();
    let Some(dir) = data_dir() else { return };
    let img = layout(&std::fs::read(dir.join("pe/winpmem/winpmem_x64.sys")).unwrap());
    // INIT (RVA 0xD000) holds the descriptors, ILT and names; the IAT is in .rdata at 0x5000.
    let d = dump_with(&[img], &[BASE + 0xD000]);
    let p = PeImage::read(&d, Va(BASE), None).unwrap();
    assert_eq!(p.missing_pages, vec![0xD000]);
    assert!(!p.imports.is_empty());
    assert!(p
        .imports
        .iter()
        .all(|i| i.name.is_none() && i.dll.is_none()));
    assert!(p
        .imports
        .iter()
        .all(|i| (0x5000..0x5198).contains(&i.iat_rva)));
    assert!(p.warnings.iter().any(|w| w.contains("import descriptor 0")));
}

/// A minimal PE32+ image in memory order (3 pages).
fn tiny() -> Vec<u8> {
    let mut b = vec![0u8; 0x3000];
    b[0..2].copy_from_slice(b"MZ");
    b[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    b[0x80..0x84].copy_from_slice(b"PE\0\0");
    b[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
    b[0x86..0x88].copy_from_slice(&1u16.to_le_bytes());
    b[0x94..0x96].copy_from_slice(&0xF0u16.to_le_bytes());
    let o = 0x98;
    b[o..o + 2].copy_from_slice(&0x20Bu16.to_le_bytes());
    b[o + 0x20..o + 0x24].copy_from_slice(&0x1000u32.to_le_bytes());
    b[o + 0x24..o + 0x28].copy_from_slice(&0x200u32.to_le_bytes());
    b[o + 0x38..o + 0x3C].copy_from_slice(&0x3000u32.to_le_bytes());
    b[o + 0x6C..o + 0x70].copy_from_slice(&16u32.to_le_bytes());
    let s = o + 0xF0;
    b[s..s + 5].copy_from_slice(b".text");
    b[s + 8..s + 12].copy_from_slice(&0x1000u32.to_le_bytes());
    b[s + 12..s + 16].copy_from_slice(&0x1000u32.to_le_bytes());
    b
}

fn set32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn absurd_fields_are_bounded() {
    let _g = serial();
    type Case = (&'static str, fn(&mut Vec<u8>));
    let cases: [Case; 9] = [
        ("sections 0xFFFF", |b| {
            b[0x86..0x88].copy_from_slice(&0xFFFFu16.to_le_bytes())
        }),
        ("directories 0xFFFFFFFF", |b| {
            set32(b, 0x98 + 0x6C, u32::MAX)
        }),
        ("export counts", |b| {
            set32(b, 0x98 + 0x70, 0x2000);
            set32(b, 0x98 + 0x74, 0x28);
            for (k, v) in [u32::MAX, u32::MAX, 0x2100, 0x2100, 0x2100]
                .into_iter()
                .enumerate()
            {
                set32(b, 0x2014 + 4 * k, v);
            }
        }),
        ("import loop", |b| {
            set32(b, 0x98 + 0x78, 0x2000);
            for k in (0x2000..0x2FEC).step_by(20) {
                for (j, v) in [0x2008u32, 0, 0, 0x2000, 0x2000].into_iter().enumerate() {
                    set32(b, k + 4 * j, v);
                }
            }
        }),
        ("debug size", |b| {
            set32(b, 0x98 + 0x70 + 6 * 8, 0x2000);
            set32(b, 0x98 + 0x74 + 6 * 8, u32::MAX);
        }),
        ("iat directory huge", |b| {
            set32(b, 0x98 + 0x70 + 12 * 8, 0x1000);
            set32(b, 0x98 + 0x74 + 12 * 8, u32::MAX);
        }),
        ("rvas everywhere", |b| {
            for k in 0..16 {
                set32(b, 0x98 + 0x70 + 8 * k, 0xFFFF_FF00);
                set32(b, 0x98 + 0x74 + 8 * k, 0x1000);
            }
        }),
        ("lfanew near the end", |b| set32(b, 0x3C, 0x2FFC)),
        ("size of optional header huge", |b| {
            b[0x94..0x96].copy_from_slice(&0xFFFFu16.to_le_bytes())
        }),
    ];
    for (name, f) in cases {
        let mut b = tiny();
        f(&mut b);
        for goblin in [true, false] {
            let opts = PeOptions {
                goblin,
                ..PeOptions::default()
            };
            let (r, peak) = peak_of(|| PeImage::parse_with(Va(BASE), b.clone(), Vec::new(), opts));
            assert!(peak < (1 << 20), "{name}: {peak} bytes");
            match r {
                Ok(p) => assert!(
                    p.sections.len() <= 96 && p.imports.len() <= 0x3000,
                    "{name}"
                ),
                Err(e) => assert!(matches!(e, Error::Pe { .. }), "{name}: {e}"),
            }
        }
    }
}

#[test]
fn huge_size_of_image_reads_at_most_the_ceiling() {
    let _g = serial();
    let mut b = tiny();
    set32(&mut b, 0x98 + 0x38, 0xF000_0000);
    let d = dump_with(&[b], &[]);
    let (p, peak) = peak_of(|| PeImage::read(&d, Va(BASE), None).unwrap());
    assert_eq!(p.size, MAX_IMAGE_SIZE);
    assert!(peak <= MAX_IMAGE_SIZE as usize + (1 << 20), "{peak}");
    assert!(p.warnings.iter().any(|w| w.contains("ceiling")));
    let p = PeImage::read(&d, Va(BASE), Some(0x3000)).unwrap();
    assert_eq!(p.size, 0x3000);
    assert!(matches!(
        PeImage::read(&d, Va(BASE + 0x8000), None),
        Err(Error::Pe { .. })
    ));
}

/// xorshift64*: deterministic randomness without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_corruption_never_panics() {
    let _g = serial();
    let Some(dir) = data_dir() else { return };
    let clean = layout(&std::fs::read(dir.join("pe/wine-x86_64/hidparse.sys")).unwrap());
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    // The headers, the export directory (.edata) and the import tables (.idata).
    let hot = |rng: &mut Rng| match rng.below(3) {
        0 => rng.below(0x400),
        1 => 0xE000 + rng.below(0x1000),
        _ => 0xF000 + rng.below(0x1000),
    };
    let mut parsed = 0;
    for _ in 0..5000 {
        let mut b = clean.clone();
        for _ in 0..1 + rng.below(16) {
            let at = hot(&mut rng).min(b.len() - 4);
            let v = rng.next();
            let width = [1usize, 2, 4][rng.below(3)];
            b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
        }
        let opts = PeOptions {
            goblin: rng.below(2) == 0,
            ..PeOptions::default()
        };
        let missing = if rng.below(4) == 0 {
            vec![(rng.below(b.len() / PAGE) * PAGE) as u64]
        } else {
            Vec::new()
        };
        let (r, peak) = peak_of(|| PeImage::parse_with(Va(BASE), b, missing, opts));
        // Tables and strings are bounded per image (65,536 exports and imports, 8 MiB of names).
        assert!(peak < 32 << 20, "{peak}");
        if let Ok(p) = r {
            parsed += 1;
            if let Some(cv) = &p.codeview {
                let _ = cv.store_path();
            }
        }
    }
    assert!(
        parsed > 1000,
        "most corruptions leave a parseable image ({parsed})"
    );
}

/// Regression (fuzz timeout, docs/symbols.md): 65,536 exports whose names all point at one 4 KiB
/// string. Names stop at the 8 MiB budget, the table still lists every export, and globbing all of
/// them is cheap (it used to lower-case each name into a fresh buffer).
#[test]
fn many_long_export_names_stay_bounded() {
    let _g = serial();
    let n: usize = 1 << 16;
    let mut b = tiny();
    let size = 0x3000 + 0x1000 + 12 * n + 0x1000;
    let size = size.div_ceil(PAGE) * PAGE;
    b.resize(size, 0);
    set32(&mut b, 0x98 + 0x38, size as u32);
    let dir = 0x2000usize;
    let name = 0x3000usize;
    b[name..name + 4000].fill(b'A');
    let funcs = 0x4000usize;
    let names = funcs + 4 * n;
    let ords = names + 4 * n;
    set32(&mut b, 0x98 + 0x70, dir as u32);
    set32(&mut b, 0x98 + 0x74, 0x28);
    for (k, v) in [
        0x10u32,
        1,
        n as u32,
        n as u32,
        funcs as u32,
        names as u32,
        ords as u32,
    ]
    .into_iter()
    .enumerate()
    {
        set32(&mut b, dir + 0xC + 4 * k, v);
    }
    for i in 0..n {
        set32(&mut b, funcs + 4 * i, 0x1000 + i as u32 % 0x1000);
        set32(&mut b, names + 4 * i, name as u32);
        b[ords + 2 * i..ords + 2 * i + 2].copy_from_slice(&(i as u16).to_le_bytes());
    }
    let d = dump_with(&[b], &[]);
    let start = std::time::Instant::now();
    let (p, peak) = peak_of(|| PeImage::read(&d, Va(BASE), None).unwrap());
    let e = p.exports.as_ref().unwrap();
    assert_eq!(e.entries.len(), n);
    let named = e.entries.iter().filter(|x| x.name.is_some()).count();
    assert_eq!(named, (8 << 20) / 4000);
    assert!(p.warnings.iter().any(|w| w.contains("names beyond 8 MiB")));
    assert!(peak < 32 << 20, "{peak}");
    let t = SymbolTable::build(
        &d,
        &[ModuleRef {
            name: "ntoskrnl.exe".into(),
            base: BASE,
            size: size as u64,
        }],
    );
    assert_eq!(t.find("nt!A*").len(), named);
    assert_eq!(t.find("*").len(), n);
    assert!(t.symbol("nt!#65000").is_ok());
    assert!(start.elapsed().as_secs() < 30, "{:?}", start.elapsed());
}
