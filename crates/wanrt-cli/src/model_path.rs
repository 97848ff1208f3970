//! Where the model comes from when `--model` is omitted: `WANRT_DEMO_MODEL`,
//! else the bundled demo model found relative to the executable (a build tree
//! `target/<profile>/wanrt` or an install `bin/wanrt` + `share/wanrt/`) or the
//! current directory.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

const DEMO_REL: &str = "models/demo";

pub fn resolve(model: Option<&Path>) -> Result<PathBuf> {
    if let Some(m) = model {
        return Ok(m.to_path_buf());
    }
    if let Ok(p) = std::env::var("WANRT_DEMO_MODEL") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for anc in exe.ancestors().skip(1).take(4) {
            candidates.push(anc.join(DEMO_REL));
            candidates.push(anc.join("share/wanrt").join(DEMO_REL));
        }
    }
    candidates.push(PathBuf::from(DEMO_REL));
    if let Some(found) = candidates.iter().find(|c| c.join("model_index.json").is_file()) {
        return Ok(found.clone());
    }
    bail!("no --model given and the bundled demo model was not found (looked for {DEMO_REL}/ near the executable and in the current directory; set WANRT_DEMO_MODEL)")
}
