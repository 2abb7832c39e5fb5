//! Compiles the C shim (`src/tcl/shim.c`) against Tcl's stub library.
//!
//! The extension must not link libtcl: every Tcl call goes through the stubs
//! table that `Tcl_InitStubs` fills in at load time, so one build works with any
//! `tclsh` of the same major version. Tcl's location comes from `tclConfig.sh`,
//! found through the `TCL_CONFIG` environment variable or the usual Debian/Unix
//! places. Built against Tcl 9 (`TCL_MAJOR_VERSION` 9), the Rust side gets
//! `cfg(tcl9)` (Tcl 9's string form, see src/tcl/utf.rs); the Makefile then
//! builds in its own target folder and names the library libtcl9websocket.so.

use std::collections::HashMap;
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const CANDIDATES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/tcl8.6/tclConfig.sh",
    "/usr/lib/aarch64-linux-gnu/tcl8.6/tclConfig.sh",
    "/usr/lib/tcl8.6/tclConfig.sh",
    "/usr/lib64/tclConfig.sh",
    "/usr/lib/tclConfig.sh",
    "/usr/local/lib/tclConfig.sh",
    "/usr/local/lib/tcl8.6/tclConfig.sh",
];

/// Sources a tclConfig.sh with `sh` (Debian's is an indirection through
/// `dpkg-architecture`) and returns the variables the build needs.
fn read_config(path: &Path) -> HashMap<String, String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#". "$0" && printf '%s\n%s\n%s\n%s\n%s\n%s\n' "$TCL_INCLUDE_SPEC" "$TCL_STUB_LIB_PATH" "$TCL_MAJOR_VERSION" "$TCL_LIB_SPEC" "$TCL_LIB_FILE" "$TCL_LIBS""#)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sh on {}: {e}", path.display()));
    assert!(out.status.success(), "sourcing {} failed", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let mut vars = HashMap::new();
    for key in [
        "TCL_INCLUDE_SPEC",
        "TCL_STUB_LIB_PATH",
        "TCL_MAJOR_VERSION",
        "TCL_LIB_SPEC",
        "TCL_LIB_FILE",
        "TCL_LIBS",
    ] {
        let v = lines.next().unwrap_or("").trim();
        if !v.is_empty() {
            vars.insert(key.to_string(), v.to_string());
        }
    }
    vars
}

fn main() {
    println!("cargo:rerun-if-env-changed=TCL_CONFIG");
    println!("cargo::rustc-check-cfg=cfg(tcl9)");
    println!("cargo:rerun-if-changed=src/tcl/shim.c");
    let config = env::var_os("TCL_CONFIG")
        .map(PathBuf::from)
        .or_else(|| CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists()))
        .expect("tclConfig.sh not found: install tcl-dev or set TCL_CONFIG");
    println!("cargo:rerun-if-changed={}", config.display());
    let vars = read_config(&config);

    let include = vars
        .get("TCL_INCLUDE_SPEC")
        .expect("TCL_INCLUDE_SPEC missing from tclConfig.sh");
    let stub = PathBuf::from(
        vars.get("TCL_STUB_LIB_PATH")
            .expect("TCL_STUB_LIB_PATH missing from tclConfig.sh"),
    );

    let major = vars
        .get("TCL_MAJOR_VERSION")
        .and_then(|v| v.parse::<u32>().ok())
        .expect("TCL_MAJOR_VERSION missing from tclConfig.sh");
    assert!(
        major == 8 || major == 9,
        "Tcl {major} is not supported (8.6 or 9)"
    );
    if major == 9 {
        println!("cargo:rustc-cfg=tcl9");
    }

    // The unit tests load this Tcl's shared library themselves (dlopen) to
    // run an interpreter; the extension never links it.
    let lib_dir = vars
        .get("TCL_LIB_SPEC")
        .and_then(|spec| spec.split_whitespace().find_map(|f| f.strip_prefix("-L")));
    let lib_file = vars.get("TCL_LIB_FILE").map(String::as_str).unwrap_or("");
    let mut tcl_lib = match lib_dir {
        Some(dir) if !lib_file.is_empty() => format!("{dir}/{lib_file}"),
        _ => lib_file.to_string(),
    };
    // A Tcl with only a static library (tools/get-tcl9.sh links tclsh9.0
    // from one): the tests get a shared object made from it.
    let archive = Path::new(&tcl_lib).with_extension("a");
    if !Path::new(&tcl_lib).exists() && archive.exists() {
        let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("libtcl-for-tests.so");
        let compiler = cc::Build::new().get_compiler();
        let mut cmd = compiler.to_command();
        cmd.arg("-shared").arg("-o").arg(&out);
        cmd.arg("-Wl,--whole-archive")
            .arg(&archive)
            .arg("-Wl,--no-whole-archive");
        if let Some(dir) = lib_dir {
            // (libtommath lives there too)
            cmd.arg(format!("-L{dir}")).arg(format!("-Wl,-rpath,{dir}"));
        }
        cmd.args(
            vars.get("TCL_LIBS")
                .map(String::as_str)
                .unwrap_or("")
                .split_whitespace(),
        );
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        if ok {
            tcl_lib = out.display().to_string();
        } else {
            println!(
                "cargo:warning=no shared Tcl library for the unit tests ({} failed to link)",
                archive.display()
            );
        }
        println!("cargo:rerun-if-changed={}", archive.display());
    }
    println!("cargo:rustc-env=WS_TEST_TCL_LIB={tcl_lib}");

    let mut build = cc::Build::new();
    build.file("src/tcl/shim.c").define("USE_TCL_STUBS", None);
    for flag in include.split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-I") {
            build.include(dir);
        }
    }
    build.flag_if_supported("-fvisibility=hidden");
    build.compile("websocket_shim");

    // The shim's archive comes first (cc emits it), then the stub library it needs.
    let dir = stub.parent().expect("stub library path has no folder");
    let name = stub
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_prefix("lib"))
        .expect("stub library name is not libNAME.a");
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static={name}");
}
