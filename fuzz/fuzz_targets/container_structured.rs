//! A valid 64- or 32-bit header with the DumpType chosen by the input, followed by the input: reaches the
//! bitmap, range, summary and triage parsers without the fuzzer having to discover 0x2000 bytes of header.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let is64 = data[0] & 1 == 0;
    let dump_type = [1u32, 2, 4, 5, 6, 8, 9, 0xA][(data[1] & 7) as usize];
    let hs = if is64 { 0x2000 } else { 0x1000 };
    let mut f = b"PAGE".repeat(hs / 4);
    if is64 {
        f[4..8].copy_from_slice(b"DU64");
        f[0x30..0x34].copy_from_slice(&0x8664u32.to_le_bytes());
        f[0xF98..0xF9C].copy_from_slice(&dump_type.to_le_bytes());
        f[0x1050..0x1054].copy_from_slice(&0u32.to_le_bytes());
        f[0x88..0x8C].copy_from_slice(&2u32.to_le_bytes());
        f[0x98..0xB8].copy_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        f[0x10..0x18].copy_from_slice(&0x1000u64.to_le_bytes());
    } else {
        f[4..8].copy_from_slice(b"DUMP");
        f[0x20..0x24].copy_from_slice(&0x14Cu32.to_le_bytes());
        f[0xF88..0xF8C].copy_from_slice(&dump_type.to_le_bytes());
        f[0x8A0..0x8A4].copy_from_slice(&0u32.to_le_bytes());
        f[0x5C] = data[0] >> 1 & 1;
        f[0x64..0x68].copy_from_slice(&1u32.to_le_bytes());
        f[0x6C..0x74].copy_from_slice(&[1, 0, 0, 0, 4, 0, 0, 0]);
        f[0x10..0x14].copy_from_slice(&0x1000u32.to_le_bytes());
    }
    f.extend_from_slice(&data[2..]);
    if let Ok(d) = ntdump_core::Dump::from_bytes(f) {
        common::exercise(&d, &data[2..]);
    }
});
