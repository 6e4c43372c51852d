//! Build tests/c/client.c with the system C compiler (`cc`, or `$CC`) against the committed header, link it to the
//! engine's cdylib and to its staticlib, run both on the tiny checkpoint (CPU) and check that every check passed.
//! Also checks that the header compiles on its own as strict C99 and as C++.

use std::path::Path;
use std::process::Command;

use capi_tests::{header_path, libs_dir, tiny_model, workspace_root, TempDir};

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_string())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}", out.status);
    stdout
}

fn compile(exe: &Path, link: &[String]) {
    let root = workspace_root();
    let mut cmd = Command::new(cc());
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-g"])
        .arg("-I")
        .arg(root.join("engine/include"))
        .arg(root.join("tests/c/client.c"))
        .arg("-o")
        .arg(exe)
        .args(link);
    run(&mut cmd);
}

fn check_client_output(stdout: &str) {
    assert!(stdout.contains("model: backend=cpu"), "{stdout}");
    assert!(stdout.contains("c client: all ") && stdout.contains(" checks passed"), "{stdout}");
}

#[test]
fn c_client_against_the_cdylib() {
    let libs = libs_dir();
    let lib = libs.join(format!("{}engine{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX));
    assert!(lib.exists(), "{} is missing: cargo builds it with this test", lib.display());
    let (model, out) = (tiny_model("c-dyn-model"), TempDir::new("c-dyn"));
    let exe = out.path().join("client");
    let l = libs.display().to_string();
    compile(&exe, &[format!("-L{l}"), "-lengine".into(), format!("-Wl,-rpath,{l}"), "-lpthread".into(), "-lm".into()]);
    // Cargo runs tests with LD_LIBRARY_PATH listing target/<profile> (which may hold an older libengine.so from a
    // `cargo build`) ahead of the rpath: remove it, so the program finds the library as a user's would.
    let stdout = run(Command::new(&exe).arg(model.path()).env_remove("LD_LIBRARY_PATH"));
    check_client_output(&stdout);
    // The program really used the library built for this run.
    if cfg!(target_os = "linux") {
        let ldd = run(Command::new("ldd").arg(&exe).env_remove("LD_LIBRARY_PATH"));
        assert!(ldd.contains(&lib.display().to_string()), "{ldd}");
    }
}

#[test]
fn c_client_against_the_staticlib() {
    let lib = libs_dir().join("libengine.a");
    assert!(lib.exists(), "{} is missing: cargo builds it with this test", lib.display());
    let (model, out) = (tiny_model("c-static-model"), TempDir::new("c-static"));
    let exe = out.path().join("client");
    // What the Rust standard library and sentencepiece (C++) need from the system, as
    // `rustc --print native-static-libs` lists them, plus the C++ runtime.
    let mut link = vec![lib.display().to_string()];
    link.extend(["-lstdc++", "-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"].map(String::from));
    compile(&exe, &link);
    let stdout = run(Command::new(&exe).arg(model.path()));
    check_client_output(&stdout);
}

#[test]
fn header_compiles_alone_as_c99_and_cpp() {
    let h = header_path();
    let out = TempDir::new("c-header");
    let dir = out.path();
    for (compiler, lang, std) in [(cc(), "c", "-std=c99"), ("c++".to_string(), "c++", "-std=c++11")] {
        if compiler == "c++" && Command::new("c++").arg("--version").output().is_err() {
            eprintln!("no c++ compiler: skipping the C++ check");
            continue;
        }
        let src = dir.join(format!("include.{lang}"));
        std::fs::write(
            &src,
            format!("#include \"{}\"\n#include \"{}\"\nint main(void) {{ return 0; }}\n", h.display(), h.display()),
        )
        .unwrap();
        run(Command::new(&compiler)
            .args(["-x", lang, std, "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only"])
            .arg(&src));
    }
}

/// engine/engine.pc.in filled in for the build tree, as a user would for an install prefix.
fn write_pc(dir: &Path) {
    let template = std::fs::read_to_string(workspace_root().join("engine/engine.pc.in")).unwrap();
    let pc = template
        .replace("@PREFIX@", &workspace_root().display().to_string())
        .replace("@LIBDIR@", &libs_dir().display().to_string())
        .replace("@INCLUDEDIR@", &workspace_root().join("engine/include").display().to_string())
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    assert!(!pc.contains('@'), "unfilled placeholder in engine.pc.in:\n{pc}");
    std::fs::write(dir.join("engine.pc"), pc).unwrap();
}

/// The example of engine/include/README-capi.md is tests/c/example.c verbatim, and it builds with the flags
/// pkg-config gives from engine/engine.pc.in, and runs.
#[test]
fn readme_example_builds_with_pkg_config_and_runs() {
    let root = workspace_root();
    let example = std::fs::read_to_string(root.join("tests/c/example.c")).unwrap();
    let readme = std::fs::read_to_string(root.join("engine/include/README-capi.md")).unwrap();
    assert!(readme.contains(&example), "README-capi.md must quote tests/c/example.c verbatim");

    let (model, out) = (tiny_model("c-example-model"), TempDir::new("c-example"));
    write_pc(out.path());
    let pkg =
        Command::new("pkg-config").args(["--cflags", "--libs", "engine"]).env("PKG_CONFIG_PATH", out.path()).output();
    let flags = match pkg {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap(),
        Ok(o) => panic!("pkg-config failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            eprintln!("no pkg-config ({e}): skipping the example build");
            return;
        }
    };
    assert!(flags.contains("-lengine") && flags.contains("-I"), "{flags}");
    let exe = out.path().join("example");
    run(Command::new(cc())
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg(root.join("tests/c/example.c"))
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace()));
    let stdout = run(Command::new(&exe).arg(model.path()).arg("Hello").env_remove("LD_LIBRARY_PATH"));
    assert!(stdout.contains(" tokens, "), "{stdout}");
}
