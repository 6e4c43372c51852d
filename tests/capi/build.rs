//! Generate Rust declarations from the committed C header, so that the tests call the library exactly as a C
//! program would see it: if the header and the Rust ABI drift apart, these tests stop compiling or fail.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let header = manifest.join("../../engine/include/engine.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let bindings = bindgen::Builder::default()
        .header(header.to_str().expect("UTF-8 path"))
        // Only the library's own items, not the C library's.
        .allowlist_function("engine_.*")
        .allowlist_type("engine_.*")
        .allowlist_var("ENGINE_.*")
        // C enums as Rust enums are UB for unknown values; constants are what C code sees.
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(true)
        .generate()
        .unwrap_or_else(|e| panic!("bindgen could not read {}: {e}", header.display()));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("engine_sys.rs");
    bindings.write_to_file(&out).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
