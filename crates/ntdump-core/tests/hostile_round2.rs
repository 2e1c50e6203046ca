//! Hostile input, round two (issue 12): range-dump fields validated like the bitmap reader's, reads
//! that would wrap past the top of the address space refused, and a file truncated while mapped
//! reported as a typed error instead of killing the process with SIGBUS.

mod common;
use common::*;
use ntdump_core::{Dump, Error, Pa, Va};

/// A 64-bit range dump (DumpType `ty`): sub-header at 0x2000, table at 0x2030 with `ranges`, then the
/// pages at `first` (each page filled with its PFN).
fn rdmp(ty: u32, ranges: &[(u64, u64)], total: u64, first: Option<u64>) -> Vec<u8> {
    let mut f = header64(ty, None);
    let table_end = 0x2030 + 16 * (ranges.len() + 1);
    let first_ok = table_end.div_ceil(PAGE) * PAGE;
    f.resize(first_ok, 0);
    f[0x2000..0x2004].copy_from_slice(&0x40u32.to_le_bytes());
    f[0x2004..0x2008].copy_from_slice(b"RDMP");
    f[0x2008..0x200C].copy_from_slice(b"DUMP");
    let meta = first_ok as u64 - 0x2020;
    f[0x2010..0x2018].copy_from_slice(&meta.to_le_bytes());
    f[0x2018..0x2020].copy_from_slice(&first.unwrap_or(first_ok as u64).to_le_bytes());
    f[0x2020..0x2024].copy_from_slice(&(ranges.len() as u32).to_le_bytes());
    f[0x2028..0x2030].copy_from_slice(&total.to_le_bytes());
    for (i, (pfn, n)) in ranges.iter().enumerate() {
        let o = 0x2030 + 16 * i;
        f[o..o + 8].copy_from_slice(&pfn.to_le_bytes());
        f[o + 8..o + 16].copy_from_slice(&n.to_le_bytes());
    }
    for &(pfn, n) in ranges {
        for k in 0..n.min(4) {
            let mut page = vec![0u8; PAGE];
            page[..8].copy_from_slice(&(pfn + k).to_le_bytes());
            f.extend_from_slice(&page);
        }
    }
    f
}

#[test]
fn rdmp_valid_control_opens() {
    let d = Dump::from_bytes(rdmp(0xA, &[(1, 2), (5, 1)], 3, None)).expect("valid range dump");
    let mut b = [0u8; 8];
    d.read_phys(Pa(5 << 12), &mut b).unwrap();
    assert_eq!(u64::from_le_bytes(b), 5);
}

#[test]
fn rdmp_page_count_all_ones_is_refused_under_type_0xa_as_under_8() {
    for ty in [8u32, 0xA] {
        let f = rdmp(ty, &[(1, u64::MAX)], 4, None);
        match Dump::from_bytes(f) {
            Err(Error::Format { what, offset }) => {
                assert!(what.contains("RDMP range 0"), "{ty:#x}: {what}");
                assert_eq!(offset, 0x2038, "offset names the page count field");
            }
            Err(e) => panic!("type {ty:#x}: wrong error {e}"),
            Ok(_) => panic!("type {ty:#x}: a range of 2^64-1 pages opened"),
        }
    }
}

#[test]
fn rdmp_first_page_offset_zero_is_refused() {
    let f = rdmp(0xA, &[(1, 2)], 2, Some(0));
    match Dump::from_bytes(f) {
        Err(Error::Format { what, offset }) => {
            assert!(what.contains("FirstPageOffset"), "{what}");
            assert_eq!(offset, 0x2018);
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(d) => {
            let mut b = [0u8; 8];
            let r = d.read_phys(Pa(0x1000), &mut b);
            panic!("opened; read_phys(0x1000) gave {r:?} {:?}", &b);
        }
    }
}

#[test]
fn rdmp_more_pages_than_total_warns() {
    let d = Dump::from_bytes(rdmp(0xA, &[(1, 3)], 2, None)).unwrap();
    assert!(
        d.warnings.iter().any(|w| w.contains("TotalNumberOfPages")),
        "{:?}",
        d.warnings
    );
}

/// A full x64 dump of `pages` physical pages whose tables map the last page of the address space and
/// VA 0, each to a page filled with a marker byte.
fn top_and_zero_mapped() -> Vec<u8> {
    let pages = 0x40;
    let mut p = Phys::new(pages);
    let x = X64::new(&mut p);
    let top = p.alloc();
    let zero = p.alloc();
    p.mem[top as usize..top as usize + PAGE].fill(0xEE);
    p.mem[zero as usize..zero as usize + PAGE].fill(0x11);
    x.map4k(&mut p, 0xFFFF_FFFF_FFFF_F000, top);
    x.map4k(&mut p, 0, zero);
    let mut f = header64(1, Some(&[(0, pages as u64)]));
    f[0x10..0x18].copy_from_slice(&x.dtb.to_le_bytes());
    f.extend_from_slice(&p.mem);
    f
}

#[test]
fn reads_do_not_wrap_past_the_top_of_the_address_space() {
    let d = Dump::from_bytes(top_and_zero_mapped()).unwrap();
    let mut b = [0u8; 8];
    d.read_virt(Va(u64::MAX - 7), &mut b)
        .expect("the last 8 bytes are readable");
    assert_eq!(b, [0xEE; 8]);
    let mut b = [0u8; 16];
    match d.read_virt(Va(u64::MAX - 7), &mut b) {
        Err(e @ Error::NotCaptured { .. }) => {
            assert!(e.to_string().contains("past the top"), "{e}")
        }
        other => panic!("read wrapped to VA 0: {other:?} {b:02x?}"),
    }
    // Padded reads zero-fill past the top instead of reading VA 0.
    let mut b = [0xAAu8; 16];
    assert_eq!(d.read_virt_padded(Va(u64::MAX - 7), &mut b), 8);
    assert_eq!(&b[..8], &[0xEE; 8]);
    assert_eq!(&b[8..], &[0; 8]);
    // Physical reads too.
    let mut b = [0u8; 16];
    assert!(d.read_phys(Pa(u64::MAX - 7), &mut b).is_err());
    assert_eq!(d.read_phys_padded(Pa(u64::MAX - 7), &mut b), 0);
}

#[cfg(unix)]
#[test]
fn file_truncated_while_mapped_is_a_typed_error_not_sigbus() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("ntdump-shrink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shrink.dmp");
    let pages = 0x40u64;
    let mut f = header64(1, Some(&[(0, pages)]));
    for pfn in 0..pages {
        let mut page = vec![0u8; PAGE];
        page[..8].copy_from_slice(&pfn.to_le_bytes());
        f.extend_from_slice(&page);
    }
    std::fs::File::create(&path).unwrap().write_all(&f).unwrap();
    let d = Dump::open(&path).unwrap();
    let mut b = [0u8; 8];
    d.read_phys(Pa(0x30 << 12), &mut b).unwrap();
    assert_eq!(u64::from_le_bytes(b), 0x30);
    assert!(d.check_intact().is_ok());
    // Another writer shortens the file to its header plus 4 pages.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0x2000 + 4 * PAGE as u64)
        .unwrap();
    // A page still inside the file reads as before.
    d.read_phys(Pa(2 << 12), &mut b).unwrap();
    assert_eq!(u64::from_le_bytes(b), 2);
    // A page past the new end: a typed error naming the file offset, and the process lives on.
    match d.read_phys(Pa(0x30 << 12), &mut b) {
        Err(Error::Format { what, offset }) => {
            assert!(what.contains("file shrank while open"), "{what}");
            assert_eq!(offset, 0x2000 + 0x30 * PAGE as u64);
        }
        other => panic!("{other:?}"),
    }
    // Borrowing paths (search, scans) see zeros, and the dump reports itself broken from now on.
    assert!(d.phys_page(0x31).is_some_and(|p| p.iter().all(|&x| x == 0)));
    assert!(d.check_intact().is_err());
    drop(d);
    std::fs::remove_dir_all(&dir).ok();
}
