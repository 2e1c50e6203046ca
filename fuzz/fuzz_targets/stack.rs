//! Stack walks over hostile bytes: an x64 raw address space holding a PE image (memory order) at a kernel
//! VA and a stack page after it. Input: 8 bytes of controls (u16 offset of RIP into the image, u16 offset
//! of RSP into the stack page, u32 page mask of image pages left unmapped), then 0x1000 bytes of stack,
//! then the image. The walk must end within `max_frames`, on its own bounds, without a panic; the
//! unwind-data decoders also run over every RUNTIME_FUNCTION of the image.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ntdump_core::kernel::ModuleInfo;
use ntdump_core::stack::{self, unwind, Registers, WalkOptions};
use ntdump_core::{Dump, Machine, RawOptions};

const BASE: u64 = 0xFFFF_F800_0000_0000;
const PML4: usize = 0x1000;
const PDPT: usize = 0x2000;
const PD: usize = 0x3000;
const PT: usize = 0x4000;
const DATA: usize = 0x5000;
const PAGES: usize = 64;

fn put(mem: &mut [u8], at: usize, v: u64) {
    mem[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 + 0x1000 + 0x40 {
        return;
    }
    let rip_off = u64::from(u16::from_le_bytes([data[0], data[1]]));
    let rsp_off = u64::from(u16::from_le_bytes([data[2], data[3]]) & 0xFF8);
    let missing = u32::from_le_bytes(data[4..8].try_into().unwrap());
    let stack_bytes = &data[8..0x1008];
    let image = &data[0x1008..];
    let pages = image.len().div_ceil(0x1000).min(PAGES - 1);
    let mut mem = vec![0u8; DATA + (pages + 1) * 0x1000];
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
    // The stack: the page just after the image.
    let spa = DATA + pages * 0x1000;
    mem[spa..spa + 0x1000].copy_from_slice(stack_bytes);
    put(&mut mem, PT + 8 * (PAGES - 1), spa as u64 | 0x63);
    let stack_va = BASE + (PAGES as u64 - 1) * 0x1000;
    let opts = RawOptions { machine: Some(Machine::X64), pae: Some(false), dtb: Some(PML4 as u64) };
    let Ok(d) = Dump::raw_from_bytes(mem, opts) else {
        return;
    };
    let module = ModuleInfo {
        name: "fuzz.sys".into(),
        path: "fuzz.sys".into(),
        base: BASE,
        size: (pages as u64) * 0x1000,
        kd_name: "fuzz".into(),
        range_ok: true,
        ..ModuleInfo::default()
    };
    let mut regs = Registers { ip: BASE + rip_off, sp: stack_va + rsp_off, gpr: [0; 16] };
    regs.gpr[4] = regs.sp;
    regs.gpr[5] = stack_va + 0x800;
    let o = WalkOptions { max_frames: 256, stack: None };
    let w = stack::walk(&d, std::slice::from_ref(&module), regs, &o, None);
    assert!(!w.frames.is_empty() && w.frames.len() <= 256);
    // The decoders over the image's own table (as a file laid out in memory: the same bytes).
    let read = |r: u32, n: usize| image.get(r as usize..(r as usize).checked_add(n)?).map(|s| s.to_vec());
    if let Some(h) = stack::code::parse_headers(image) {
        let (rva, size) = (h.exception.0 as usize, h.exception.1 as usize);
        if let Some(t) = image.get(rva..rva.saturating_add(size)) {
            for rf in unwind::parse_table(t).into_iter().take(256) {
                let _ = unwind::unwind_chain(&read, rf);
            }
        }
    }
    let _ = stack::layout_file(image);
});
