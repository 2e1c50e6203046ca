//! kd's module names (`nt`, `hal`, the file's stem, `stem_<base>` for repeats) and its globs.

use super::ModuleRef;

/// File names of the NT kernel: uniprocessor, PAE, multiprocessor, PAE multiprocessor.
pub const KERNEL_NAMES: [&str; 4] = [
    "ntoskrnl.exe",
    "ntkrnlpa.exe",
    "ntkrnlmp.exe",
    "ntkrpamp.exe",
];
/// File names of HALs (the loader may record the one it chose under its own name).
pub const HAL_NAMES: [&str; 8] = [
    "hal.dll",
    "halacpi.dll",
    "halaacpi.dll",
    "halapic.dll",
    "halmacpi.dll",
    "halmps.dll",
    "halsp.dll",
    "halborg.dll",
];

/// A file name without its extension (`ACPI.sys` → `ACPI`).
pub(crate) fn stem(name: &str) -> &str {
    match name.rfind('.') {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    }
}

/// kd's names for modules given in load order: `nt`, `hal`, else the base name without extension; repeats
/// get `_<base in hex>`.
pub fn kd_names(modules: &[ModuleRef]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(modules.len());
    let (mut nt, mut hal) = (false, false);
    for (i, m) in modules.iter().enumerate() {
        let low = m.name.to_ascii_lowercase();
        let name =
            if !nt && (KERNEL_NAMES.contains(&low.as_str()) || (i == 0 && low.ends_with(".exe"))) {
                nt = true;
                "nt".to_string()
            } else if !hal
                && (HAL_NAMES.contains(&low.as_str())
                    || (i == 1 && low.starts_with("hal") && low.ends_with(".dll")))
            {
                hal = true;
                "hal".to_string()
            } else {
                stem(&m.name).to_string()
            };
        let taken = out.iter().any(|o| o.eq_ignore_ascii_case(&name));
        out.push(if taken {
            format!("{name}_{:x}", m.base)
        } else {
            name
        });
    }
    out
}

/// Glob match, ASCII case-insensitive: `*` any run of bytes, `?` one byte. Allocation-free, and
/// O(pattern × text) at worst (export names are ASCII; others match byte for byte).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    if p == b"*" {
        return true;
    }
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi].eq_ignore_ascii_case(&t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, base: u64) -> ModuleRef {
        ModuleRef {
            name: name.into(),
            base,
            size: 0x1000,
        }
    }

    #[test]
    fn kd_naming() {
        let n = kd_names(&[
            m("ntkrnlmp.exe", 0x1000),
            m("halmacpi.dll", 0x2000),
            m("ACPI.sys", 0x3000),
            m("{6B1A2C3D-0000-1111-2222-333344445555}.sys", 0x4000),
            m("acpi.SYS", 0x5000),
        ]);
        assert_eq!(
            n,
            [
                "nt",
                "hal",
                "ACPI",
                "{6B1A2C3D-0000-1111-2222-333344445555}",
                "acpi_5000"
            ]
        );
        assert_eq!(kd_names(&[m("weird.exe", 0)]), ["nt"]);
    }

    #[test]
    fn globs() {
        assert!(glob_match("ExAlloc*", "ExAllocatePool"));
        assert!(glob_match("exalloc*", "ExAllocatePool"));
        assert!(glob_match("*Pool", "ExAllocatePool"));
        assert!(glob_match("Ex?llocate*Tag", "ExAllocatePoolWithTag"));
        assert!(!glob_match("ExAlloc", "ExAllocatePool"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }
}
