//! A dump opened for reading: the container, physical memory, and the kernel address space.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::addr::{Pa, Va, PAGE_SIZE};
use crate::container::{parse_body, raw_body, Layout};
use crate::error::{Error, Result};
use crate::header::{parse_header, DumpHeader, Machine};
use crate::layouts::LayoutOverrides;
use crate::mapguard::GuardedMap;
use crate::mmu::{walk, Leaves, Mode, Walk};
use crate::phys::PhysMap;
use crate::raw;
use crate::triage::Triage;

/// The bytes of a dump file: a read-only memory map, or an owned buffer (tests, fuzzing).
pub enum Backing {
    /// A read-only map of the file, guarded against the file shrinking (see [`crate::mapguard`]).
    Mmap(GuardedMap),
    /// Bytes held in memory.
    Owned(Vec<u8>),
}

impl Backing {
    /// The whole file.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m.bytes(),
            Backing::Owned(v) => v,
        }
    }

    /// File offset (bytes) of the first page found missing because the file shrank while mapped.
    #[inline]
    pub fn shrank_at(&self) -> Option<u64> {
        match self {
            Backing::Mmap(m) => m.flag().shrank_at(),
            Backing::Owned(_) => None,
        }
    }

    /// Tell the kernel how the map is about to be read (`madvise`): page faults then read ahead
    /// only as much as the pattern needs. A hint only: failures and other platforms are ignored.
    pub fn advise(&self, access: Access) {
        #[cfg(unix)]
        if let Backing::Mmap(m) = self {
            if advice_disabled() {
                return;
            }
            let a = match access {
                Access::Random => memmap2::Advice::Random,
                Access::Sequential => memmap2::Advice::Sequential,
            };
            let _ = m.advise(a);
        }
        #[cfg(not(unix))]
        let _ = access;
    }
}

/// How a dump's bytes are about to be read, for [`Backing::advise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Structure reads and address translation: a page here and there. The kernel reads only the
    /// faulting page (`MADV_RANDOM`), not the device's read-ahead window (often 128 KiB to 8 MiB) —
    /// on a cold disk this is the difference between reading megabytes and gigabytes for a triage.
    Random,
    /// Scans and searches: long runs read in order (`MADV_SEQUENTIAL`, aggressive read-ahead).
    Sequential,
}

/// `NTDUMP_MADVISE=0` turns the access advice off (to measure what it saves; see
/// benchmarks/cold_reads.py). Read once per process.
#[cfg(unix)]
fn advice_disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var_os("NTDUMP_MADVISE").is_some_and(|v| v == "0"))
}

/// While alive, the dump's map is advised for sequential reading; the last guard of overlapping
/// scans to drop advises random access again ([`Dump::sequential`]).
pub struct SequentialScan<'d> {
    dump: &'d Dump,
}

impl Drop for SequentialScan<'_> {
    fn drop(&mut self) {
        if self.dump.scans.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.dump.backing.advise(Access::Random);
        }
    }
}

/// Most bytes one read call copies ([`Dump::read_virt`] and friends take any buffer, but the bindings and
/// the CLI refuse larger requests before allocating; stream bigger ranges in chunks). 256 MiB.
pub const MAX_READ_BYTES: u64 = 256 << 20;

/// `n` (bytes) as a buffer length for read `what`, or [`Error::ReadLimit`] when it is over
/// [`MAX_READ_BYTES`]: front ends check this before allocating the buffer.
pub fn check_read_len(what: &'static str, n: u64) -> Result<usize> {
    let max = MAX_READ_BYTES;
    match usize::try_from(n) {
        Ok(len) if n <= max => Ok(len),
        _ => Err(Error::ReadLimit { what, n, max }),
    }
}

/// Options for raw physical images (no header).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawOptions {
    /// Architecture; `None` to detect from the page tables found.
    pub machine: Option<Machine>,
    /// PAE paging for x86 images; `None` to detect.
    pub pae: Option<bool>,
    /// Directory table base (PA); `None` to search for a self-referencing top-level table.
    pub dtb: Option<u64>,
}

/// What [`Dump::info`] reports: the header's fields and what the container made of the file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Info<'a> {
    /// The header's fields.
    #[serde(flatten)]
    pub header: &'a DumpHeader,
    /// How the file holds memory.
    pub layout: Layout,
    /// Physical memory present in the file: (base PFN, page count) runs, sorted.
    pub runs: Vec<(u64, u64)>,
    /// The same runs with where they start in the file: (base PFN, page count, file offset).
    pub file_runs: Vec<(u64, u64, u64)>,
    /// Pages present in the file.
    pub present_pages: u64,
    /// Pages the header declares that the file is too short to hold.
    pub missing_pages: u64,
    /// File size in bytes.
    pub file_size: u64,
    /// What was odd while opening.
    pub warnings: &'a [String],
    /// Triage dumps: the captured VA ranges as (VA, length, file offset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triage_ranges: Option<Vec<(u64, u64, u64)>>,
    /// Triage dumps: the number of data blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triage_data_blocks: Option<u64>,
}

/// An open dump. Cheap to share between threads (`Sync`); every read is a copy out of the map.
pub struct Dump {
    backing: Arc<Backing>,
    /// The header (synthesised for raw images).
    pub header: DumpHeader,
    /// How the file stores memory.
    pub layout: Layout,
    phys: PhysMap,
    triage: Option<Triage>,
    mode: Option<Mode>,
    dtb: u64,
    /// Oddities found while opening (truncation, count mismatches); never fatal.
    pub warnings: Vec<String>,
    /// Scans in progress ([`Dump::sequential`]).
    scans: AtomicUsize,
    /// Layouts from a PDB that replace the built-in profiles ([`Dump::set_layouts`]).
    layouts: RwLock<Arc<LayoutOverrides>>,
}

fn map_file(path: &Path) -> Result<Backing> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len == 0 {
        return Err(Error::format("file is empty", 0));
    }
    // SAFETY: the map is read-only. Its bytes are untrusted input whatever they become; if another process
    // truncates the file while it is mapped, the fault handler of `mapguard` maps zeros over the vanished
    // pages and flags the map, and every read path then reports "file shrank while open".
    let m = unsafe { GuardedMap::map(&f) }.map_err(io)?;
    let b = Backing::Mmap(m);
    // Before the first fault: the header is one or two pages, not a read-ahead window.
    b.advise(Access::Random);
    Ok(b)
}

impl Dump {
    /// Open a crash dump (`PAGEDUMP` / `PAGEDU64`) at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Dump> {
        Self::from_backing(map_file(path.as_ref())?)
    }

    /// Open a crash dump held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Dump> {
        Self::from_backing(Backing::Owned(bytes))
    }

    /// Open a crash dump from a backing store.
    pub fn from_backing(backing: Backing) -> Result<Dump> {
        let data = backing.bytes();
        let header = parse_header(data)?;
        let body = parse_body(data, &header)?;
        let mode = match header.machine {
            Machine::X64 => Some(Mode::X64),
            Machine::X86 if header.pae => Some(Mode::Pae),
            Machine::X86 => Some(Mode::X86),
            Machine::Arm64 => None,
        };
        let dtb = header.dtb;
        Ok(Dump {
            backing: Arc::new(backing),
            header,
            layout: body.layout,
            phys: body.phys,
            triage: body.triage,
            mode,
            dtb,
            warnings: body.warnings,
            scans: AtomicUsize::new(0),
            layouts: RwLock::default(),
        })
    }

    /// Open a raw physical memory image (file offset == PA).
    pub fn open_raw(path: impl AsRef<Path>, opts: RawOptions) -> Result<Dump> {
        Self::raw_from_backing(map_file(path.as_ref())?, opts)
    }

    /// Open a raw physical image held in memory.
    pub fn raw_from_bytes(bytes: Vec<u8>, opts: RawOptions) -> Result<Dump> {
        Self::raw_from_backing(Backing::Owned(bytes), opts)
    }

    fn raw_from_backing(backing: Backing, opts: RawOptions) -> Result<Dump> {
        let data = backing.bytes();
        let body = raw_body(data.len() as u64);
        let mut warnings = Vec::new();
        let (mode, dtb) = match (opts.dtb, opts.machine) {
            (Some(dtb), Some(m)) => (raw::mode_for(m, opts.pae.unwrap_or(false)), dtb),
            _ => {
                let found = raw::find_dtb(data, &body.phys, opts)?;
                warnings.push(format!(
                    "raw image: {} paging, DTB {:#x} found by {}",
                    found.0.as_str(),
                    found.1,
                    found.2
                ));
                (found.0, found.1)
            }
        };
        let header = raw::synthetic_header(mode, dtb, data.len() as u64);
        Ok(Dump {
            backing: Arc::new(backing),
            header,
            layout: Layout::Raw,
            phys: body.phys,
            triage: None,
            mode: Some(mode),
            dtb,
            warnings,
            scans: AtomicUsize::new(0),
            layouts: RwLock::default(),
        })
    }

    /// The layouts that replace the built-in profiles (empty unless [`Dump::set_layouts`] was
    /// called): every pool and module reader consults them.
    pub fn layouts(&self) -> Arc<LayoutOverrides> {
        match self.layouts.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replace the layout overrides (from a PDB: [`crate::layouts::from_types`]); returns the
    /// previous ones. Readers called afterwards use the new layouts; results already computed
    /// (a [`crate::kernel::Kernel`] …) are the caller's to drop.
    pub fn set_layouts(&self, l: LayoutOverrides) -> Arc<LayoutOverrides> {
        let new = Arc::new(l);
        match self.layouts.write() {
            Ok(mut g) => std::mem::replace(&mut *g, new),
            Err(p) => std::mem::replace(&mut *p.into_inner(), new),
        }
    }

    /// Advise sequential reading of the file until the returned guard drops (scans and searches);
    /// outside scans the map is advised for random access. Overlapping scans share the advice.
    pub fn sequential(&self) -> SequentialScan<'_> {
        if self.scans.fetch_add(1, Ordering::AcqRel) == 0 {
            self.backing.advise(Access::Sequential);
        }
        SequentialScan { dump: self }
    }

    /// The whole file.
    #[inline]
    pub fn file(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// `Ok` unless the file shrank while mapped (another process truncated it): then a
    /// [`Error::Format`] "file shrank while open" naming the file offset of the first vanished page.
    /// Every read path checks this after copying; callers that borrow pages ([`Dump::phys_page`]) call it
    /// before trusting what they computed.
    #[inline]
    pub fn check_intact(&self) -> Result<()> {
        match self.backing.shrank_at() {
            None => Ok(()),
            Some(off) => Err(Error::format(
                "file shrank while open (another process truncated the dump); first missing page",
                off,
            )),
        }
    }

    /// The header's fields and what the container made of the file, as one record.
    pub fn info(&self) -> Info<'_> {
        let runs = self.phys.runs();
        let t = self.triage.as_ref();
        Info {
            header: &self.header,
            layout: self.layout,
            runs: runs.iter().map(|r| (r.base_pfn, r.pages)).collect(),
            file_runs: runs
                .iter()
                .map(|r| (r.base_pfn, r.pages, r.file_offset))
                .collect(),
            present_pages: self.phys.present_pages(),
            missing_pages: self.phys.missing_pages,
            file_size: self.file_len(),
            warnings: &self.warnings,
            triage_ranges: t.map(|t| {
                t.ranges
                    .iter()
                    .map(|r| (r.va, r.len, r.file_offset))
                    .collect()
            }),
            triage_data_blocks: t.map(|t| t.data_blocks),
        }
    }

    /// File length in bytes (as mapped at open).
    pub fn file_len(&self) -> u64 {
        self.backing.bytes().len() as u64
    }

    /// The physical map (runs of stored pages).
    pub fn phys(&self) -> &PhysMap {
        &self.phys
    }

    /// Triage-dump contents, for DumpType 4.
    pub fn triage(&self) -> Option<&Triage> {
        self.triage.as_ref()
    }

    /// Paging mode (`None` for ARM64, whose translation is not implemented yet).
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// Paging mode, or [`Error::Unsupported`] for ARM64: what every reader of the page tables calls.
    pub fn paging(&self) -> Result<Mode> {
        self.mode.ok_or_else(|| {
            Error::Unsupported("ARM64 address translation is not implemented yet".into())
        })
    }

    /// The leaves of the kernel page tables (the mapped-page model; [`Error::Unsupported`] for ARM64).
    pub fn leaves(&self) -> Result<Leaves<'_>> {
        Ok(Leaves::new(
            &self.phys,
            self.file(),
            self.paging()?,
            self.dtb,
        ))
    }

    /// Directory table base used for kernel translation (PA).
    pub fn dtb(&self) -> u64 {
        self.dtb
    }

    /// Pointer size in bytes.
    pub fn pointer_size(&self) -> u64 {
        self.header.machine.pointer_size()
    }

    /// Copy `buf.len()` bytes of physical memory at `pa`; fails with [`Error::NotInDump`] naming the first
    /// missing page.
    pub fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<()> {
        check_span(pa.0, buf.len(), u64::MAX).map_err(|_| Error::NotInDump {
            va: None,
            pa: Pa(pa.0 & !(PAGE_SIZE - 1)),
        })?;
        let r = self.phys.read(self.file(), pa, buf);
        self.check_intact()?;
        r
    }

    /// [`Dump::read_phys`], or with `pad` [`Dump::read_phys_padded`]; padded or not, a read that runs
    /// past 2^64 fails.
    pub fn read_phys_pad(&self, pa: Pa, buf: &mut [u8], pad: bool) -> Result<()> {
        if !pad {
            return self.read_phys(pa, buf);
        }
        check_span(pa.0, buf.len(), u64::MAX).map_err(|_| Error::NotInDump {
            va: None,
            pa: Pa(pa.0 & !(PAGE_SIZE - 1)),
        })?;
        self.read_phys_padded(pa, buf);
        Ok(())
    }

    /// Like [`Dump::read_phys`] but zero-fills missing pages; returns the number of bytes that were present.
    pub fn read_phys_padded(&self, pa: Pa, buf: &mut [u8]) -> usize {
        // Past 2^64 nothing exists: those bytes stay zero and are not counted.
        let buf = match check_span(pa.0, buf.len(), u64::MAX) {
            Ok(()) => buf,
            Err(fit) => {
                buf[fit as usize..].fill(0);
                &mut buf[..fit as usize]
            }
        };
        let mut got = 0;
        let mut done = 0usize;
        while done < buf.len() {
            let cur = pa.0.wrapping_add(done as u64);
            let off = (cur & (PAGE_SIZE - 1)) as usize;
            let n = (PAGE_SIZE as usize - off).min(buf.len() - done);
            match self.phys.page(self.file(), cur >> 12) {
                Some(p) => {
                    buf[done..done + n].copy_from_slice(&p[off..off + n]);
                    got += n;
                }
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        got
    }

    /// The stored 4 KiB page of frame `pfn`, borrowed from the map (zero copy).
    #[inline]
    pub fn phys_page(&self, pfn: u64) -> Option<&[u8]> {
        self.phys.page(self.file(), pfn)
    }

    fn read_entry(&self, mode: Mode, pa: Pa) -> Result<u64> {
        // Entries are 4- or 8-byte aligned, so an entry never crosses a page: read it from the page.
        let n = mode.spec().entry_size as usize;
        let off = pa.page_offset() as usize;
        let page = self
            .phys_page(pa.pfn())
            .ok_or(Error::NotInDump { va: None, pa })?;
        let mut b = [0u8; 8];
        match page.get(off..off + n) {
            Some(src) => b[..n].copy_from_slice(src),
            None => return Err(Error::NotInDump { va: None, pa }),
        }
        Ok(u64::from_le_bytes(b))
    }

    /// Walk the kernel page tables for `va`, level by level (what `!pte` shows).
    pub fn walk(&self, va: Va) -> Result<Walk> {
        self.walk_with(va, Pa(self.dtb))
    }

    /// Walk the page tables rooted at `dtb` (the PA of the top-level table) for `va`.
    pub fn walk_with(&self, va: Va, dtb: Pa) -> Result<Walk> {
        let mode = self.paging()?;
        Ok(walk(mode, dtb.0, va, |pa| self.read_entry(mode, pa)))
    }

    /// Translate a kernel VA to a PA. Triage dumps have no physical memory: this fails there.
    pub fn translate(&self, va: Va) -> Result<Pa> {
        let mode = self.paging()?;
        Ok(crate::mmu::translate(mode, self.dtb, va, |pa| self.read_entry(mode, pa))?.0)
    }

    /// Copy `buf.len()` bytes of kernel virtual memory at `va`. Pages may have different backing; the
    /// first unreadable page gives its error. Triage dumps read their captured ranges.
    pub fn read_virt(&self, va: Va, buf: &mut [u8]) -> Result<()> {
        self.check_va_span(va, buf.len())?;
        let r = self.read_virt_unchecked(va, buf);
        self.check_intact()?;
        r
    }

    /// Highest valid VA of this dump's address space (2^32 − 1 on x86, 2^64 − 1 elsewhere).
    pub fn va_top(&self) -> u64 {
        if self.pointer_size() == 4 {
            u32::MAX as u64
        } else {
            u64::MAX
        }
    }

    /// Fails with [`Error::NotCaptured`] naming `va` when `len` bytes at `va`
    /// would run past the top of the address space (and wrap to VA 0).
    pub fn check_va_span(&self, va: Va, len: usize) -> Result<()> {
        check_span(va.0, len, self.va_top()).map_err(|_| Error::NotCaptured {
            va,
            why: "the read runs past the top of the address space",
        })
    }

    fn read_virt_unchecked(&self, va: Va, buf: &mut [u8]) -> Result<()> {
        if let Some(t) = &self.triage {
            return t.read(self.file(), va, buf);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let cur = Va(va.0.wrapping_add(done as u64));
            let off = cur.page_offset() as usize;
            let n = (PAGE_SIZE as usize - off).min(buf.len() - done);
            let page = self.virt_page(cur)?;
            buf[done..done + n].copy_from_slice(&page[off..off + n]);
            done += n;
        }
        Ok(())
    }

    /// [`Dump::read_virt`], or with `pad` [`Dump::read_virt_padded`]; padded or not, a read that runs
    /// past the top of the address space fails (it would wrap to VA 0).
    pub fn read_virt_pad(&self, va: Va, buf: &mut [u8], pad: bool) -> Result<()> {
        self.check_va_span(va, buf.len())?;
        if pad {
            self.read_virt_padded(va, buf);
            Ok(())
        } else {
            self.read_virt(va, buf)
        }
    }

    /// Like [`Dump::read_virt`] but zero-fills unreadable pages; returns the number of bytes that were read.
    pub fn read_virt_padded(&self, va: Va, buf: &mut [u8]) -> usize {
        // Past the top of the address space nothing exists: those bytes stay zero and are not counted.
        let buf = match check_span(va.0, buf.len(), self.va_top()) {
            Ok(()) => buf,
            Err(fit) => {
                let keep = fit as usize;
                buf[keep..].fill(0);
                &mut buf[..keep]
            }
        };
        let mut got = 0;
        let mut done = 0usize;
        while done < buf.len() {
            let cur = Va(va.0.wrapping_add(done as u64));
            let n = (PAGE_SIZE - cur.page_offset()) as usize;
            let n = n.min(buf.len() - done);
            match self.read_virt(cur, &mut buf[done..done + n]) {
                Ok(()) => got += n,
                Err(_) => buf[done..done + n].fill(0),
            }
            done += n;
        }
        got
    }

    /// The stored page holding kernel VA `va`, borrowed from the map (not available for triage dumps).
    pub fn virt_page(&self, va: Va) -> Result<&[u8]> {
        let pa = self.translate(va)?;
        self.phys_page(pa.pfn()).ok_or(Error::NotInDump {
            va: Some(va),
            pa: pa.page_align(),
        })
    }

    /// A pointer-sized value at `va` (4 bytes on x86, 8 elsewhere).
    pub fn read_ptr(&self, va: Va) -> Result<u64> {
        let mut b = [0u8; 8];
        let n = self.pointer_size() as usize;
        self.read_virt(va, &mut b[..n])?;
        Ok(u64::from_le_bytes(b))
    }

    /// A u32 at `va`.
    pub fn read_u32(&self, va: Va) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_virt(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// A u64 at `va`.
    pub fn read_u64(&self, va: Va) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_virt(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// `Ok` when `len` bytes from `start` stay at or below `top`; else `Err(how many of them do)`.
fn check_span(start: u64, len: usize, top: u64) -> std::result::Result<(), u64> {
    if len == 0 {
        return Ok(());
    }
    if start > top {
        return Err(0);
    }
    match start.checked_add(len as u64 - 1) {
        Some(last) if last <= top => Ok(()),
        _ => Err(top - start + 1),
    }
}
