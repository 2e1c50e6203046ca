//! Page-table walks over arbitrary physical memory: the input is a raw image whose first bytes choose the
//! mode and the DTB; then VAs from the input are translated and read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ntdump_core::{Dump, Machine, RawOptions, Va};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (machine, pae) = match data[0] % 3 {
        0 => (Machine::X64, false),
        1 => (Machine::X86, true),
        _ => (Machine::X86, false),
    };
    let dtb = u64::from_le_bytes(data[8..16].try_into().unwrap()) % (data.len() as u64 + 0x2000);
    // Pad the image to whole pages so tables inside the input are reachable.
    let mut img = data.to_vec();
    img.resize(data.len().div_ceil(0x1000).max(1) * 0x1000, 0);
    let Ok(d) = Dump::raw_from_bytes(img, RawOptions { machine: Some(machine), pae: Some(pae), dtb: Some(dtb) }) else {
        return;
    };
    let mut buf = [0u8; 0x1800];
    for c in data[16..].chunks_exact(8).take(64) {
        let va = u64::from_le_bytes(c.try_into().unwrap());
        let w = d.walk(Va(va));
        if let Ok(w) = w {
            assert!(w.steps.len() <= 4);
        }
        let _ = d.read_virt(Va(va), &mut buf);
        let _ = d.read_virt_padded(Va(va.wrapping_sub(0x800)), &mut buf);
    }
    // Discovery on the same bytes must not panic either.
    let _ = Dump::raw_from_bytes(data.to_vec(), RawOptions::default());
});
