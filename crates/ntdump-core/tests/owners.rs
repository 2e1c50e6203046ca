//! Tag owners (pool::owners) on a hand-built x64 kernel: two "driver images" hold the tag `Leak` after
//! different opcodes; the ranking, the evidence text and the attribution of hits to modules follow the
//! rules documented in docs/pool.md.

mod common;
use common::*;
use ntdump_core::pe::Export;
use ntdump_core::pool::owners::{tag_owners, UNTAGGED};
use ntdump_core::symbols::{ModuleSymbols, SymbolTable};
use ntdump_core::{Dump, Error, Machine, RawOptions};

const A: u64 = 0xFFFF_F800_1000_0000; // "alpha" image, 2 pages
const B: u64 = 0xFFFF_F800_2000_0000; // "beta" image, 2 pages

fn module(kd: &str, base: u64) -> ModuleSymbols {
    ModuleSymbols {
        kd_name: kd.into(),
        file_name: format!("{kd}.sys"),
        base,
        size: 0x2000,
        is_kernel: false,
        is_hal: false,
        imports: Vec::new(),
        iat_directory: None,
        export_count: 0,
        error: None,
        exports_unreadable: false,
        warnings: Vec::new(),
    }
}

fn dump() -> (Dump, SymbolTable) {
    let mut p = Phys::new(0x40);
    let t = X64::new(&mut p);
    let pages = [
        (A, 0x30000u64),
        (A + 0x1000, 0x31000),
        (B, 0x32000),
        (B + 0x1000, 0x35000),
    ];
    for (va, pa) in pages {
        t.map4k(&mut p, va, pa);
    }
    let mut put = |pa: u64, bytes: &[u8]| {
        p.mem[pa as usize..pa as usize + bytes.len()].copy_from_slice(bytes);
    };
    // alpha: mov r8d, 'Leak' twice (10 each) and once as plain bytes (1).
    put(0x30100, b"\x41\xb8Leak");
    put(0x31200, b"\x41\xb8Leak");
    put(0x30400, b"\x00\x00\x00\x00Leak");
    // beta: mov edx, 'Leak' (6) and mov [rsp+0x20], 'Leak' (5): 11 < 21.
    put(0x32100, b"\xbaLeak");
    put(0x35300, b"\xc7\x44\x24\x20Leak");
    // A tag straddling beta's two pages, whose frames are not adjacent, is found (the seams).
    put(0x32FFC, b"\x90\x90Zq");
    put(0x35000, b"9!");
    let dtb = t.dtb;
    let d = Dump::raw_from_bytes(
        p.mem,
        RawOptions {
            machine: Some(Machine::X64),
            pae: Some(false),
            dtb: Some(dtb),
        },
    )
    .unwrap();
    let table = SymbolTable::from_parts(vec![
        (module("alpha", A), Vec::<Export>::new()),
        (module("beta", B), Vec::new()),
    ]);
    (d, table)
}

#[test]
fn ranking_evidence_and_attribution() {
    let (d, t) = dump();
    let o = tag_owners(&d, &t, &[*b"Leak", *b"Zq9!", *b"Nope", *b"Leak"]).unwrap();
    assert_eq!(o.len(), 4);
    let rows: Vec<(&str, &str, f64)> = o[0]
        .rows
        .iter()
        .map(|r| {
            (
                t.modules[r.module].kd_name.as_str(),
                r.evidence.as_str(),
                r.score,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("alpha", "2x mov r8d, imm32; 1x bytes", 21.0),
            ("beta", "1x mov edx, imm32; 1x mov [rsp+x], imm32", 11.0),
        ]
    );
    // The straddling tag, attributed to beta; the byte before it (0x90) is no known opcode.
    assert_eq!(o[1].rows.len(), 1);
    assert_eq!(t.modules[o[1].rows[0].module].kd_name, "beta");
    assert_eq!(o[1].rows[0].evidence, "1x bytes");
    assert!(o[2].rows.is_empty());
    assert_eq!(o[3], o[0]); // a repeated tag gets the same answer
}

#[test]
fn untagged_without_an_nt_module_says_why() {
    let (d, t) = dump();
    let o = tag_owners(&d, &t, &[UNTAGGED]).unwrap();
    assert!(o[0].rows.is_empty());
    assert!(o[0].note.contains("nt!ExAllocatePool"), "{}", o[0].note);
}

#[test]
fn no_modules_no_owners_and_arm64_is_unsupported() {
    let (d, _) = dump();
    let empty = SymbolTable::from_parts(Vec::new());
    let o = tag_owners(&d, &empty, &[*b"Leak"]).unwrap();
    assert!(o[0].rows.is_empty());
    let mut f = header64(1, Some(&[(0, 1)]));
    f[0x30..0x34].copy_from_slice(&0xAA64u32.to_le_bytes());
    f.extend_from_slice(&[0u8; PAGE]);
    let arm = Dump::from_bytes(f).unwrap();
    let t = SymbolTable::from_parts(vec![(module("alpha", A), Vec::new())]);
    assert!(matches!(
        tag_owners(&arm, &t, &[*b"Leak"]),
        Err(Error::Unsupported(_))
    ));
}
