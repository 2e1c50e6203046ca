//! Unit-level checks of the stack module's decoders on hand-assembled bytes (the forged-dump and
//! real-dump walks are tested from Python: tests/test_stack_*.py).

use ntdump_core::stack::scan::{call_ending_at, CallForm};
use ntdump_core::stack::unwind::{
    self as uw, lookup, parse_table, parse_unwind_info, unwind_chain, RuntimeFunction, UnwindError,
};

/// (instruction bytes, expected (start, form)).
type CallCase = (&'static [u8], Option<(usize, CallForm)>);

#[test]
fn call_forms_end_where_the_sdm_says() {
    let cases: &[CallCase] = &[
        (&[0x90, 0xE8, 1, 2, 3, 4], Some((1, CallForm::Rel32))),
        (&[0x90, 0xFF, 0xD0], Some((1, CallForm::Indirect))), // call rax
        (&[0x41, 0xFF, 0xD3], Some((1, CallForm::Indirect))), // call r11 (REX before)
        (&[0xFF, 0x15, 1, 2, 3, 4], Some((0, CallForm::Indirect))), // call [rip+d32]
        (&[0xFF, 0x10], Some((0, CallForm::Indirect))),       // call [rax]
        (&[0xFF, 0x50, 0x08], Some((0, CallForm::Indirect))), // call [rax+8]
        (&[0xFF, 0x90, 1, 2, 3, 4], Some((0, CallForm::Indirect))), // call [rax+d32]
        (&[0xFF, 0x14, 0x24], Some((0, CallForm::Indirect))), // call [rsp]
        (&[0xFF, 0x54, 0x24, 0x08], Some((0, CallForm::Indirect))), // call [rsp+8]
        (
            &[0xFF, 0x14, 0xC5, 1, 2, 3, 4],
            Some((0, CallForm::Indirect)),
        ), // call [rax*8+d32]
        (
            &[0xFF, 0x94, 0xC1, 1, 2, 3, 4],
            Some((0, CallForm::Indirect)),
        ), // [rcx+rax*8+d32]
        (&[0xFF, 0xE0], None),                                // jmp rax (FF /4)
        (&[0xFF, 0x25, 1, 2, 3, 4], None),                    // jmp [rip+d32]
        (&[0x90, 0x90, 0x90], None),
        (&[0xE8, 0, 0], None),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            call_ending_at(bytes, bytes.len(), true),
            *want,
            "{bytes:02x?}"
        );
    }
    // An end past the data is refused, not a panic.
    assert_eq!(call_ending_at(&[0xE8], 9, true), None);
}

fn reader(img: &[u8]) -> impl Fn(u32, usize) -> Option<Vec<u8>> + '_ {
    move |r: u32, n: usize| {
        img.get(r as usize..(r as usize).checked_add(n)?)
            .map(|s| s.to_vec())
    }
}

#[test]
fn unwind_info_decodes_every_operation() {
    let mut img = vec![0u8; 0x200];
    // UNWIND_INFO at 0x100: version 1, prolog 0x30, 17 slots, frame register RBP offset 0x20.
    let c = |off: u16, op: u16, info: u16| off | (op << 8) | (info << 12);
    let codes: &[u16] = &[
        c(0x30, 3, 0), // SET_FPREG
        c(0x2C, 9, 15),
        0x0000,
        0x0010, // SAVE_XMM128_FAR xmm15 @0x100000
        c(0x28, 8, 6),
        0x0003, // SAVE_XMM128 xmm6 @0x30
        c(0x24, 5, 7),
        0x0000,
        0x0008, // SAVE_NONVOL_FAR rdi @0x80000
        c(0x20, 4, 6),
        0x0004, // SAVE_NONVOL rsi @0x20
        c(0x1C, 1, 1),
        0x0008,
        0x0008, // ALLOC_LARGE 32-bit 0x80008
        c(0x15, 1, 0),
        0x0201,         // ALLOC_LARGE 16-bit 0x201*8
        c(0x0F, 2, 4),  // ALLOC_SMALL 0x28
        c(0x00, 10, 1), // PUSH_MACHFRAME with error code
    ];
    let count = codes.len() as u8;
    img[0x100..0x104].copy_from_slice(&[1, 0x30, count, 5 | (2 << 4)]);
    for (i, c) in codes.iter().enumerate() {
        img[0x104 + 2 * i..0x106 + 2 * i].copy_from_slice(&c.to_le_bytes());
    }
    let r = reader(&img);
    let ui = parse_unwind_info(&r, 0x100).unwrap();
    assert_eq!(
        (
            ui.version,
            ui.prolog_size,
            ui.frame_register,
            ui.frame_offset
        ),
        (1, 0x30, 5, 0x20)
    );
    let got: Vec<(u8, u8, u32, u8)> = ui
        .codes
        .iter()
        .map(|c| (c.op, c.info, c.value, c.slots))
        .collect();
    assert_eq!(
        got,
        vec![
            (uw::UWOP_SET_FPREG, 0, 0, 1),
            (uw::UWOP_SAVE_XMM128_FAR, 15, 0x100000, 3),
            (uw::UWOP_SAVE_XMM128, 6, 0x30, 2),
            (uw::UWOP_SAVE_NONVOL_FAR, 7, 0x80000, 3),
            (uw::UWOP_SAVE_NONVOL, 6, 0x20, 2),
            (uw::UWOP_ALLOC_LARGE, 1, 0x80008, 3),
            (uw::UWOP_ALLOC_LARGE, 0, 0x1008, 2),
            (uw::UWOP_ALLOC_SMALL, 4, 0x28, 1),
            (uw::UWOP_PUSH_MACHFRAME, 1, 1, 1),
        ]
    );
}

#[test]
fn chains_and_bad_data_fail_cleanly() {
    let mut img = vec![0u8; 0x200];
    // Two infos chained to each other: a loop.
    img[0x100..0x104].copy_from_slice(&[1 | (4 << 3), 0, 0, 0]);
    img[0x104..0x110].copy_from_slice(&[0x10, 0, 0, 0, 0x20, 0, 0, 0, 0x40, 0x01, 0, 0]);
    img[0x140..0x144].copy_from_slice(&[1 | (4 << 3), 0, 0, 0]);
    img[0x144..0x150].copy_from_slice(&[0x10, 0, 0, 0, 0x20, 0, 0, 0, 0x00, 0x01, 0, 0]);
    let r = reader(&img);
    let rf = RuntimeFunction {
        begin: 0x10,
        end: 0x20,
        unwind: 0x100,
    };
    assert_eq!(unwind_chain(&r, rf), Err(UnwindError::Chain(0x10)));
    // Version 3, an undefined op, codes past the end.
    let mut v3 = vec![0u8; 0x10];
    v3[0..4].copy_from_slice(&[3, 0, 0, 0]);
    assert_eq!(
        parse_unwind_info(&reader(&v3), 0),
        Err(UnwindError::Version(0, 3))
    );
    let mut bad = vec![0u8; 0x10];
    bad[0..4].copy_from_slice(&[1, 0, 2, 0]);
    bad[4..6].copy_from_slice(&[0x00, 0x0B]);
    assert_eq!(
        parse_unwind_info(&reader(&bad), 0),
        Err(UnwindError::BadCode(4, 11))
    );
    bad[0..4].copy_from_slice(&[1, 0, 0xFF, 0]);
    assert!(matches!(
        parse_unwind_info(&reader(&bad), 0),
        Err(UnwindError::Truncated(_))
    ));
}

#[test]
fn table_lookup_uses_half_open_ranges() {
    let mut raw = Vec::new();
    for (b, e) in [(0x3000u32, 0x3010u32), (0x1000, 0x1100), (0x2000, 0x2008)] {
        raw.extend_from_slice(&b.to_le_bytes());
        raw.extend_from_slice(&e.to_le_bytes());
        raw.extend_from_slice(&0x9000u32.to_le_bytes());
    }
    raw.extend_from_slice(&[0u8; 12]); // an all-zero entry is dropped
    let t = parse_table(&raw);
    assert_eq!(t.len(), 3);
    assert_eq!(lookup(&t, 0x1000).map(|f| f.begin), Some(0x1000));
    assert_eq!(lookup(&t, 0x10FF).map(|f| f.begin), Some(0x1000));
    assert_eq!(lookup(&t, 0x1100), None);
    assert_eq!(lookup(&t, 0x0FFF), None);
    assert_eq!(lookup(&t, 0x3005).map(|f| f.begin), Some(0x3000));
}
