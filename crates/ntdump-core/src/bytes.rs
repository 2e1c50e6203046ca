//! Bounds-checked little-endian field readers over untrusted byte slices.

use crate::error::{Error, Result};

/// Little-endian reads that fail with a [`Error::Format`] naming the field instead of panicking.
pub trait LeBytes {
    /// `n` bytes at `off`, or an error naming `what`.
    fn field(&self, off: u64, n: usize, what: &str) -> Result<&[u8]>;
    /// u8 at `off`.
    fn u8_at(&self, off: u64, what: &str) -> Result<u8> {
        Ok(self.field(off, 1, what)?[0])
    }
    /// u16 at `off`.
    fn u16_at(&self, off: u64, what: &str) -> Result<u16> {
        let b = self.field(off, 2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    /// u32 at `off`.
    fn u32_at(&self, off: u64, what: &str) -> Result<u32> {
        let b = self.field(off, 4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// u64 at `off`.
    fn u64_at(&self, off: u64, what: &str) -> Result<u64> {
        let b = self.field(off, 8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

impl LeBytes for [u8] {
    fn field(&self, off: u64, n: usize, what: &str) -> Result<&[u8]> {
        let start = usize::try_from(off).ok();
        let end = start.and_then(|s| s.checked_add(n));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.len() => Ok(&self[s..e]),
            _ => Err(Error::format(
                format!(
                    "{what}: {n} bytes past the end of the data ({} bytes)",
                    self.len()
                ),
                off,
            )),
        }
    }
}

/// u32 from the first 4 bytes of `b` (caller guarantees the length).
#[inline]
pub fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// u64 from the first 8 bytes of `b` (caller guarantees the length).
#[inline]
pub fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}
