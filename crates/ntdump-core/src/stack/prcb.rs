//! Processors: each KPRCB (from KDBG's `KiProcessorBlock` array) and the context saved in it when the
//! system stopped. Every offset comes from the dump's own KDBG (WINDOWS_INTERNALS.md §3.2):
//! `OffsetPrcbCurrentThread` (u16 @ 0x2B4), `OffsetPrcbProcStateContext` (u16 @ 0x2BC, the CONTEXT inside
//! `KPRCB.ProcessorState`) and, on Windows 7+ blocks (Size ≥ 0x340), `OffsetPrcbContext` (u16 @ 0x338, a
//! KPRCB field holding a pointer to the CONTEXT; preferred when it is set and readable).

use crate::addr::Va;
use crate::dump::Dump;
use crate::header::Machine;
use crate::kernel::kdbg::{field, Kdbg};
use crate::stack::Registers;

/// Most processors read (Windows supports 2048 logical processors; the header's count is used).
pub const MAX_PROCESSORS: u32 = 2048;
/// KDBG field offsets used here.
pub const OFFSET_PRCB_CURRENT_THREAD: usize = 0x2B4;
/// `OffsetPrcbProcStateContext`.
pub const OFFSET_PRCB_PROC_STATE_CONTEXT: usize = 0x2BC;
/// `OffsetPrcbContext` (Windows 7+).
pub const OFFSET_PRCB_CONTEXT: usize = 0x338;

/// One processor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Default)]
pub struct Processor {
    /// Index in KiProcessorBlock.
    pub index: u32,
    /// VA of the KPRCB (0 when the slot is empty or unreadable).
    pub prcb: u64,
    /// The saved context, when readable.
    #[serde(skip)]
    pub regs: Option<Registers>,
    /// VA of the CONTEXT the registers came from (0 if none).
    pub context_va: u64,
    /// KPRCB.CurrentThread (VA of the KTHREAD), 0 when unknown.
    pub current_thread: u64,
}

fn u16_field(k: &Kdbg, off: usize) -> u64 {
    k.bytes
        .get(off..off + 2)
        .map(|b| u64::from(u16::from_le_bytes([b[0], b[1]])))
        .unwrap_or(0)
}

/// [`processors`] of a dump's kernel view; with no KDBG, none and a warning saying so.
pub fn processors_of(d: &Dump, k: &crate::kernel::Kernel) -> (Vec<Processor>, Vec<String>) {
    match &k.kdbg {
        Some(kd) => processors(d, kd),
        None => (Vec::new(), vec!["no KDBG: processors unknown".to_string()]),
    }
}

/// The processors of `d` (at most the header's NumberProcessors, capped at [`MAX_PROCESSORS`]), with
/// warnings for what could not be read.
pub fn processors(d: &Dump, kdbg: &Kdbg) -> (Vec<Processor>, Vec<String>) {
    let mut warnings = Vec::new();
    let machine = d.header.machine;
    let ptr = machine.pointer_size();
    let n = d.header.processors.min(MAX_PROCESSORS);
    let Some(block) = kdbg.get(field::KI_PROCESSOR_BLOCK).filter(|&v| v != 0) else {
        warnings.push("KDBG has no KiProcessorBlock".into());
        return (Vec::new(), warnings);
    };
    let cur_off = u16_field(kdbg, OFFSET_PRCB_CURRENT_THREAD);
    let state_off = u16_field(kdbg, OFFSET_PRCB_PROC_STATE_CONTEXT);
    let ctx_ptr_off = if kdbg.size >= 0x340 {
        u16_field(kdbg, OFFSET_PRCB_CONTEXT)
    } else {
        0
    };
    let ctx_size = if machine == Machine::X86 {
        0x2CC
    } else {
        0x4D0
    };
    let mut out = Vec::new();
    for i in 0..n {
        let prcb = d
            .read_ptr(Va(block + u64::from(i) * ptr))
            .unwrap_or_else(|e| {
                warnings.push(format!("KiProcessorBlock[{i}]: {e}"));
                0
            });
        let mut p = Processor {
            index: i,
            prcb,
            regs: None,
            context_va: 0,
            current_thread: 0,
        };
        if prcb != 0 {
            if cur_off != 0 {
                p.current_thread = d.read_ptr(Va(prcb + cur_off)).unwrap_or(0);
            }
            let mut candidates = Vec::new();
            if ctx_ptr_off != 0 {
                if let Ok(v) = d.read_ptr(Va(prcb + ctx_ptr_off)) {
                    if v != 0 {
                        candidates.push(v);
                    }
                }
            }
            if state_off != 0 {
                candidates.push(prcb + state_off);
            }
            for va in candidates {
                let mut buf = vec![0u8; ctx_size];
                if d.read_virt(Va(va), &mut buf).is_ok() {
                    // A never-filled CONTEXT (no instruction or stack pointer) is no context.
                    let regs = Registers::from_context_bytes(&buf, machine)
                        .filter(|r| r.ip != 0 || r.sp != 0);
                    if regs.is_some() {
                        p.regs = regs;
                        p.context_va = va;
                        break;
                    }
                }
            }
            if p.regs.is_none() {
                warnings.push(format!(
                    "processor {i}: no readable saved context in KPRCB {prcb:#x}"
                ));
            }
        }
        out.push(p);
    }
    (out, warnings)
}
