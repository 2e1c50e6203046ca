//! Stack walks without private symbols: x64 unwinding from `.pdata`/`.xdata`, x86 EBP frame chains, and
//! call-checked stack scans where neither applies. See docs/stack.md.
//!
//! A walk starts from a register set (the dump header's CONTEXT, or a processor's saved context — see
//! [`prcb`]) and returns frames, innermost first. Frame 0 is the context itself (`How::Context`); every
//! other frame is a return address and the stack pointer just after the return (`sp`, the "Child-SP" of
//! that frame). Every loop is bounded: `max_frames`, [`MAX_STACK_SPAN`] bytes of stack, cycle checks.

pub mod code;
pub mod prcb;
pub mod scan;
pub mod unwind;
pub mod x64;
pub mod x86;

use std::collections::HashMap;
use std::sync::Arc;

use crate::dump::Dump;
use crate::error::{Error, Result};
use crate::header::Machine;
use crate::kernel::{Kernel, ModuleInfo};
use crate::triage::RangeSource;
pub use code::{layout_file, CodeMap, ImageProvider};

/// Most stack (bytes) a walk covers above its starting stack pointer when no stack range is known.
pub const MAX_STACK_SPAN: u64 = 0x40000;
/// Upper limit for `max_frames`.
pub const MAX_FRAMES: usize = 4096;

/// How a frame was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum How {
    /// The starting context (frame 0).
    #[default]
    Context,
    /// x64 unwind data of the function (or the leaf rule: no RUNTIME_FUNCTION, return address at RSP).
    Unwind,
    /// x86 EBP frame chain.
    FrameChain,
    /// A stack value pointing just after a call instruction in a module's code.
    Scan,
}

impl How {
    /// `"context"`, `"unwind"`, `"frame-chain"` or `"scan"`.
    pub fn as_str(self) -> &'static str {
        match self {
            How::Context => "context",
            How::Unwind => "unwind",
            How::FrameChain => "frame-chain",
            How::Scan => "scan",
        }
    }
}

crate::ser::as_str!(How);

/// One frame of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Frame {
    /// Child-SP (VA): frame 0 the context's stack pointer; others the stack pointer just after the return
    /// (address of the return-address slot + pointer size), or after a machine frame the saved RSP.
    pub sp: u64,
    /// Code address of the frame (VA): frame 0 the context's instruction pointer, others the return
    /// address (or, after a machine frame, the interrupted instruction).
    pub pc: u64,
    /// How it was found.
    pub how: How,
    /// x86: the frame's EBP (0 when unknown); x64: the frame register's value when the function uses one.
    pub frame_base: u64,
    /// VA of the slot the return address was read from (0 for frame 0).
    pub slot: u64,
    /// Reached through a machine frame (trap or exception frame): `pc` is the interrupted instruction.
    pub interrupted: bool,
}

/// Registers to start a walk from. `gpr` uses the unwind-code numbering (0 RAX/EAX, 1 RCX, 2 RDX,
/// 3 RBX, 4 RSP, 5 RBP, 6 RSI, 7 RDI, 8–15 R8–R15); `ip` and `sp` are the instruction and stack pointers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Registers {
    /// RIP / EIP.
    pub ip: u64,
    /// RSP / ESP.
    pub sp: u64,
    /// General registers (x86: the first eight).
    pub gpr: [u64; 16],
}

impl Registers {
    /// From the dump header's CONTEXT (register names as `r` prints them).
    pub fn from_context(ctx: &crate::header::Context, machine: Machine) -> Registers {
        let names64 = [
            "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15",
        ];
        let names32 = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];
        let mut r = Registers::default();
        if machine == Machine::X86 {
            for (i, n) in names32.iter().enumerate() {
                r.gpr[i] = ctx.get(n).unwrap_or(0);
            }
            r.ip = ctx.get("eip").unwrap_or(0);
        } else {
            for (i, n) in names64.iter().enumerate() {
                r.gpr[i] = ctx.get(n).unwrap_or(0);
            }
            r.ip = ctx.get("rip").unwrap_or(0);
        }
        r.sp = r.gpr[4];
        r
    }

    /// From a raw CONTEXT record (x64 0x4D0 bytes: Rax… at 0x78, Rip 0xF8; x86 0x2CC bytes: Edi 0x9C …
    /// Eip 0xB8, Esp 0xC4 — winnt.h). None when `b` is too short.
    pub fn from_context_bytes(b: &[u8], machine: Machine) -> Option<Registers> {
        let q = |o: usize| {
            b.get(o..o + 8)
                .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
        };
        let d = |o: usize| {
            b.get(o..o + 4)
                .map(|s| u64::from(u32::from_le_bytes(s.try_into().unwrap_or([0; 4]))))
        };
        let mut r = Registers::default();
        if machine == Machine::X86 {
            // eax ecx edx ebx esp ebp esi edi
            let offs = [0xB0, 0xAC, 0xA8, 0xA4, 0xC4, 0xB4, 0xA0, 0x9C];
            for (i, o) in offs.iter().enumerate() {
                r.gpr[i] = d(*o)?;
            }
            r.ip = d(0xB8)?;
        } else {
            for i in 0..16 {
                r.gpr[i] = q(0x78 + 8 * i)?;
            }
            r.ip = q(0xF8)?;
        }
        r.sp = r.gpr[4];
        Some(r)
    }
}

/// Options of a walk.
#[derive(Debug, Clone, Copy)]
pub struct WalkOptions {
    /// Most frames returned (frame 0 included), at most [`MAX_FRAMES`].
    pub max_frames: usize,
    /// The stack's VA range [low, high) when known (a triage dump's captured stack); otherwise the walk
    /// stays within [`MAX_STACK_SPAN`] bytes above the starting stack pointer.
    pub stack: Option<(u64, u64)>,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            max_frames: 64,
            stack: None,
        }
    }
}

/// The result of a walk.
#[derive(Debug, Clone, Default)]
pub struct StackWalk {
    /// Frames, innermost first.
    pub frames: Vec<Frame>,
    /// Why the walk stopped, and anything odd on the way.
    pub warnings: Vec<String>,
}

/// Walk the stack of dump `d` from `regs`, with `modules` as the loaded modules and an optional source of
/// module images for what the dump does not hold.
pub fn walk(
    d: &Dump,
    modules: &[ModuleInfo],
    regs: Registers,
    opts: &WalkOptions,
    images: Option<&dyn ImageProvider>,
) -> StackWalk {
    let cm = CodeMap::new(d, modules, images);
    let opts = WalkOptions {
        max_frames: opts.max_frames.clamp(1, MAX_FRAMES),
        stack: opts.stack,
    };
    match d.header.machine {
        Machine::X86 => x86::walk(&cm, regs, &opts),
        _ => x64::walk(&cm, regs, &opts),
    }
}

/// Images given by a caller, laid out from their files: module base name (lower case) → image in
/// memory order. An image serves a module only of the same build (TimeDateStamps equal when both known).
pub struct FileImages(HashMap<String, Arc<Vec<u8>>>);

impl FileImages {
    /// Lay out `files` (module base name → image file bytes); a file that cannot be laid out is a warning.
    pub fn new(files: HashMap<String, Vec<u8>>, warnings: &mut Vec<String>) -> FileImages {
        let mut laid = HashMap::new();
        for (name, file) in files {
            match layout_file(&file) {
                Ok(img) => {
                    laid.insert(name.to_lowercase(), Arc::new(img));
                }
                Err(e) => warnings.push(format!("image for {name}: {e}")),
            }
        }
        FileImages(laid)
    }
}

impl ImageProvider for FileImages {
    fn image(&self, module: &ModuleInfo) -> Option<Arc<Vec<u8>>> {
        let img = self.0.get(&module.name.to_lowercase())?;
        let h = code::parse_headers(img)?;
        if module.timestamp != 0 && h.timestamp != 0 && module.timestamp != h.timestamp {
            return None;
        }
        Some(img.clone())
    }
}

/// Where a walk starts: the registers, the stack range when known, and where the registers came from.
pub type Start = (Registers, Option<(u64, u64)>, String);

/// Where a walk of `d` starts: `None` = the dump header's context (and a triage dump's captured stack
/// as the range); `Some(n)` = the context saved in processor `n`'s KPRCB.
pub fn start(d: &Dump, k: &Kernel, processor: Option<u32>) -> Result<Start> {
    let Some(n) = processor else {
        let regs = Registers::from_context(&d.header.context, d.header.machine);
        let range = d.triage().and_then(|t| {
            t.ranges
                .iter()
                .find(|r| r.source == RangeSource::Stack)
                .map(|r| (r.va, r.va.saturating_add(r.len)))
        });
        return Ok((regs, range, "dump header CONTEXT".to_string()));
    };
    let arg = |why: String| Error::Argument(format!("processor {n}: {why}"));
    let kd = k
        .kdbg
        .as_ref()
        .ok_or_else(|| arg("no KDBG, so no KiProcessorBlock".into()))?;
    let (ps, _) = prcb::processors(d, kd);
    let p = ps
        .get(n as usize)
        .ok_or_else(|| arg(format!("the dump has {} processor(s)", ps.len())))?;
    let regs = p.regs.ok_or_else(|| {
        arg(format!(
            "no readable saved context in its KPRCB ({:#x})",
            p.prcb
        ))
    })?;
    let source = format!("KPRCB {:#x} context at {:#x}", p.prcb, p.context_va);
    Ok((regs, None, source))
}

/// A walk of a dump's stack and where it started.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DumpWalk {
    /// Frames, innermost first.
    #[serde(skip)]
    pub frames: Vec<Frame>,
    /// Image files that could not be used, why the walk stopped, and anything odd on the way.
    pub warnings: Vec<String>,
    /// Where the registers came from.
    pub source: String,
    /// The stack's VA range [low, high) when known.
    pub stack_range: Option<(u64, u64)>,
}

/// Walk `d`'s stack from [`start`]`(processor)` with `k`'s modules and `files` (module base name →
/// image file bytes) for images the dump lacks.
pub fn walk_dump(
    d: &Dump,
    k: &Kernel,
    processor: Option<u32>,
    max_frames: usize,
    files: HashMap<String, Vec<u8>>,
) -> Result<DumpWalk> {
    let mut warnings = Vec::new();
    let images = FileImages::new(files, &mut warnings);
    let (regs, stack_range, source) = start(d, k, processor)?;
    let opts = WalkOptions {
        max_frames,
        stack: stack_range,
    };
    let w = walk(d, &k.modules, regs, &opts, Some(&images));
    warnings.extend(w.warnings);
    Ok(DumpWalk {
        frames: w.frames,
        warnings,
        source,
        stack_range,
    })
}

/// The stack range a walk may use: the given one, else [sp, sp + MAX_STACK_SPAN).
pub(crate) fn bounds(opts: &WalkOptions, sp: u64) -> (u64, u64) {
    opts.stack
        .unwrap_or((sp, sp.saturating_add(MAX_STACK_SPAN)))
}
