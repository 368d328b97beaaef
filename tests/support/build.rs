// The target triple the tests are built for: the host agent's, which the
// tests expect it to announce (User-Agent, the update `platform=`).
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=SUPPORT_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
