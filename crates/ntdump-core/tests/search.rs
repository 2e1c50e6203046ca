//! Search: chunk overlap and seam logic against a brute-force scan, and searches of hand-built dumps
//! (pages stored out of order, 2 MiB pages, looping page tables).

mod common;
use common::*;
use ntdump_core::search::{
    kernel_ranges, search, search_slices, SearchOptions, SearchResult, Target,
};
use ntdump_core::{Dump, Error, Machine, RawOptions, Va};

/// xorshift64*: a deterministic generator without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every (address, pattern) where a pattern lies entirely inside one run of gap-free pieces.
fn brute(pieces: &[(u64, Vec<u8>)], patterns: &[Vec<u8>], align: u64) -> Vec<(u64, u32)> {
    let mut chains: Vec<(u64, Vec<u8>)> = Vec::new();
    for (a, d) in pieces {
        match chains.last_mut() {
            Some((s, buf)) if *s + buf.len() as u64 == *a => buf.extend_from_slice(d),
            _ => chains.push((*a, d.clone())),
        }
    }
    let mut out = Vec::new();
    for (s, buf) in &chains {
        for i in 0..buf.len() {
            for (id, p) in patterns.iter().enumerate() {
                if buf[i..].starts_with(p) && (s + i as u64).is_multiple_of(align) {
                    out.push((s + i as u64, id as u32));
                }
            }
        }
    }
    out.sort_unstable();
    out
}

fn pairs(r: &SearchResult) -> Vec<(u64, u32)> {
    r.addresses
        .iter()
        .copied()
        .zip(r.patterns.iter().copied())
        .collect()
}

#[test]
fn slices_match_brute_force_across_chunks_and_seams() {
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    for round in 0..400 {
        // Pieces of 1..40 bytes over a two-letter alphabet, separated by gaps or touching (a seam).
        let mut pieces: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut addr = rng.below(16);
        for _ in 0..1 + rng.below(40) {
            let n = 1 + rng.below(40) as usize;
            let d: Vec<u8> = (0..n).map(|_| b'a' + rng.below(2) as u8).collect();
            pieces.push((addr, d));
            addr += n as u64
                + if rng.below(3) == 0 {
                    1 + rng.below(5)
                } else {
                    0
                };
        }
        let npat = 1 + rng.below(3) as usize;
        let patterns: Vec<Vec<u8>> = (0..npat)
            .map(|_| {
                let n = 1 + rng.below(9) as usize;
                (0..n).map(|_| b'a' + rng.below(2) as u8).collect()
            })
            .collect();
        let mut uniq = patterns.clone();
        uniq.sort();
        uniq.dedup();
        let align = [1u64, 2, 4][rng.below(3) as usize];
        let opts = SearchOptions {
            align,
            limit: None,
            chunk_size: 1 + rng.below(12) as usize,
        };
        let view: Vec<(u64, &[u8])> = pieces.iter().map(|(a, d)| (*a, d.as_slice())).collect();
        let got = search_slices(&view, &uniq, &opts).unwrap();
        let want = brute(&pieces, &uniq, align);
        assert_eq!(
            pairs(&got),
            want,
            "round {round}: {pieces:?} {uniq:?} {opts:?}"
        );
        assert!(!got.truncated);

        // With a limit: the first `limit` hits by address, whatever the chunking.
        if !want.is_empty() {
            let limit = 1 + rng.below(want.len() as u64) as usize;
            let got = search_slices(
                &view,
                &uniq,
                &SearchOptions {
                    limit: Some(limit),
                    ..opts
                },
            )
            .unwrap();
            assert_eq!(pairs(&got), want[..limit], "round {round} limit {limit}");
            assert_eq!(got.truncated, limit < want.len());
        }
    }
}

#[test]
fn long_pattern_across_many_tiny_pieces() {
    // A 10-byte pattern spread over pieces of 1..3 bytes: it crosses several seams, reported once.
    let text = b"xxABCDEFGHIJxxABCDEFGHIJ";
    let mut pieces = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < text.len() {
        let n = (1 + k % 3).min(text.len() - i);
        pieces.push((0x1000 + i as u64, text[i..i + n].to_vec()));
        i += n;
        k += 1;
    }
    let view: Vec<(u64, &[u8])> = pieces.iter().map(|(a, d)| (*a, d.as_slice())).collect();
    let r = search_slices(&view, &[b"ABCDEFGHIJ"], &SearchOptions::default()).unwrap();
    assert_eq!(r.addresses, vec![0x1002, 0x100E]);
}

#[test]
fn overlapping_hits_are_all_reported() {
    let d = [0u8; 64];
    let r = search_slices(&[(0x100, &d[..])], &[[0u8; 4]], &SearchOptions::default()).unwrap();
    assert_eq!(r.addresses, (0x100..0x13D).collect::<Vec<u64>>());
    let aligned = SearchOptions {
        align: 4,
        ..Default::default()
    };
    let r = search_slices(&[(0x102, &d[..])], &[[0u8; 4]], &aligned).unwrap();
    assert_eq!(
        r.addresses,
        (0x104..=0x13C).step_by(4).collect::<Vec<u64>>()
    );
}

#[test]
fn bad_arguments_are_errors() {
    let d = [0u8; 8];
    let empty: [&[u8]; 0] = [];
    assert!(matches!(
        search_slices(&[(0, &d[..])], &empty, &SearchOptions::default()),
        Err(Error::Argument(_))
    ));
    assert!(matches!(
        search_slices(&[(0, &d[..])], &[b""], &SearchOptions::default()),
        Err(Error::Argument(_))
    ));
    assert!(matches!(
        search_slices(
            &[(4, &d[..]), (0, &d[..])],
            &[b"a"],
            &SearchOptions::default()
        ),
        Err(Error::Argument(_))
    ));
}

const K: u64 = 0xFFFF_F800_0000_0000;

fn raw64(p: Phys, dtb: u64) -> Dump {
    Dump::raw_from_bytes(
        p.mem,
        RawOptions {
            machine: Some(Machine::X64),
            pae: Some(false),
            dtb: Some(dtb),
        },
    )
    .unwrap()
}

/// Kernel pages K..K+3 on scattered frames (K+1 is not present), a 2 MiB page at K+2 MiB, and patterns
/// planted across the K/K+0x1000 seam (frames 0x300 and 0x100: not adjacent in the file).
fn scattered() -> (Dump, Vec<u64>) {
    let mut p = Phys::new(0x800); // 8 MiB
    let t = X64::new(&mut p);
    t.map4k(&mut p, K, 0x30_0000);
    t.map4k(&mut p, K + 0x1000, 0x10_0000);
    t.set(&mut p, K + 0x2000, 3, 0x0000_0123_0000_0080); // paged out
    t.map4k(&mut p, K + 0x3000, 0x20_0000);
    t.map2m(&mut p, K + 0x20_0000, 0x40_0000);
    t.map4k(&mut p, K + 0x5000, 0x1_0000_0000); // a frame beyond the image: missing from the dump
    let pat = 0xE089_4D1Fu32.to_le_bytes();
    // (VA of the first byte, PA of each byte)
    let plants: [(u64, [u64; 4]); 5] = [
        (K + 0xFFE, [0x30_0FFE, 0x30_0FFF, 0x10_0000, 0x10_0001]), // straddles K / K+0x1000
        (K + 0x1F00, [0x10_0F00, 0x10_0F01, 0x10_0F02, 0x10_0F03]),
        (K + 0x3000, [0x20_0000, 0x20_0001, 0x20_0002, 0x20_0003]),
        // the last dword of the 2 MiB page, and one across two of its 4 KiB halves
        (K + 0x3F_FFFC, [0x5F_FFFC, 0x5F_FFFD, 0x5F_FFFE, 0x5F_FFFF]),
        (K + 0x20_0FFE, [0x40_0FFE, 0x40_0FFF, 0x40_1000, 0x40_1001]),
    ];
    let mut planted = Vec::new();
    for (va, pas) in plants {
        for (b, pa) in pat.iter().zip(pas) {
            p.mem[pa as usize] = *b;
        }
        planted.push(va);
    }
    planted.sort_unstable();
    let dtb = t.dtb;
    (raw64(p, dtb), planted)
}

#[test]
fn virtual_search_finds_planted_values_across_scattered_frames() {
    let (d, planted) = scattered();
    let pat = 0xE089_4D1Fu32.to_le_bytes();
    let r = search(
        &d,
        &[pat],
        Target::Virtual(&[(K, 0x40_0000)]),
        &SearchOptions::default(),
    )
    .unwrap();
    assert_eq!(r.addresses, planted);
    // Mapped: K, K+1, K+3 (3 pages) + 512 pages of the 2 MiB page; K+2, K+4, K+5.. are unreadable.
    assert_eq!(r.pages_searched, 3 + 512);
    assert_eq!(r.pages_unreadable, 0x400 - 3 - 512);
    // Aligned to 4: the two straddling hits at ...FFE drop out.
    let r4 = search(
        &d,
        &[pat],
        Target::Virtual(&[(K, 0x40_0000)]),
        &SearchOptions {
            align: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let want: Vec<u64> = planted.iter().copied().filter(|a| a % 4 == 0).collect();
    assert_eq!(r4.addresses, want);
    // The whole kernel half: same hits; only the mapped page whose frame is missing counts as unreadable.
    let rk = search(&d, &[pat], Target::Kernel, &SearchOptions::default()).unwrap();
    assert_eq!(rk.addresses, planted);
    assert_eq!(rk.pages_unreadable, 1);
    // A range ending inside a hit does not report it.
    let r = search(
        &d,
        &[pat],
        Target::Virtual(&[(K, 0x1000 + 1)]),
        &SearchOptions::default(),
    )
    .unwrap();
    assert!(r.addresses.is_empty());
}

#[test]
fn kernel_ranges_agree_with_the_walk() {
    let (d, _) = scattered();
    let ranges = kernel_ranges(&d).unwrap();
    assert_eq!(
        ranges,
        vec![
            (K, 0x2000),
            (K + 0x3000, 0x1000),
            (K + 0x5000, 0x1000),
            (K + 0x20_0000, 0x20_0000)
        ]
    );
    for page in 0..0x400u64 {
        let va = K + page * 0x1000;
        let inside = ranges.iter().any(|&(s, n)| va >= s && va - s < n);
        assert_eq!(inside, d.walk(Va(va)).unwrap().result.is_ok(), "{va:#x}");
    }
}

#[test]
fn physical_search_crosses_runs_stored_out_of_order() {
    // A full dump whose runs are declared out of PFN order: PFNs 0x12-0x13 come first in the file, then
    // 0x10-0x11. PFN 0x11 -> 0x12 is a seam between pages that are far apart in the file.
    let runs = [(0x12u64, 2u64), (0x10, 2)];
    let mut f = header64(1, Some(&runs));
    let mut pages = vec![0u8; 4 * PAGE];
    // File order: 0x12, 0x13, 0x10, 0x11.
    let at = |pfn: u64, off: usize| -> usize {
        let slot = match pfn {
            0x12 => 0,
            0x13 => 1,
            0x10 => 2,
            _ => 3,
        };
        slot * PAGE + off
    };
    pages[at(0x11, 0xFFD)..at(0x11, 0xFFD) + 3].copy_from_slice(b"NEE");
    pages[at(0x12, 0)..at(0x12, 0) + 3].copy_from_slice(b"DLE");
    pages[at(0x10, 0x10)..at(0x10, 0x10) + 6].copy_from_slice(b"NEEDLE");
    f.extend_from_slice(&pages);
    let d = Dump::from_bytes(f).unwrap();
    let r = search(
        &d,
        &[b"NEEDLE"],
        Target::Physical(None),
        &SearchOptions::default(),
    )
    .unwrap();
    assert_eq!(r.addresses, vec![0x10010, 0x11FFD]);
    assert_eq!((r.pages_searched, r.pages_unreadable), (4, 0));
    // A physical range that stops one byte short of the straddling hit's end.
    let r = search(
        &d,
        &[b"NEEDLE"],
        Target::Physical(Some(&[(0x11000, 0x1002)])),
        &SearchOptions::default(),
    )
    .unwrap();
    assert!(r.addresses.is_empty());
    let r = search(
        &d,
        &[b"NEEDLE"],
        Target::Physical(Some(&[(0xF000, 0x1000), (0x11000, 0x1003)])),
        &SearchOptions::default(),
    )
    .unwrap();
    assert_eq!(r.addresses, vec![0x11FFD]);
    assert_eq!((r.pages_searched, r.pages_unreadable), (2, 1));
}

#[test]
fn looping_page_tables_give_an_error_not_a_hang() {
    let mut p = Phys::new(0x20);
    let t = X64::new(&mut p);
    // Every kernel PML4 entry points back at the PML4: 2^35 apparent 4 KiB leaves.
    for i in 256..512u64 {
        p.w64(t.dtb + i * 8, t.dtb | 0x63);
    }
    let dtb = t.dtb;
    let d = raw64(p, dtb);
    let start = std::time::Instant::now();
    let r = search(&d, &[b"x"], Target::Kernel, &SearchOptions::default());
    assert!(matches!(r, Err(Error::Format { .. })), "{r:?}");
    assert!(kernel_ranges(&d).is_err());
    assert!(start.elapsed().as_secs() < 30);
}

#[test]
fn limit_stops_a_pattern_that_hits_everywhere() {
    let (d, _) = scattered();
    let opts = SearchOptions {
        limit: Some(5),
        align: 4,
        ..Default::default()
    };
    let r = search(&d, &[[0u8; 4]], Target::Kernel, &opts).unwrap();
    assert_eq!(r.addresses.len(), 5);
    assert!(r.truncated);
    assert!(r.addresses.windows(2).all(|w| w[0] < w[1]));
    let all = search(
        &d,
        &[[0u8; 4]],
        Target::Kernel,
        &SearchOptions {
            align: 4,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.addresses, all.addresses[..5]);
}
