//! x86 walk: the EBP frame chain (`push ebp; mov ebp, esp`: [EBP] = caller's EBP, [EBP+4] = return
//! address, arguments from EBP+8) while it is sane — EBP aligned, inside the stack, above the previous
//! frame, the return address in a module's code just after a call — then a scan of the rest of the stack
//! for return addresses ([`crate::stack::scan`]); frames found that way are `How::Scan`.

use crate::stack::code::CodeMap;
use crate::stack::scan::scan_stack;
use crate::stack::{bounds, Frame, How, Registers, StackWalk, WalkOptions};

fn read_u32(cm: &CodeMap<'_>, va: u64) -> Option<u64> {
    cm.read(va, 4)
        .map(|b| u64::from(u32::from_le_bytes(b.try_into().unwrap_or([0; 4]))))
}

/// Walk from `regs` (see [`crate::stack::walk`]).
pub fn walk(cm: &CodeMap<'_>, regs: Registers, opts: &WalkOptions) -> StackWalk {
    let mut out = StackWalk::default();
    let (low, high) = bounds(opts, regs.sp);
    let mut ebp = regs.gpr[5] & 0xFFFF_FFFF;
    out.frames.push(Frame {
        sp: regs.sp,
        pc: regs.ip,
        how: How::Context,
        frame_base: ebp,
        slot: 0,
        interrupted: false,
    });
    let mut floor = regs.sp;
    while out.frames.len() < opts.max_frames {
        let sane = ebp != 0
            && ebp.is_multiple_of(4)
            && ebp >= floor
            && ebp >= low
            && ebp.saturating_add(8) <= high;
        let pair = if sane {
            read_u32(cm, ebp).zip(read_u32(cm, ebp + 4))
        } else {
            None
        };
        let Some((next, ra)) = pair else {
            if ebp != 0 {
                out.warnings.push(format!(
                    "EBP {ebp:#x} is not a frame on this stack: scanning from {floor:#x}"
                ));
            }
            scan_stack(cm, floor, high, false, opts.max_frames, &mut out.frames);
            break;
        };
        if ra == 0 {
            break;
        }
        if !cm.in_code(ra) || cm.after_call(ra, false) == Some(false) {
            out.warnings.push(format!(
                "[EBP+4] = {ra:#x} at {:#x} is not a return address: scanning from {floor:#x}",
                ebp + 4
            ));
            scan_stack(cm, floor, high, false, opts.max_frames, &mut out.frames);
            break;
        }
        out.frames.push(Frame {
            sp: ebp + 8,
            pc: ra,
            how: How::FrameChain,
            frame_base: next,
            slot: ebp + 4,
            interrupted: false,
        });
        floor = ebp + 8;
        ebp = next;
    }
    out
}
