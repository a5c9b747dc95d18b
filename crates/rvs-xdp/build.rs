//! Compiles bpf/rvs_xdp.c with clang (`-O2 -target bpf`) into OUT_DIR/rvs_xdp.o. Without
//! clang the object is left empty and rvs says so when asked for the XDP back-end (the
//! workspace still builds: the TUN back-end needs none of this). RVS_XDP_REQUIRE_CLANG=1
//! makes a missing clang an error (scripts/test sets it: the test command must build it).
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("rvs_xdp.o");
    let src = "bpf/rvs_xdp.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=RVS_XDP_REQUIRE_CLANG");
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // Debian keeps asm/ under the multiarch directory, which `-target bpf` does not search.
    let multiarch = format!(
        "/usr/include/{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
    );
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", src, "-o"])
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => {
            if std::env::var("RVS_XDP_REQUIRE_CLANG").as_deref() == Ok("1") {
                panic!("{clang} -target bpf failed on {src}: {other:?}");
            }
            println!(
                "cargo:warning=rvs-xdp: {clang} could not compile {src} ({other:?}); the XDP \
                 back-end is unavailable in this build (apt-get install clang llvm libbpf-dev)"
            );
            std::fs::write(&obj, b"").expect("write an empty object");
        }
    }
}
