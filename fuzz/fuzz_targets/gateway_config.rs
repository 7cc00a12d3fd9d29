//! The gateway's configuration loader (TOML → checked `Config`) on arbitrary files.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gatekeeper-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/keys/");
        for file in ["jwks.json", "hmac.secret"] {
            std::fs::copy(format!("{fixtures}{file}"), dir.join("keys").join(file)).unwrap();
        }
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Keep the fuzzer away from files: audit_log creates them, device files never end.
    if text.contains("audit_log") || text.contains("/dev/") || text.contains("/proc/") {
        return;
    }
    let path = dir().join(format!(
        "gateway-{}.toml",
        std::thread::current().name().unwrap_or("t")
    ));
    std::fs::write(&path, text).unwrap();
    match gatekeeper::load_config(&path) {
        Ok(_) => {}
        Err(error) => {
            // Every error names the file.
            assert!(error.to_string().starts_with(&path.display().to_string()));
        }
    }
});
