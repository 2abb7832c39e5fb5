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
        .arg(r#". "$0" && printf '%s\n%s\n%s\n' "$TCL_INCLUDE_SPEC" "$TCL_STUB_LIB_PATH" "$TCL_MAJOR_VERSION""#)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sh on {}: {e}", path.display()));
    assert!(out.status.success(), "sourcing {} failed", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let mut vars = HashMap::new();
    for key in ["TCL_INCLUDE_SPEC", "TCL_STUB_LIB_PATH", "TCL_MAJOR_VERSION"] {
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
