//! Call-site checks and stack scans: a value on the stack is taken for a return address when it points
//! into a module's executable section just after a call instruction.
//!
//! Call forms (Intel SDM vol. 2, CALL): `E8 rel32` (5 bytes) and `FF /2` — ModRM reg field 2 — with every
//! addressing form: register (mod 3, 2 bytes), `[reg]` (mod 0), `[disp32]` / `[rip+disp32]` (mod 0, rm 5),
//! SIB (rm 4, base 5 with mod 0 adds disp32), disp8 (mod 1) and disp32 (mod 2). Prefixes (REX, segment,
//! `notrack`) come before the opcode and do not change where the instruction ends.

use crate::addr::PAGE_SIZE;
use crate::stack::code::CodeMap;
use crate::stack::{Frame, How};

/// The form of a call instruction found before a return address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallForm {
    /// `E8 rel32`.
    Rel32,
    /// `FF /2` with a ModRM (and maybe SIB and displacement).
    Indirect,
}

/// Length of an `FF /2` instruction starting at `b[0]` (opcode), from its ModRM and SIB bytes.
fn ff2_len(b: &[u8]) -> Option<usize> {
    let modrm = *b.get(1)?;
    if b[0] != 0xFF || (modrm >> 3) & 7 != 2 {
        return None;
    }
    let (md, rm) = (modrm >> 6, modrm & 7);
    let mut n = 2;
    if md == 3 {
        return Some(n);
    }
    if rm == 4 {
        let sib = *b.get(2)?;
        n += 1;
        if md == 0 && sib & 7 == 5 {
            n += 4;
        }
    }
    match md {
        0 if rm == 5 => n += 4,
        1 => n += 1,
        2 => n += 4,
        _ => {}
    }
    Some(n)
}

/// The start offset and form of a call instruction that ends exactly at `end` in `code`, if any. The
/// 64-bit and 32-bit encodings of these forms end at the same place (mod 0 / rm 5 is RIP-relative on
/// x64, absolute on x86: both 4 bytes), so `_is64` only documents intent.
pub fn call_ending_at(code: &[u8], end: usize, _is64: bool) -> Option<(usize, CallForm)> {
    if end > code.len() {
        return None;
    }
    if end >= 5 && code[end - 5] == 0xE8 {
        return Some((end - 5, CallForm::Rel32));
    }
    for len in 2..=7usize {
        let Some(s) = end.checked_sub(len) else { break };
        if ff2_len(&code[s..end]) == Some(len) {
            return Some((s, CallForm::Indirect));
        }
    }
    None
}

/// Most bytes of stack one scan reads.
pub const MAX_SCAN_BYTES: u64 = 0x10000;

/// Scan pointer-sized slots from `from` (inclusive) to `limit` (exclusive) for return addresses, adding
/// [`How::Scan`] frames to `out` until it holds `max` frames; stops at the first unreadable page. Returns
/// the number of slots read.
pub fn scan_stack(
    cm: &CodeMap<'_>,
    from: u64,
    limit: u64,
    is64: bool,
    max: usize,
    out: &mut Vec<Frame>,
) -> u64 {
    let ptr = if is64 { 8u64 } else { 4 };
    let start = from.div_ceil(ptr) * ptr;
    let limit = limit.min(start.saturating_add(MAX_SCAN_BYTES));
    let mut at = start;
    let mut slots = 0;
    let mut page = vec![0u8; PAGE_SIZE as usize];
    while at < limit && out.len() < max {
        let page_end = ((at / PAGE_SIZE) + 1) * PAGE_SIZE;
        let chunk_end = page_end.min(limit);
        let n = (chunk_end - at) as usize;
        if cm
            .dump()
            .read_virt(crate::addr::Va(at), &mut page[..n])
            .is_err()
        {
            break;
        }
        for i in (0..n).step_by(ptr as usize) {
            if i + ptr as usize > n || out.len() >= max {
                break;
            }
            slots += 1;
            let v = if is64 {
                u64::from_le_bytes(page[i..i + 8].try_into().unwrap_or([0; 8]))
            } else {
                u64::from(u32::from_le_bytes(
                    page[i..i + 4].try_into().unwrap_or([0; 4]),
                ))
            };
            if v == 0 || !cm.in_code(v) || cm.after_call(v, is64) != Some(true) {
                continue;
            }
            let slot = at + i as u64;
            out.push(Frame {
                sp: slot + ptr,
                pc: v,
                how: How::Scan,
                frame_base: 0,
                slot,
                interrupted: false,
            });
        }
        at = chunk_end;
    }
    slots
}
