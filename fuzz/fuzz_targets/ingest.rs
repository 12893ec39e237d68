//! `cargo +nightly fuzz run ingest`: arbitrary bytes through JSON decoding, envelope and
//! payload validation and job-request decoding (see `ingest_property.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../ingest_property.rs"]
mod ingest_property;

fuzz_target!(|data: &[u8]| ingest_property::check(data));
