//! The one error type of the core.

use crate::addr::{Pa, Va};
use std::path::PathBuf;

/// A level of a page-table walk (the entry that was being read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PtLevel {
    /// x64 page-map level 4 entry.
    Pml4e,
    /// Page-directory-pointer table entry (x64, PAE).
    Pdpte,
    /// Page-directory entry.
    Pde,
    /// Page-table entry.
    Pte,
}

crate::ser::as_str!(PtLevel);

impl PtLevel {
    /// The name used in errors and in `walk` output (`"pml4e"`, `"pdpte"`, `"pde"`, `"pte"`).
    pub fn as_str(self) -> &'static str {
        match self {
            PtLevel::Pml4e => "pml4e",
            PtLevel::Pdpte => "pdpte",
            PtLevel::Pde => "pde",
            PtLevel::Pte => "pte",
        }
    }
}

impl std::fmt::Display for PtLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a not-present page-table entry cannot be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotPresentKind {
    /// The entry is all zero: nothing is mapped.
    Unmapped,
    /// Prototype PTE (bit 10): the page is described by a section's prototype PTE.
    Prototype,
    /// The page is in a paging file (PageFileHigh != 0).
    PagedOut,
    /// Demand-zero: only protection bits are set.
    DemandZero,
    /// The entry is malformed (e.g. a large-page bit where none is legal).
    Invalid,
}

impl NotPresentKind {
    /// Short lower-case description.
    pub fn as_str(self) -> &'static str {
        match self {
            NotPresentKind::Unmapped => "unmapped",
            NotPresentKind::Prototype => "prototype",
            NotPresentKind::PagedOut => "paged out",
            NotPresentKind::DemandZero => "demand zero",
            NotPresentKind::Invalid => "invalid",
        }
    }
}

/// Every failure the core can report. Dump bytes never cause a panic: they cause one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or mapped.
    #[error("cannot open {path}: {source}")]
    Io {
        /// The path given by the caller.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a dump we can read, or a structure in it is inconsistent.
    #[error("{what} (at file offset {offset:#x})")]
    Format {
        /// What is wrong, in words.
        what: String,
        /// File offset (bytes) of the offending field.
        offset: u64,
    },
    /// A page-table entry on the way to `va` is not present.
    #[error("{va} is not present: {level} {pte:#x} ({})", kind.as_str())]
    NotPresent {
        /// The virtual address being translated.
        va: Va,
        /// The level whose entry is not present.
        level: PtLevel,
        /// The raw entry value.
        pte: u64,
        /// What kind of software entry it is.
        kind: NotPresentKind,
    },
    /// The physical page is not stored in the dump (a hole between runs, or past the end of a truncated file).
    #[error("{pa} is not in the dump{}", va.map(|v| format!(" (backing {v})")).unwrap_or_default())]
    NotInDump {
        /// The virtual address being read, if the read was virtual.
        va: Option<Va>,
        /// The physical address whose page is missing.
        pa: Pa,
    },
    /// A virtual address is outside every range a triage dump captured, or has no translation at all.
    #[error("{va} is not captured in this dump ({why})")]
    NotCaptured {
        /// The virtual address.
        va: Va,
        /// Why it could not be read.
        why: &'static str,
    },
    /// A PE image in memory is malformed.
    #[error("PE image at {base}: {what}")]
    Pe {
        /// Image base (VA).
        base: Va,
        /// What is wrong.
        what: String,
    },
    /// A symbol could not be resolved.
    #[error("symbol {0}")]
    Symbol(String),
    /// An argument given by the caller is out of range.
    #[error("{0}")]
    Argument(String),
    /// The dump is valid but uses something ntdump does not implement yet (e.g. ARM64 translation).
    #[error("{0}")]
    Unsupported(String),
    /// A read asked for more bytes than one call may return ([`crate::dump::MAX_READ_BYTES`]).
    #[error(
        "{what} of {n:#x} bytes is over the per-call limit of {max:#x} bytes (256 MiB); \
         read in chunks with Dump.iter_read(va, n, chunk=…)"
    )]
    ReadLimit {
        /// The read asked for (`read`, `read_phys`).
        what: &'static str,
        /// Bytes asked for.
        n: u64,
        /// The limit (bytes).
        max: u64,
    },
}

impl Error {
    /// Shorthand for a [`Error::Format`].
    pub fn format(what: impl Into<String>, offset: u64) -> Self {
        Error::Format {
            what: what.into(),
            offset,
        }
    }

    /// True for errors that mean "this address cannot be read" (as opposed to a broken file).
    pub fn is_translation(&self) -> bool {
        matches!(
            self,
            Error::NotPresent { .. } | Error::NotInDump { .. } | Error::NotCaptured { .. }
        )
    }
}

/// Result with the core's error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
