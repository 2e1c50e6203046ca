//! ntdump-core: read Windows kernel crash dumps (MEMORY.DMP) and raw physical images.
//!
//! Pure Rust, no Python. Layers, bottom up: [`header`] and [`container`] turn a file into physical memory
//! ([`phys`]) or captured VA ranges ([`triage`]); [`mmu`] translates kernel virtual addresses; [`dump::Dump`]
//! ties them together. Every value read from a dump is untrusted: bad input gives an [`Error`], never a panic.
#![deny(missing_docs)]

pub mod addr;
pub mod bytes;
pub mod container;
pub mod dump;
pub mod error;
pub mod header;
pub mod kernel;
pub mod layouts;
pub mod mapguard;
pub mod mmu;
pub mod pdb;
pub mod pe;
pub mod phys;
pub mod pool;
pub mod raw;
pub mod scan;
pub mod search;
pub mod ser;
pub mod session;
pub mod stack;
pub mod symbols;
pub mod triage;
pub mod versions;
pub mod vm;

pub use addr::{Pa, Va, PAGE_SIZE};
pub use dump::{Dump, RawOptions};
pub use error::{Error, NotPresentKind, PtLevel, Result};
pub use header::{DumpHeader, Machine};
pub use mmu::Mode;
pub use session::Session;
