//! The layers, one way: every `crate::…` path in `src/` is read and checked against the order
//! below. A module may use modules of lower layers and its own submodules, never a module of
//! its own layer or a higher one; the failure names the file, the line and the rule broken.
//!
//! The order (ARCHITECTURE.md, "Layers, one way"; docs/layout.md), lowest first:
//!
//! 0. `model`, `proto`, `allocator`: shared domain types, the generated API messages, the
//!    allocator's settings;
//! 1. `clock`: the only reader of the time;
//! 2. `config`: the TOML and its sections, a leaf (no component);
//! 3. `core`: the deterministic shard;
//! 4. `telemetry`: metric names and the events that log and count;
//! 5. `gate`, `sender`, `tls`: the call gate trait, where dispatches go, TLS listeners;
//! 6. `auth`, `overload`, `runtime`: the gates, and the shard tasks;
//! 7. `wire`: protobuf and Meta's JSON ⇄ core, and the error mapping. It sits above the
//!    runtime because it converts the runtime's events and call errors too; nothing below
//!    it needs a conversion;
//! 8. `grpc`, `kafka`, `cloud_api`: the edges (none uses another);
//! 9. `webhook`, `egress`: the edges with Meta, built on Kafka's outbox and consumer and the
//!    Cloud API sender;
//! 10. `server`: the wiring; 11. `main` and `cli` (the binary).
use std::path::{Path, PathBuf};

const LAYERS: &[(&str, u8)] = &[
    ("model", 0),
    ("proto", 0),
    ("allocator", 0),
    ("clock", 1),
    ("config", 2),
    ("core", 3),
    ("telemetry", 4),
    ("gate", 5),
    ("sender", 5),
    ("tls", 5),
    ("auth", 6),
    ("overload", 6),
    ("runtime", 6),
    ("wire", 7),
    ("grpc", 8),
    ("kafka", 8),
    ("cloud_api", 8),
    ("webhook", 9),
    ("egress", 9),
    ("server", 10),
    ("main", 11),
    ("cli", 11),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
}

/// The top-level module a file under `src/` belongs to (`src/kafka/input.rs` → `kafka`).
fn module_of(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .expect("a file under src/")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// Every rule `source` (the text of a file of `module`) breaks: (line number, the message).
fn violations(module: &str, source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let Some(own) = layer(module) else {
        return vec![(
            0,
            format!("module `{module}` is not in the layer table (tests/layering.rs)"),
        )];
    };
    // Code only: not comments (doc comments name modules freely).
    let code: Vec<&str> = source
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect();
    let mut check = |n: usize, used: &str| {
        if used.is_empty() || used == module {
            return;
        }
        match layer(used) {
            None => found.push((
                n + 1,
                format!("uses `crate::{used}`, which is not in the layer table"),
            )),
            Some(theirs) if theirs >= own => found.push((
                n + 1,
                format!(
                    "`{module}` (layer {own}) uses `crate::{used}` (layer {theirs}): a module \
                     may use only lower layers"
                ),
            )),
            Some(_) => {}
        }
    };
    for (n, line) in code.iter().enumerate() {
        let mut rest = *line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(after) = rest.strip_prefix('{') {
                // `use crate::{a::X, b};`: each name at the top of the group, to its `}`
                // (which may be lines later).
                let group: String = std::iter::once(after)
                    .chain(code[n + 1..].iter().copied())
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut depth = 0;
                let mut name = String::new();
                let mut at_top = true;
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            at_top = true;
                            continue;
                        }
                        _ => {}
                    }
                    if depth == 0 && at_top {
                        if c.is_ascii_alphanumeric() || c == '_' {
                            name.push(c);
                        } else if !name.is_empty() {
                            check(n, &std::mem::take(&mut name));
                            at_top = false;
                        }
                    }
                }
                if !name.is_empty() {
                    check(n, &name);
                }
                continue;
            }
            let used: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            check(n, &used);
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable src/ tree") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_import_in_src_goes_to_a_lower_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut broken = Vec::new();
    let mut read = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src/");
        let module = module_of(relative);
        if module == "lib" {
            continue; // the module map itself
        }
        let source = std::fs::read_to_string(file).expect("a readable source file");
        read += 1;
        for (line, rule) in violations(&module, &source) {
            broken.push(format!("src/{}:{line}: {rule}", relative.display()));
        }
    }
    assert!(read > 20, "read {read} files: is this the crate's src/?");
    assert!(
        broken.is_empty(),
        "backward imports:\n{}",
        broken.join("\n")
    );
}

#[test]
fn time_is_read_only_in_clock_rs() {
    // STYLE.md: time is injected; one module reads the clocks.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut reads = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("clock.rs")) {
        let source = std::fs::read_to_string(file).expect("a readable source file");
        for (n, line) in source.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if code.contains("Instant::now()") || code.contains("SystemTime::now()") {
                reads.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        reads.is_empty(),
        "clock reads outside src/clock.rs (use clock::SystemClock, Stopwatch or monotonic):\n{}",
        reads.join("\n")
    );
}

#[test]
fn a_backward_or_sideways_import_is_caught_with_its_line() {
    // The checker itself, on made-up sources: it must be able to fail.
    let core = "use crate::model::TenantId;\nuse crate::server::run;\n";
    assert_eq!(
        violations("core", core),
        vec![(
            2,
            "`core` (layer 3) uses `crate::server` (layer 10): a module may use only lower layers"
                .to_owned()
        )]
    );
    let kafka = "let s = crate::grpc::status(e); // crate::grpc in a comment is fine\n";
    assert_eq!(
        violations("kafka", kafka).len(),
        1,
        "kafka and grpc are one layer"
    );
    assert!(violations("kafka", "use crate::kafka::outbox::Outbox;").is_empty());
    assert!(
        violations("config", "use crate::auth::Role;")[0]
            .1
            .contains("layer 6")
    );
    assert!(
        violations("elsewhere", "")[0]
            .1
            .contains("not in the layer table")
    );
    assert!(
        violations("core", "use crate::nowhere::X;")[0]
            .1
            .contains("not in the layer table")
    );
}
