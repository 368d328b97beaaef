// Records facts only the build knows: the target triple (sent in User-Agent and
// as the update platform) and the build time (a device clock earlier than this
// is certainly wrong, which explains TLS "certificate not yet valid" errors).
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=CNCOP_TARGET={target}");
    let built = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v,
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string(),
    };
    println!("cargo:rustc-env=CNCOP_BUILD_UNIX={built}");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
}
