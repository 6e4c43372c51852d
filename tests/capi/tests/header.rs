//! The committed header is exactly what cbindgen makes of engine/src/capi. `ENGINE_BLESS=1` rewrites it.

use std::path::Path;

#[test]
fn header_is_up_to_date() {
    let root = capi_tests::workspace_root();
    let engine = root.join("engine");
    let config = cbindgen::Config::from_file(engine.join("cbindgen.toml")).expect("engine/cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(engine.join("src/capi/mod.rs"))
        .generate()
        .expect("cbindgen failed on engine/src/capi")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("UTF-8 header");
    let path = capi_tests::header_path();
    if std::env::var_os("ENGINE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed.lines().zip(generated.lines()).position(|(a, b)| a != b);
        panic!(
            "{} is stale (first difference at line {}): regenerate it with\n  ENGINE_BLESS=1 cargo test -p capi-tests --test header\nand commit it",
            display(&path),
            line.map_or("end".into(), |l| (l + 1).to_string())
        );
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
