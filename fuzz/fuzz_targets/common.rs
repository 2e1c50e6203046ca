// Shared by the fuzz targets: exercise every read path of an opened dump.
use ntdump_core::{Dump, Pa, Va};

pub fn exercise(d: &Dump, seed: &[u8]) {
    let mut buf = [0u8; 0x40];
    for pa in [0u64, 0x1000, 0x2000, 0xFFF8, 0x1_0000_0000] {
        let _ = d.read_phys(Pa(pa), &mut buf);
        let _ = d.read_phys_padded(Pa(pa), &mut buf);
    }
    for r in d.phys().runs().iter().take(8) {
        let _ = d.read_phys(Pa(r.base_pfn << 12), &mut buf);
        let _ = d.read_phys(Pa(((r.base_pfn + r.pages) << 12) - 8), &mut buf);
    }
    let mut vas = vec![d.header.ps_loaded_module_list, d.header.kd_debugger_data_block, 0xFFFF_F800_0000_0000];
    for c in seed.chunks_exact(8).take(16) {
        vas.push(u64::from_le_bytes(c.try_into().unwrap()));
    }
    for va in vas {
        let _ = d.read_virt(Va(va), &mut buf);
        let _ = d.read_virt_padded(Va(va), &mut buf);
        let _ = d.walk(Va(va));
    }
    if let Some(t) = d.triage() {
        for r in t.ranges.iter().take(16) {
            let _ = d.read_virt(Va(r.va), &mut buf);
        }
    }
}
