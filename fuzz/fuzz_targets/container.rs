//! Any bytes as a dump file: open, then read.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = ntdump_core::Dump::from_bytes(data.to_vec()) {
        common::exercise(&d, data);
    }
});
