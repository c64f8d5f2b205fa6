//! `clew-bench growth`: how cost grows with the catalogue. Runs `clew-bench
//! catalog` and `clew-bench api` (each in its own process, so each RSS is
//! its own) at every size asked for, and prints each figure at each size
//! with its growth from one size to the next beside the growth of the
//! catalogue itself: a latency that grows less than the catalogue grows
//! sub-linearly.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use serde_json::Value;

/// Figures printed as the last line of `clew-bench growth`.
#[derive(Debug, Serialize)]
pub struct GrowthBench {
    /// Events in the catalogue at each size.
    pub events: Vec<u64>,
    /// Each figure: its name, its value at each size, and its growth from
    /// each size to the next (value ratio).
    pub figures: Vec<Figure>,
}

/// One figure across the sizes.
#[derive(Debug, Serialize)]
pub struct Figure {
    /// What it measures (unit included).
    pub name: String,
    /// Its value at each size.
    pub values: Vec<f64>,
    /// values[k + 1] / values[k].
    pub growth: Vec<f64>,
    /// Whether it is a latency, whose growth is held against the
    /// catalogue's (sub-linear is the goal).
    pub latency: bool,
}

/// Runs both benchmarks at each of `sizes` (datasets; 50 events each).
pub fn growth(sizes: &[u64], api_seconds: u64, exe: &Path) -> Result<GrowthBench> {
    ensure!(
        sizes.len() >= 2 && sizes.windows(2).all(|w| w[0] < w[1]),
        "give at least two sizes, smallest first"
    );
    let mut catalog = Vec::new();
    let mut api = Vec::new();
    for &datasets in sizes {
        eprintln!("catalogue of {datasets} datasets: clew-bench catalog");
        catalog.push(last_json(
            exe,
            &["catalog", "--datasets", &datasets.to_string()],
        )?);
        eprintln!("catalogue of {datasets} datasets: clew-bench api");
        let seconds = api_seconds.to_string();
        api.push(last_json(
            exe,
            &[
                "api",
                "--datasets",
                &datasets.to_string(),
                "--seconds",
                &seconds,
                "--alone-seconds",
                &seconds,
            ],
        )?);
    }
    let field = |runs: &[Value], name: &str| -> Result<Vec<f64>> {
        runs.iter()
            .map(|r| {
                r[name]
                    .as_f64()
                    .with_context(|| format!("a run's figures have no {name}"))
            })
            .collect()
    };
    let events: Vec<u64> = field(&catalog, "events")?
        .into_iter()
        .map(|e| e as u64)
        .collect();
    let mut figures = Vec::new();
    let mut add = |name: &str, values: Vec<f64>, latency: bool| {
        let growth = values.windows(2).map(|w| w[1] / w[0]).collect();
        figures.push(Figure {
            name: name.to_string(),
            values,
            growth,
            latency,
        });
    };
    add("events", events.iter().map(|&e| e as f64).collect(), false);
    add(
        "search + 3 facets p50, ms",
        field(&catalog, "search_p50_ms")?,
        true,
    );
    add(
        "10-hop lineage answer p50, ms",
        field(&catalog, "lineage_10_hop_p50_ms")?,
        true,
    );
    add(
        "10-hop lineage walk p50, ms",
        field(&catalog, "lineage_walk_p50_ms")?,
        true,
    );
    let impact = field(&catalog, "impact_ms")?;
    let impact_nodes = field(&catalog, "impact_nodes")?;
    add("impact nodes", impact_nodes.clone(), false);
    add("impact answer, ms", impact.clone(), true);
    add(
        "impact answer per node, µs",
        impact
            .iter()
            .zip(&impact_nodes)
            .map(|(ms, n)| ms * 1000.0 / n.max(1.0))
            .collect(),
        true,
    );
    add(
        "sequencing, events/s",
        field(&catalog, "sequencing_events_per_s")?,
        false,
    );
    add(
        "projection, events/s",
        field(&catalog, "projection_events_per_s")?,
        false,
    );
    let per_event = |runs: &[Value], name: &str| -> Result<Vec<f64>> {
        Ok(field(runs, name)?
            .iter()
            .zip(&events)
            .map(|(mib, &e)| mib * 1024.0 * 1024.0 / e as f64)
            .collect())
    };
    add(
        "serving peak RSS, MiB",
        field(&catalog, "serving_peak_rss_mib")?,
        false,
    );
    add(
        "serving peak RSS per event, B",
        per_event(&catalog, "serving_peak_rss_mib")?,
        false,
    );
    let disk: Vec<f64> = ["ledger", "catalog_state", "search"]
        .iter()
        .map(|s| field(&catalog, &format!("{s}_bytes_per_event")))
        .collect::<Result<Vec<_>>>()?
        .iter()
        .fold(vec![0.0; events.len()], |acc, v| {
            acc.iter().zip(v).map(|(a, b)| a + b).collect()
        });
    add("disk per event (all stores), B", disk, false);
    add(
        "API queries/s alone",
        field(&api, "queries_alone_per_s")?,
        false,
    );
    add(
        "API queries/s recording 1k events/s",
        field(&api, "queries_per_s")?,
        false,
    );
    add("API query p50 recording, ms", field(&api, "p50_ms")?, true);
    let rss_start: Vec<f64> = api
        .iter()
        .map(|r| r["server_rss_mib"][0].as_f64().context("server_rss_mib"))
        .collect::<Result<_>>()?;
    add("API server RSS, MiB", rss_start, false);
    Ok(GrowthBench { events, figures })
}

/// Runs this binary with `args` and parses its last line.
fn last_json(exe: &Path, args: &[&str]) -> Result<Value> {
    let out = std::process::Command::new(exe)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running clew-bench {}", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "clew-bench {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // Each run's own figures, as it printed them, then its JSON parsed.
    println!("clew-bench {}", args.join(" "));
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines[..lines.len().saturating_sub(1)] {
        println!("  {line}");
    }
    let last = lines.last().copied().unwrap_or_default();
    serde_json::from_str(last)
        .with_context(|| format!("clew-bench {} printed no figures", args.join(" ")))
}
