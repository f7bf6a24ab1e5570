//! The README stays true to the code: every metric family the service exports
//! (`telemetry::METRICS`, the one list) is in the README's metrics reference, and the list
//! follows the naming rules.
#[test]
fn every_metric_is_in_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("the README");
    let missing: Vec<&str> = switchboard::telemetry::METRICS
        .iter()
        .map(|m| m.name)
        .filter(|name| {
            // The Kafka section abbreviates the common prefix: `..._records_out_total`.
            let short = name
                .strip_prefix("switchboard_kafka")
                .map(|rest| format!("...{rest}"));
            !readme.contains(name) && short.is_none_or(|s| !readme.contains(&s))
        })
        .collect();
    assert!(missing.is_empty(), "metrics not in README.md: {missing:?}");
    assert!(
        switchboard::telemetry::METRICS.len() > 40,
        "the table is the whole list"
    );
}

#[test]
fn metric_names_are_unique_and_follow_the_naming_rules() {
    use switchboard::telemetry::{Kind, METRICS};
    let mut seen = std::collections::HashSet::new();
    for m in METRICS {
        assert!(seen.insert(m.name), "{} is listed twice", m.name);
        assert!(m.name.starts_with("switchboard_"), "{}", m.name);
        assert_eq!(
            m.kind == Kind::Counter,
            m.name.ends_with("_total"),
            "{}: counters, and only counters, end in _total",
            m.name
        );
        assert!(!m.help.is_empty(), "{} has no help text", m.name);
    }
}
