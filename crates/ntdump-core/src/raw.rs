//! Raw physical images: finding the kernel's page tables without a dump header.
//!
//! Method (WINDOWS_INTERNALS.md §2.5; Volatility's and MemProcFS's DTB scans): Windows maps its top-level
//! table into itself. x64: one kernel-half PML4 entry points back at the PML4 page. x86 non-PAE: PDE 0x300
//! (VA 0xC0000000) points at the page directory. PAE: the four page directories map themselves at
//! 0xC0600000, i.e. PD[3] entries 0..3 equal the PDPT's four entries.

use crate::addr::PAGE_SIZE;
use crate::bytes::{le_u32, le_u64};
use crate::dump::RawOptions;
use crate::error::{Error, Result};
use crate::header::{Context, DumpHeader, Machine};
use crate::mmu::Mode;
use crate::phys::PhysMap;

/// Paging mode for a machine.
pub fn mode_for(m: Machine, pae: bool) -> Mode {
    match m {
        Machine::X86 if pae => Mode::Pae,
        Machine::X86 => Mode::X86,
        _ => Mode::X64,
    }
}

/// Pages examined at most by a DTB search (16 GiB of physical memory).
const MAX_SCAN_PAGES: u64 = 1 << 22;

fn x64_candidate(page: &[u8], pa: u64, file_len: u64) -> bool {
    let mut self_ref = false;
    let mut kernel_present = 0;
    for i in 256..512 {
        let e = le_u64(&page[i * 8..]);
        if e & 1 == 0 {
            continue;
        }
        let frame = e & 0x000F_FFFF_FFFF_F000;
        if frame == pa && e & (1 << 63) == 0 {
            self_ref = true;
        } else if frame < file_len && e & 0x80 == 0 {
            kernel_present += 1;
        } else {
            return false;
        }
    }
    self_ref && kernel_present >= 2
}

fn x86_candidate(page: &[u8], pa: u64, file_len: u64) -> bool {
    let e = le_u32(&page[0x300 * 4..]) as u64;
    if e & 1 == 0 || e & 0xFFFF_F000 != pa {
        return false;
    }
    let present = (0x200..0x400)
        .map(|i| le_u32(&page[i * 4..]) as u64)
        .filter(|e| e & 1 == 1 && (e & 0x80 != 0 || e & 0xFFFF_F000 < file_len))
        .count();
    // The self-map itself plus at least two other kernel tables.
    present >= 3
}

fn pae_candidate(data: &[u8], phys: &PhysMap, page: &[u8], pa: u64) -> Option<u64> {
    for slot in 0..(PAGE_SIZE as usize / 32) {
        let ents: Vec<u64> = (0..4).map(|i| le_u64(&page[slot * 32 + i * 8..])).collect();
        // PDPTEs: present, reserved bits 1,2,5..8 clear, frames distinct and non-zero.
        if ents
            .iter()
            .any(|e| e & 1 == 0 || e & 0x1E6 != 0 || e >> 52 != 0 || e & 0x000F_FFFF_FFFF_F000 == 0)
        {
            continue;
        }
        let pd3 = ents[3] & 0x000F_FFFF_FFFF_F000;
        let Some(pd3_page) = phys.page(data, pd3 >> 12) else {
            continue;
        };
        let selfmap = (0..4).all(|i| {
            let e = le_u64(&pd3_page[i * 8..]);
            e & 1 == 1 && e & 0x000F_FFFF_FFFF_F000 == ents[i] & 0x000F_FFFF_FFFF_F000
        });
        if selfmap {
            return Some(pa + slot as u64 * 32);
        }
    }
    None
}

/// Search physical memory for the kernel's top-level table. Returns the mode, the DTB (PA) and how it
/// was found.
pub fn find_dtb(
    data: &[u8],
    phys: &PhysMap,
    opts: RawOptions,
) -> Result<(Mode, u64, &'static str)> {
    let file_len = data.len() as u64;
    let modes: Vec<Mode> = match (opts.machine, opts.pae) {
        (Some(Machine::X86), Some(true)) => vec![Mode::Pae],
        (Some(Machine::X86), Some(false)) => vec![Mode::X86],
        (Some(Machine::X86), None) => vec![Mode::Pae, Mode::X86],
        (Some(_), _) => vec![Mode::X64],
        (None, _) => vec![Mode::X64, Mode::Pae, Mode::X86],
    };
    if let Some(dtb) = opts.dtb {
        return Ok((modes[0], dtb, "the caller"));
    }
    for mode in modes {
        for r in phys.runs() {
            for k in 0..r.pages.min(MAX_SCAN_PAGES) {
                let pfn = r.base_pfn + k;
                let Some(page) = phys.page(data, pfn) else {
                    continue;
                };
                let pa = pfn * PAGE_SIZE;
                let hit = match mode {
                    Mode::X64 => x64_candidate(page, pa, file_len).then_some(pa),
                    Mode::X86 => x86_candidate(page, pa, file_len).then_some(pa),
                    Mode::Pae => pae_candidate(data, phys, page, pa),
                };
                if let Some(dtb) = hit {
                    return Ok((mode, dtb, "a self-referencing top-level page table"));
                }
            }
        }
    }
    Err(Error::format(
        "raw image: no self-referencing page table found; pass dtb= and machine=",
        0,
    ))
}

/// A header describing a raw image (machine, DTB, one run covering the file).
pub fn synthetic_header(mode: Mode, dtb: u64, len: u64) -> DumpHeader {
    let machine = if mode == Mode::X64 {
        Machine::X64
    } else {
        Machine::X86
    };
    DumpHeader {
        is64: mode == Mode::X64,
        header_size: 0,
        machine,
        machine_image_type: if mode == Mode::X64 { 0x8664 } else { 0x14C },
        pae: mode == Mode::Pae,
        major_version: 0,
        build: 0,
        dtb,
        pfn_database: 0,
        ps_loaded_module_list: 0,
        ps_active_process_head: 0,
        kd_debugger_data_block: 0,
        processors: 0,
        bugcheck_code: 0,
        bugcheck_params: [0; 4],
        dump_type: 0,
        required_dump_space: len,
        system_time: 0,
        system_up_time: 0,
        mini_dump_fields: 0,
        product_type: 0,
        suite_mask: 0,
        attributes: 0,
        comment: String::new(),
        runs: Some(vec![(0, len / PAGE_SIZE)]),
        context: Context::default(),
        exception_code: 0,
        exception_address: 0,
    }
}
