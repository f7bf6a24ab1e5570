//! The docs stay true to the code: every metric family the service exports
//! (`telemetry::METRICS`, the one list) is in `docs/metrics.md` (the Kafka families may be in
//! `docs/kafka.md` instead, with their common prefix abbreviated), every RPC of the proto is
//! in `docs/grpc.md` under its service, every configuration field is in
//! `docs/configuration.md`, and the metric list follows the naming rules.
fn page(name: &str) -> String {
    std::fs::read_to_string(format!("{}/docs/{name}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("docs/{name}: {e}"))
}

#[test]
fn every_metric_is_documented_once() {
    let (metrics, kafka) = (page("metrics.md"), page("kafka.md"));
    let missing: Vec<&str> = switchboard::telemetry::METRICS
        .iter()
        .map(|m| m.name)
        .filter(|name| {
            // The Kafka page abbreviates the common prefix: `..._records_out_total`.
            let short = name
                .strip_prefix("switchboard_kafka")
                .map(|rest| format!("...{rest}"));
            let in_kafka = kafka.contains(name) || short.is_some_and(|s| kafka.contains(&s));
            !metrics.contains(&format!("`{name}`")) && !in_kafka
        })
        .collect();
    assert!(missing.is_empty(), "metrics not documented: {missing:?}");
    // Once: one row of the reference table each.
    for m in switchboard::telemetry::METRICS {
        let rows = metrics
            .lines()
            .filter(|l| l.starts_with(&format!("| `{}` |", m.name)))
            .count();
        assert!(rows <= 1, "{} has {rows} rows in docs/metrics.md", m.name);
    }
    assert!(
        switchboard::telemetry::METRICS.len() > 40,
        "the table is the whole list"
    );
}

#[test]
fn every_rpc_is_in_the_grpc_reference_under_its_service() {
    let proto = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proto/switchboard/v1/switchboard.proto"
    ))
    .unwrap();
    let grpc = page("grpc.md");
    // The table rows of each service: its first row names it, the rows after leave it empty.
    let mut rows: std::collections::HashMap<String, String> = Default::default();
    let mut current = String::new();
    for line in grpc.lines().filter(|l| l.starts_with("| ")) {
        let first = line.split('|').nth(1).unwrap_or_default().trim();
        if !first.is_empty() {
            current = first.trim_matches('`').to_owned();
        }
        rows.entry(current.clone()).or_default().push_str(line);
    }
    let (mut service, mut missing, mut rpcs) = (String::new(), Vec::new(), 0);
    for line in proto.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("service ") {
            service = rest.trim_end_matches(" {").to_owned();
        } else if let Some(rest) = line.strip_prefix("rpc ") {
            let name = rest.split('(').next().unwrap_or_default();
            rpcs += 1;
            let documented = rows.get(&service).is_some_and(|r| {
                r.contains(&format!("`{name}`")) || r.contains(&format!("`{name}("))
            });
            if !documented {
                missing.push(format!("{service}.{name}"));
            }
        }
    }
    assert!(rpcs > 30, "the proto was read: {rpcs} rpcs");
    assert!(missing.is_empty(), "RPCs not in docs/grpc.md: {missing:?}");
}

/// Every `pub` field of the config structs (`src/config/`, outside tests, not `serde(skip)`)
/// is named in a code span of `docs/configuration.md`: a key added without documenting it
/// fails here.
#[test]
fn every_config_field_is_in_the_configuration_reference() {
    let doc = page("configuration.md");
    let named: std::collections::HashSet<&str> = regex::Regex::new(r"`([^`]+)`")
        .unwrap()
        .captures_iter(&doc)
        .flat_map(|c| {
            let span = c.get(1).unwrap().as_str();
            regex::Regex::new(r"[a-z_][a-z0-9_]*")
                .unwrap()
                .find_iter(span)
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
        })
        .collect();
    let field = regex::Regex::new(r"^\s*pub ([a-z_][a-z0-9_]*):").unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/config");
    let (mut fields, mut missing) = (0, Vec::new());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let lines: Vec<&str> = code.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(name) = field.captures(line).map(|c| c.get(1).unwrap().as_str()) else {
                continue;
            };
            if lines[i.saturating_sub(4)..i]
                .iter()
                .any(|l| l.contains("serde(skip"))
            {
                continue;
            }
            fields += 1;
            if !named.contains(name) {
                missing.push(format!("{}: {name}", path.display()));
            }
        }
    }
    assert!(fields > 80, "the config structs were read: {fields} fields");
    assert!(
        missing.is_empty(),
        "config fields not in docs/configuration.md: {missing:?}"
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
