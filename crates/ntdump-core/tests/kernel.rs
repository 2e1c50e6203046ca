//! The kernel layer on hand-built memory: profiles per build, the KDBG block, the loaded-module list
//! (bounded, cycle-checked, names clipped) and MmUnloadedDrivers.

mod common;
use common::*;
use ntdump_core::kernel::kdbg::{field, Kdbg};
use ntdump_core::kernel::modules::{unloaded_from_kdbg, walk_module_list};
use ntdump_core::kernel::{Family, Profile};
use ntdump_core::{Dump, Error, Machine, RawOptions};

const K: u64 = 0xFFFF_F800_0000_0000;

/// A raw x64 image whose kernel VAs `K + i * 4K` map to PA `0x100000 + i * 4K` for i < 16.
fn memory() -> (Phys, X64) {
    let mut p = Phys::new(0x120);
    let t = X64::new(&mut p);
    for i in 0..16u64 {
        t.map4k(&mut p, K + i * 0x1000, 0x10_0000 + i * 0x1000);
    }
    (p, t)
}

fn pa(va: u64) -> u64 {
    va - K + 0x10_0000
}

fn open(p: Phys, t: &X64) -> Dump {
    Dump::raw_from_bytes(
        p.mem,
        RawOptions {
            machine: Some(Machine::X64),
            pae: Some(false),
            dtb: Some(t.dtb),
        },
    )
    .unwrap()
}

/// Write a UNICODE_STRING (x64) at `at` naming `s`, its buffer at `buf`.
fn ustr(p: &mut Phys, at: u64, buf: u64, s: &str) {
    let units: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    let n = units.len() as u16;
    p.mem[at as usize..at as usize + 2].copy_from_slice(&n.to_le_bytes());
    p.mem[at as usize + 2..at as usize + 4].copy_from_slice(&(n + 2).to_le_bytes());
    p.w64(at + 8, buf);
    p.mem[pa(buf) as usize..pa(buf) as usize + units.len()].copy_from_slice(&units);
}

#[test]
fn profiles_follow_the_build() {
    assert_eq!(Family::from_build(2600), Family::Xp);
    assert_eq!(Family::from_build(3790), Family::Server2003);
    assert_eq!(Family::from_build(7601), Family::Win7);
    assert_eq!(Family::from_build(9600), Family::Win8);
    assert_eq!(Family::from_build(19041), Family::Win10);
    assert_eq!(Family::from_build(22621), Family::Win11);
    // KDBG Header.Size per WINDOWS_INTERNALS §3.3.
    let size = |b| Profile::select(Machine::X64, b).kdbg_size;
    assert_eq!(
        [
            size(2600),
            size(3790),
            size(7601),
            size(9600),
            size(10586),
            size(14393),
            size(19041)
        ],
        [0x290, 0x318, 0x340, 0x360, 0x360, 0x368, 0x380]
    );
    // Loader entry: before Windows 8 the TimeDateStamp slot is a union with LoadedImports (x64 0x80,
    // x86 0x44); from Windows 8 TimeDateStamp has its own field (x64 0x9C, x86 0x58).
    let x64_7 = Profile::select(Machine::X64, 7601).ldr;
    assert_eq!((x64_7.timestamp, x64_7.loaded_imports), (None, 0x80));
    assert_eq!(
        Profile::select(Machine::X64, 19041).ldr.timestamp,
        Some(0x9C)
    );
    assert_eq!(Profile::select(Machine::X86, 2600).ldr.loaded_imports, 0x44);
    assert_eq!(
        Profile::select(Machine::X86, 19041).ldr.timestamp,
        Some(0x58)
    );
}

/// Three module entries at K+0x2000, +0x2100, +0x2200 in a list headed at K+0x1000, names at K+0x3000.
fn module_list(p: &mut Phys, l: &ntdump_core::kernel::profile::LdrLayout) -> u64 {
    let head = K + 0x1000;
    let entries = [K + 0x2000, K + 0x2100, K + 0x2200];
    let names = ["ntoskrnl.exe", "hal.dll", "ACPI.sys"];
    p.w64(pa(head), entries[0]);
    for (i, &e) in entries.iter().enumerate() {
        let next = entries.get(i + 1).copied().unwrap_or(head);
        p.w64(pa(e), next);
        p.w64(
            pa(e + l.dll_base),
            0xFFFF_F800_1000_0000 + (i as u64) * 0x10_0000,
        );
        p.w32(pa(e + l.size_of_image), 0x8000 + i as u32);
        let ts = l
            .timestamp
            .expect("a Windows 10 loader entry has TimeDateStamp");
        p.w32(pa(e + ts), 0x5000_0000 + i as u32);
        p.w32(pa(e + l.checksum), 0xC0 + i as u32);
        ustr(
            p,
            pa(e + l.base_name),
            K + 0x3000 + i as u64 * 0x40,
            names[i],
        );
        ustr(
            p,
            pa(e + l.full_name),
            K + 0x3800 + i as u64 * 0x80,
            &format!("\\SystemRoot\\{}", names[i]),
        );
    }
    head
}

#[test]
fn module_list_fields() {
    let (mut p, t) = memory();
    let prof = Profile::select(Machine::X64, 19041);
    let head = module_list(&mut p, &prof.ldr);
    let d = open(p, &t);
    let mut w = Vec::new();
    let m = walk_module_list(&d, &prof, head, &mut w);
    assert!(w.is_empty(), "{w:?}");
    let names: Vec<&str> = m.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["ntoskrnl.exe", "hal.dll", "ACPI.sys"]);
    assert_eq!(m[1].path, "\\SystemRoot\\hal.dll");
    assert_eq!(m[2].base, 0xFFFF_F800_1020_0000);
    assert_eq!(
        (m[2].size, m[2].timestamp, m[2].checksum),
        (0x8002, 0x5000_0002, 0xC2)
    );
    assert_eq!(m[0].ldr_entry, K + 0x2000);
}

#[test]
fn module_list_loops_and_holes_stop_with_a_warning() {
    let prof = Profile::select(Machine::X64, 19041);
    // A loop: the third entry points back at the second.
    let (mut p, t) = memory();
    let head = module_list(&mut p, &prof.ldr);
    p.w64(pa(K + 0x2200), K + 0x2100);
    let d = open(p, &t);
    let mut w = Vec::new();
    let m = walk_module_list(&d, &prof, head, &mut w);
    assert_eq!(m.len(), 3);
    assert!(w.iter().any(|x| x.contains("loops back")), "{w:?}");
    // An unreadable entry: the walk stops after the readable ones.
    let (mut p, t) = memory();
    let head = module_list(&mut p, &prof.ldr);
    p.w64(pa(K + 0x2100), 0xFFFF_F800_7000_0000);
    let d = open(p, &t);
    let mut w = Vec::new();
    let m = walk_module_list(&d, &prof, head, &mut w);
    assert_eq!(m.len(), 2);
    assert!(w.iter().any(|x| x.contains("unreadable")), "{w:?}");
    // A name longer than its MaximumLength is clipped, with a warning.
    let (mut p, t) = memory();
    let head = module_list(&mut p, &prof.ldr);
    let at = pa(K + 0x2000 + prof.ldr.base_name);
    p.mem[at as usize..at as usize + 2].copy_from_slice(&0xFFF0u16.to_le_bytes());
    let d = open(p, &t);
    let mut w = Vec::new();
    let m = walk_module_list(&d, &prof, head, &mut w);
    assert!(w.iter().any(|x| x.contains("clipped")), "{w:?}");
    assert!(m[0].name.starts_with("ntoskrnl.exe"), "{:?}", m[0].name);
}

#[test]
fn kdbg_block_checks_its_tag() {
    let (mut p, t) = memory();
    let kd = K + 0x4000;
    p.mem[pa(kd) as usize + 0x10..pa(kd) as usize + 0x14].copy_from_slice(b"KDBG");
    p.w32(pa(kd) + 0x14, 0x380);
    p.w64(pa(kd) + field::KERN_BASE, 0xFFFF_F800_1000_0000);
    p.w64(pa(kd) + field::PS_LOADED_MODULE_LIST, K + 0x1000);
    let (mut q, _) = memory();
    q.mem.clone_from(&p.mem);
    let d = open(p, &t);
    let k = Kdbg::read(&d, ntdump_core::Va(kd)).unwrap();
    assert_eq!(k.size, 0x380);
    assert_eq!(k.kern_base(), Some(0xFFFF_F800_1000_0000));
    assert_eq!(k.get(field::PS_LOADED_MODULE_LIST), Some(K + 0x1000));
    assert_eq!(k.get(0x1000), None); // past the block
                                     // An encoded block (no owner tag) is a clear error, not garbage.
    q.mem[pa(kd) as usize + 0x10..pa(kd) as usize + 0x14].copy_from_slice(b"XXXX");
    let d = open(q, &t);
    match Kdbg::read(&d, ntdump_core::Va(kd)) {
        Err(Error::Symbol(m)) => assert!(m.contains("KDBG"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unloaded_drivers_through_kdbg() {
    let (mut p, t) = memory();
    let prof = Profile::select(Machine::X64, 19041);
    let u = prof.unloaded;
    let kd = K + 0x4000;
    p.mem[pa(kd) as usize + 0x10..pa(kd) as usize + 0x14].copy_from_slice(b"KDBG");
    p.w32(pa(kd) + 0x14, 0x380);
    // MmUnloadedDrivers (a pointer variable at K+0x5000) -> array at K+0x6000; MmLastUnloadedDriver = 2.
    p.w64(pa(kd) + field::MM_UNLOADED_DRIVERS, K + 0x5000);
    p.w64(pa(kd) + field::MM_LAST_UNLOADED_DRIVER, K + 0x5008);
    p.w64(pa(K + 0x5000), K + 0x6000);
    p.w32(pa(K + 0x5008), 2);
    for (i, name) in ["old.sys", "gone.sys"].iter().enumerate() {
        let e = K + 0x6000 + i as u64 * u.size;
        ustr(&mut p, pa(e + u.name), K + 0x7000 + i as u64 * 0x40, name);
        p.w64(pa(e + u.start), 0xFFFF_F800_2000_0000 + i as u64 * 0x1_0000);
        p.w64(pa(e + u.end), 0xFFFF_F800_2000_8000 + i as u64 * 0x1_0000);
        p.w64(pa(e + u.time), 0x01D0_0000_0000_0000 + i as u64);
    }
    let d = open(p, &t);
    let k = Kdbg::read(&d, ntdump_core::Va(kd)).unwrap();
    let mut w = Vec::new();
    let list = unloaded_from_kdbg(&d, &prof, &k, &mut w);
    let names: Vec<&str> = list.iter().map(|x| x.name.as_str()).collect();
    assert!(
        names.contains(&"old.sys") && names.contains(&"gone.sys"),
        "{names:?} {w:?}"
    );
    let g = list.iter().find(|x| x.name == "gone.sys").unwrap();
    assert_eq!(
        (g.start, g.end),
        (0xFFFF_F800_2001_0000, 0xFFFF_F800_2001_8000)
    );
    assert_eq!(g.time, 0x01D0_0000_0000_0001);
}
