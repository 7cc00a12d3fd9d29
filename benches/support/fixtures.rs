//! What the stack and verify benchmarks share: criterion settings and the committed test
//! keys. Included with `#[path]` by each bench that uses it.

use std::path::PathBuf;
use std::time::Duration;

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;

/// Every benchmark uses the same criterion settings: modest, so the whole run takes a few
/// minutes on a small shared machine.
pub(crate) fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

/// A file of `tests/fixtures/keys` (the keys the fixtures were minted with).
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "keys",
        name,
    ]
    .iter()
    .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
