//! The catalogue through the `clew` command line: a ledger built by
//! `clew sample-stream` and `clew sequence`, queried with `clew search` / `lineage` / `impact` /
//! `history`, and rebuilt with `clew reindex` to identical answers.

use crate::support;

use support::{ok, run, Fixture};

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).expect("JSON output")
}

#[test]
fn reindex_rebuilds_a_catalogue_that_answers_like_the_live_one() {
    let f = Fixture::new();
    let stream_path = f.path("sample.stream");
    let stream = stream_path.to_str().unwrap();
    ok(&[
        "sample-stream",
        "--data-dir",
        f.data_str(),
        "--out",
        stream,
        "--events",
        "1500",
        "--producers",
        "2",
    ]);
    let sequenced = f.sequence(&stream_path, 1024);
    assert_eq!(
        sequenced.lines().filter(|l| l.starts_with("ack\t")).count(),
        1502,
        "every sample event is accepted"
    );

    let queries: Vec<Vec<&str>> = vec![
        vec!["search", "--text", "chest imaging", "--limit", "50"],
        vec![
            "search",
            "--filter",
            "modality=CT",
            "--filter",
            "access_level=open",
            "--recent",
        ],
        vec![
            "search",
            "--text",
            "\"de-identified at source\"",
            "--researcher",
        ],
        vec![
            "lineage",
            "--subject",
            "dataset-version/ds-000007@2.0",
            "--depth",
            "5",
        ],
        vec![
            "lineage",
            "--subject",
            "dataset-version/ds-000007@1.0",
            "--down",
        ],
        vec!["impact", "--subject", "dataset-version/ds-000007@1.0"],
        vec!["history", "--subject", "dataset-version/ds-000007@1.0"],
    ];
    let answer = |q: &Vec<&str>| {
        let mut args = q.clone();
        args.extend(["--data-dir", f.data_str()]);
        json(&args)
    };
    let live: Vec<serde_json::Value> = queries.iter().map(answer).collect();

    let search = &live[0];
    assert!(search["total"].as_u64().unwrap() > 0, "{search}");
    assert!(
        search["hits"][0]["snippet"]
            .as_str()
            .unwrap()
            .contains("<b>"),
        "{search}"
    );
    let ct = &live[1];
    assert!(ct["facets"]["modality"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m[0] == "CT"));
    assert!(ct["facets"]["access_level"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m[0] == "open"));
    let researcher = &live[2];
    assert!(researcher["facets"]["access_level"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m[0] == "open"));
    let down = &live[4];
    assert!(down["nodes"].as_array().unwrap().len() > 1, "{down}");

    let out = run(&["reindex", "--data-dir", f.data_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // genesis + 2 producer registrations + 1,500 events
    assert!(
        stderr.contains("rebuilt the catalogue from 1503 leaves"),
        "{stderr}"
    );
    let rebuilt: Vec<serde_json::Value> = queries.iter().map(answer).collect();
    for ((q, a), b) in queries.iter().zip(&live).zip(&rebuilt) {
        assert_eq!(a, b, "clew {} differs after reindex", q.join(" "));
    }

    let missing = run(&[
        "lineage",
        "--data-dir",
        f.data_str(),
        "--subject",
        "deployment/nope",
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no entity deployment/nope"));
}
