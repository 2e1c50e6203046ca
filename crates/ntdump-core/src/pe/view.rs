//! Bounds-checked reads from a rebuilt image, by RVA, that also know which pages were missing.

use crate::addr::PAGE_SIZE;

/// A rebuilt image (bytes indexed by RVA) plus the RVAs of the pages that could not be read (sorted).
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    /// The image, `bytes[rva]`.
    pub bytes: &'a [u8],
    /// Page-aligned RVAs of pages that were unreadable (zero-filled in `bytes`), ascending.
    pub missing: &'a [u64],
}

impl<'a> View<'a> {
    /// Image length in bytes.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// `len` bytes at `rva`, or None when any of them lies past the image.
    pub fn slice(&self, rva: u64, len: u64) -> Option<&'a [u8]> {
        let end = rva.checked_add(len)?;
        if end > self.len() {
            return None;
        }
        self.bytes.get(rva as usize..end as usize)
    }

    /// True when every byte of `[rva, rva + len)` is inside the image and on a page that was read.
    pub fn present(&self, rva: u64, len: u64) -> bool {
        let Some(end) = rva.checked_add(len.max(1)) else {
            return false;
        };
        if end > self.len() {
            return false;
        }
        let first = rva & !(PAGE_SIZE - 1);
        let i = self.missing.partition_point(|&p| p < first);
        !matches!(self.missing.get(i), Some(&p) if p < end)
    }

    /// u16 at `rva`.
    pub fn u16(&self, rva: u64) -> Option<u16> {
        self.slice(rva, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    /// u32 at `rva`.
    pub fn u32(&self, rva: u64) -> Option<u32> {
        self.slice(rva, 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// u64 at `rva`.
    pub fn u64(&self, rva: u64) -> Option<u64> {
        let b = self.slice(rva, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }

    /// A 4- or 8-byte little-endian value at `rva`.
    pub fn uint(&self, rva: u64, width: u64) -> Option<u64> {
        if width == 8 {
            self.u64(rva)
        } else {
            self.u32(rva).map(u64::from)
        }
    }

    /// A NUL-terminated string at `rva` of at most `max` bytes before the NUL, decoded lossily; None when
    /// no NUL is found within `max + 1` bytes, the bytes run past the image, or they lie on a missing page.
    pub fn cstr(&self, rva: u64, max: usize) -> Option<String> {
        if rva >= self.len() {
            return None;
        }
        let end = (rva as usize).saturating_add(max + 1).min(self.bytes.len());
        let tail = &self.bytes[rva as usize..end];
        let n = memchr::memchr(0, tail)?;
        if !self.present(rva, n as u64 + 1) {
            return None;
        }
        Some(String::from_utf8_lossy(&tail[..n]).into_owned())
    }
}

/// Bytes of strings (names, forwarders, DLL names) kept per image: past it, strings become None. Keeps a
/// hostile image whose every entry points at one long string from costing gigabytes.
pub(crate) const STRING_BUDGET: usize = 8 << 20;

/// What is left of [`STRING_BUDGET`] while one image is parsed.
pub(crate) struct Budget {
    left: usize,
    /// True once a string was dropped for lack of budget.
    pub exhausted: bool,
}

impl Budget {
    /// A full budget.
    pub fn new() -> Self {
        Budget {
            left: STRING_BUDGET,
            exhausted: false,
        }
    }

    /// `s` if it fits in what is left (and charge it), else None.
    pub fn take(&mut self, s: Option<String>) -> Option<String> {
        match s {
            Some(x) if x.len() <= self.left => {
                self.left -= x.len();
                Some(x)
            }
            Some(_) => {
                self.exhausted = true;
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_missing_pages() {
        let mut b = vec![0u8; 0x3000];
        b[0x10..0x15].copy_from_slice(b"abc\0x");
        b[0x2FFE] = b'z';
        b[0x2FFF] = b'z';
        let missing = [0x1000];
        let v = View {
            bytes: &b,
            missing: &missing,
        };
        assert_eq!(v.cstr(0x10, 16).as_deref(), Some("abc"));
        assert_eq!(v.cstr(0x10, 2), None);
        assert_eq!(v.cstr(0x2FFE, 16), None, "no NUL before the end");
        assert!(v.present(0, 0x1000));
        assert!(!v.present(0xFFF, 2));
        assert!(v.present(0x2000, 0x1000));
        assert!(!v.present(0x2000, 0x1001));
        assert_eq!(v.u32(0x2FFD), None);
        assert_eq!(v.u64(u64::MAX - 2), None);
        assert!(!v.present(u64::MAX, 4));
    }
}
