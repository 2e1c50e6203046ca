//! Test helpers: a page-table builder over a byte vector (a raw physical image) and header writers.
#![allow(dead_code)]

pub const PAGE: usize = 0x1000;

/// A raw physical image being built, with a bump allocator for table pages.
pub struct Phys {
    pub mem: Vec<u8>,
    next: usize,
}

impl Phys {
    pub fn new(pages: usize) -> Self {
        Phys {
            mem: vec![0; pages * PAGE],
            next: 0x10,
        }
    }
    pub fn alloc(&mut self) -> u64 {
        let p = self.next;
        self.next += 1;
        (p * PAGE) as u64
    }
    pub fn w64(&mut self, pa: u64, v: u64) {
        self.mem[pa as usize..pa as usize + 8].copy_from_slice(&v.to_le_bytes());
    }
    pub fn w32(&mut self, pa: u64, v: u32) {
        self.mem[pa as usize..pa as usize + 4].copy_from_slice(&v.to_le_bytes());
    }
    pub fn r64(&self, pa: u64) -> u64 {
        u64::from_le_bytes(self.mem[pa as usize..pa as usize + 8].try_into().unwrap())
    }
    pub fn r32(&self, pa: u64) -> u32 {
        u32::from_le_bytes(self.mem[pa as usize..pa as usize + 4].try_into().unwrap())
    }
}

/// x64 4-level tables. `map` writes the entry at `level_depth` (1 = PDPTE for 1G, 2 = PDE for 2M, 3 = PTE).
pub struct X64 {
    pub dtb: u64,
}

impl X64 {
    pub fn new(p: &mut Phys) -> Self {
        X64 { dtb: p.alloc() }
    }
    fn table(p: &mut Phys, entry_pa: u64) -> u64 {
        let e = p.r64(entry_pa);
        if e & 1 == 1 {
            e & 0x000F_FFFF_FFFF_F000
        } else {
            let t = p.alloc();
            p.w64(entry_pa, t | 0x63);
            t
        }
    }
    /// Write `value` as the entry at depth `depth` (0 PML4E … 3 PTE) for `va`.
    pub fn set(&self, p: &mut Phys, va: u64, depth: usize, value: u64) {
        let mut t = self.dtb;
        for d in 0..=depth {
            let shift = 39 - 9 * d as u64;
            let idx = (va >> shift) & 0x1FF;
            let epa = t + idx * 8;
            if d == depth {
                p.w64(epa, value);
                return;
            }
            t = Self::table(p, epa);
        }
    }
    pub fn map4k(&self, p: &mut Phys, va: u64, pa: u64) {
        self.set(p, va, 3, pa | 0x63);
    }
    pub fn map2m(&self, p: &mut Phys, va: u64, pa: u64) {
        self.set(p, va, 2, pa | 0xE3);
    }
    pub fn map1g(&self, p: &mut Phys, va: u64, pa: u64) {
        self.set(p, va, 1, pa | 0xE3);
    }
}

/// A 64-bit dump header (0x2000 bytes, "PAGE" fill) with the given DumpType and runs.
pub fn header64(dump_type: u32, runs: Option<&[(u64, u64)]>) -> Vec<u8> {
    let mut h = b"PAGE".repeat(0x2000 / 4);
    h[4..8].copy_from_slice(b"DU64");
    h[8..12].copy_from_slice(&15u32.to_le_bytes());
    h[12..16].copy_from_slice(&19041u32.to_le_bytes());
    h[0x10..0x18].copy_from_slice(&0x1000u64.to_le_bytes());
    h[0x30..0x34].copy_from_slice(&0x8664u32.to_le_bytes());
    h[0x34..0x38].copy_from_slice(&1u32.to_le_bytes());
    h[0xF98..0xF9C].copy_from_slice(&dump_type.to_le_bytes());
    h[0x1050..0x1054].copy_from_slice(&0u32.to_le_bytes());
    if let Some(runs) = runs {
        h[0x88..0x8C].copy_from_slice(&(runs.len() as u32).to_le_bytes());
        let total: u64 = runs.iter().map(|r| r.1).fold(0, u64::wrapping_add);
        h[0x90..0x98].copy_from_slice(&total.to_le_bytes());
        for (i, (b, c)) in runs.iter().enumerate() {
            let o = 0x98 + 16 * i;
            h[o..o + 8].copy_from_slice(&b.to_le_bytes());
            h[o + 8..o + 16].copy_from_slice(&c.to_le_bytes());
        }
    }
    h
}

/// A 64-bit bitmap dump (DumpType 5): sub-header at 0x2000, bitmap of `bits` bits with `set` PFNs set,
/// first page at the next page boundary, and pages filled with their PFN.
pub fn bitmap64(bits: u64, set: &[u64]) -> Vec<u8> {
    let mut f = header64(5, None);
    let bm_bytes = bits.div_ceil(8) as usize;
    let first = (0x2038 + bm_bytes).div_ceil(PAGE) * PAGE;
    f.resize(first, 0);
    f[0x2000..0x2004].copy_from_slice(b"FDMP");
    f[0x2004..0x2008].copy_from_slice(b"DUMP");
    f[0x2020..0x2028].copy_from_slice(&(first as u64).to_le_bytes());
    f[0x2028..0x2030].copy_from_slice(&(set.len() as u64).to_le_bytes());
    f[0x2030..0x2038].copy_from_slice(&bits.to_le_bytes());
    let mut sorted = set.to_vec();
    sorted.sort_unstable();
    for &pfn in &sorted {
        f[0x2038 + (pfn / 8) as usize] |= 1 << (pfn % 8);
        let mut page = vec![0u8; PAGE];
        page[..8].copy_from_slice(&pfn.to_le_bytes());
        f.extend_from_slice(&page);
    }
    f
}
