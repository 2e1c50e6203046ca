//! Translation on hand-built page tables in a raw image: 4K/2M/1G pages, transition and software PTEs.

mod common;
use common::*;
use ntdump_core::mmu::EntryKind;
use ntdump_core::{Dump, Error, Machine, NotPresentKind, Pa, PtLevel, RawOptions, Va};

fn raw(p: Phys, machine: Machine, pae: bool, dtb: u64) -> Dump {
    Dump::raw_from_bytes(
        p.mem,
        RawOptions {
            machine: Some(machine),
            pae: Some(pae),
            dtb: Some(dtb),
        },
    )
    .unwrap()
}

#[test]
fn x64_page_sizes_and_software_ptes() {
    let mut p = Phys::new(0x800); // 8 MiB
    let t = X64::new(&mut p);
    let k = 0xFFFF_F800_0000_0000u64;
    t.map4k(&mut p, k + 0x1000, 0x40_0000);
    p.w64(0x40_0008, 0x1122_3344_5566_7788);
    t.map2m(&mut p, k + 0x20_0000, 0x20_0000);
    t.map1g(&mut p, k + 0x4000_0000, 0x4000_0000);
    t.set(&mut p, k + 0x2000, 3, 0x50_1000 | 0x800 | 0x80); // transition PTE (protection bits set)
    t.set(&mut p, k + 0x3000, 3, 0x0000_0123_0000_0080); // paged out: PageFileHigh != 0
    t.set(&mut p, k + 0x4000, 3, 0x80); // demand zero
    t.set(&mut p, k + 0x5000, 3, 0xFFFF_A000_0000_0400); // prototype
    p.w64(0x50_1010, 0xAABB);
    let dtb = t.dtb;
    let d = raw(p, Machine::X64, false, dtb);
    assert_eq!(d.translate(Va(k + 0x1008)).unwrap(), Pa(0x40_0008));
    assert_eq!(d.read_u64(Va(k + 0x1008)).unwrap(), 0x1122_3344_5566_7788);
    assert_eq!(
        d.translate(Va(k + 0x20_0000 + 0x12_3456)).unwrap(),
        Pa(0x20_0000 + 0x12_3456)
    );
    let w = d.walk(Va(k + 0x20_0000)).unwrap();
    assert_eq!(w.steps.len(), 3);
    assert_eq!(w.result.unwrap().1, 0x20_0000);
    assert_eq!(
        d.translate(Va(k + 0x4000_0000 + 0x3FF_FFFF)).unwrap(),
        Pa(0x4000_0000 + 0x3FF_FFFF)
    );
    assert_eq!(d.walk(Va(k + 0x4000_0000)).unwrap().steps.len(), 2);
    // Transition: read through.
    assert_eq!(d.translate(Va(k + 0x2010)).unwrap(), Pa(0x50_1010));
    assert_eq!(
        d.walk(Va(k + 0x2010)).unwrap().steps[3].kind,
        EntryKind::Transition
    );
    assert_eq!(d.read_u64(Va(k + 0x2010)).unwrap(), 0xAABB);
    let kinds = [
        (0x3000, NotPresentKind::PagedOut),
        (0x4000, NotPresentKind::DemandZero),
        (0x5000, NotPresentKind::Prototype),
    ];
    for (off, want) in kinds {
        match d.translate(Va(k + off)) {
            Err(Error::NotPresent {
                level, kind, va, ..
            }) => {
                assert_eq!(level, PtLevel::Pte);
                assert_eq!(kind, want);
                assert_eq!(va, Va(k + off));
            }
            other => panic!("{off:#x}: {other:?}"),
        }
    }
    // Unmapped at the top level.
    match d.translate(Va(0xFFFF_8000_0000_0000)) {
        Err(Error::NotPresent {
            level: PtLevel::Pml4e,
            kind: NotPresentKind::Unmapped,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // Non-canonical.
    assert!(matches!(
        d.translate(Va(0x0000_8000_0000_0000)),
        Err(Error::NotCaptured { .. })
    ));
    // A 1 GiB page whose frame is beyond the image: not in dump, naming the PA.
    match d.read_u64(Va(k + 0x4000_0000 + 0x10)) {
        Err(Error::NotInDump { pa, va }) => {
            assert_eq!(pa, Pa(0x4000_0000));
            assert_eq!(va, Some(Va(k + 0x4000_0000 + 0x10)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn read_spanning_pages_with_different_backing() {
    let mut p = Phys::new(0x200);
    let t = X64::new(&mut p);
    let k = 0xFFFF_F800_1000_0000u64;
    t.map4k(&mut p, k, 0x80_000);
    t.set(&mut p, k + 0x1000, 3, 0x90_000 | 0x800); // transition, not contiguous
    for i in 0..0x1000u64 {
        p.mem[(0x80_000 + i) as usize] = 1;
        p.mem[(0x90_000 + i) as usize] = 2;
    }
    let d = raw(p, Machine::X64, false, t.dtb);
    let mut buf = vec![0u8; 0x20];
    d.read_virt(Va(k + 0xFF0), &mut buf).unwrap();
    assert_eq!(&buf[..0x10], &[1u8; 0x10]);
    assert_eq!(&buf[0x10..], &[2u8; 0x10]);
    // Padded read past the mapping: first page read, the unmapped one zero.
    let mut buf = vec![0xFFu8; 0x2000];
    let got = d.read_virt_padded(Va(k + 0x1000), &mut buf);
    assert_eq!(got, 0x1000);
    assert!(buf[0x1000..].iter().all(|&b| b == 0));
}

#[test]
fn pae_and_x86_walks() {
    // PAE: PDPT (32-byte aligned, 4 entries) -> PD -> PT; 2 MiB large pages.
    let mut p = Phys::new(0x800);
    let pdpt = 0x1000u64 + 0x20; // not page aligned, as on real PAE systems
    let pd3 = p.alloc();
    let pt = p.alloc();
    p.w64(pdpt + 3 * 8, pd3 | 1);
    // VA 0x80001000 -> PDPT[2]; use PDPT[2] for a 4K mapping and PDPT[3] for a 2M page.
    let pd2 = p.alloc();
    p.w64(pdpt + 2 * 8, pd2 | 1);
    p.w64(pd2, pt | 0x63);
    p.w64(pt + 8, 0x70_0000 | 0x63);
    p.w64(pd3 + 5 * 8, 0x60_0000 | 0xE3); // VA 0xC0A00000 (index 5) 2 MiB page
    let d = raw(p, Machine::X86, true, pdpt);
    assert_eq!(d.translate(Va(0x8000_1234)).unwrap(), Pa(0x70_0234));
    assert_eq!(
        d.translate(Va(0xC0A1_2345)).unwrap(),
        Pa(0x60_0000 + 0x1_2345)
    );
    let w = d.walk(Va(0x8000_1234)).unwrap();
    let levels: Vec<_> = w.steps.iter().map(|s| s.level).collect();
    assert_eq!(levels, vec![PtLevel::Pdpte, PtLevel::Pde, PtLevel::Pte]);
    assert!(matches!(
        d.translate(Va(0x1_0000_0000)),
        Err(Error::NotCaptured { .. })
    ));

    // x86 non-PAE: PD -> PT, 4 MiB pages with PSE-36 bits.
    let mut p = Phys::new(0x400);
    let pd = p.alloc();
    let pt = p.alloc();
    p.w32(pd + 0x200 * 4, (pt as u32) | 0x63); // VA 0x80000000
    p.w32(pt + 3 * 4, 0x30_0000 | 0x63);
    p.w32(pd + 0x301 * 4, 0x0040_0000 | 0xE3); // VA 0xC0400000, 4 MiB page at 4 MiB
    p.w32(pd + 0x302 * 4, 0x0080_0000 | (1 << 13) | 0xE3); // PSE-36: PA bit 32 set
    p.w32(pt + 4 * 4, 0x31_0000 | 0x800); // transition
    p.w32(pt + 5 * 4, 0x0000_2000 | 0x80); // paged out (PageFileHigh = 2)
    let d = raw(p, Machine::X86, false, pd);
    assert_eq!(d.translate(Va(0x8000_3ABC)).unwrap(), Pa(0x30_0ABC));
    assert_eq!(d.translate(Va(0xC041_2345)).unwrap(), Pa(0x41_2345));
    assert_eq!(d.translate(Va(0xC080_0010)).unwrap(), Pa(0x1_0080_0010));
    assert_eq!(d.translate(Va(0x8000_4010)).unwrap(), Pa(0x31_0010));
    assert!(matches!(
        d.translate(Va(0x8000_5000)),
        Err(Error::NotPresent {
            level: PtLevel::Pte,
            kind: NotPresentKind::PagedOut,
            pte: 0x2080,
            ..
        })
    ));
}

#[test]
fn raw_dtb_discovery_x64() {
    let mut p = Phys::new(0x100);
    let t = X64::new(&mut p);
    t.set(&mut p, 0xFFFF_F680_0000_0000, 0, t.dtb | 0x63); // self-map at index 0x1ED
    t.map4k(&mut p, 0xFFFF_F800_0000_0000, 0x5_0000);
    t.map4k(&mut p, 0xFFFF_FA80_0000_0000, 0x6_0000);
    let dtb = t.dtb;
    let d = Dump::raw_from_bytes(p.mem, RawOptions::default()).unwrap();
    assert_eq!(d.dtb(), dtb);
    assert_eq!(
        d.translate(Va(0xFFFF_F800_0000_0010)).unwrap(),
        Pa(0x5_0010)
    );
    assert!(Dump::raw_from_bytes(vec![0u8; 0x10000], RawOptions::default()).is_err());
}
