//! Address newtypes, so that a virtual address is never passed where a physical one is meant.

use std::fmt;

/// A virtual address (VA), in bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
#[repr(transparent)]
pub struct Va(pub u64);

/// A physical address (PA), in bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
#[repr(transparent)]
pub struct Pa(pub u64);

/// Page size (bytes) on every architecture this crate reads.
pub const PAGE_SIZE: u64 = 0x1000;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

macro_rules! addr_impl {
    ($t:ident, $name:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} {:#x}", $name, self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:#x})", stringify!($t), self.0)
            }
        }
        impl $t {
            /// The page-aligned address at or below this one.
            pub fn page_align(self) -> Self {
                $t(self.0 & !(PAGE_SIZE - 1))
            }
            /// Offset (bytes) inside the 4 KiB page.
            pub fn page_offset(self) -> u64 {
                self.0 & (PAGE_SIZE - 1)
            }
        }
    };
}
addr_impl!(Va, "VA");
addr_impl!(Pa, "PA");

impl Pa {
    /// Page frame number (PA >> 12).
    pub fn pfn(self) -> u64 {
        self.0 >> PAGE_SHIFT
    }
}
