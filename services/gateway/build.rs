//! Embeds the web console's build (`console/dist`, made by `npm run build --prefix console`)
//! into the gateway: a table of its files, generated into `$OUT_DIR/console_files.rs`. Without
//! a build the table is empty and the gateway serves a page that says how to make one.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let console = manifest.join("../../console");
    let dist = console.join("dist");
    println!("cargo:rerun-if-env-changed=WHARF_CONSOLE_DIST");
    let dist = std::env::var_os("WHARF_CONSOLE_DIST").map_or(dist, PathBuf::from);
    // Cargo scans a directory given here for changes. Until a build exists, watch the
    // console's sources instead (their folder, so that a new `dist` is noticed too).
    if dist.join("index.html").is_file() {
        println!("cargo:rerun-if-changed={}", dist.display());
    } else {
        println!("cargo:rerun-if-changed={}", console.display());
    }
    let mut files = Vec::new();
    if dist.join("index.html").is_file() {
        collect(&dist, &dist, &mut files);
    }
    files.sort();
    let mut out = String::from("&[\n");
    for (route, path) in &files {
        if route.ends_with(".gz") {
            continue;
        }
        let gz = PathBuf::from(format!("{}.gz", path.display()));
        let gzip = if gz.is_file() {
            format!("Some(include_bytes!({:?}))", gz.display().to_string())
        } else {
            "None".to_owned()
        };
        writeln!(
            out,
            "    ConsoleFile {{ path: {route:?}, body: include_bytes!({:?}), gzip: {gzip} }},",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push(']');
    let target = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("console_files.rs");
    std::fs::write(target, out).unwrap();
}

/// Every file under `dir`, as (its URL path, its file path).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            files.push((format!("/{rel}"), path));
        }
    }
}
