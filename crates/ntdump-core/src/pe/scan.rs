//! A bounded scan of a module's memory for a pointer-sized value (`s -d` / `s -q` over `[base, end)`).

use crate::addr::{Va, PAGE_SIZE};
use crate::dump::Dump;

/// VAs in `[base, base + len)` holding `value` as a little-endian integer of `width` bytes (4 or 8), at
/// offsets that are multiples of `width` from `base` when `aligned`, else at any byte; at most `limit` of
/// them (the first ones). Unreadable pages are skipped. `len` is in bytes; the caller bounds it.
pub fn find_value(
    d: &Dump,
    base: Va,
    len: u64,
    value: u64,
    width: usize,
    aligned: bool,
    limit: usize,
) -> Vec<Va> {
    let width = if width == 8 { 8 } else { 4 };
    let needle = &value.to_le_bytes()[..width];
    let finder = memchr::memmem::Finder::new(needle);
    let mut hits = Vec::new();
    // One page plus the bytes an unaligned value may carry into the next page.
    let mut buf = vec![0u8; PAGE_SIZE as usize + width - 1];
    let mut off = 0u64;
    while off < len {
        let va = Va(base.0.wrapping_add(off));
        let want = (PAGE_SIZE as usize + width - 1).min((len - off) as usize);
        let page = &mut buf[..want];
        let got = d.read_virt_padded(va, page);
        if got > 0 {
            let limit_in_page = (PAGE_SIZE as usize).min(want);
            for i in finder.find_iter(page) {
                if i < limit_in_page && (!aligned || (off as usize + i) & (width - 1) == 0) {
                    hits.push(Va(va.0.wrapping_add(i as u64)));
                    if hits.len() >= limit {
                        return hits;
                    }
                }
            }
        }
        off += PAGE_SIZE;
    }
    hits
}
