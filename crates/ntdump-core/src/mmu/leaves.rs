//! The mapped-page model: the leaves of the page tables over a VA range (VA range → PA, page size, entry
//! flags), read straight from the dump's pages and decoded by [`super::decode`] / [`super::leaf_frame`],
//! the same functions translation uses. Search, the pool scan and the mapped-range listing all read
//! the page tables through [`Leaves`].

use std::ops::ControlFlow;

use super::{decode, leaf_frame, EntryKind, Mode, ModeSpec};
use crate::addr::{Pa, Va, PAGE_SHIFT, PAGE_SIZE};
use crate::error::{Error, PtLevel, Result};
use crate::phys::PhysMap;

/// A valid (or transition) leaf of the page tables: `size` bytes of VA from `va` map to PA `pa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// First VA of the page (aligned to `size`).
    pub va: Va,
    /// First PA of the page (aligned to `size`).
    pub pa: Pa,
    /// Page size in bytes: 4 KiB, 2 MiB, 4 MiB or 1 GiB.
    pub size: u64,
    /// The level whose entry maps the page (`Pte` for 4 KiB pages, `Pde`/`Pdpte` for large ones).
    pub level: PtLevel,
    /// The raw entry, for its flags ([`Leaf::writable`], [`Leaf::transition`] …).
    pub entry: u64,
}

impl Leaf {
    /// True for a transition entry (valid bit clear, page still in RAM).
    pub fn transition(&self) -> bool {
        self.entry & 1 == 0
    }
    /// The entry's write bit (bit 1). For a transition entry Windows keeps the protection in software
    /// bits instead; this then reads bit 1 as stored.
    pub fn writable(&self) -> bool {
        self.entry & 2 != 0
    }
    /// The entry's user/supervisor bit (bit 2): true when user mode may access the page.
    pub fn user(&self) -> bool {
        self.entry & 4 != 0
    }
    /// One past the last VA of the page (may be 2^64).
    pub fn va_end(&self) -> u128 {
        self.va.0 as u128 + self.size as u128
    }
}

/// The lowest kernel-half VA of `mode` (x64: 0xFFFF8000_00000000; 32-bit: 0x80000000).
pub fn kernel_start(mode: Mode) -> u64 {
    match mode {
        Mode::X64 => 0xFFFF_8000_0000_0000,
        Mode::X86 | Mode::Pae => 0x8000_0000,
    }
}

/// One past the highest VA of `mode` (2^64 or 2^32).
pub fn va_end(mode: Mode) -> u128 {
    match mode {
        Mode::X64 => 1 << 64,
        Mode::X86 | Mode::Pae => 1 << 32,
    }
}

/// Enumerates the leaves of the page tables rooted at a DTB over a VA range, skipping unmapped subtrees
/// and tables whose page the dump does not hold.
///
/// Bounded on hostile input: at most `budget` entries are read (eight per stored page plus 4 Mi), and
/// tables that loop give [`Error::Format`] instead of a hang.
pub struct Leaves<'d> {
    phys: &'d PhysMap,
    file: &'d [u8],
    mode: Mode,
    spec: ModeSpec,
    dtb: u64,
    root: u64,
    /// Entries still allowed to be read (guards against looping tables).
    budget: u64,
}

impl<'d> Leaves<'d> {
    /// Leaves of the tables rooted at `dtb` (a PA) in `mode`, read from the pages of `phys` in `file`.
    pub fn new(phys: &'d PhysMap, file: &'d [u8], mode: Mode, dtb: u64) -> Self {
        let spec = mode.spec();
        Leaves {
            phys,
            file,
            mode,
            spec,
            dtb,
            root: dtb & spec.root_mask,
            budget: phys
                .present_pages()
                .saturating_mul(8)
                .saturating_add(1 << 22),
        }
    }

    /// Call `f` for every leaf meeting `[start, end)` (VA, `end` may be 2^64), in VA order. A leaf is
    /// reported whole (its `va` may lie below `start`); `f` stops the walk by returning `Break`.
    pub fn for_each(
        &mut self,
        start: u64,
        end: u128,
        f: &mut dyn FnMut(Leaf) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>> {
        // Split into the canonical halves, as linear (48-bit) addresses on x64.
        let mut parts: Vec<(u128, u128, u64)> = Vec::new(); // (lin start, lin end, lin -> VA add)
        match self.mode {
            Mode::X64 => {
                let low_end = end.min(1 << 47);
                if (start as u128) < low_end {
                    parts.push((start as u128, low_end, 0));
                }
                let hi = 0xFFFF_8000_0000_0000u128;
                let s = (start as u128).max(hi);
                if s < end {
                    let off = 0xFFFF_0000_0000_0000u64;
                    parts.push((s - off as u128, end - off as u128, off));
                }
            }
            Mode::X86 | Mode::Pae => {
                let e = end.min(1 << 32);
                if (start as u128) < e {
                    parts.push((start as u128, e, 0));
                }
            }
        }
        for (lo, hi, add) in parts {
            let mut g = |l: Leaf| {
                f(Leaf {
                    va: Va(l.va.0.wrapping_add(add)),
                    ..l
                })
            };
            if self.table(0, self.root, 0, lo, hi, &mut g)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Every leaf meeting `[start, end)`, collected (for tests and small ranges).
    pub fn collect(&mut self, start: u64, end: u128) -> Result<Vec<Leaf>> {
        let mut v = Vec::new();
        let _ = self.for_each(start, end, &mut |l| {
            v.push(l);
            ControlFlow::Continue(())
        })?;
        Ok(v)
    }

    /// Visit the entries of the table at `table` (PA) of level `depth`, which covers linear VAs from
    /// `base`, that meet `[lo, hi)`.
    fn table(
        &mut self,
        depth: usize,
        table: u64,
        base: u64,
        lo: u128,
        hi: u128,
        f: &mut dyn FnMut(Leaf) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>> {
        let l = self.spec.levels[depth];
        let last = depth + 1 == self.spec.levels.len();
        let esz = self.spec.entry_size;
        let Some(page) = self.phys.page(self.file, table >> PAGE_SHIFT) else {
            return Ok(ControlFlow::Continue(())); // the table is not in the dump: nothing readable below
        };
        let span = 1u128 << l.shift;
        let count = 1u128 << l.bits;
        let first = ((lo - base as u128) >> l.shift).min(count);
        let stop = ((hi - base as u128).div_ceil(span)).min(count);
        for idx in first..stop {
            let off = (table & (PAGE_SIZE - 1)) as usize + (idx as usize) * esz as usize;
            let Some(raw) = page.get(off..off + esz as usize) else {
                break;
            };
            if self.budget == 0 {
                return Err(Error::format(
                    format!(
                        "the page tables at DTB {:#x} hold more entries than the dump could map \
                         (tables that loop?)",
                        self.dtb
                    ),
                    0,
                ));
            }
            self.budget -= 1;
            let mut b = [0u8; 8];
            b[..raw.len()].copy_from_slice(raw);
            let value = u64::from_le_bytes(b);
            let va = base + (idx << l.shift) as u64;
            let flow = match decode(self.mode, depth, value) {
                EntryKind::Table | EntryKind::Transition if !last => {
                    let next = value & self.spec.frame_mask;
                    let sub_lo = lo.max(va as u128);
                    let sub_hi = hi.min(va as u128 + span);
                    self.table(depth + 1, next, va, sub_lo, sub_hi, f)?
                }
                EntryKind::Page | EntryKind::Transition => {
                    let (pa, size) = leaf_frame(self.mode, depth, value);
                    f(Leaf {
                        va: Va(va),
                        pa,
                        size,
                        level: l.level,
                        entry: value,
                    })
                }
                EntryKind::Table | EntryKind::NotPresent(_) => ControlFlow::Continue(()),
            };
            if flow.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::PhysRun;

    /// A flat physical image of `pages` pages, all stored, and its map.
    fn image(pages: u64) -> (Vec<u8>, PhysMap) {
        let map = PhysMap::from_placed(
            vec![PhysRun {
                base_pfn: 0,
                pages,
                file_offset: 0,
            }],
            0,
        );
        (vec![0u8; (pages * PAGE_SIZE) as usize], map)
    }

    fn w64(m: &mut [u8], pa: u64, v: u64) {
        m[pa as usize..pa as usize + 8].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn x64_leaves_agree_with_translate() {
        // PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000.
        let (mut m, map) = image(0x20);
        let k = 0xFFFF_F800_0000_0000u64;
        let i4 = (k >> 39) & 0x1FF;
        let i3 = (k >> 30) & 0x1FF;
        w64(&mut m, 0x1000 + i4 * 8, 0x2003);
        w64(&mut m, 0x2000 + i3 * 8, 0x3003);
        w64(&mut m, 0x2000 + (i3 + 1) * 8, 0x4000_0083); // 1 GiB page
        w64(&mut m, 0x3000, 0x4003);
        w64(&mut m, 0x3008, 0x20_0083); // 2 MiB page at PD index 1
        w64(&mut m, 0x4000 + 8, 0x8003 | (1 << 63)); // 4 KiB at PT index 1
        w64(&mut m, 0x4000 + 16, 0x9000 | 0x800); // transition
        w64(&mut m, 0x4000 + 24, 0x0000_0123_0000_0080); // paged out: not a leaf
        let mut lv = Leaves::new(&map, &m, Mode::X64, 0x1000);
        let leaves = lv
            .collect(kernel_start(Mode::X64), va_end(Mode::X64))
            .unwrap();
        let got: Vec<(u64, u64, u64, bool)> = leaves
            .iter()
            .map(|l| (l.va.0, l.pa.0, l.size, l.transition()))
            .collect();
        assert_eq!(
            got,
            vec![
                (k + 0x1000, 0x8000, 0x1000, false),
                (k + 0x2000, 0x9000, 0x1000, true),
                (k + 0x20_0000, 0x20_0000, 0x20_0000, false),
                (k + 0x4000_0000, 0x4000_0000, 0x4000_0000, false),
            ]
        );
        assert_eq!(leaves[2].level, PtLevel::Pde);
        assert!(leaves[0].writable() && !leaves[0].user());
        // Translation decodes the same entries the same way.
        for l in &leaves {
            let read = |pa: Pa| -> Result<u64> {
                let o = pa.0 as usize;
                Ok(u64::from_le_bytes(m[o..o + 8].try_into().unwrap()))
            };
            let (pa, size) =
                super::super::translate(Mode::X64, 0x1000, Va(l.va.0 + 8), read).unwrap();
            assert_eq!((pa.0, size), (l.pa.0 + 8, l.size));
        }
        // A range inside one large page reports that page whole; a break stops the walk.
        let one = lv.collect(k + 0x20_1000, (k + 0x20_2000) as u128).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].va.0, k + 0x20_0000);
        let mut n = 0;
        let flow = lv
            .for_each(k, va_end(Mode::X64), &mut |_| {
                n += 1;
                ControlFlow::Break(())
            })
            .unwrap();
        assert!(flow.is_break());
        assert_eq!(n, 1);
    }

    #[test]
    fn reserved_pml4e_and_missing_tables_are_skipped() {
        let (mut m, map) = image(0x8);
        w64(&mut m, 0x1000 + 0x1F0 * 8, 0x2083); // PS in a PML4E: reserved
        w64(&mut m, 0x1000 + 0x1F1 * 8, 0x0100_0003); // table far beyond the image
        let mut lv = Leaves::new(&map, &m, Mode::X64, 0x1000);
        assert!(lv.collect(0, 1 << 64).unwrap().is_empty());
    }

    #[test]
    fn x86_4mib_pages_take_pse36_bits() {
        let (mut m, map) = image(0x4);
        // PDE 0x200 (VA 0x80000000): 4 MiB page at PA 0x1_0040_0000 (PSE-36 bits 16:13 = 1).
        let e = 0x0040_0000u32 | (1 << 13) | 0x83;
        m[0x1000 + 0x200 * 4..0x1000 + 0x200 * 4 + 4].copy_from_slice(&e.to_le_bytes());
        let mut lv = Leaves::new(&map, &m, Mode::X86, 0x1000);
        let l = lv.collect(0x8000_0000, 1 << 32).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].va.0, l[0].pa.0, l[0].size),
            (0x8000_0000, 0x1_0040_0000, 0x40_0000)
        );
    }
}
