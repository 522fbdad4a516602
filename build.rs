//! Links berth's own entry point (src/entry.rs) where it exists: it forks the cgroup
//! migration primer before the C library starts, then jumps to the C library's `_start`.
fn main() {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if arch == "x86_64" && os == "linux" {
        println!("cargo:rustc-link-arg-bins=-Wl,--entry=berth_entry");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
