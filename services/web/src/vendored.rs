//! Tests: the front-end code Clew serves from `assets/vendor/` is exactly what the
//! pinned npm packages ship: every vendored file equals, byte for byte, the
//! file of the package `tests/setup.sh` installs from `package-lock.json`
//! into `target/web-npm`, and every asset the pages serve is either Clew's
//! own or one of those files.

use std::path::{Path, PathBuf};

use crate::asset_paths;

fn installed() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/web-npm/node_modules");
    assert!(
        dir.is_dir(),
        "{} is missing: run tests/setup.sh (it installs the pinned npm packages)",
        dir.display()
    );
    dir
}

/// `@bufbuild/protobuf/dist/esm/wire/varint.js` → that file of the package.
fn package_file(vendored: &str) -> PathBuf {
    installed().join(vendored.trim_start_matches("vendor/"))
}

#[test]
fn every_vendored_file_is_the_pinned_package_file() {
    let vendor = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/vendor");
    let mut checked = 0;
    for entry in walk(&vendor) {
        let rel = entry
            .strip_prefix(&vendor)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "LICENSES.md" {
            continue;
        }
        let ours = std::fs::read(&entry).unwrap();
        let theirs = std::fs::read(installed().join(&rel))
            .unwrap_or_else(|e| panic!("vendor/{rel} is in no pinned package: {e}"));
        assert!(
            ours == theirs,
            "vendor/{rel} differs from the package's file"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} vendored files");
}

#[test]
fn every_served_asset_is_clews_own_or_a_vendored_package_file() {
    let lock: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("package-lock.json"))
            .unwrap(),
    )
    .unwrap();
    for path in asset_paths() {
        if !path.starts_with("vendor/") {
            assert!(
                [
                    "clew.css",
                    "clew.js",
                    "evidence.js",
                    "graph.js",
                    "graphiql-start.js"
                ]
                .contains(&path),
                "{path} is neither Clew's own nor vendored"
            );
            continue;
        }
        let rel = path.trim_start_matches("vendor/");
        let package = rel
            .split('/')
            .take(if rel.starts_with('@') { 2 } else { 1 })
            .collect::<Vec<_>>()
            .join("/");
        let pinned = &lock["packages"][format!("node_modules/{package}")];
        assert!(
            pinned["integrity"]
                .as_str()
                .is_some_and(|i| i.starts_with("sha512-")),
            "{package} is not pinned with an integrity hash in package-lock.json"
        );
        assert!(
            package_file(path).is_file(),
            "{path} is not a file of {package}"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
