//! The Helm chart (charts/clew): `helm lint` and `helm template` with the
//! default and a production-like values file, the rendered manifests validated
//! offline against the Kubernetes schemas, and assertions on what they carry
//! (tests/chart/check.py), and checkov's Kubernetes policies over both
//! renders. The tools come from tests/setup.sh.

use crate::support;

use std::path::PathBuf;

fn tool(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo_root().join(default));
    assert!(
        path.exists(),
        "the chart checks need {} (run tests/setup.sh, or set {env})",
        path.display()
    );
    path
}

#[test]
fn the_chart_lints_renders_validates_and_carries_probes_limits_and_secrets() {
    let helm = tool("CLEW_HELM", "target/tools/bin/helm");
    let venv = support::repo_root().join("target/chart-venv/bin");
    let python = tool("CLEW_CHART_PYTHON", "target/chart-venv/bin/python");
    let validate = venv.join("kubernetes-validate");
    let root = support::repo_root();
    let out = std::process::Command::new(python)
        .arg(root.join("tests/chart/check.py"))
        .arg("--helm")
        .arg(&helm)
        .arg("--chart")
        .arg(root.join("charts/clew"))
        .arg("--validate")
        .arg(&validate)
        .arg("--checkov")
        .arg(venv.join("checkov"))
        .output()
        .expect("run tests/chart/check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("chart checks passed"), "{stdout}");
}
