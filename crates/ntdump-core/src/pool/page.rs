//! One pool page (`!pool`): walk its headers on legacy pools, or say what is known on 19H1+.
//!
//! Legacy walk (sheet §5.4, builds < 18362): the first header sits at the page base with PreviousSize 0;
//! the next is BlockSize units further; each PreviousSize must equal the previous BlockSize; the
//! BlockSizes add up to the page (512 units x86, 256 x64). A zero BlockSize, a PreviousSize mismatch,
//! an impossible PoolType or running past the page is corruption: the walk stops there and says so.
//! At most `page / unit` headers are read, so a chain cannot loop.
//!
//! From 19H1 (segment heap) PreviousSize no longer links neighbours: the page is not walked; the
//! result holds the nearest plausible header at or below the address and the big-pool entry, if any.

use super::layout::PoolHeaderLayout;
use super::{tag_like, PoolContext, PoolEra};
use crate::addr::{Va, PAGE_SIZE};
use crate::dump::Dump;

/// One pool block (header + data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolBlock {
    /// VA of the block's POOL_HEADER.
    pub address: u64,
    /// Block size in bytes (BlockSize × unit, header included).
    pub size: u64,
    /// Previous block's size in bytes (PreviousSize × unit).
    pub previous_size: u64,
    /// PoolIndex.
    pub pool_index: u32,
    /// PoolType as stored in the header.
    pub raw_type: u32,
    /// Requested POOL_TYPE decoded for the era (0 for free blocks).
    pub pool_type: u32,
    /// True when the block is allocated (in-use bit set).
    pub allocated: bool,
    /// Tag (protected bit removed before Windows 8).
    pub tag: u32,
    /// True for the block that holds the address asked about.
    pub contains: bool,
}

crate::ser::tuple!(PoolBlock: address, size, previous_size, pool_index, raw_type, pool_type,
    allocated, tag, contains);

/// How a page walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkStatus {
    /// The chain is whole: sizes add up to the page.
    Ok,
    /// Corruption at `at` (VA): what is wrong.
    Corrupt {
        /// VA of the bad header.
        at: u64,
        /// What is wrong, in words (BAD_POOL_HEADER-style).
        why: String,
    },
    /// The page was not walked (segment heap, 19H1+).
    NotWalked(String),
}

impl serde::Serialize for WalkStatus {
    /// As `status` ("ok", "corrupt", "not walked"), `corrupt_at` (VA or None) and `why`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (status, at, why) = match self {
            WalkStatus::Ok => ("ok", None, ""),
            WalkStatus::Corrupt { at, why } => ("corrupt", Some(*at), why.as_str()),
            WalkStatus::NotWalked(why) => ("not walked", None, why.as_str()),
        };
        let mut r = s.serialize_struct("WalkStatus", 3)?;
        r.serialize_field("status", status)?;
        r.serialize_field("corrupt_at", &at)?;
        r.serialize_field("why", why)?;
        r.end()
    }
}

/// What `!pool` shows for an address.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolPage {
    /// The address asked about.
    pub va: u64,
    /// Page base (VA).
    pub page: u64,
    /// Header size in bytes.
    pub header_size: u64,
    /// Blocks in page order (legacy walk), up to the first corrupt header.
    pub blocks: Vec<PoolBlock>,
    /// How the walk ended.
    #[serde(flatten)]
    pub status: WalkStatus,
    /// Nearest plausible header at or below `va` in the page (always filled when one exists).
    pub nearest: Option<PoolBlock>,
    /// The big-pool allocation holding `va`, when the caller looked it up in the big page table
    /// ([`crate::Session::pool_page`] does); None otherwise.
    pub big: Option<super::big::BigEntry>,
}

/// Decode the header at `off` of `page` (bytes), if the bytes are there.
pub(crate) fn header_at(
    ctx: &PoolContext,
    h: &PoolHeaderLayout,
    page: &[u8],
    page_va: u64,
    off: usize,
) -> Option<(PoolBlock, bool)> {
    let raw = page.get(off..off + h.size as usize)?;
    let bs = h.block_size.get(raw);
    let ps = h.previous_size.get(raw);
    let rt = h.pool_type.get(raw) as u32;
    let tag = u32::from_le_bytes(
        raw.get(h.tag as usize..h.tag as usize + 4)?
            .try_into()
            .ok()?,
    );
    let decoded = ctx.era.decode_type(rt);
    let b = PoolBlock {
        address: page_va + off as u64,
        size: bs * h.unit,
        previous_size: ps * h.unit,
        pool_index: h.pool_index.get(raw) as u32,
        raw_type: rt,
        pool_type: decoded.map(|x| x.1).unwrap_or(0),
        allocated: decoded.map(|x| x.0).unwrap_or(false),
        tag: ctx.clean_tag(tag),
        contains: false,
    };
    Some((b, decoded.is_some()))
}

/// A header passes the scanner's tests (§5.4): non-zero size that stays in the page, a tag-like tag,
/// a PoolType possible for the era, and on legacy pools a PreviousSize that fits before it.
pub(crate) fn plausible(ctx: &PoolContext, b: &PoolBlock, type_ok: bool, off: usize) -> bool {
    type_ok
        && b.size != 0
        && off as u64 + b.size <= PAGE_SIZE
        && tag_like(b.tag, false)
        && (ctx.era == PoolEra::SegmentHeap || b.previous_size <= off as u64)
}

/// Walk (or inspect) the pool page holding `va`.
pub fn pool_page(d: &Dump, va: Va) -> crate::Result<PoolPage> {
    let ctx = PoolContext::of(d);
    let mut page = vec![0u8; PAGE_SIZE as usize];
    d.read_virt(va.page_align(), &mut page)?;
    Ok(walk_page(&ctx, &page, va))
}

/// Walk the 4 KiB `page` (its bytes) that holds `va`, for the machine and era of `ctx`. Never panics:
/// a short slice reads as a header running past the page.
pub fn walk_page(ctx: &PoolContext, page: &[u8], va: Va) -> PoolPage {
    let va = va.0;
    let h = &ctx.header;
    let base = va & !(PAGE_SIZE - 1);
    let off_va = (va - base) as usize;
    // Nearest plausible header at or below va.
    let mut nearest = None;
    let mut o = off_va / h.unit as usize * h.unit as usize;
    loop {
        if let Some((b, ok)) = header_at(ctx, h, page, base, o) {
            if plausible(ctx, &b, ok, o) {
                let mut b = b;
                b.contains = (va - b.address) < b.size;
                nearest = Some(b);
                break;
            }
        }
        if o == 0 {
            break;
        }
        o -= h.unit as usize;
    }
    let mut out = PoolPage {
        va,
        page: base,
        header_size: h.size,
        blocks: Vec::new(),
        status: WalkStatus::Ok,
        nearest,
        big: None,
    };
    if ctx.era == PoolEra::SegmentHeap {
        out.status = WalkStatus::NotWalked(format!(
            "build {} uses the segment heap (19H1+): pool headers no longer link to their \
             neighbours, so the page cannot be walked",
            ctx.build
        ));
        return out;
    }
    let mut off = 0usize;
    let mut prev = 0u64;
    let max = (PAGE_SIZE / h.unit) as usize;
    for _ in 0..max {
        if off as u64 >= PAGE_SIZE {
            break;
        }
        let at = base + off as u64;
        let Some((mut b, type_ok)) = header_at(ctx, h, page, base, off) else {
            out.status = WalkStatus::Corrupt {
                at,
                why: "header runs past the page".into(),
            };
            return out;
        };
        let why = if b.size == 0 {
            Some("BlockSize is zero".to_string())
        } else if b.previous_size != prev {
            Some(format!(
                "PreviousSize {:#x} does not match the previous block's size {prev:#x}",
                b.previous_size
            ))
        } else if off as u64 + b.size > PAGE_SIZE {
            Some(format!(
                "block of {:#x} bytes runs past the page end",
                b.size
            ))
        } else if !type_ok {
            Some(format!(
                "PoolType {:#x} is impossible for this build",
                b.raw_type
            ))
        } else {
            None
        };
        if let Some(why) = why {
            out.status = WalkStatus::Corrupt { at, why };
            return out;
        }
        b.contains = off <= off_va && off_va < off + b.size as usize;
        prev = b.size;
        off += b.size as usize;
        out.blocks.push(b);
    }
    if off as u64 != PAGE_SIZE {
        out.status = WalkStatus::Corrupt {
            at: base + off as u64,
            why: format!("block sizes add up to {off:#x}, not a page"),
        };
    }
    out
}
