//! Python bindings of ntdump (`ntdump._native`): argument conversion, GIL release and error mapping only.
//! All logic lives in `ntdump-core`; records cross as dicts and columns (`columns.rs`), errors are mapped
//! in `errors.rs`, and `#[guarded]` turns panics into `InternalError` on every entry point.

mod columns;
mod dump;
mod errors;
mod guard;
mod kernel;
mod pdb;
mod pe;
mod pool;
mod search;
mod stack;

use pyo3::prelude::*;

/// The private native module behind the `ntdump` package.
#[pymodule(gil_used = false)]
mod _native {
    #[pymodule_export]
    use crate::dump::PyDump;
    #[pymodule_export]
    use crate::guard::panic_selftest;
    #[pymodule_export]
    use crate::kernel::{kernel_info, pdb_public_symbols, vm_summary};
    #[pymodule_export]
    use crate::pdb::{pdb_identity, pdb_public_offsets, pdb_symbols, PyPdbTypes};
    #[pymodule_export]
    use crate::pe::{pe_image, pe_parse, symbol_table, PyPeImage, PySymbolTable};
    #[pymodule_export]
    use crate::pool::{pool_big, pool_layouts, pool_owners, pool_page, pool_track_table_variable};
    #[pymodule_export]
    use crate::pool::{pool_used, PyPoolScanner};
    #[pymodule_export]
    use crate::search::{kernel_ranges, search, search_modules};
    #[pymodule_export]
    use crate::stack::{processors, stack_walk, unwind_functions};
    #[pymodule_export]
    #[allow(non_upper_case_globals)]
    const __version__: &str = env!("CARGO_PKG_VERSION");
}
