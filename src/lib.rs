//! Python bindings of ntdump (`ntdump._native`): argument conversion, GIL release and error mapping only.
//! All logic lives in `ntdump-core`; records cross as dicts and columns (`columns.rs`), errors are mapped
//! in `errors.rs`, and `#[guarded]` turns panics into `InternalError` on every entry point.

mod columns;
mod dump;
mod errors;
mod guard;
mod kernel;
mod layouts;
mod pdb;
mod pe;
mod pool;
mod search;
mod stack;

use pyo3::prelude::*;

/// What every binding file uses.
mod prelude {
    pub(crate) use crate::columns::{arrays, columns, dict, record, value, Any, Dict};
    pub use crate::dump::PyDump;
    pub use crate::errors::{run, OrRaise};
    pub use crate::kernel::kernel_of;
    pub use ntdump_guard::guarded;
    pub use numpy::IntoPyArray;
    pub use pyo3::prelude::*;
    pub use pyo3::types::PyDict;
}

/// The private native module behind the `ntdump` package.
#[pymodule(gil_used = false)]
mod _native {
    #[pymodule_export]
    use crate::{
        dump::PyDump,
        guard::panic_selftest,
        kernel::{kernel_info, vm_summary},
        layouts::{layout_sources, set_kernel_layouts},
        pdb::{pdb_identity, pdb_public_offsets, pdb_symbols, PyPdbTypes},
        pe::{pe_image, pe_parse, symbol_table, PyPeImage, PySymbolTable},
        pool::{pool_big, pool_layouts, pool_owners, pool_page, pool_track_table_variable},
        pool::{pool_used, PyPoolScanner},
        search::{kernel_ranges, search, search_modules},
        stack::{processors, stack_walk, unwind_functions},
    };
    #[pymodule_export]
    #[allow(non_upper_case_globals)]
    const __version__: &str = env!("CARGO_PKG_VERSION");
}
