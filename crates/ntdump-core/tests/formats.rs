//! Header, container and triage parsing on hand-built files: the fields land where WINDOWS_INTERNALS.md
//! §1 puts them, and each bad field gives `Error::Format` naming its file offset.

mod common;
use common::*;
use ntdump_core::container::{parse_body, Layout};
use ntdump_core::header::parse_header;
use ntdump_core::triage::RangeSource;
use ntdump_core::{Dump, Error, Machine, Pa, Va};

/// The file offset a format error names, or a panic with the unexpected result.
fn offset_of<T>(r: ntdump_core::Result<T>) -> u64 {
    match r {
        Err(Error::Format { offset, .. }) => offset,
        Err(e) => panic!("expected a format error, got {e:?}"),
        Ok(_) => panic!("expected a format error, got a value"),
    }
}

fn put32(f: &mut [u8], at: usize, v: u32) {
    f[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(f: &mut [u8], at: usize, v: u64) {
    f[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A 32-bit dump header (0x1000 bytes, "PAGE" fill), DumpType `dump_type`, PAE off.
fn header32(dump_type: u32) -> Vec<u8> {
    let mut h = b"PAGE".repeat(0x1000 / 4);
    h[4..8].copy_from_slice(b"DUMP");
    put32(&mut h, 0x8, 15);
    put32(&mut h, 0xC, 7601);
    put32(&mut h, 0x10, 0x0018_5000);
    put32(&mut h, 0x20, 0x14C);
    put32(&mut h, 0x24, 2);
    put32(&mut h, 0x28, 0xD1);
    h[0x5C] = 0;
    put32(&mut h, 0xF88, dump_type);
    put32(&mut h, 0x8A0, 0);
    h
}

#[test]
fn header64_fields_and_page_fill() {
    let mut h = header64(1, Some(&[(0, 2), (0x10, 1)]));
    put32(&mut h, 0x38, 0x1E);
    put64(&mut h, 0x40, 0xC000_0005);
    put64(&mut h, 0x80, 0xFFFF_F800_0000_1000);
    let hdr = parse_header(&h).unwrap();
    assert!(hdr.is64);
    assert_eq!(hdr.header_size, 0x2000);
    assert_eq!(hdr.machine, Machine::X64);
    assert_eq!((hdr.major_version, hdr.build, hdr.dtb), (15, 19041, 0x1000));
    assert_eq!(hdr.bugcheck_code, 0x1E);
    assert_eq!(hdr.bugcheck_params[0], 0xC000_0005);
    assert_eq!(hdr.kd_debugger_data_block, 0xFFFF_F800_0000_1000);
    assert_eq!(hdr.runs, Some(vec![(0, 2), (0x10, 1)]));
    // "PAGE" fill in an optional field reads as absent (0).
    assert_eq!(hdr.ps_loaded_module_list, 0);
    assert_eq!(hdr.dump_type, 1);
}

#[test]
fn header32_fields() {
    let mut h = header32(1);
    put32(&mut h, 0x64, 1); // one run
    put32(&mut h, 0x68, 1); // NumberOfPages
    put32(&mut h, 0x6C, 0x100); // BasePage
    put32(&mut h, 0x70, 3); // PageCount
    h[0x5C] = 1;
    let hdr = parse_header(&h).unwrap();
    assert!(!hdr.is64);
    assert!(hdr.pae);
    assert_eq!(hdr.header_size, 0x1000);
    assert_eq!((hdr.build, hdr.dtb, hdr.processors), (7601, 0x0018_5000, 2));
    assert_eq!(hdr.bugcheck_code, 0xD1);
    assert_eq!(hdr.runs, Some(vec![(0x100, 3)]));
}

#[test]
fn bad_header_fields_name_their_offset() {
    // Not "PAGE", too short, unknown ValidDump, cut short, bad machine, too many runs.
    assert_eq!(offset_of(parse_header(b"PAG")), 0);
    assert_eq!(
        offset_of(parse_header(&[b'M', b'D', b'M', b'P', 0, 0, 0, 0])),
        0
    );
    let mut h = header64(1, None);
    h[4..8].copy_from_slice(b"DUMX");
    assert_eq!(offset_of(parse_header(&h)), 4);
    let h = header64(1, None);
    assert_eq!(offset_of(parse_header(&h[..0x1800])), 0x1800);
    let mut h = header64(1, None);
    put32(&mut h, 0x30, 0x1234);
    assert_eq!(offset_of(parse_header(&h)), 0x30);
    let mut h = header64(1, None);
    put32(&mut h, 0x88, 44); // room for 43 runs
    assert_eq!(offset_of(parse_header(&h)), 0x88);
    let mut h = header32(1);
    put32(&mut h, 0x20, 0x8664); // a 64-bit machine in a 32-bit header
    assert_eq!(offset_of(parse_header(&h)), 0x20);
    let mut h = header32(1);
    put32(&mut h, 0x64, 87); // room for 86 runs
    assert_eq!(offset_of(parse_header(&h)), 0x64);
}

#[test]
fn full_dump_runs_are_placed_back_to_back() {
    let mut f = header64(1, Some(&[(0x10, 2), (0x40, 1)]));
    for (i, tag) in [0xAAu8, 0xBB, 0xCC].iter().enumerate() {
        let mut page = vec![*tag; PAGE];
        page[0] = i as u8;
        f.extend_from_slice(&page);
    }
    let d = Dump::from_bytes(f).unwrap();
    assert_eq!(d.layout, Layout::Full);
    let runs: Vec<(u64, u64, u64)> = d
        .phys()
        .runs()
        .iter()
        .map(|r| (r.base_pfn, r.pages, r.file_offset))
        .collect();
    assert_eq!(runs, [(0x10, 2, 0x2000), (0x40, 1, 0x4000)]);
    let mut b = [0u8; 2];
    d.read_phys(Pa(0x11000), &mut b).unwrap();
    assert_eq!(b, [1, 0xBB]);
    d.read_phys(Pa(0x40000), &mut b).unwrap();
    assert_eq!(b, [2, 0xCC]);
    match d.read_phys(Pa(0x12000), &mut b) {
        Err(Error::NotInDump { pa, .. }) => assert_eq!(pa, Pa(0x12000)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_full_dump_warns_and_counts_missing_pages() {
    let mut f = header64(1, Some(&[(0, 4)]));
    f.extend_from_slice(&vec![7u8; 2 * PAGE]); // two of four pages
    let d = Dump::from_bytes(f).unwrap();
    assert_eq!(d.phys().present_pages(), 2);
    assert_eq!(d.phys().missing_pages, 2);
    assert!(
        d.warnings.iter().any(|w| w.contains("truncated")),
        "{:?}",
        d.warnings
    );
}

#[test]
fn bitmap_dump_maps_set_bits_in_order() {
    let f = bitmap64(0x40, &[3, 4, 0x21]);
    let d = Dump::from_bytes(f).unwrap();
    assert_eq!(d.layout, Layout::Bitmap);
    let runs: Vec<(u64, u64)> = d
        .phys()
        .runs()
        .iter()
        .map(|r| (r.base_pfn, r.pages))
        .collect();
    assert_eq!(runs, [(3, 2), (0x21, 1)]);
    // bitmap64 stores each page's PFN in its first 8 bytes.
    for pfn in [3u64, 4, 0x21] {
        let mut b = [0u8; 8];
        d.read_phys(Pa(pfn << 12), &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), pfn);
    }
}

#[test]
fn bad_bitmap_fields_name_their_offset() {
    let good = bitmap64(0x40, &[1]);
    let hdr = parse_header(&good).unwrap();
    let mut f = good.clone();
    f[0x2000..0x2004].copy_from_slice(b"XDMP");
    assert_eq!(offset_of(parse_body(&f, &hdr)), 0x2000);
    let mut f = good.clone();
    f[0x2004..0x2008].copy_from_slice(b"DU64");
    assert_eq!(offset_of(parse_body(&f, &hdr)), 0x2004);
    let mut f = good.clone();
    put64(&mut f, 0x2030, 1 << 41); // BitmapSize beyond any physical memory
    assert_eq!(offset_of(parse_body(&f, &hdr)), 0x2030);
    let mut f = good.clone();
    let too_many = (f.len() as u64) * 8;
    put64(&mut f, 0x2030, too_many); // bitmap larger than the file
    assert_eq!(offset_of(parse_body(&f, &hdr)), 0x2030);
    let mut f = good.clone();
    put64(&mut f, 0x2020, 0x2010); // first page inside the bitmap
    assert_eq!(offset_of(parse_body(&f, &hdr)), 0x2020);
}

#[test]
fn body_errors_name_their_offset() {
    // Encrypted page data (DUMP_FILE_ATTRIBUTES bit 8), unknown DumpType, full dump without runs.
    let mut f = header64(1, Some(&[(0, 1)]));
    put32(&mut f, 0x1050, 1 << 8);
    f.extend_from_slice(&[0u8; PAGE]);
    assert_eq!(offset_of(Dump::from_bytes(f)), 0x1050);
    let mut f = header64(7, None);
    f.extend_from_slice(&[0u8; PAGE]);
    assert_eq!(offset_of(Dump::from_bytes(f)), 0xF98);
    let f = header64(1, None);
    assert_eq!(offset_of(Dump::from_bytes(f)), 0x88);
    let mut f = header32(0x20);
    f.extend_from_slice(&[0u8; PAGE]);
    assert_eq!(offset_of(Dump::from_bytes(f)), 0xF88);
}

#[test]
fn range_dump_table() {
    // RDMP (DumpType 8): sub-header at 0x2000, table at 0x2030 of (PFN, count), pages from `first`.
    let mut f = header64(8, None);
    f.resize(0x3000, 0);
    f[0x2004..0x2008].copy_from_slice(b"RDMP");
    put64(&mut f, 0x2010, 0x30); // MetadataSize: three entries
    put64(&mut f, 0x2018, 0x3000); // FirstPageOffset
    put64(&mut f, 0x2030, 0x50);
    put64(&mut f, 0x2038, 2);
    put64(&mut f, 0x2040, 0x80);
    put64(&mut f, 0x2048, 1);
    // Third entry PFN 0 ends the table.
    for v in [0x11u8, 0x22, 0x33] {
        f.extend_from_slice(&[v; PAGE]);
    }
    let d = Dump::from_bytes(f.clone()).unwrap();
    assert_eq!(d.layout, Layout::Range);
    let mut b = [0u8; 1];
    d.read_phys(Pa(0x51000), &mut b).unwrap();
    assert_eq!(b, [0x22]);
    d.read_phys(Pa(0x80000), &mut b).unwrap();
    assert_eq!(b, [0x33]);
    let mut bad = f.clone();
    put64(&mut bad, 0x2010, 1 << 40); // table larger than the file
    assert_eq!(offset_of(Dump::from_bytes(bad)), 0x2010);
    let mut bad = f;
    bad[0x2004..0x2008].copy_from_slice(b"XXXX");
    assert_eq!(offset_of(Dump::from_bytes(bad)), 0x2004);
}

/// A 64-bit triage dump: TRIAGE_DUMP64 at 0x2000 with a stack copy, a data page and two data blocks
/// (one overlapping the stack), captured bytes after 0x3000.
fn triage64() -> Vec<u8> {
    let mut f = header64(4, None);
    f.resize(0x6000, 0);
    let t = 0x2000;
    put32(&mut f, t + 0x08, 0x5FFC); // ValidOffset: "TRGD" at the end
    f[0x5FFC..0x6000].copy_from_slice(b"TRGD");
    put32(&mut f, t + 0x28, 0x3000); // CallStackOffset
    put32(&mut f, t + 0x2C, 0x100); // SizeOfCallStack
    put64(&mut f, t + 0x48, 0xFFFF_A000_0000_0F00); // TopOfStack
    put64(&mut f, t + 0x60, 0xFFFF_F800_0010_0000); // DataPageAddress
    put32(&mut f, t + 0x68, 0x4000); // DataPageOffset
    put32(&mut f, t + 0x6C, 0x1000); // DataPageSize
    put32(&mut f, t + 0x78, 0x2800); // DataBlocksOffset
    put32(&mut f, t + 0x7C, 2); // DataBlocksCount
    put64(&mut f, 0x2800, 0xFFFF_F800_0020_0000);
    put32(&mut f, 0x2808, 0x5000);
    put32(&mut f, 0x280C, 0x20);
    put64(&mut f, 0x2810, 0xFFFF_F800_0030_0000);
    put32(&mut f, 0x2818, 0x5100);
    put32(&mut f, 0x281C, 0x10);
    for (i, b) in f[0x3000..0x3100].iter_mut().enumerate() {
        *b = i as u8;
    }
    f[0x4000..0x5000].fill(0xDD);
    f[0x5000..0x5020].fill(0xB1);
    f[0x5100..0x5110].fill(0xB2);
    f
}

#[test]
fn triage_ranges_and_reads() {
    let d = Dump::from_bytes(triage64()).unwrap();
    assert_eq!(d.layout, Layout::Triage);
    let t = d.triage().unwrap();
    let got: Vec<(u64, u64, u64, RangeSource)> = t
        .ranges
        .iter()
        .map(|r| (r.va, r.len, r.file_offset, r.source))
        .collect();
    assert_eq!(
        got,
        [
            (0xFFFF_A000_0000_0F00, 0x100, 0x3000, RangeSource::Stack),
            (0xFFFF_F800_0010_0000, 0x1000, 0x4000, RangeSource::DataPage),
            (0xFFFF_F800_0020_0000, 0x20, 0x5000, RangeSource::DataBlock),
            (0xFFFF_F800_0030_0000, 0x10, 0x5100, RangeSource::DataBlock),
        ]
    );
    assert_eq!(t.data_blocks, 2);
    assert!(
        !d.warnings.iter().any(|w| w.contains("TRGD")),
        "{:?}",
        d.warnings
    );
    let mut b = [0u8; 4];
    d.read_virt(Va(0xFFFF_A000_0000_0F10), &mut b).unwrap();
    assert_eq!(b, [0x10, 0x11, 0x12, 0x13]);
    d.read_virt(Va(0xFFFF_F800_0030_000C), &mut b).unwrap();
    assert_eq!(b, [0xB2; 4]);
    // Past the end of a block: a typed translation error, not garbage.
    let r = d.read_virt(Va(0xFFFF_F800_0030_000E), &mut b);
    assert!(r.as_ref().is_err_and(|e| e.is_translation()), "{r:?}");
    assert!(d.translate(Va(0xFFFF_F800_0010_0000)).is_err());
}

#[test]
fn triage_bad_tables_warn_and_keep_what_fits() {
    let mut f = triage64();
    put32(&mut f, 0x2000 + 0x7C, 0x7FFF_FFFF); // DataBlocksCount far beyond the file
    put32(&mut f, 0x2000 + 0x08, 0x10); // ValidOffset without "TRGD"
    put32(&mut f, 0x2000 + 0x6C, 0x10_0000); // DataPageSize past the end of the file
    let d = Dump::from_bytes(f).unwrap();
    let w = d.warnings.join("\n");
    assert!(w.contains("TRGD"), "{w}");
    assert!(w.contains("fit in the file"), "{w}");
    assert!(w.contains("DataPage"), "{w}");
    let t = d.triage().unwrap();
    assert!(t.ranges.iter().all(|r| r.source != RangeSource::DataPage));
    assert!(t.ranges.iter().any(|r| r.va == 0xFFFF_F800_0020_0000));
}
