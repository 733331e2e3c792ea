//! Files the binary generates are committed as generated: `webhooks/`, `crds/`, the chart's
//! `crds/`, and the chart's copy of `policy/`. Each must equal what the code produces now.

mod common;

use mcp_hangar::admission::registration::Registration;
use mcp_hangar::cli::render_webhooks;
use mcp_hangar::crd::{GROUP, Kind};

fn read(path: &str) -> String {
    std::fs::read_to_string(common::repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn webhooks_dir_is_the_generated_registration() {
    for (file, yaml) in render_webhooks(&Registration::default()) {
        assert_eq!(
            read(&format!("webhooks/{file}")),
            yaml,
            "webhooks/{file}: run `cargo run -- webhooks --out-dir webhooks`"
        );
    }
    let files = std::fs::read_dir(common::repo().join("webhooks")).unwrap().count();
    assert_eq!(files, 2, "webhooks/ holds only the generated files");
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let generated = mcp_hangar::cli::render_crds();
    for kind in Kind::ALL {
        let file = format!("{}.{GROUP}.yaml", kind.plural());
        let chart = read(&format!("charts/mcp-hangar/crds/{file}"));
        assert_eq!(chart, read(&format!("crds/{file}")), "{file}");
        assert!(
            generated.contains(&chart),
            "charts/mcp-hangar/crds/{file} drifted: run `cargo run -- crds --out-dir crds --out-dir charts/mcp-hangar/crds`"
        );
    }
    let files = std::fs::read_dir(common::repo().join("charts/mcp-hangar/crds")).unwrap().count();
    assert_eq!(files, Kind::ALL.len());
}

#[test]
fn chart_policy_files_are_a_copy_of_policy() {
    let dir = common::repo().join("policy");
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert!(names.len() >= 4);
    for name in &names {
        assert_eq!(
            read(&format!("charts/mcp-hangar/files/policy/{name}")),
            read(&format!("policy/{name}")),
            "{name}: cp policy/*.yaml charts/mcp-hangar/files/policy/"
        );
    }
    assert_eq!(std::fs::read_dir(common::repo().join("charts/mcp-hangar/files/policy")).unwrap().count(), names.len());
}
