//! A bounded scan of a module's memory for a pointer-sized value (`s -d` / `s -q` over `[base, end)`),
//! run by the search engine under the scanner contract of [`crate::scan`] (chunks, seams, limit).

use crate::addr::Va;
use crate::dump::Dump;
use crate::search::{search, SearchOptions, Target};

/// VAs in `[base, base + len)` holding `value` as a little-endian integer of `width` bytes (4 or 8), at
/// offsets that are multiples of `width` from `base` when `aligned`, else at any byte; at most `limit` of
/// them (the first ones by address). Unreadable memory is skipped (a value never straddles into it); a
/// dump whose page tables cannot be read (ARM64, tables that loop) gives no hit. `len` is in bytes and is
/// clipped at the end of the address space; the caller bounds it.
pub fn find_value(
    d: &Dump,
    base: Va,
    len: u64,
    value: u64,
    width: usize,
    aligned: bool,
    limit: usize,
) -> Vec<Va> {
    let width = if width == 8 { 8u64 } else { 4 };
    let needle = &value.to_le_bytes()[..width as usize];
    let len = len.min(u64::MAX - base.0);
    // The engine aligns on absolute addresses: the same as offsets from `base` when `base` is aligned
    // (module bases are page aligned); otherwise filter afterwards, before applying the limit.
    let engine_aligns = !aligned || base.0.is_multiple_of(width);
    let opts = SearchOptions {
        align: if aligned && engine_aligns { width } else { 1 },
        limit: if engine_aligns { Some(limit) } else { None },
        ..Default::default()
    };
    let Ok(r) = search(d, &[needle], Target::Virtual(&[(base.0, len)]), &opts) else {
        return Vec::new();
    };
    r.addresses
        .into_iter()
        .filter(|a| !aligned || (a - base.0).is_multiple_of(width))
        .take(limit)
        .map(Va)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::RawOptions;
    use crate::header::Machine;

    /// A raw x64 image: PML4 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000 mapping VA `K + i * 4K` to PA
    /// `0x10000 + i * 4K` for i < 4, except page 2 (not present).
    fn image() -> (Dump, u64) {
        let k = 0xFFFF_F800_0000_0000u64;
        let mut m = vec![0u8; 0x20000];
        let mut w =
            |pa: u64, v: u64| m[pa as usize..pa as usize + 8].copy_from_slice(&v.to_le_bytes());
        w(0x1000 + ((k >> 39) & 0x1FF) * 8, 0x2003);
        w(0x2000 + ((k >> 30) & 0x1FF) * 8, 0x3003);
        w(0x3000, 0x4003);
        for i in [0u64, 1, 3] {
            w(0x4000 + i * 8, (0x10000 + i * 0x1000) | 3);
        }
        let v = 0x1122_3344u64;
        w(0x10000 + 0x10, v); // aligned hit in page 0
        w(0x10000 + 0x21, v); // unaligned
        w(0x10000 + 0xFFE, v); // straddles pages 0 and 1: found
        w(0x11000 + 0xFFE, v); // straddles into the missing page 2: not a hit
        w(0x13000 + 0x8, v);
        let d = Dump::raw_from_bytes(
            m,
            RawOptions {
                machine: Some(Machine::X64),
                pae: Some(false),
                dtb: Some(0x1000),
            },
        )
        .unwrap();
        (d, k)
    }

    #[test]
    fn aligned_unaligned_seams_and_limit() {
        let (d, k) = image();
        let v = 0x1122_3344u64;
        let all = find_value(&d, Va(k), 0x4000, v, 4, false, 100);
        let offs: Vec<u64> = all.iter().map(|a| a.0 - k).collect();
        assert_eq!(offs, [0x10, 0x21, 0xFFE, 0x3008]);
        let al = find_value(&d, Va(k), 0x4000, v, 4, true, 100);
        let offs: Vec<u64> = al.iter().map(|a| a.0 - k).collect();
        assert_eq!(offs, [0x10, 0x3008]);
        assert_eq!(find_value(&d, Va(k), 0x4000, v, 4, false, 2).len(), 2);
        // Alignment counts from `base`, not from address 0.
        let from1 = find_value(&d, Va(k + 1), 0x3FFF, v, 4, true, 100);
        let offs: Vec<u64> = from1.iter().map(|a| a.0 - k).collect();
        assert_eq!(offs, [0x21]);
    }
}
