//! What the walker needs from each loaded module: its executable sections, its `.pdata` table and the
//! bytes of its code and unwind data — read from the dump's in-memory image, or from an image file a
//! caller supplies ([`ImageProvider`], e.g. from a symbol store) when the dump does not hold them.
//!
//! Header offsets: WINDOWS_INTERNALS.md §6.1–6.2 (PE/COFF specification). Every field is bounds-checked;
//! a table larger than [`MAX_PDATA`] bytes or an image larger than [`MAX_IMAGE`] is refused.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::addr::{Va, PAGE_SIZE};
use crate::dump::Dump;
use crate::kernel::ModuleInfo;
use crate::stack::unwind::RuntimeFunction;

/// Largest `.pdata` table accepted (bytes): 1.4 M functions (entries are read on demand).
pub const MAX_PDATA: u64 = 16 << 20;
/// Largest image laid out from a file (bytes).
pub const MAX_IMAGE: u64 = 512 << 20;
/// IMAGE_SCN_MEM_EXECUTE.
const SCN_EXECUTE: u32 = 0x2000_0000;
/// IMAGE_SCN_CNT_CODE.
const SCN_CODE: u32 = 0x20;

/// Images of modules from outside the dump (a symbol store, a folder of drivers).
pub trait ImageProvider: Sync {
    /// The image of `module`, laid out in memory order (`bytes[rva]`), or None. Implementations should
    /// check that it is the same build (TimeDateStamp, SizeOfImage) as the loaded module.
    fn image(&self, module: &ModuleInfo) -> Option<Arc<Vec<u8>>>;
}

/// The parts of a PE header the walker uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageHeaders {
    /// PE32+.
    pub is64: bool,
    /// SizeOfImage (bytes).
    pub size_of_image: u32,
    /// TimeDateStamp.
    pub timestamp: u32,
    /// Exception directory (RVA, size in bytes); (0, 0) when absent.
    pub exception: (u32, u32),
    /// Sections: (RVA, virtual size, characteristics, raw offset, raw size).
    pub sections: Vec<(u32, u32, u32, u32, u32)>,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parse the headers at the start of `b` (an image or a file: the header layout is the same).
pub fn parse_headers(b: &[u8]) -> Option<ImageHeaders> {
    if b.get(..2)? != b"MZ" {
        return None;
    }
    let nt = u32_at(b, 0x3C)? as usize;
    if nt > 0x10000 || b.get(nt..nt + 4)? != b"PE\0\0" {
        return None;
    }
    let nsec = usize::from(u16_at(b, nt + 6)?).min(96);
    let opt_size = usize::from(u16_at(b, nt + 0x14)?);
    let timestamp = u32_at(b, nt + 8)?;
    let opt = nt + 0x18;
    let magic = u16_at(b, opt)?;
    let is64 = match magic {
        0x20B => true,
        0x10B => false,
        _ => return None,
    };
    let size_of_image = u32_at(b, opt + 0x38)?;
    let (nrva_at, dirs_at) = if is64 { (0x6C, 0x70) } else { (0x5C, 0x60) };
    let ndirs = u32_at(b, opt + nrva_at)?.min(16) as usize;
    let exception = if ndirs > 3 && dirs_at + 4 * 8 <= opt_size {
        (
            u32_at(b, opt + dirs_at + 3 * 8)?,
            u32_at(b, opt + dirs_at + 3 * 8 + 4)?,
        )
    } else {
        (0, 0)
    };
    let mut sections = Vec::with_capacity(nsec);
    for i in 0..nsec {
        let s = opt + opt_size + 40 * i;
        let (Some(vs), Some(va), Some(rs), Some(rp), Some(ch)) = (
            u32_at(b, s + 8),
            u32_at(b, s + 12),
            u32_at(b, s + 16),
            u32_at(b, s + 20),
            u32_at(b, s + 36),
        ) else {
            break;
        };
        sections.push((va, vs, ch, rp, rs));
    }
    Some(ImageHeaders {
        is64,
        size_of_image,
        timestamp,
        exception,
        sections,
    })
}

/// Lay an image file out in memory order (headers, then each section at its RVA; no relocations: unwind
/// data and call encodings are position independent). Fails on a malformed header or SizeOfImage above
/// [`MAX_IMAGE`].
pub fn layout_file(file: &[u8]) -> Result<Vec<u8>, String> {
    let h = parse_headers(file).ok_or("not a PE image (no MZ/PE headers)")?;
    let size = u64::from(h.size_of_image).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    if size == 0 || size > MAX_IMAGE {
        return Err(format!(
            "SizeOfImage {:#x} is out of range",
            h.size_of_image
        ));
    }
    let mut img = vec![0u8; size as usize];
    let head = file.len().min(0x1000).min(img.len());
    img[..head].copy_from_slice(&file[..head]);
    for &(va, vs, _, rp, rs) in &h.sections {
        let span = if vs == 0 {
            u64::from(rs)
        } else {
            u64::from(rs).min(u64::from(vs).div_ceil(PAGE_SIZE) * PAGE_SIZE)
        };
        let (va, rp) = (u64::from(va), u64::from(rp));
        let n = span
            .min(size.saturating_sub(va))
            .min((file.len() as u64).saturating_sub(rp));
        if n == 0 {
            continue;
        }
        img[va as usize..(va + n) as usize].copy_from_slice(&file[rp as usize..(rp + n) as usize]);
    }
    Ok(img)
}

/// The walker's view of one module.
#[derive(Debug)]
pub struct ModuleCode {
    /// Index into the module list.
    pub index: usize,
    /// Image base (VA).
    pub base: u64,
    /// Size (bytes).
    pub size: u64,
    /// Headers, when readable (from the dump or the provided image).
    pub headers: Option<ImageHeaders>,
    /// The `.pdata` table: Ok((RVA, number of 12-byte entries); 0 entries when the image has none) or
    /// Err(why it is not available). Entries are read on demand by [`CodeMap::lookup`].
    pub pdata: Result<(u32, u32), String>,
    /// The provided image, if any.
    pub image: Option<Arc<Vec<u8>>>,
}

/// Lazily built per-module code views over a dump.
pub struct CodeMap<'a> {
    d: &'a Dump,
    modules: &'a [ModuleInfo],
    by_base: Vec<usize>,
    cache: RefCell<HashMap<usize, Rc<ModuleCode>>>,
    provider: Option<&'a dyn ImageProvider>,
}

impl<'a> CodeMap<'a> {
    /// A map over `modules` (any order) of dump `d`.
    pub fn new(
        d: &'a Dump,
        modules: &'a [ModuleInfo],
        provider: Option<&'a dyn ImageProvider>,
    ) -> CodeMap<'a> {
        let mut by_base: Vec<usize> = (0..modules.len()).collect();
        by_base.sort_by_key(|&i| modules[i].base);
        CodeMap {
            d,
            modules,
            by_base,
            cache: RefCell::new(HashMap::new()),
            provider,
        }
    }

    /// The dump.
    pub fn dump(&self) -> &'a Dump {
        self.d
    }

    /// The module list.
    pub fn modules(&self) -> &'a [ModuleInfo] {
        self.modules
    }

    /// Index of the module whose [base, base + size) holds `va`.
    pub fn module_at(&self, va: u64) -> Option<usize> {
        let i = self
            .by_base
            .partition_point(|&m| self.modules[m].base <= va);
        let m = *self.by_base.get(i.checked_sub(1)?)?;
        let mi = &self.modules[m];
        (va - mi.base < mi.size).then_some(m)
    }

    /// The code view of module `index` (built on first use).
    pub fn code(&self, index: usize) -> Rc<ModuleCode> {
        if let Some(c) = self.cache.borrow().get(&index) {
            return c.clone();
        }
        let c = Rc::new(self.build(index));
        self.cache.borrow_mut().insert(index, c.clone());
        c
    }

    fn build(&self, index: usize) -> ModuleCode {
        let m = &self.modules[index];
        let image = self.provider.and_then(|p| p.image(m));
        let mut head = vec![0u8; PAGE_SIZE as usize];
        let from_dump = self.d.read_virt_padded(Va(m.base), &mut head) > 0;
        let headers = match (&image, from_dump) {
            (Some(img), _) => parse_headers(img),
            (None, true) => parse_headers(&head),
            (None, false) => None,
        };
        let pdata = match &headers {
            None => Err(format!(
                "the headers of {} ({:#x}) are not in the dump",
                m.name, m.base
            )),
            Some(h) if h.exception == (0, 0) => Ok((0, 0)),
            Some(h) => {
                let (rva, size) = (u64::from(h.exception.0), u64::from(h.exception.1));
                let limit = m.size.max(u64::from(h.size_of_image));
                if size > MAX_PDATA || rva + size > limit {
                    Err(format!(
                        "{}: exception directory {rva:#x}+{size:#x} is out of range",
                        m.name
                    ))
                } else {
                    Ok((rva as u32, (size / 12) as u32))
                }
            }
        };
        ModuleCode {
            index,
            base: m.base,
            size: m.size,
            headers,
            pdata,
            image,
        }
    }

    /// `n` bytes at `va`: from the dump, else from the module's provided image.
    pub fn read(&self, va: u64, n: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; n];
        if self.d.read_virt(Va(va), &mut buf).is_ok() {
            return Some(buf);
        }
        let m = self.module_at(va)?;
        let c = self.code(m);
        let img = c.image.as_ref()?;
        let rva = (va - c.base) as usize;
        img.get(rva..rva.checked_add(n)?).map(|s| s.to_vec())
    }

    /// `n` bytes at RVA `rva` of module `index`: the provided image first (unwind data is the same bytes),
    /// else the dump.
    pub fn read_rva(&self, index: usize, rva: u32, n: usize) -> Option<Vec<u8>> {
        let c = self.code(index);
        if let Some(img) = &c.image {
            let r = rva as usize;
            return img.get(r..r.checked_add(n)?).map(|s| s.to_vec());
        }
        if u64::from(rva) + n as u64 > c.size {
            return None;
        }
        let mut buf = vec![0u8; n];
        self.d
            .read_virt(Va(c.base + u64::from(rva)), &mut buf)
            .ok()
            .map(|_| buf)
    }

    /// The RUNTIME_FUNCTION of module `index` holding `rva`: a binary search reading 12-byte entries on
    /// demand (at most 32 reads; the table is sorted by BeginAddress, as the loader requires). Ok(None):
    /// no entry holds it (a leaf); Err: an entry that had to be read is not available.
    pub fn lookup(&self, index: usize, rva: u32) -> Result<Option<RuntimeFunction>, String> {
        let c = self.code(index);
        let (table, count) = c.pdata.clone()?;
        let entry = |i: u32| -> Result<RuntimeFunction, String> {
            self.read_rva(index, table + 12 * i, 12)
                .and_then(|b| RuntimeFunction::from_bytes(&b))
                .ok_or_else(|| {
                    format!(
                        "{}: .pdata entry {i} (RVA {:#x}) is not in the dump",
                        self.modules[index].name,
                        table + 12 * i
                    )
                })
        };
        // Last entry with begin <= rva.
        let (mut lo, mut hi) = (0u32, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if entry(mid)?.begin <= rva {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return Ok(None);
        }
        let f = entry(lo - 1)?;
        Ok((rva < f.end).then_some(f))
    }

    /// True when `va` lies in an executable section of a loaded module whose headers are known; when the
    /// headers are unknown, any address inside a module counts.
    pub fn in_code(&self, va: u64) -> bool {
        let Some(m) = self.module_at(va) else {
            return false;
        };
        let c = self.code(m);
        let Some(h) = &c.headers else { return true };
        let rva = va - c.base;
        h.sections.iter().any(|&(sva, vs, ch, _, rs)| {
            let (s, len) = (u64::from(sva), u64::from(vs.max(rs)));
            ch & (SCN_EXECUTE | SCN_CODE) != 0 && rva >= s && rva - s < len
        })
    }

    /// Whether a call instruction ends exactly at `va` (the instruction bytes are read from the dump or the
    /// provided image): Some(true/false), or None when the bytes are not available.
    ///
    /// Bytes from a provided image *file* are the code before the loader touched it. Windows 10 rewrites
    /// import calls listed in an image's dynamic value relocation table (load config
    /// `DynamicValueRelocTable`: "import control transfer") from the 6-byte `FF 15 disp32` to a 5-byte
    /// `E8 rel32` plus one filler byte, so in memory the return address sits one byte before the end of
    /// the file's `FF 15` — seen on the real Windows 10 triage dump (Wdf01000+0x16f81, +0x7c027, +0xcc5f).
    /// With file bytes, an `FF 15` starting 5 bytes before `va` therefore counts as a call too.
    pub fn after_call(&self, va: u64, is64: bool) -> Option<bool> {
        // The longest form is 7 bytes (FF /2 with SIB and disp32); shorter reads when the bytes before
        // straddle a page the dump does not hold.
        for back in (2..=7u64).rev() {
            let Some(start) = va.checked_sub(back) else {
                continue;
            };
            let mut buf = vec![0u8; back as usize];
            if self.d.read_virt(Va(start), &mut buf).is_ok() {
                return Some(crate::stack::scan::call_ending_at(&buf, buf.len(), is64).is_some());
            }
        }
        let m = self.module_at(va)?;
        let c = self.code(m);
        let img = c.image.as_ref()?;
        let rva = usize::try_from(va - c.base).ok()?;
        let b = img.get(rva.checked_sub(7)?..rva.checked_add(1)?)?;
        let plain = crate::stack::scan::call_ending_at(&b[..7], 7, is64).is_some();
        Some(plain || (b[2] == 0xFF && b[3] == 0x15))
    }
}
