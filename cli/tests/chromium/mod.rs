//! What a browser test needs: Debian's Chromium and playwright-core (`make browser`
//! installs both where it can), and the scripts in `tests/browser/` that drive it.

use std::path::Path;

pub const BROWSER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Why a browser test cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    if !Path::new(CHROMIUM).exists() {
        return Some(format!(
            "no Chromium at {CHROMIUM} (apt-get install chromium)"
        ));
    }
    if !Path::new(BROWSER)
        .join("node_modules/playwright-core")
        .exists()
    {
        return Some(format!(
            "playwright-core is not installed (cd {BROWSER} && npm ci)"
        ));
    }
    None
}
