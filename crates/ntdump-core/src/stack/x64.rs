//! x64 walk: virtual unwinding with each function's RUNTIME_FUNCTION / UNWIND_INFO, as RtlVirtualUnwind
//! does (ReactOS `unwind.c`, Wine `signal_x86_64.c`): codes whose CodeOffset is past the current offset
//! into the prologue are skipped (frame 0 and interrupted frames only — a return address is always past
//! its prologue), PUSH_NONVOL pops, ALLOC_* adds, SET_FPREG sets RSP to frame register − 16·FrameOffset,
//! SAVE_NONVOL(_FAR) reloads from the frame base, PUSH_MACHFRAME takes RIP and RSP from the machine frame,
//! chained infos are applied after their child. A function without a RUNTIME_FUNCTION is a leaf: its
//! return address is at RSP. Frame 0 and interrupted frames are first checked for an epilogue
//! (`add rsp`/`lea rsp` then pops then `ret`), which is emulated instead, as RtlVirtualUnwind does.
//! Where a module's unwind data is not available (not in the dump, no provided image), the walk goes on
//! by scanning the stack.

use std::collections::HashSet;

use crate::stack::code::CodeMap;
use crate::stack::scan::scan_stack;
use crate::stack::unwind::{self as uw, RuntimeFunction};
use crate::stack::{bounds, Frame, How, Registers, StackWalk, WalkOptions};

fn read_u64(cm: &CodeMap<'_>, va: u64) -> Result<u64, String> {
    cm.read(va, 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        .ok_or_else(|| format!("stack at {va:#x} is not readable"))
}

/// Undo one function's frame. Returns (machine frame?, VA of the return-address slot).
fn virtual_unwind(
    cm: &CodeMap<'_>,
    module: usize,
    rf: RuntimeFunction,
    r: &mut Registers,
    exact: bool,
) -> Result<(bool, u64), String> {
    let base = cm.modules()[module].base;
    let read = |rva: u32, n: usize| cm.read_rva(module, rva, n);
    let chain =
        uw::unwind_chain(&read, rf).map_err(|e| format!("{}: {e}", cm.modules()[module].name))?;
    let offset = r.ip.wrapping_sub(base + u64::from(rf.begin));
    if exact
        && chain[0].flags & uw::UNW_FLAG_CHAININFO == 0
        && offset >= u64::from(chain[0].prolog_size)
    {
        if let Some(slot) = epilogue(cm, r, base, rf) {
            return Ok((false, slot));
        }
    }
    let mut mach = None;
    for (depth, ui) in chain.iter().enumerate() {
        let limit = if depth == 0 { offset } else { u64::MAX };
        let fr = usize::from(ui.frame_register);
        let fp_set = fr != 0
            && ui
                .codes
                .iter()
                .any(|c| c.op == uw::UWOP_SET_FPREG && u64::from(c.offset) <= limit);
        let frame = if fp_set {
            r.gpr[fr].wrapping_sub(u64::from(ui.frame_offset))
        } else {
            r.gpr[4]
        };
        for c in &ui.codes {
            if u64::from(c.offset) > limit || (ui.version == 2 && c.op == uw::UWOP_EPILOG) {
                continue;
            }
            let rsp = r.gpr[4];
            match c.op {
                uw::UWOP_PUSH_NONVOL => {
                    r.gpr[usize::from(c.info)] = read_u64(cm, rsp)?;
                    r.gpr[4] = rsp.wrapping_add(8);
                }
                uw::UWOP_ALLOC_LARGE | uw::UWOP_ALLOC_SMALL => {
                    r.gpr[4] = rsp.wrapping_add(u64::from(c.value));
                }
                uw::UWOP_SET_FPREG => r.gpr[4] = frame,
                uw::UWOP_SAVE_NONVOL | uw::UWOP_SAVE_NONVOL_FAR => {
                    r.gpr[usize::from(c.info)] =
                        read_u64(cm, frame.wrapping_add(u64::from(c.value)))?;
                }
                uw::UWOP_PUSH_MACHFRAME => {
                    let at = rsp.wrapping_add(8 * u64::from(c.value));
                    r.ip = read_u64(cm, at)?;
                    r.gpr[4] = read_u64(cm, at.wrapping_add(0x18))?;
                    mach = Some(at);
                }
                // XMM saves (and the obsolete version-1 forms) restore nothing the walk tracks.
                _ => {}
            }
        }
    }
    let slot = match mach {
        Some(at) => at,
        None => {
            let at = r.gpr[4];
            r.ip = read_u64(cm, at)?;
            r.gpr[4] = at.wrapping_add(8);
            at
        }
    };
    r.sp = r.gpr[4];
    Ok((mach.is_some(), slot))
}

/// If RIP is at an epilogue (`add rsp, n` / `lea rsp, [reg+d]`, pops, `ret` / `rep ret` / `ret n` / a
/// `jmp rel32` out of the function), emulate it; returns the return-address slot.
fn epilogue(cm: &CodeMap<'_>, r: &mut Registers, base: u64, rf: RuntimeFunction) -> Option<u64> {
    let code = (16..=64usize)
        .rev()
        .step_by(16)
        .find_map(|n| cm.read(r.ip, n))?;
    let mut i = 0usize;
    let mut sp = r.gpr[4];
    let b = |k: usize| code.get(k).copied();
    // add rsp, imm8 / imm32
    if b(0)? == 0x48 && b(1)? == 0x83 && b(2)? == 0xC4 {
        sp = sp.wrapping_add(u64::from(b(3)?));
        i = 4;
    } else if b(0)? == 0x48 && b(1)? == 0x81 && b(2)? == 0xC4 {
        sp = sp.wrapping_add(u64::from(u32::from_le_bytes(
            code.get(3..7)?.try_into().ok()?,
        )));
        i = 7;
    } else if (b(0)? & 0xF8) == 0x48 && b(1)? == 0x8D {
        // lea rsp, [reg + disp8/disp32]
        let modrm = b(2)?;
        let (md, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
        if reg == 4 && rm != 4 && (md == 1 || md == 2) {
            let src = usize::from(rm) + if b(0)? & 1 != 0 { 8 } else { 0 };
            let disp = if md == 1 {
                i64::from(b(3)? as i8)
            } else {
                i64::from(i32::from_le_bytes(code.get(3..7)?.try_into().ok()?))
            };
            sp = r.gpr[src].wrapping_add(disp as u64);
            i = if md == 1 { 4 } else { 7 };
        } else {
            return None;
        }
    }
    let mut pops = Vec::new();
    loop {
        match (b(i)?, b(i + 1)) {
            (0x58..=0x5F, _) => {
                pops.push(usize::from(b(i)? - 0x58));
                i += 1;
            }
            (0x41, Some(x @ 0x58..=0x5F)) => {
                pops.push(usize::from(x - 0x58) + 8);
                i += 2;
            }
            _ => break,
        }
        if pops.len() > 16 {
            return None;
        }
    }
    let end_ok = match (b(i)?, b(i + 1)) {
        (0xC3, _) | (0xC2, _) | (0xF3, Some(0xC3)) => true,
        (0xE9, _) => {
            let rel = i32::from_le_bytes(code.get(i + 1..i + 5)?.try_into().ok()?);
            let target =
                r.ip.wrapping_add(i as u64 + 5)
                    .wrapping_add(i64::from(rel) as u64);
            let (lo, hi) = (base + u64::from(rf.begin), base + u64::from(rf.end));
            !(lo..hi).contains(&target)
        }
        _ => false,
    };
    if !end_ok {
        return None;
    }
    let mut regs = *r;
    for reg in pops {
        regs.gpr[reg] = read_u64(cm, sp).ok()?;
        sp = sp.wrapping_add(8);
    }
    regs.ip = read_u64(cm, sp).ok()?;
    regs.gpr[4] = sp.wrapping_add(8);
    regs.sp = regs.gpr[4];
    *r = regs;
    Some(sp)
}

/// Walk from `regs` (see [`crate::stack::walk`]).
pub fn walk(cm: &CodeMap<'_>, regs: Registers, opts: &WalkOptions) -> StackWalk {
    let mut out = StackWalk::default();
    let (low, high) = bounds(opts, regs.sp);
    let mut r = regs;
    r.gpr[4] = r.sp;
    out.frames.push(Frame {
        sp: r.sp,
        pc: r.ip,
        how: How::Context,
        frame_base: 0,
        slot: 0,
        interrupted: false,
    });
    let mut exact = true;
    let mut seen = HashSet::new();
    seen.insert((r.ip, r.sp));
    while out.frames.len() < opts.max_frames {
        let pc = r.ip;
        let Some(m) = cm.module_at(pc) else {
            out.warnings.push(format!(
                "{pc:#x} is outside every loaded module: scanning the stack from {:#x}",
                r.sp
            ));
            scan_stack(cm, r.sp, high, true, opts.max_frames, &mut out.frames);
            break;
        };
        let code = cm.code(m);
        let at = if exact { pc } else { pc.wrapping_sub(1) };
        let rva = u32::try_from(at.wrapping_sub(code.base)).unwrap_or(u32::MAX);
        let found = match cm.lookup(m, rva) {
            Ok(f) => f,
            Err(why) => {
                out.warnings
                    .push(format!("{why}: scanning the stack from {:#x}", r.sp));
                scan_stack(cm, r.sp, high, true, opts.max_frames, &mut out.frames);
                break;
            }
        };
        let before = r;
        let step = match found {
            None => read_u64(cm, r.sp).map(|ra| {
                let slot = r.sp;
                r.ip = ra;
                r.sp = slot.wrapping_add(8);
                r.gpr[4] = r.sp;
                (false, slot)
            }),
            Some(rf) => virtual_unwind(cm, m, rf, &mut r, exact),
        };
        let (mach, slot) = match step {
            Ok(s) => s,
            Err(e) => {
                out.warnings
                    .push(format!("{e}: scanning the stack from {:#x}", before.sp));
                scan_stack(cm, before.sp, high, true, opts.max_frames, &mut out.frames);
                break;
            }
        };
        if r.ip == 0 {
            break;
        }
        if !mach && (r.sp <= before.sp || r.sp < low || r.sp > high) {
            out.warnings.push(format!(
                "unwinding from {pc:#x} gave stack pointer {:#x} (was {:#x}, stack {low:#x}-{high:#x}): stopped",
                r.sp, before.sp
            ));
            break;
        }
        if !r.sp.is_multiple_of(8) || !seen.insert((r.ip, r.sp)) {
            out.warnings.push(format!(
                "frame at {:#x} / {:#x} repeats or is misaligned: stopped",
                r.ip, r.sp
            ));
            break;
        }
        if cm.module_at(r.ip).is_none() {
            out.warnings.push(format!(
                "return address {:#x} (at {slot:#x}) is outside every loaded module: stopped",
                r.ip
            ));
            break;
        }
        out.frames.push(Frame {
            sp: r.sp,
            pc: r.ip,
            how: How::Unwind,
            frame_base: 0,
            slot,
            interrupted: mach,
        });
        exact = mach;
    }
    out
}
