//! `DUMP_HEADER32` / `DUMP_HEADER64`: the first 0x1000 / 0x2000 bytes of a kernel dump.
//!
//! Offsets: WINDOWS_INTERNALS.md §1.1, §1.2 and §1.4 (SDK `mindumpdef.h`, kdmp-parser, Volatility 3
//! `crash.json` / `crash64.json` agree).

use crate::bytes::LeBytes;
use crate::error::{Error, Result};

/// "PAGE" read as a little-endian u32: the signature, and the fill of untouched header fields.
pub const PAGE_FILL: u32 = 0x4547_4150;
/// "DUMP" (32-bit dumps, and the `ValidDump` of bitmap sub-headers).
pub const SIG_DUMP: u32 = 0x504D_5544;
/// "DU64" (64-bit dumps, x64 and ARM64).
pub const SIG_DU64: u32 = 0x3436_5544;

/// Processor architecture of the dumped machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// 32-bit x86 (non-PAE or PAE).
    X86,
    /// AMD64.
    X64,
    /// ARM64 (headers only: translation is not implemented yet).
    Arm64,
}

impl Machine {
    /// `"x86"`, `"x64"` or `"arm64"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Machine::X86 => "x86",
            Machine::X64 => "x64",
            Machine::Arm64 => "arm64",
        }
    }
    /// A machine named by the user: `"x86"`, or `"x64"` / `"amd64"`.
    pub fn parse(s: &str) -> Result<Machine> {
        match s {
            "x86" => Ok(Machine::X86),
            "x64" | "amd64" => Ok(Machine::X64),
            o => Err(Error::Argument(format!(
                "machine must be 'x86' or 'x64', not {o:?}"
            ))),
        }
    }
    /// Pointer size in bytes.
    pub fn pointer_size(self) -> u64 {
        match self {
            Machine::X86 => 4,
            _ => 8,
        }
    }
}

crate::ser::as_str!(Machine);

/// The registers a debugger shows first (values copied from the header's CONTEXT record); serialized
/// as a map from register name to value.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(transparent)]
pub struct Context {
    /// (register name, value) in the order `r` prints them; 32-bit registers on x86.
    #[serde(serialize_with = "crate::ser::map")]
    pub registers: Vec<(&'static str, u64)>,
}

impl Context {
    /// The value of a register by name (`"rip"`, `"eip"`, `"rsp"` …).
    pub fn get(&self, name: &str) -> Option<u64> {
        self.registers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
    /// Instruction pointer (`rip` or `eip`).
    pub fn ip(&self) -> Option<u64> {
        self.get("rip").or_else(|| self.get("eip"))
    }
}

/// The parsed fixed header. Every field is copied; nothing points into the file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DumpHeader {
    /// True for `PAGEDU64` (0x2000-byte header), false for `PAGEDUMP` (0x1000).
    pub is64: bool,
    /// Header size in bytes (0x1000 or 0x2000).
    #[serde(skip)]
    pub header_size: u64,
    /// Architecture from MachineImageType.
    pub machine: Machine,
    /// Raw MachineImageType (0x14C, 0x8664, 0xAA64).
    #[serde(skip)]
    pub machine_image_type: u32,
    /// PAE paging (x86 only; header byte 0x5C).
    pub pae: bool,
    /// MajorVersion (0xF free build, 0xC checked).
    pub major_version: u32,
    /// MinorVersion: the OS build number.
    pub build: u32,
    /// DirectoryTableBase: CR3 of the kernel (a PA).
    pub dtb: u64,
    /// PfnDataBase field (meaning differs by writer; a hint only).
    pub pfn_database: u64,
    /// VA of `nt!PsLoadedModuleList`.
    pub ps_loaded_module_list: u64,
    /// VA of `nt!PsActiveProcessHead`.
    pub ps_active_process_head: u64,
    /// VA of the KDBG block.
    pub kd_debugger_data_block: u64,
    /// NumberProcessors.
    pub processors: u32,
    /// BugCheckCode.
    pub bugcheck_code: u32,
    /// The four bug-check parameters (zero-extended on x86).
    #[serde(serialize_with = "crate::ser::list")]
    pub bugcheck_params: [u64; 4],
    /// DumpType (1 full, 2 summary, 4 triage, 5/6 bitmap, 8/9/0xA range).
    pub dump_type: u32,
    /// RequiredDumpSpace: the file size the writer intended, in bytes.
    pub required_dump_space: u64,
    /// SystemTime as a FILETIME (100 ns since 1601-01-01 UTC).
    pub system_time: u64,
    /// SystemUpTime in 100 ns units.
    pub system_up_time: u64,
    /// MiniDumpFields (triage: which parts are present).
    pub mini_dump_fields: u32,
    /// ProductType (1 workstation, 2 DC, 3 server).
    pub product_type: u32,
    /// SuiteMask.
    pub suite_mask: u32,
    /// DUMP_FILE_ATTRIBUTES bits (0 when the field holds the fill pattern).
    pub attributes: u32,
    /// Comment (ASCII, trailing NULs and fill removed).
    pub comment: String,
    /// Runs of the physical-memory descriptor, (base PFN, page count), when the header holds real runs.
    #[serde(rename = "header_runs")]
    pub runs: Option<Vec<(u64, u64)>>,
    /// Registers of the crashing CPU.
    pub context: Context,
    /// Exception code and address from the header's exception record.
    pub exception_code: u32,
    /// ExceptionAddress (VA).
    pub exception_address: u64,
}

const X64_REGS: [(&str, u64); 18] = [
    ("rax", 0x78),
    ("rbx", 0x90),
    ("rcx", 0x80),
    ("rdx", 0x88),
    ("rsi", 0xA8),
    ("rdi", 0xB0),
    ("rip", 0xF8),
    ("rsp", 0x98),
    ("rbp", 0xA0),
    ("r8", 0xB8),
    ("r9", 0xC0),
    ("r10", 0xC8),
    ("r11", 0xD0),
    ("r12", 0xD8),
    ("r13", 0xE0),
    ("r14", 0xE8),
    ("r15", 0xF0),
    ("efl", 0x44),
];

const X86_REGS: [(&str, u64); 10] = [
    ("eax", 0xB0),
    ("ebx", 0xA4),
    ("ecx", 0xAC),
    ("edx", 0xA8),
    ("esi", 0xA0),
    ("edi", 0x9C),
    ("eip", 0xB8),
    ("esp", 0xC4),
    ("ebp", 0xB4),
    ("efl", 0xC0),
];

fn fill_or(v: u32) -> u32 {
    if v == PAGE_FILL {
        0
    } else {
        v
    }
}

fn fill_or64(v: u64) -> u64 {
    if v == 0x4547_4150_4547_4150 {
        0
    } else {
        v
    }
}

fn ascii(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s: String = b[..end]
        .iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '?'
            }
        })
        .collect();
    if s.starts_with("PAGE") && s.chars().all(|c| "PAGEDU".contains(c)) {
        String::new()
    } else {
        s
    }
}

/// Parse the fixed header at the start of `data`. Fails when the signature is not a kernel dump's or the
/// header is cut short; never panics.
pub fn parse_header(data: &[u8]) -> Result<DumpHeader> {
    if data.len() < 8 {
        return Err(Error::format(
            format!("file too small to be a dump ({} bytes)", data.len()),
            0,
        ));
    }
    let sig = data.u32_at(0, "Signature")?;
    let valid = data.u32_at(4, "ValidDump")?;
    if sig != PAGE_FILL {
        let what = match &data[0..4] {
            b"MDMP" => "a user-mode minidump (MDMP), not a kernel dump".to_string(),
            b"USER" => "a legacy user-mode crash dump, not a kernel dump".to_string(),
            _ => format!(
                "not a kernel dump: signature {:02x?} is not \"PAGE\"",
                &data[0..4]
            ),
        };
        return Err(Error::format(what, 0));
    }
    let is64 = match valid {
        SIG_DU64 => true,
        SIG_DUMP => false,
        _ => {
            return Err(Error::format(
                format!(
                    "unknown ValidDump {:02x?} (want \"DUMP\" or \"DU64\")",
                    &data[4..8]
                ),
                4,
            ))
        }
    };
    let header_size: u64 = if is64 { 0x2000 } else { 0x1000 };
    if (data.len() as u64) < header_size {
        return Err(Error::format(
            format!("header cut short: {} of {header_size:#x} bytes", data.len()),
            data.len() as u64,
        ));
    }
    if is64 {
        parse64(data)
    } else {
        parse32(data)
    }
}

fn machine_of(t: u32, off: u64) -> Result<Machine> {
    match t {
        0x14C => Ok(Machine::X86),
        0x8664 => Ok(Machine::X64),
        0xAA64 => Ok(Machine::Arm64),
        _ => Err(Error::format(
            format!("unsupported MachineImageType {t:#x}"),
            off,
        )),
    }
}

fn parse_runs(data: &[u8], at: u64, is64: bool, capacity: u32) -> Result<Option<Vec<(u64, u64)>>> {
    let n = data.u32_at(at, "PhysicalMemoryBlock.NumberOfRuns")?;
    if n == PAGE_FILL {
        return Ok(None);
    }
    if n > capacity {
        return Err(Error::format(
            format!("NumberOfRuns {n} exceeds the header's room for {capacity} runs"),
            at,
        ));
    }
    let mut runs = Vec::with_capacity(n as usize);
    for i in 0..n as u64 {
        let (b, c) = if is64 {
            let o = at + 0x10 + 16 * i;
            (
                data.u64_at(o, "run BasePage")?,
                data.u64_at(o + 8, "run PageCount")?,
            )
        } else {
            let o = at + 8 + 8 * i;
            (
                data.u32_at(o, "run BasePage")? as u64,
                data.u32_at(o + 4, "run PageCount")? as u64,
            )
        };
        runs.push((b, c));
    }
    Ok(Some(runs))
}

fn context(data: &[u8], at: u64, regs: &[(&'static str, u64)], wide: bool) -> Result<Context> {
    let mut registers = Vec::with_capacity(regs.len());
    for &(name, off) in regs {
        let v = if wide && name != "efl" {
            data.u64_at(at + off, "CONTEXT")?
        } else {
            data.u32_at(at + off, "CONTEXT")? as u64
        };
        registers.push((name, v));
    }
    Ok(Context { registers })
}

fn parse64(d: &[u8]) -> Result<DumpHeader> {
    let mt = d.u32_at(0x30, "MachineImageType")?;
    let machine = machine_of(mt, 0x30)?;
    let regs: &[(&str, u64)] = if machine == Machine::X64 {
        &X64_REGS
    } else {
        &[]
    };
    Ok(DumpHeader {
        is64: true,
        header_size: 0x2000,
        machine,
        machine_image_type: mt,
        pae: false,
        major_version: d.u32_at(0x8, "MajorVersion")?,
        build: d.u32_at(0xC, "MinorVersion")?,
        dtb: d.u64_at(0x10, "DirectoryTableBase")?,
        pfn_database: fill_or64(d.u64_at(0x18, "PfnDataBase")?),
        ps_loaded_module_list: fill_or64(d.u64_at(0x20, "PsLoadedModuleList")?),
        ps_active_process_head: fill_or64(d.u64_at(0x28, "PsActiveProcessHead")?),
        processors: d.u32_at(0x34, "NumberProcessors")?,
        bugcheck_code: d.u32_at(0x38, "BugCheckCode")?,
        bugcheck_params: [
            d.u64_at(0x40, "BugCheckParameter1")?,
            d.u64_at(0x48, "BugCheckParameter2")?,
            d.u64_at(0x50, "BugCheckParameter3")?,
            d.u64_at(0x58, "BugCheckParameter4")?,
        ],
        kd_debugger_data_block: fill_or64(d.u64_at(0x80, "KdDebuggerDataBlock")?),
        runs: parse_runs(d, 0x88, true, 43)?,
        context: context(d, 0x348, regs, true)?,
        exception_code: fill_or(d.u32_at(0xF00, "ExceptionCode")?),
        exception_address: fill_or64(d.u64_at(0xF10, "ExceptionAddress")?),
        dump_type: d.u32_at(0xF98, "DumpType")?,
        required_dump_space: fill_or64(d.u64_at(0xFA0, "RequiredDumpSpace")?),
        system_time: fill_or64(d.u64_at(0xFA8, "SystemTime")?),
        comment: ascii(d.field(0xFB0, 128, "Comment")?),
        system_up_time: fill_or64(d.u64_at(0x1030, "SystemUpTime")?),
        mini_dump_fields: fill_or(d.u32_at(0x1038, "MiniDumpFields")?),
        product_type: fill_or(d.u32_at(0x1040, "ProductType")?),
        suite_mask: fill_or(d.u32_at(0x1044, "SuiteMask")?),
        attributes: fill_or(d.u32_at(0x1050, "Attributes")?),
    })
}

fn parse32(d: &[u8]) -> Result<DumpHeader> {
    let mt = d.u32_at(0x20, "MachineImageType")?;
    let machine = machine_of(mt, 0x20)?;
    if machine != Machine::X86 {
        return Err(Error::format(
            format!("32-bit dump header with MachineImageType {mt:#x}"),
            0x20,
        ));
    }
    let p = |o: u64, w: &str| -> Result<u64> { Ok(fill_or(d.u32_at(o, w)?) as u64) };
    Ok(DumpHeader {
        is64: false,
        header_size: 0x1000,
        machine,
        machine_image_type: mt,
        pae: d.u8_at(0x5C, "PaeEnabled")? != 0,
        major_version: d.u32_at(0x8, "MajorVersion")?,
        build: d.u32_at(0xC, "MinorVersion")?,
        dtb: d.u32_at(0x10, "DirectoryTableBase")? as u64,
        pfn_database: p(0x14, "PfnDataBase")?,
        ps_loaded_module_list: p(0x18, "PsLoadedModuleList")?,
        ps_active_process_head: p(0x1C, "PsActiveProcessHead")?,
        processors: d.u32_at(0x24, "NumberProcessors")?,
        bugcheck_code: d.u32_at(0x28, "BugCheckCode")?,
        bugcheck_params: [
            d.u32_at(0x2C, "BugCheckParameter1")? as u64,
            d.u32_at(0x30, "BugCheckParameter2")? as u64,
            d.u32_at(0x34, "BugCheckParameter3")? as u64,
            d.u32_at(0x38, "BugCheckParameter4")? as u64,
        ],
        kd_debugger_data_block: p(0x60, "KdDebuggerDataBlock")?,
        runs: parse_runs(d, 0x64, false, 86)?,
        context: context(d, 0x320, &X86_REGS, false)?,
        exception_code: fill_or(d.u32_at(0x7D0, "ExceptionCode")?),
        exception_address: p(0x7DC, "ExceptionAddress")?,
        comment: ascii(d.field(0x820, 128, "Comment")?),
        attributes: fill_or(d.u32_at(0x8A0, "Attributes")?),
        dump_type: d.u32_at(0xF88, "DumpType")?,
        mini_dump_fields: fill_or(d.u32_at(0xF8C, "MiniDumpFields")?),
        product_type: fill_or(d.u32_at(0xF94, "ProductType")?),
        suite_mask: fill_or(d.u32_at(0xF98, "SuiteMask")?),
        required_dump_space: fill_or64(d.u64_at(0xFA0, "RequiredDumpSpace")?),
        system_up_time: fill_or64(d.u64_at(0xFB8, "SystemUpTime")?),
        system_time: fill_or64(d.u64_at(0xFC0, "SystemTime")?),
    })
}
