//! Run tests/python/client.py (ctypes, standard library only) against the cdylib built for this test run, on the
//! tiny checkpoint. Needs `$ENGINE_PYTHON`, `$PYTHON` or `python3` (standard library only); set ENGINE_SKIP_PYTHON=1
//! to skip where there is none.

use std::process::Command;

use capi_tests::{header_path, libs_dir, tiny_model, workspace_root};

#[test]
fn python_client_against_the_cdylib() {
    let python =
        std::env::var("ENGINE_PYTHON").or_else(|_| std::env::var("PYTHON")).unwrap_or_else(|_| "python3".to_string());
    if std::env::var_os("ENGINE_SKIP_PYTHON").is_some_and(|v| v == "1") {
        eprintln!("ENGINE_SKIP_PYTHON=1: skipping the Python client");
        return;
    }
    let lib = libs_dir().join(format!("{}engine{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX));
    assert!(lib.exists(), "{} is missing: cargo builds it with this test", lib.display());
    let model = tiny_model("python-model");
    let mut cmd = Command::new(&python);
    cmd.arg(workspace_root().join("tests/python/client.py"))
        .arg(&lib)
        .arg(model.path())
        .arg(header_path())
        .env_remove("LD_LIBRARY_PATH");
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {python}: {e} (install Python 3, set PYTHON, or set ENGINE_SKIP_PYTHON=1 to skip)")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}", out.status);
    assert!(stdout.contains("model: backend=cpu"), "{stdout}");
    assert!(stdout.contains("python client: all ") && stdout.contains(" checks passed"), "{stdout}");
}
