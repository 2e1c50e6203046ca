//! Pool readers on hand-built pages and table entries (no dump needed): the page walker's chain
//! checks, the scanner's header rules per era, and the tracker/big-page decoders.

use ntdump_core::header::Machine;
use ntdump_core::pool::page::{walk_page, WalkStatus};
use ntdump_core::pool::scan::scan_bytes;
use ntdump_core::pool::{layout, tracker, PoolContext, PoolFilter, ScanOptions, TagPattern};
use ntdump_core::Va;

const BASE64: u64 = 0xFFFF_C080_0000_0000;
const BASE32: u64 = 0x8100_0000;

/// An x64 header: sizes in bytes (16-byte units), stored PoolType byte.
fn h64(prev: u64, size: u64, ty: u8, tag: &[u8; 4]) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = (prev / 16) as u8;
    h[2] = (size / 16) as u8;
    h[3] = ty;
    h[4..8].copy_from_slice(tag);
    h
}

/// An x86 header: sizes in bytes (8-byte units).
fn h32(prev: u64, size: u64, ty: u32, tag: &[u8; 4]) -> [u8; 8] {
    let v = (prev / 8) as u32 | (((size / 8) as u32) << 16) | (ty << 25);
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&v.to_le_bytes());
    h[4..].copy_from_slice(tag);
    h
}

/// A page of x64 blocks (sizes in bytes), chained, Vista encoding (allocated = type | 2).
fn page64(blocks: &[(u64, u8, &[u8; 4])]) -> Vec<u8> {
    let mut p = vec![0u8; 4096];
    let (mut off, mut prev) = (0u64, 0u64);
    for &(size, ty, tag) in blocks {
        p[off as usize..off as usize + 16].copy_from_slice(&h64(prev, size, ty, tag));
        prev = size;
        off += size;
    }
    p
}

#[test]
fn legacy_walk_whole_chain() {
    let ctx = PoolContext::new(Machine::X64, 7601, 1);
    let p = page64(&[(0x100, 2, b"Thre"), (0x40, 0, b"Free"), (0xEC0, 3, b"MmSt")]);
    let w = walk_page(&ctx, &p, Va(BASE64 + 0x120));
    assert_eq!(w.status, WalkStatus::Ok);
    assert_eq!(w.blocks.len(), 3);
    assert!(w.blocks[1].contains && !w.blocks[1].allocated);
    assert_eq!(w.blocks[2].pool_type, 1); // PagedPool
    assert_eq!(w.blocks.iter().map(|b| b.size).sum::<u64>(), 4096);
}

#[test]
fn legacy_walk_stops_on_corruption() {
    let ctx = PoolContext::new(Machine::X64, 7601, 1);
    // Zero size: a walk that would loop forever stops at once.
    let p = page64(&[(0x100, 2, b"Thre"), (0, 2, b"Loop")]);
    let w = walk_page(&ctx, &p, Va(BASE64));
    assert!(matches!(w.status, WalkStatus::Corrupt { at, .. } if at == BASE64 + 0x100));
    // Past the page end.
    let mut p = page64(&[(0x100, 2, b"Thre")]);
    p[0x100..0x110].copy_from_slice(&h64(0x100, 0xF10, 2, b"Long"));
    let w = walk_page(&ctx, &p, Va(BASE64));
    assert!(matches!(w.status, WalkStatus::Corrupt { ref why, .. } if why.contains("past")));
    // A short slice is a header running past the data, never a panic.
    let w = walk_page(&ctx, &p[..0x104], Va(BASE64));
    assert!(matches!(w.status, WalkStatus::Corrupt { .. }));
}

#[test]
fn segment_heap_is_not_walked() {
    let ctx = PoolContext::new(Machine::X64, 19041, 4);
    let p = page64(&[(0x100, 2, b"Thre"), (0xF00, 2, b"File")]);
    let w = walk_page(&ctx, &p, Va(BASE64 + 0x180));
    assert!(matches!(w.status, WalkStatus::NotWalked(_)));
    assert!(w.blocks.is_empty());
    let n = w.nearest.expect("nearest header");
    assert_eq!((n.address, n.contains), (BASE64 + 0x100, true));
}

#[test]
fn scanner_rules_per_era() {
    // x86 XP: allocated nonpaged = (0 + 1) | 4 = 5, paged = 6, free = 0.
    let ctx = PoolContext::new(Machine::X86, 2600, 1);
    let mut p = vec![0u8; 4096];
    p[..8].copy_from_slice(&h32(0, 0x20, 5, b"Proc"));
    p[0x20..0x28].copy_from_slice(&h32(0x20, 0x40, 6, b"CM31"));
    p[0x60..0x68].copy_from_slice(&h32(0x40, 0x20, 0, b"Free"));
    p[0x80..0x88].copy_from_slice(&h32(0x20, 0x20, 1, b"Bad1")); // 1 is impossible on XP
    p[0xA0..0xA8].copy_from_slice(&h32(0x20, 0x20, 5, b"\x01bad")); // not a tag
    p[0xC0..0xC8].copy_from_slice(&h32(0x200, 0x20, 5, b"Prev")); // PreviousSize before page
    let all = scan_bytes(&ctx, &p, Va(BASE32), &ScanOptions::default());
    assert_eq!(all.address, vec![BASE32, BASE32 + 0x20, BASE32 + 0x60]);
    assert_eq!(all.pool_type, vec![0, 1, 0]);
    assert_eq!(all.allocated, vec![true, true, false]);
    let paged = ScanOptions {
        tags: None,
        pool: PoolFilter::Paged,
    };
    assert_eq!(scan_bytes(&ctx, &p, Va(BASE32), &paged).tag.len(), 1);
    let cm = ScanOptions {
        tags: Some(vec![TagPattern::parse(b"CM*").unwrap()]),
        pool: PoolFilter::All,
    };
    assert_eq!(
        scan_bytes(&ctx, &p, Va(BASE32), &cm).address,
        vec![BASE32 + 0x20]
    );
    // Pre-Windows 8 the protected bit is removed from tags.
    let ctx7 = PoolContext::new(Machine::X86, 7601, 1);
    let mut q = vec![0u8; 4096];
    q[..8].copy_from_slice(&h32(0, 0x40, 2, b"Thr\xe5"));
    let hits = scan_bytes(&ctx7, &q, Va(BASE32), &ScanOptions::default());
    assert_eq!(hits.tag, vec![u32::from_le_bytes(*b"Thre")]);
}

#[test]
fn tracker_and_big_decoders() {
    let l = &layout::TRACKER_X64_38;
    let mut e = vec![0u8; 0x38];
    e[0..4].copy_from_slice(b"Thre");
    e[8..16].copy_from_slice(&640u64.to_le_bytes()); // NonPagedBytes
    e[0x10..0x18].copy_from_slice(&12u64.to_le_bytes()); // NonPagedAllocs
    e[0x18..0x20].copy_from_slice(&7u64.to_le_bytes()); // NonPagedFrees
    let c = tracker::decode(l, &e);
    assert_eq!(c.c, [12, 7, 640, 0, 0, 0]);
    assert_eq!(tracker::entry_valid(&c, false, true), Some(true));
    // Read with the 0x28 layout, the same bytes are not a valid entry.
    let c28 = tracker::decode(&layout::TRACKER_X64_28, &e);
    assert_eq!(tracker::entry_valid(&c28, false, true), None);
    // Windows 10 big page: PoolType is 12 bits (0x200 = NonPagedPoolNx survives).
    let b = &layout::BIG_WIN10_X64;
    let mut e = vec![0u8; 24];
    e[..8].copy_from_slice(&(BASE64 | 1).to_le_bytes());
    e[8..12].copy_from_slice(b"MmCm");
    e[0xC..0x10].copy_from_slice(&(0x5Au32 | (0x200 << 8) | (0x7 << 20)).to_le_bytes());
    assert_eq!(b.pool_type_bits.unwrap().get(&e), 0x200);
    assert_eq!(b.va.get(&e) & 1, 1);
}

/// InitializePool leaves every big-page slot at Va 1 (POOL_BIG_TABLE_ENTRY_FREE; WRK pool.c,
/// ReactOS expool.c); Va 0 is free too; an odd Va above 1 is a freed allocation, not a free slot.
#[test]
fn big_page_free_slots() {
    use ntdump_core::pool::big::is_free_slot;
    assert!(is_free_slot(0));
    assert!(is_free_slot(1));
    assert!(!is_free_slot(0xFFFF_C080_0000_1000));
    assert!(!is_free_slot(0xFFFF_C080_0000_1001));
    assert!(!is_free_slot(0x8100_0001));
}

/// PoolTrackTableSize is 2^n + 1 after InitializePool (the overflow entry); 2^n is accepted too.
#[test]
fn tracker_size_counts() {
    use tracker::{plausible_count, MAX_ENTRIES, MIN_ENTRIES};
    for n in [
        16u64,
        17,
        1024,
        1025,
        2048,
        2049,
        MAX_ENTRIES,
        MAX_ENTRIES + 1,
    ] {
        assert!(plausible_count(n), "{n}");
    }
    for n in [
        0u64,
        1,
        2,
        3,
        15,
        MIN_ENTRIES - 1,
        1023,
        1026,
        3000,
        MAX_ENTRIES + 2,
        1 << 30,
    ] {
        assert!(!plausible_count(n), "{n}");
    }
}
