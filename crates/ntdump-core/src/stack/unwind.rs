//! x64 unwind data: `RUNTIME_FUNCTION` (`.pdata`) and `UNWIND_INFO` / `UNWIND_CODE` (`.xdata`).
//!
//! Layouts and slot counts: Microsoft's "x64 exception handling" documentation; how each operation is
//! undone: ReactOS `sdk/lib/rtl/amd64/unwind.c` and Wine `dlls/ntdll/signal_x86_64.c` (RtlVirtualUnwind).
//! Version 2 `UWOP_EPILOG` (op 6) descriptions follow LLVM's `Win64EH.h`: one slot each. Every read is
//! bounds-checked against the bytes given; nothing here allocates more than the 255 codes a header can
//! declare.

/// `UWOP_PUSH_NONVOL`: one slot; OpInfo = register.
pub const UWOP_PUSH_NONVOL: u8 = 0;
/// `UWOP_ALLOC_LARGE`: OpInfo 0 → size/8 in the next slot; OpInfo 1 → 32-bit size in the next two.
pub const UWOP_ALLOC_LARGE: u8 = 1;
/// `UWOP_ALLOC_SMALL`: size = OpInfo × 8 + 8.
pub const UWOP_ALLOC_SMALL: u8 = 2;
/// `UWOP_SET_FPREG`: frame register = RSP + 16 × FrameOffset.
pub const UWOP_SET_FPREG: u8 = 3;
/// `UWOP_SAVE_NONVOL`: register saved at frame base + 8 × next slot.
pub const UWOP_SAVE_NONVOL: u8 = 4;
/// `UWOP_SAVE_NONVOL_FAR`: register saved at frame base + 32-bit offset.
pub const UWOP_SAVE_NONVOL_FAR: u8 = 5;
/// Version 1: `UWOP_SAVE_XMM` (obsolete, two slots); version 2: `UWOP_EPILOG` (one slot).
pub const UWOP_EPILOG: u8 = 6;
/// Version 1: `UWOP_SAVE_XMM_FAR` (obsolete); version 2: `UWOP_SPARE_CODE`. Three slots.
pub const UWOP_SPARE: u8 = 7;
/// `UWOP_SAVE_XMM128`: XMM register saved at frame base + 16 × next slot.
pub const UWOP_SAVE_XMM128: u8 = 8;
/// `UWOP_SAVE_XMM128_FAR`: XMM register saved at frame base + 32-bit offset.
pub const UWOP_SAVE_XMM128_FAR: u8 = 9;
/// `UWOP_PUSH_MACHFRAME`: a machine frame (OpInfo 1: with an error code).
pub const UWOP_PUSH_MACHFRAME: u8 = 10;
/// `UNW_FLAG_EHANDLER`.
pub const UNW_FLAG_EHANDLER: u8 = 1;
/// `UNW_FLAG_UHANDLER`.
pub const UNW_FLAG_UHANDLER: u8 = 2;
/// `UNW_FLAG_CHAININFO`: a parent RUNTIME_FUNCTION follows the codes.
pub const UNW_FLAG_CHAININFO: u8 = 4;
/// Most links of a chain followed (Windows' own limit is similar; a loop ends it).
pub const MAX_CHAIN: usize = 32;

/// One `RUNTIME_FUNCTION` (12 bytes). All fields are RVAs; `end` is exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeFunction {
    /// BeginAddress (RVA).
    pub begin: u32,
    /// EndAddress (RVA, exclusive).
    pub end: u32,
    /// UnwindData (RVA of the UNWIND_INFO).
    pub unwind: u32,
}

crate::ser::tuple!(RuntimeFunction: begin, end, unwind);

impl RuntimeFunction {
    /// Decode 12 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<RuntimeFunction> {
        let w = |i: usize| {
            b.get(i..i + 4)
                .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        };
        Some(RuntimeFunction {
            begin: w(0)?,
            end: w(4)?,
            unwind: w(8)?,
        })
    }
}

/// One decoded unwind operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnwindCode {
    /// CodeOffset: bytes from the function start to the end of the prologue instruction (for version-2
    /// epilog codes, the raw byte).
    pub offset: u8,
    /// The UWOP_* number.
    pub op: u8,
    /// OpInfo (4 bits).
    pub info: u8,
    /// Allocation size or save offset (bytes), machine-frame error-code flag (0/1), or for version-2 epilog
    /// codes the epilog offset / size; 0 otherwise.
    pub value: u32,
    /// 16-bit slots the operation uses.
    pub slots: u8,
}

crate::ser::tuple!(UnwindCode: offset, op, info, value);

/// A decoded `UNWIND_INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnwindInfo {
    /// RVA of the structure.
    pub rva: u32,
    /// Version (1 or 2).
    pub version: u8,
    /// Flags (UNW_FLAG_*).
    pub flags: u8,
    /// SizeOfProlog (bytes).
    pub prolog_size: u8,
    /// CountOfCodes (16-bit slots).
    pub count: u8,
    /// FrameRegister (0 = none; unwind numbering: 0 RAX … 15 R15).
    pub frame_register: u8,
    /// FrameOffset in bytes (the stored value × 16).
    pub frame_offset: u32,
    /// The codes in stored order (the last prologue instruction first).
    pub codes: Vec<UnwindCode>,
    /// The parent entry when `UNW_FLAG_CHAININFO` is set.
    pub chained: Option<RuntimeFunction>,
    /// Exception / termination handler RVA (EHANDLER/UHANDLER).
    pub handler: Option<u32>,
}

crate::ser::tuple!(UnwindInfo: version, flags, prolog_size, count, frame_register, frame_offset,
    codes, chained, handler);

/// Why unwind data could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnwindError {
    /// The bytes at this RVA are outside what is available.
    Truncated(u32),
    /// Version other than 1 or 2 at this RVA.
    Version(u32, u8),
    /// An operation the format does not define (op > 10), or ALLOC_LARGE with OpInfo > 1, at this RVA.
    BadCode(u32, u8),
    /// The chain loops or is longer than [`MAX_CHAIN`] (RVA of the first function).
    Chain(u32),
}

impl std::fmt::Display for UnwindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnwindError::Truncated(r) => write!(f, "unwind data at RVA {r:#x} is not readable"),
            UnwindError::Version(r, v) => write!(f, "UNWIND_INFO at RVA {r:#x} has version {v}"),
            UnwindError::BadCode(r, op) => write!(f, "unknown unwind operation {op} at RVA {r:#x}"),
            UnwindError::Chain(r) => write!(
                f,
                "chained unwind info of the function at RVA {r:#x} loops or is too long"
            ),
        }
    }
}

/// Decode the UNWIND_INFO at `rva`. `read(rva, len)` returns exactly `len` bytes at an RVA (from a dump or
/// an image file), or None.
pub fn parse_unwind_info(
    read: &dyn Fn(u32, usize) -> Option<Vec<u8>>,
    rva: u32,
) -> Result<UnwindInfo, UnwindError> {
    let head = read(rva, 4).ok_or(UnwindError::Truncated(rva))?;
    let (version, flags) = (head[0] & 7, head[0] >> 3);
    if version != 1 && version != 2 {
        return Err(UnwindError::Version(rva, version));
    }
    let (prolog_size, count, fr) = (head[1], head[2], head[3]);
    let body_len = 2 * ((usize::from(count) + 1) & !1);
    let tail_rva = rva.wrapping_add(4).wrapping_add(body_len as u32);
    let slots = read(rva.wrapping_add(4), 2 * usize::from(count))
        .ok_or(UnwindError::Truncated(rva.wrapping_add(4)))?;
    let slot = |i: usize| -> Option<u16> {
        slots
            .get(2 * i..2 * i + 2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]))
    };
    let mut codes = Vec::with_capacity(usize::from(count));
    let mut i = 0usize;
    let mut first_epilog = true;
    while i < usize::from(count) {
        let at = rva.wrapping_add(4 + 2 * i as u32);
        let s = slot(i).ok_or(UnwindError::Truncated(at))?;
        let (offset, op, info) = ((s & 0xFF) as u8, ((s >> 8) & 0xF) as u8, (s >> 12) as u8);
        let next16 = || slot(i + 1).map(u32::from).ok_or(UnwindError::Truncated(at));
        let next32 = || match (slot(i + 1), slot(i + 2)) {
            (Some(lo), Some(hi)) => Ok(u32::from(lo) | (u32::from(hi) << 16)),
            _ => Err(UnwindError::Truncated(at)),
        };
        let (value, n) = match op {
            UWOP_PUSH_NONVOL | UWOP_SET_FPREG => (0, 1),
            UWOP_ALLOC_LARGE => match info {
                0 => (next16()? * 8, 2),
                1 => (next32()?, 3),
                _ => return Err(UnwindError::BadCode(at, op)),
            },
            UWOP_ALLOC_SMALL => (u32::from(info) * 8 + 8, 1),
            UWOP_SAVE_NONVOL => (next16()? * 8, 2),
            UWOP_SAVE_NONVOL_FAR | UWOP_SAVE_XMM128_FAR | UWOP_SPARE => (next32()?, 3),
            UWOP_EPILOG if version == 1 => (next16()? * 8, 2),
            UWOP_EPILOG => {
                let v = if first_epilog {
                    u32::from(offset)
                } else {
                    u32::from(offset) | (u32::from(info) << 8)
                };
                first_epilog = false;
                (v, 1)
            }
            UWOP_SAVE_XMM128 => (next16()? * 16, 2),
            UWOP_PUSH_MACHFRAME => (u32::from(info), 1),
            _ => return Err(UnwindError::BadCode(at, op)),
        };
        codes.push(UnwindCode {
            offset,
            op,
            info,
            value,
            slots: n,
        });
        i += usize::from(n);
    }
    let mut chained = None;
    let mut handler = None;
    if flags & UNW_FLAG_CHAININFO != 0 {
        let b = read(tail_rva, 12).ok_or(UnwindError::Truncated(tail_rva))?;
        chained = RuntimeFunction::from_bytes(&b);
    } else if flags & (UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER) != 0 {
        let b = read(tail_rva, 4).ok_or(UnwindError::Truncated(tail_rva))?;
        handler = Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    }
    Ok(UnwindInfo {
        rva,
        version,
        flags,
        prolog_size,
        count,
        frame_register: fr & 0xF,
        frame_offset: u32::from(fr >> 4) * 16,
        codes,
        chained,
        handler,
    })
}

/// `fn_`'s UNWIND_INFO followed by its chained parents', at most [`MAX_CHAIN`] (a repeat is an error).
pub fn unwind_chain(
    read: &dyn Fn(u32, usize) -> Option<Vec<u8>>,
    fn_: RuntimeFunction,
) -> Result<Vec<UnwindInfo>, UnwindError> {
    let mut out: Vec<UnwindInfo> = Vec::new();
    let mut cur = Some(fn_);
    while let Some(rf) = cur {
        if out.len() >= MAX_CHAIN || out.iter().any(|u| u.rva == rf.unwind) {
            return Err(UnwindError::Chain(fn_.begin));
        }
        let ui = parse_unwind_info(read, rf.unwind)?;
        cur = ui.chained;
        out.push(ui);
    }
    Ok(out)
}

/// The entry of a table sorted by `begin` whose [begin, end) holds `rva`.
pub fn lookup(table: &[RuntimeFunction], rva: u32) -> Option<RuntimeFunction> {
    let i = table.partition_point(|f| f.begin <= rva);
    let f = *table.get(i.checked_sub(1)?)?;
    (rva < f.end).then_some(f)
}

/// Decode a `.pdata` table (12-byte entries), dropping all-zero entries, sorted by `begin`.
pub fn parse_table(bytes: &[u8]) -> Vec<RuntimeFunction> {
    let mut t: Vec<RuntimeFunction> = bytes
        .chunks_exact(12)
        .filter_map(RuntimeFunction::from_bytes)
        .filter(|f| f.begin != 0 || f.end != 0 || f.unwind != 0)
        .collect();
    t.sort_by_key(|f| f.begin);
    t
}

/// One RUNTIME_FUNCTION of an image file and its decoded UNWIND_INFO, or why it could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRow {
    /// First RVA of the function.
    pub begin: u32,
    /// RVA just past the function.
    pub end: u32,
    /// RVA of its UNWIND_INFO.
    pub unwind: u32,
    /// The decoded UNWIND_INFO.
    pub info: Option<UnwindInfo>,
    /// Why it could not be decoded.
    pub error: Option<String>,
}

crate::ser::tuple!(FunctionRow: begin, end, unwind, info, error);

/// Every RUNTIME_FUNCTION of a PE *file* (laid out first) with its decoded UNWIND_INFO or the error.
pub fn file_functions(file: &[u8]) -> crate::Result<Vec<FunctionRow>> {
    let img = super::layout_file(file).map_err(|what| crate::Error::Pe {
        base: crate::Va(0),
        what,
    })?;
    let h = super::code::parse_headers(&img).unwrap_or_default();
    let (rva, size) = (h.exception.0 as usize, h.exception.1 as usize);
    let table = img
        .get(rva..rva.saturating_add(size))
        .map(parse_table)
        .unwrap_or_default();
    let read = |r: u32, n: usize| {
        img.get(r as usize..(r as usize).checked_add(n)?)
            .map(|s| s.to_vec())
    };
    let row = |f: RuntimeFunction| {
        let u = parse_unwind_info(&read, f.unwind);
        let error = u.as_ref().err().map(|e| e.to_string());
        let (begin, end, unwind, info) = (f.begin, f.end, f.unwind, u.ok());
        FunctionRow {
            begin,
            end,
            unwind,
            info,
            error,
        }
    };
    Ok(table.into_iter().map(row).collect())
}
