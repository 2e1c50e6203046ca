//! PE images in a dump: the input is a PE image in memory order, mapped at a kernel VA of an x64 raw
//! address space. The first 8 bytes are controls: a u32 mask of pages left unmapped (bit i = page i) and a
//! u32 size hint (the loader's SizeOfImage; 0 = none). Every part is parsed with goblin and with the own
//! readers, and the symbol table, `ln`, `symbol` and `importers` run over it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ntdump_core::pe::{PeImage, PeOptions};
use ntdump_core::symbols::{ModuleRef, SymbolTable};
use ntdump_core::{Dump, Machine, RawOptions, Va};

const BASE: u64 = 0xFFFF_F800_0000_0000;
const PML4: usize = 0x1000;
const PDPT: usize = 0x2000;
const PD: usize = 0x3000;
const PT: usize = 0x4000;
const DATA: usize = 0x5000;

fn put(mem: &mut [u8], at: usize, v: u64) {
    mem[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 + 0x40 {
        return;
    }
    let missing = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let hint = u32::from_le_bytes(data[4..8].try_into().unwrap()) as u64;
    let image = &data[8..];
    let pages = image.len().div_ceil(0x1000).min(512);
    let mut mem = vec![0u8; DATA + pages * 0x1000];
    put(&mut mem, PML4 + 8 * ((BASE >> 39) & 0x1FF) as usize, PDPT as u64 | 0x63);
    put(&mut mem, PDPT, PD as u64 | 0x63);
    put(&mut mem, PD, PT as u64 | 0x63);
    for i in 0..pages {
        let chunk = &image[i * 0x1000..image.len().min((i + 1) * 0x1000)];
        let pa = DATA + i * 0x1000;
        mem[pa..pa + chunk.len()].copy_from_slice(chunk);
        if i >= 32 || missing & (1 << i) == 0 {
            put(&mut mem, PT + 8 * i, pa as u64 | 0x63);
        }
    }
    let opts = RawOptions { machine: Some(Machine::X64), pae: Some(false), dtb: Some(PML4 as u64) };
    let Ok(d) = Dump::raw_from_bytes(mem, opts) else {
        return;
    };
    let size_hint = (hint != 0).then_some(hint % (1 << 20));
    for goblin in [true, false] {
        let o = PeOptions { goblin, max_image_size: 1 << 20 };
        if let Ok(img) = PeImage::read_with(&d, Va(BASE), size_hint, o) {
            assert!(img.size <= 1 << 20);
            assert!(img.sections.len() <= 96);
            for i in &img.imports {
                assert!(u64::from(i.iat_rva) < img.size);
            }
            if let Some(cv) = &img.codeview {
                let _ = (cv.key(), cv.store_path(), cv.guid_string());
            }
            let _ = img.section_at(0x1000);
        }
    }
    let modules = [
        ModuleRef { name: "ntoskrnl.exe".into(), base: BASE, size: size_hint.unwrap_or(0x10000) },
        ModuleRef { name: "hal.dll".into(), base: BASE + 0x1000, size: 0x1000 },
    ];
    let t = SymbolTable::build(&d, &modules);
    for va in [BASE, BASE + 0x1000, BASE + 0x1234, BASE + 0xFFFF, 0x10] {
        let _ = t.ln(Va(va));
    }
    for (k, r) in t.rows.iter().take(32).enumerate() {
        if let Some(a) = r.address {
            let _ = t.ln(Va(a));
        }
        if let Some(n) = &r.name {
            let _ = t.symbol(&format!("nt!{n}"));
            if k < 2 {
                let _ = t.importers(&d, &format!("nt!{n}"), k == 0);
            }
        }
    }
    let _ = t.find("nt!*");
    let _ = t.symbol("hal!#1+0x10");
});
