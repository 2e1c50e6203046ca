//! Bindings for stack walks and processors (`ntdump_core::stack`).

use std::collections::HashMap;
use std::sync::Arc;

use ntdump_core::kernel::ModuleInfo;
use ntdump_core::stack::{self, unwind as uw, ImageProvider, Registers, WalkOptions};
use ntdump_core::triage::RangeSource;
use ntdump_core::Error;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::dump::PyDump;
use crate::errors::PyCoreError;
use crate::kernel::kernel_of;

/// Images given by the caller: module base name (lower case) → image laid out in memory order.
struct MapProvider {
    images: HashMap<String, Arc<Vec<u8>>>,
}

impl ImageProvider for MapProvider {
    fn image(&self, module: &ModuleInfo) -> Option<Arc<Vec<u8>>> {
        let img = self.images.get(&module.name.to_lowercase())?;
        // Same build only: the TimeDateStamp must match when both are known.
        let h = stack::code::parse_headers(img)?;
        if module.timestamp != 0 && h.timestamp != 0 && module.timestamp != h.timestamp {
            return None;
        }
        Some(img.clone())
    }
}

/// Walk a stack. `processor`: None = the dump header's context; N = processor N's saved context.
/// `images`: module base name → image *file* bytes (laid out here). Returns columns and warnings.
#[pyfunction]
#[pyo3(signature = (dump, processor=None, max_frames=64, images=None))]
fn stack_walk<'py>(
    py: Python<'py>,
    dump: PyRef<'py, PyDump>,
    processor: Option<u32>,
    max_frames: usize,
    images: Option<HashMap<String, Vec<u8>>>,
) -> PyResult<Bound<'py, PyDict>> {
    let k = kernel_of(py, &dump)?;
    let d = dump.inner.clone();
    let files = images.unwrap_or_default();
    let (laid, mut warnings) = py.detach(move || {
        let mut laid = HashMap::new();
        let mut warnings = Vec::new();
        for (name, file) in files {
            match stack::layout_file(&file) {
                Ok(img) => {
                    laid.insert(name.to_lowercase(), Arc::new(img));
                }
                Err(e) => warnings.push(format!("image for {name}: {e}")),
            }
        }
        (laid, warnings)
    });
    let provider = MapProvider { images: laid };
    let (regs, range, source) = match processor {
        None => {
            let regs = Registers::from_context(&d.header.context, d.header.machine);
            let range = d.triage().and_then(|t| {
                t.ranges
                    .iter()
                    .find(|r| r.source == RangeSource::Stack)
                    .map(|r| (r.va, r.va.saturating_add(r.len)))
            });
            (regs, range, "dump header CONTEXT".to_string())
        }
        Some(n) => {
            let kd = k.kdbg.as_ref().ok_or_else(|| {
                PyCoreError(Error::Argument(format!(
                    "processor {n}: no KDBG, so no KiProcessorBlock"
                )))
            })?;
            let (ps, _) = stack::prcb::processors(&d, kd);
            let p = ps.get(n as usize).ok_or_else(|| {
                PyCoreError(Error::Argument(format!(
                    "processor {n}: the dump has {} processor(s)",
                    ps.len()
                )))
            })?;
            let regs = p.regs.ok_or_else(|| {
                PyCoreError(Error::Argument(format!(
                    "processor {n}: no readable saved context in its KPRCB ({:#x})",
                    p.prcb
                )))
            })?;
            (
                regs,
                None,
                format!("KPRCB {:#x} context at {:#x}", p.prcb, p.context_va),
            )
        }
    };
    let opts = WalkOptions {
        max_frames,
        stack: range,
    };
    let w = py.detach(|| stack::walk(&d, &k.modules, regs, &opts, Some(&provider)));
    warnings.extend(w.warnings);
    let f = &w.frames;
    let o = PyDict::new(py);
    o.set_item("sp", f.iter().map(|x| x.sp).collect::<Vec<_>>())?;
    o.set_item("pc", f.iter().map(|x| x.pc).collect::<Vec<_>>())?;
    o.set_item("how", f.iter().map(|x| x.how.as_str()).collect::<Vec<_>>())?;
    o.set_item(
        "frame_base",
        f.iter().map(|x| x.frame_base).collect::<Vec<_>>(),
    )?;
    o.set_item("slot", f.iter().map(|x| x.slot).collect::<Vec<_>>())?;
    o.set_item(
        "interrupted",
        f.iter().map(|x| x.interrupted).collect::<Vec<_>>(),
    )?;
    o.set_item("warnings", warnings)?;
    o.set_item("source", source)?;
    o.set_item("stack_range", range)?;
    Ok(o)
}

/// Processors: columns index, prcb, ip, sp, current_thread, context_va, has_context; and warnings.
#[pyfunction]
fn processors<'py>(py: Python<'py>, dump: PyRef<'py, PyDump>) -> PyResult<Bound<'py, PyDict>> {
    let k = kernel_of(py, &dump)?;
    let d = dump.inner.clone();
    let (ps, warnings) = match &k.kdbg {
        Some(kd) => py.detach(|| stack::prcb::processors(&d, kd)),
        None => (Vec::new(), vec!["no KDBG: processors unknown".to_string()]),
    };
    let o = PyDict::new(py);
    o.set_item("index", ps.iter().map(|p| p.index).collect::<Vec<_>>())?;
    o.set_item("prcb", ps.iter().map(|p| p.prcb).collect::<Vec<_>>())?;
    o.set_item(
        "ip",
        ps.iter().map(|p| p.regs.map(|r| r.ip)).collect::<Vec<_>>(),
    )?;
    o.set_item(
        "sp",
        ps.iter().map(|p| p.regs.map(|r| r.sp)).collect::<Vec<_>>(),
    )?;
    o.set_item(
        "current_thread",
        ps.iter().map(|p| p.current_thread).collect::<Vec<_>>(),
    )?;
    o.set_item(
        "context_va",
        ps.iter().map(|p| p.context_va).collect::<Vec<_>>(),
    )?;
    o.set_item("warnings", warnings)?;
    Ok(o)
}

type CodeRow = (u8, u8, u8, u32);
type FunctionRow = (
    u32,
    u32,
    u32,
    Option<(
        u8,
        u8,
        u8,
        u8,
        u8,
        u32,
        Vec<CodeRow>,
        Option<(u32, u32, u32)>,
        Option<u32>,
    )>,
    Option<String>,
);

/// Every RUNTIME_FUNCTION of a PE *file* and its decoded UNWIND_INFO: (begin, end, unwind RVA,
/// (version, flags, prolog size, count, frame register, frame offset, [(offset, op, info, value)],
/// chained (begin, end, unwind) or None, handler or None) or None, error or None).
#[pyfunction]
fn unwind_functions(py: Python<'_>, file: Vec<u8>) -> PyResult<Vec<FunctionRow>> {
    py.detach(move || {
        let img = stack::layout_file(&file).map_err(|e| {
            PyCoreError(Error::Pe {
                base: ntdump_core::Va(0),
                what: e,
            })
        })?;
        let h = stack::code::parse_headers(&img).unwrap_or_default();
        let (rva, size) = (h.exception.0 as usize, h.exception.1 as usize);
        let table = img
            .get(rva..rva.saturating_add(size))
            .map(uw::parse_table)
            .unwrap_or_default();
        let read = |r: u32, n: usize| {
            img.get(r as usize..(r as usize).checked_add(n)?)
                .map(|s| s.to_vec())
        };
        Ok(table
            .into_iter()
            .map(|rf| match uw::parse_unwind_info(&read, rf.unwind) {
                Ok(u) => (
                    rf.begin,
                    rf.end,
                    rf.unwind,
                    Some((
                        u.version,
                        u.flags,
                        u.prolog_size,
                        u.count,
                        u.frame_register,
                        u.frame_offset,
                        u.codes
                            .iter()
                            .map(|c| (c.offset, c.op, c.info, c.value))
                            .collect(),
                        u.chained.map(|c| (c.begin, c.end, c.unwind)),
                        u.handler,
                    )),
                    None,
                ),
                Err(e) => (rf.begin, rf.end, rf.unwind, None, Some(e.to_string())),
            })
            .collect())
    })
}

/// Add this file's functions to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(stack_walk, m)?)?;
    m.add_function(wrap_pyfunction!(processors, m)?)?;
    m.add_function(wrap_pyfunction!(unwind_functions, m)?)?;
    Ok(())
}
