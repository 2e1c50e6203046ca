//! The kernel without symbols: KDBG, version profile, loaded and unloaded modules.

pub mod kdbg;
pub mod modules;
pub mod profile;

use crate::addr::Va;
use crate::bytes::LeBytes;
use crate::dump::Dump;
use crate::error::Result;
pub use kdbg::Kdbg;
pub use modules::{LoadedImports, ModuleInfo, UnloadedDriver};
pub use profile::{Family, Profile};

/// The kernel's view of a dump: what `lm` and `!kdbgex` rely on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Kernel {
    /// Struct layouts for this build (`profile.ldr` is the PDB's loader entry when the dump has one:
    /// [`Dump::layouts`]).
    #[serde(flatten)]
    pub profile: Profile,
    /// Where the loader entry layout comes from: the PDB type
    /// (`"pdb nt!_KLDR_DATA_TABLE_ENTRY (…)"`) or the built-in profile (`"profile win10 x64: …"`).
    #[serde(rename = "ldr_layout_source")]
    pub ldr_source: String,
    /// The KDBG block, when found and readable.
    pub kdbg: Option<Kdbg>,
    /// The kernel image base (VA), from KDBG.KernBase or the first module.
    pub kernel_base: Option<u64>,
    /// Loaded modules in load order (the kernel first, hal second).
    #[serde(skip)]
    pub modules: Vec<ModuleInfo>,
    /// Recently unloaded drivers.
    #[serde(skip)]
    pub unloaded: Vec<UnloadedDriver>,
    /// Where the module list came from: "PsLoadedModuleList", "triage driver list" or "none".
    pub module_source: &'static str,
    /// Everything odd seen on the way (never fatal).
    pub warnings: Vec<String>,
}

impl Kernel {
    /// Find KDBG and the module lists. Only an unusable dump fails; missing parts become warnings.
    pub fn load(d: &Dump) -> Result<Kernel> {
        let mut profile = Profile::select(d.header.machine, d.header.build);
        let (ldr, ldr_source) = ldr_layout(d);
        profile.ldr = ldr;
        let mut warnings = Vec::new();
        let mut kdbg_va = d.header.kd_debugger_data_block;
        if kdbg_va == 0 && d.triage().is_none() && d.mode().is_some() {
            if let Some(va) = kdbg::scan_for_kdbg(d) {
                warnings.push(format!(
                    "KDBG found at {:#x} by scanning physical memory for its owner tag",
                    va.0
                ));
                kdbg_va = va.0;
            }
        }
        let kdbg = if kdbg_va != 0 {
            match Kdbg::read(d, Va(kdbg_va)) {
                Ok(k) => Some(k),
                Err(e) => {
                    warnings.push(format!("KDBG: {e}"));
                    None
                }
            }
        } else {
            None
        };
        let mut unloaded = Vec::new();
        let (mut modules, module_source) = if let Some(t) = d.triage() {
            let ms = t
                .drivers
                .iter()
                .map(|r| ModuleInfo {
                    name: r
                        .name
                        .rsplit(['\\', '/'])
                        .next()
                        .unwrap_or(&r.name)
                        .to_string(),
                    path: r.name.clone(),
                    base: r.base,
                    size: r.size,
                    entry_point: r.entry_point,
                    timestamp: r.timestamp,
                    timestamp_source: "triage driver list",
                    loaded_imports: modules::LoadedImports::NotRecorded,
                    loaded_imports_raw: 0,
                    checksum: r.checksum,
                    flags: 0,
                    load_count: 0,
                    ldr_entry: 0,
                    kd_name: String::new(),
                    range_ok: true,
                })
                .collect();
            if let Some(off) = t.unloaded_drivers_offset {
                unloaded = triage_unloaded(d, off, &mut warnings);
            }
            (ms, "triage driver list")
        } else {
            let head = match d.header.ps_loaded_module_list {
                0 => kdbg
                    .as_ref()
                    .and_then(|k| k.get(kdbg::field::PS_LOADED_MODULE_LIST))
                    .unwrap_or(0),
                h => h,
            };
            if head == 0 {
                warnings.push("no PsLoadedModuleList: neither the header nor KDBG gives it".into());
                (Vec::new(), "none")
            } else {
                (
                    modules::walk_module_list(d, &profile, head, &mut warnings),
                    "PsLoadedModuleList",
                )
            }
        };
        let refs: Vec<_> = modules
            .iter()
            .map(crate::symbols::ModuleRef::from)
            .collect();
        let space_end = d.va_top() as u128 + 1;
        for (m, kd) in modules.iter_mut().zip(crate::symbols::kd_names(&refs)) {
            m.kd_name = kd;
            m.range_ok = m.range_fits(space_end);
            if !m.range_ok {
                warnings.push(format!(
                    "module {:?} at {:#x} with SizeOfImage {:#x} runs past the top of the address \
                     space; range-based analyses (search, pool owners, !for_each_module) skip it",
                    m.name, m.base, m.size
                ));
            }
        }
        if let Some(k) = &kdbg {
            if d.triage().is_none() {
                unloaded = modules::unloaded_from_kdbg(d, &profile, k, &mut warnings);
            }
        }
        let kernel_base = kdbg
            .as_ref()
            .and_then(|k| k.kern_base())
            .or_else(|| modules.first().map(|m| m.base));
        Ok(Kernel {
            profile,
            ldr_source,
            kdbg,
            kernel_base,
            modules,
            unloaded,
            module_source,
            warnings,
        })
    }

    /// The module whose [base, base + size) holds `va`.
    pub fn module_at(&self, va: Va) -> Option<&ModuleInfo> {
        let va = va.0;
        self.modules
            .iter()
            .find(|m| va >= m.base && va - m.base < m.size)
    }
}

/// The loader entry layout the module walk uses and where it comes from: the dump's PDB override
/// ([`Dump::layouts`]), else the built-in profile of its machine and build.
pub fn ldr_layout(d: &Dump) -> (profile::LdrLayout, String) {
    match &d.layouts().ldr {
        Some(o) => (o.layout, o.source.clone()),
        None => {
            let p = Profile::select(d.header.machine, d.header.build);
            let src = format!(
                "profile {} {}: {}",
                p.family.as_str(),
                d.header.machine.as_str(),
                p.ldr_source
            );
            (p.ldr, src)
        }
    }
}

/// The unloaded-driver section of a triage dump: a pointer-sized count, then `DUMP_UNLOADED_DRIVERS`
/// records (x64 0x38 bytes: Name UNICODE_STRING, DriverName WCHAR[12] @0x10, Start @0x28, End @0x30;
/// x86 0x28 bytes: DriverName @8, Start @0x20, End @0x24) [sheet §1.9].
fn triage_unloaded(d: &Dump, off: u64, warnings: &mut Vec<String>) -> Vec<UnloadedDriver> {
    let f = d.file();
    let x64 = d.header.is64;
    let (size, name_at, start_at, end_at) = if x64 {
        (0x38u64, 0x10u64, 0x28u64, 0x30u64)
    } else {
        (0x28, 0x8, 0x20, 0x24)
    };
    let count = if x64 {
        f.u64_at(off, "unloaded driver count")
    } else {
        f.u32_at(off, "unloaded driver count").map(u64::from)
    };
    let Ok(count) = count else { return Vec::new() };
    let first = off + if x64 { 8 } else { 4 };
    let n = count.min(50);
    if count > 50 {
        warnings.push(format!(
            "triage unloaded-driver count {count} is above 50; read 50"
        ));
    }
    let mut out = Vec::new();
    for i in 0..n {
        let r = first + i * size;
        let Ok(name) = f.field(r + name_at, 24, "DriverName") else {
            break;
        };
        let units: Vec<u16> = name
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let ptr = |o: u64| {
            if x64 {
                f.u64_at(r + o, "address")
            } else {
                f.u32_at(r + o, "address").map(u64::from)
            }
        };
        let (Ok(start), Ok(end)) = (ptr(start_at), ptr(end_at)) else {
            break;
        };
        out.push(UnloadedDriver {
            name: String::from_utf16_lossy(&units),
            start,
            end,
            time: 0,
        });
    }
    out
}
