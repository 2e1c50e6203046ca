//! `Session`: views computed once and shared, dropped when the layouts they depend on change; and the
//! search target a front end's arguments choose.

mod common;
use std::sync::Arc;

use common::*;
use ntdump_core::kernel::Profile;
use ntdump_core::layouts::{LayoutOverrides, Sourced};
use ntdump_core::search::Target;
use ntdump_core::{Dump, Error, Machine, RawOptions, Session};

fn session() -> Session {
    let mut p = Phys::new(0x40);
    let t = X64::new(&mut p);
    t.map4k(&mut p, 0xFFFF_F800_0000_0000, 0x1_0000);
    let opts = RawOptions {
        machine: Some(Machine::X64),
        pae: Some(false),
        dtb: Some(t.dtb),
    };
    Session::new(Dump::raw_from_bytes(p.mem, opts).unwrap())
}

#[test]
fn views_are_shared_until_the_loader_layout_changes() {
    let s = session();
    let k = s.kernel().unwrap();
    assert!(
        Arc::ptr_eq(&k, &s.kernel().unwrap()),
        "the kernel view is loaded once"
    );
    let t = s.symbols().unwrap();
    assert!(Arc::ptr_eq(&t, &s.symbols().unwrap()));
    // A raw image has no KDBG: no big pool table, and the failure is not cached as a success.
    assert!(s.big_pool().is_err());
    assert!(s.big_pool().is_err());
    // New layouts without a loader entry: the module list stays.
    assert!(!s.set_layouts(LayoutOverrides::default()));
    assert!(Arc::ptr_eq(&k, &s.kernel().unwrap()));
    // A loader entry layout from a PDB: the module list (and its symbols) are read again.
    let o = LayoutOverrides {
        ldr: Some(Sourced {
            layout: Profile::select(Machine::X64, 19041).ldr,
            source: "pdb nt!_KLDR_DATA_TABLE_ENTRY (test)".into(),
        }),
        ..LayoutOverrides::default()
    };
    assert!(s.set_layouts(o));
    let k2 = s.kernel().unwrap();
    assert!(!Arc::ptr_eq(&k, &k2));
    assert!(k2.ldr_source.contains("(test)"), "{}", k2.ldr_source);
    assert!(!Arc::ptr_eq(&t, &s.symbols().unwrap()));
    // The session reads like its dump.
    assert_eq!(s.header.machine, Machine::X64);
}

#[test]
fn search_targets_follow_the_arguments() {
    let r = [(0x1000u64, 0x10u64)];
    assert!(matches!(
        Target::choose(Some(&r), false, false),
        Ok(Target::Virtual(_))
    ));
    assert!(matches!(
        Target::choose(Some(&r), false, true),
        Ok(Target::Physical(Some(_)))
    ));
    assert!(matches!(
        Target::choose(None, false, true),
        Ok(Target::Physical(None))
    ));
    assert!(matches!(
        Target::choose(None, true, false),
        Ok(Target::Kernel)
    ));
    for (ranges, kernel, physical, says) in [
        (Some(&r[..]), true, false, "either ranges or kernel"),
        (None, true, true, "not physical"),
        (None, false, false, "needs ranges"),
    ] {
        match Target::choose(ranges, kernel, physical) {
            Err(Error::Argument(m)) => assert!(m.contains(says), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
