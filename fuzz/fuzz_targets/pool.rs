//! Fuzz the pool readers: the page walker and the header scanner on arbitrary page bytes for every
//! machine and era, the table entry decoders, and — when the input is a dump — the tracker, big
//! pool and page readers on it. Nothing may panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntdump_core::header::Machine;
use ntdump_core::kernel::Kernel;
use ntdump_core::pool::{self, layout, PoolContext, ScanOptions, TagPattern};
use ntdump_core::Dump;

const BUILDS: [u32; 6] = [2600, 3790, 7601, 9600, 19041, 22621];

fuzz_target!(|data: &[u8]| {
    if data.len() >= 8 && &data[..4] == b"PAGE" {
        if let Ok(d) = Dump::from_bytes(data.to_vec()) {
            if let Ok(k) = Kernel::load(&d) {
                let _ = pool::tracker::read_used(&d, &k, &Default::default());
                let _ = pool::big::read_big(&d, &k, None);
            }
            let _ = pool::page::pool_page(&d, ntdump_core::Va(0xFFFF_F800_0000_0000));
        }
        return;
    }
    if data.len() < 4 {
        return;
    }
    let machine = if data[0] & 1 == 0 {
        Machine::X86
    } else {
        Machine::X64
    };
    let build = BUILDS[(data[1] as usize) % BUILDS.len()];
    let ctx = PoolContext::new(machine, build, 1 + u32::from(data[2] & 7));
    let base: u64 = if machine == Machine::X86 {
        0x8100_0000
    } else {
        0xFFFF_C080_0000_0000
    };
    let mut page = [0u8; 4096];
    let body = &data[4..];
    let n = body.len().min(4096);
    page[..n].copy_from_slice(&body[..n]);
    let va = ntdump_core::Va(base + u64::from(data[3]) * 16);
    let p = pool::page::walk_page(&ctx, &page, va);
    assert!(p.blocks.len() <= 512);
    let _ = pool::page::walk_page(&ctx, &page[..n], va);
    let all = pool::scan::scan_bytes(&ctx, &page, ntdump_core::Va(base), &ScanOptions::default());
    assert!(all.len() <= 512);
    let pats = ScanOptions {
        tags: Some(vec![
            TagPattern::parse(b"Thr*").unwrap(),
            TagPattern::parse(b"N?ne").unwrap(),
        ]),
        pool: pool::PoolFilter::NonPaged,
    };
    let _ = pool::scan::scan_bytes(&ctx, &page[..n], ntdump_core::Va(base), &pats);
    for l in layout::TRACKER_LAYOUTS {
        for e in body.chunks(l.size as usize).take(64) {
            let c = pool::tracker::decode(l, e);
            let _ = pool::tracker::entry_valid(&c, true, true);
        }
    }
    for l in layout::BIG_LAYOUTS {
        for e in body.chunks(l.size as usize).take(64) {
            let _ = (l.va.get(e), l.key.get(e));
            if let Some(b) = l.pool_type_bits {
                let _ = b.get(e);
            }
        }
    }
    let _ = TagPattern::parse(&body[..body.len().min(5)]);
});
