//! Bindings for stack walks, processors and unwind data (`ntdump_core::stack`).

use std::collections::HashMap;

use ntdump_core::stack::{self, unwind};

use crate::prelude::*;

/// Walk a stack. `processor`: None = the dump header's context; N = processor N's saved context.
/// `images`: module base name → image *file* bytes (laid out here). Returns frame columns (sp, pc,
/// how, frame_base, slot, interrupted), warnings, source and stack_range.
#[guarded]
#[pyo3(signature = (dump, processor=None, max_frames=64, images=None))]
pub fn stack_walk<'py>(
    py: Python<'py>,
    dump: &PyDump,
    processor: Option<u32>,
    max_frames: usize,
    images: Option<HashMap<String, Vec<u8>>>,
) -> PyResult<Dict<'py>> {
    let (k, files) = (kernel_of(py, dump)?, images.unwrap_or_default());
    let w = run(py, || {
        stack::walk_dump(&dump.inner, &k, processor, max_frames, files)
    })?;
    let o = columns(py, &w.frames)?;
    o.update(record(py, &w)?.as_mapping())?;
    Ok(o)
}

/// Processors: columns index, prcb, ip, sp, current_thread, context_va; and warnings.
#[guarded]
pub fn processors<'py>(py: Python<'py>, dump: &PyDump) -> PyResult<Dict<'py>> {
    let k = kernel_of(py, dump)?;
    let (ps, warnings) = py.detach(|| stack::prcb::processors_of(&dump.inner, &k));
    let ip: Vec<_> = ps.iter().map(|p| p.regs.map(|r| r.ip)).collect();
    let sp: Vec<_> = ps.iter().map(|p| p.regs.map(|r| r.sp)).collect();
    Ok(dict!(columns(py, &ps)?; ip, sp, warnings))
}

/// Every RUNTIME_FUNCTION of a PE *file* and its decoded UNWIND_INFO: (begin, end, unwind RVA,
/// (version, flags, prolog size, count, frame register, frame offset, [(offset, op, info, value)],
/// chained (begin, end, unwind) or None, handler or None) or None, error or None).
#[guarded]
pub fn unwind_functions(py: Python<'_>, file: Vec<u8>) -> PyResult<Any<'_>> {
    let rows = run(py, || unwind::file_functions(&file))?;
    value(py, &rows)
}
