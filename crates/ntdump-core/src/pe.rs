//! PE images in memory (WINDOWS_INTERNALS.md §6): headers, sections, exports, imports with their IAT
//! slots, the debug directory and CodeView (PDB) record of a module loaded in a dump.
//!
//! [`PeImage::read`] rebuilds the image from kernel virtual memory page by page: pages that cannot be read
//! (paged out, discarded INIT, missing from the dump) become zeros and are listed in
//! [`PeImage::missing_pages`]. Everything is bounded: SizeOfImage is capped at [`MAX_IMAGE_SIZE`],
//! `e_lfanew` at 64 KiB, sections at the loader's 96, and every count and RVA is checked against the image.
//! A missing or malformed header is an [`Error::Pe`]; anything else wrong becomes a warning and the parts
//! that could be read are returned.
//!
//! goblin parses the headers, sections, export tables and debug directory, with
//! `ParseOptions { resolve_rva: false, parse_attribute_certificates: false, .. }` (RVAs index the rebuilt
//! image directly) in permissive mode. When goblin refuses a part, a small bounded reader of the same
//! structure takes over and the reason is a warning; [`PeImage::parsers`] tells which one read each part.
//! Imports are always read by our own code (see [`imports`]).

pub mod debug;
pub mod exports;
pub mod headers;
pub mod imports;
pub mod scan;
mod view;

pub use debug::{CodeView, DebugEntry};
pub use exports::{Export, Exports};
pub use headers::{DataDirectory, FileHeader, Headers, OptionalHeader, Section, DIRECTORY_NAMES};
pub use imports::{Import, ImportSource};

use crate::addr::{Va, PAGE_SIZE};
use crate::dump::Dump;
use crate::error::{Error, Result};
use view::View;

/// Largest image rebuilt (bytes). A SizeOfImage above it is cut to it with a warning.
pub const MAX_IMAGE_SIZE: u64 = 256 << 20;

/// Which reader parsed a part of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parser {
    /// goblin 0.10.
    Goblin,
    /// ntdump's own bounded reader (goblin refused the part, or was not asked).
    Own,
}

impl Parser {
    /// `"goblin"` or `"own"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Parser::Goblin => "goblin",
            Parser::Own => "own",
        }
    }
}

crate::ser::as_str!(Parser);

/// Which reader parsed each part (None: the image has no such part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Parsers {
    /// The DOS/NT headers and data directories.
    pub headers: Parser,
    /// The section table.
    pub sections: Parser,
    /// The export directory.
    pub exports: Option<Parser>,
    /// The debug directory and CodeView record.
    pub debug: Option<Parser>,
}

/// Options of [`PeImage::read`] / [`PeImage::parse`].
#[derive(Debug, Clone, Copy)]
pub struct PeOptions {
    /// Try goblin first (default). `false` uses only the bounded readers (tests compare the two).
    pub goblin: bool,
    /// Image-size ceiling in bytes (default [`MAX_IMAGE_SIZE`]).
    pub max_image_size: u64,
}

impl Default for PeOptions {
    fn default() -> Self {
        PeOptions {
            goblin: true,
            max_image_size: MAX_IMAGE_SIZE,
        }
    }
}

/// The goblin options used for in-memory images.
pub(crate) fn goblin_options() -> goblin::pe::options::ParseOptions {
    let mut o = goblin::pe::options::ParseOptions::default()
        .with_parse_mode(goblin::options::ParseMode::Permissive)
        .with_parse_tls_data(false)
        .with_parse_resources(false)
        .with_parse_imports(false);
    o.resolve_rva = false;
    o.parse_attribute_certificates = false;
    o
}

/// Run one goblin call: the single place every goblin call goes through. Inputs are validated before they
/// reach goblin (counts and directories fit in the image); goblin's error becomes a string for the warning
/// that precedes the fallback. There is no `catch_unwind` here: fuzzing (docs/symbols.md) found no goblin
/// panic on validated inputs, and this is where one would go if a goblin upgrade brought one.
pub(crate) fn guarded<T>(
    f: impl FnOnce() -> std::result::Result<T, String>,
) -> std::result::Result<T, String> {
    f()
}

/// A PE image rebuilt from a dump. RVAs are byte offsets from [`PeImage::base`].
#[derive(Debug, Clone)]
pub struct PeImage {
    /// Image base (VA).
    pub base: Va,
    /// Bytes rebuilt: SizeOfImage (or the caller's hint, or the cap) rounded up to whole pages.
    pub size: u64,
    /// The headers.
    pub headers: Headers,
    /// The section table.
    pub sections: Vec<Section>,
    /// The export directory, if the image has one and it is readable.
    pub exports: Option<Exports>,
    /// One row per IAT slot.
    pub imports: Vec<Import>,
    /// The debug directory entries.
    pub debug: Vec<DebugEntry>,
    /// The first readable CodeView record.
    pub codeview: Option<CodeView>,
    /// RVAs (page aligned) of the pages that could not be read and were zero-filled.
    pub missing_pages: Vec<u64>,
    /// What was odd or cut short while reading (never fatal).
    pub warnings: Vec<String>,
    /// Which reader parsed each part.
    pub parsers: Parsers,
    bytes: Vec<u8>,
}

impl PeImage {
    /// Rebuild and parse the image at `base` (a VA). `size_hint` (bytes) is the loader's SizeOfImage, e.g.
    /// from the module list; it is used when the header's SizeOfImage is zero or above the cap, and a
    /// disagreement is a warning.
    pub fn read(d: &Dump, base: Va, size_hint: Option<u64>) -> Result<PeImage> {
        Self::read_with(d, base, size_hint, PeOptions::default())
    }

    /// [`PeImage::read`] with options.
    pub fn read_with(
        d: &Dump,
        base: Va,
        size_hint: Option<u64>,
        opts: PeOptions,
    ) -> Result<PeImage> {
        let pe = |what: String| Error::Pe { base, what };
        if base.page_offset() != 0 {
            return Err(pe(format!("base {:#x} is not page aligned", base.0)));
        }
        let mut warnings = Vec::new();
        // The headers: the first page, and more if e_lfanew puts the NT headers further in.
        let mut head = vec![0u8; PAGE_SIZE as usize];
        if d.read_virt_padded(base, &mut head) == 0 {
            return Err(pe("the first page (PE headers) is not readable".into()));
        }
        if head[..2] != *b"MZ" {
            return Err(pe("no MZ signature at the image base".into()));
        }
        let lfanew = u32::from_le_bytes([head[0x3C], head[0x3D], head[0x3E], head[0x3F]]);
        if lfanew >= headers::MAX_E_LFANEW {
            return Err(pe(format!("e_lfanew {lfanew:#x} is past the first 64 KiB")));
        }
        let need = (u64::from(lfanew) + 0x18 + 0xF0).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        if need > PAGE_SIZE {
            head.resize(need as usize, 0);
            d.read_virt_padded(Va(base.0 + PAGE_SIZE), &mut head[PAGE_SIZE as usize..]);
        }
        let (_, stored) = headers::probe(&head).map_err(pe)?;
        let size = choose_size(
            u64::from(stored),
            size_hint,
            opts.max_image_size,
            &mut warnings,
        );
        let mut bytes = vec![0u8; size as usize];
        let mut missing = Vec::new();
        let have = (PAGE_SIZE as usize).min(bytes.len());
        bytes[..have].copy_from_slice(&head[..have]);
        // Full and bitmap dumps hold whole pages: a failed read leaves the (lazily zeroed) page untouched.
        // Triage dumps may hold part of a page: keep what is there.
        let partial = d.triage().is_some();
        let mut rva = have as u64;
        while rva < size {
            let page = &mut bytes[rva as usize..(rva + PAGE_SIZE) as usize];
            let va = Va(base.0.wrapping_add(rva));
            let ok = if partial {
                d.read_virt_padded(va, page) > 0
            } else {
                d.read_virt(va, page).is_ok()
            };
            if !ok {
                missing.push(rva);
            }
            rva += PAGE_SIZE;
        }
        let mut img = Self::parse_with(base, bytes, missing, opts)?;
        warnings.append(&mut img.warnings);
        img.warnings = warnings;
        Ok(img)
    }

    /// Parse an image already laid out in memory order (`bytes[rva]`), e.g. a file mapped by hand.
    /// `missing_pages` are page-aligned RVAs that are known to be unreadable (zeros in `bytes`).
    pub fn parse(base: Va, bytes: Vec<u8>, missing_pages: Vec<u64>) -> Result<PeImage> {
        Self::parse_with(base, bytes, missing_pages, PeOptions::default())
    }

    /// [`PeImage::parse`] with options. `bytes` longer than the cap are cut, with a warning.
    pub fn parse_with(
        base: Va,
        mut bytes: Vec<u8>,
        mut missing_pages: Vec<u64>,
        opts: PeOptions,
    ) -> Result<PeImage> {
        let mut warnings = Vec::new();
        if bytes.len() as u64 > opts.max_image_size {
            warnings.push(format!(
                "image of {:#x} bytes cut to {:#x}",
                bytes.len(),
                opts.max_image_size
            ));
            bytes.truncate(opts.max_image_size as usize);
        }
        missing_pages.retain(|&p| p < bytes.len() as u64);
        missing_pages
            .iter_mut()
            .for_each(|p| *p &= !(PAGE_SIZE - 1));
        missing_pages.sort_unstable();
        missing_pages.dedup();
        let v = View {
            bytes: &bytes,
            missing: &missing_pages,
        };
        if !v.present(0, 0x40) {
            return Err(Error::Pe {
                base,
                what: "the PE headers are on a missing page".into(),
            });
        }
        let (headers, hp) =
            headers::parse(v, &opts, &mut warnings).map_err(|what| Error::Pe { base, what })?;
        check_directories(&headers, v.len(), &mut warnings);
        let (sections, sp) = headers::sections(v, &headers, &opts, &mut warnings);
        let mut budget = view::Budget::new();
        let (exports, ep) = exports::parse(v, &headers, &opts, &mut budget, &mut warnings);
        let imports = imports::parse(v, &headers, &mut budget, &mut warnings);
        if budget.exhausted {
            warnings.push(format!(
                "names beyond {} MiB were dropped (too many or too long for one image)",
                view::STRING_BUDGET >> 20
            ));
        }
        let (debug, codeview, dp) = debug::parse(v, &headers, &opts, &mut warnings);
        Ok(PeImage {
            base,
            size: bytes.len() as u64,
            headers,
            sections,
            exports,
            imports,
            debug,
            codeview,
            missing_pages,
            warnings,
            parsers: Parsers {
                headers: hp,
                sections: sp,
                exports: ep,
                debug: dp,
            },
            bytes,
        })
    }

    /// The rebuilt image (`bytes()[rva]`); empty after [`PeImage::drop_bytes`].
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Free the rebuilt bytes, keeping what was parsed (for caches).
    pub fn drop_bytes(&mut self) {
        self.bytes = Vec::new();
    }

    /// True for PE32+ images.
    pub fn is64(&self) -> bool {
        self.headers.is64()
    }

    /// VA of `rva`.
    pub fn va(&self, rva: u64) -> Va {
        Va(self.base.0.wrapping_add(rva))
    }

    /// The section holding `rva`, if any.
    pub fn section_at(&self, rva: u64) -> Option<&Section> {
        self.sections.iter().find(|s| {
            let start = u64::from(s.virtual_address);
            rva >= start && rva < start + u64::from(s.span())
        })
    }
}

/// Bytes to rebuild: the header's SizeOfImage, or the loader's (`hint`) when the header's is 0; when both
/// are given and differ, the smaller (a corrupt huge value on either side cannot inflate the read);
/// never above `cap`. Page-rounded.
fn choose_size(stored: u64, hint: Option<u64>, cap: u64, warnings: &mut Vec<String>) -> u64 {
    let hint = hint.filter(|&h| h != 0);
    let mut size = match (stored, hint) {
        (0, Some(h)) => {
            warnings.push(format!("SizeOfImage is 0; using the module list's {h:#x}"));
            h
        }
        (0, None) => {
            warnings.push("SizeOfImage is 0; reading the first page only".into());
            PAGE_SIZE
        }
        (s, Some(h)) if s.div_ceil(PAGE_SIZE) != h.div_ceil(PAGE_SIZE) => {
            warnings.push(format!(
                "SizeOfImage in the header ({s:#x}) differs from the module list's ({h:#x}); reading {:#x}",
                s.min(h)
            ));
            s.min(h)
        }
        (s, _) => s,
    };
    if size > cap {
        warnings.push(format!(
            "SizeOfImage {size:#x} is above the {cap:#x}-byte ceiling; reading {cap:#x} bytes"
        ));
        size = cap;
    }
    size.div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE
}

fn check_directories(h: &Headers, len: u64, warnings: &mut Vec<String>) {
    for d in &h.directories {
        // The security directory holds a file offset: it is never mapped.
        if d.index == 4 || (d.rva == 0 && d.size == 0) {
            continue;
        }
        let end = u64::from(d.rva) + u64::from(d.size);
        if end > len {
            warnings.push(format!(
                "{} directory [{:#x}, {end:#x}) runs past the image ({len:#x} bytes)",
                DIRECTORY_NAMES[d.index], d.rva
            ));
        }
    }
}
