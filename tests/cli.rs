//! The operators' command line as scripts use it (issue 19): the service flags before or
//! after the subcommand, `--output json` on every read, exit codes that tell a refused call
//! from a service that cannot be reached, and shell completions.
#[path = "support/binary.rs"]
mod binary;

use std::process::Command;

use switchboard::proto::{self, outbound_client::OutboundClient};

fn config() -> String {
    binary::crm_config("", "messaging_limit = 1000")
}

/// `switchboard <args>`: (exit code, stdout, stderr).
async fn run(args: Vec<String>) -> (Option<i32>, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(binary::BIN)
            .args(&args)
            .env_remove("SWITCHBOARD_GRPC_ADDR")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[tokio::test]
async fn flags_go_anywhere_reads_print_json_and_exit_codes_say_what_failed() {
    let (_binary, channel, addr, _dir) = binary::start(&config()).await;
    let sent = OutboundClient::new(channel)
        .send(proto::SendRequest {
            tenant: "crm".into(),
            from: "N".into(),
            to: "+34612340001".into(),
            category: proto::Category::Utility as i32,
            content: "payment_reminder".into(),
            idempotency_key: "k1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.admission(), proto::Admission::Dispatched);

    // The service flags after the subcommand, as before it.
    for words in [
        &["quota", "get", "crm", "--addr", &addr][..],
        &["quota", "--addr", &addr, "get", "crm"][..],
    ] {
        let (code, out, err) = run(args(words)).await;
        assert_eq!(code, Some(0), "{words:?}: {err}");
        assert!(out.starts_with("tenant crm"), "{out}");
    }

    // Every read as JSON.
    let reads: [&[&str]; 7] = [
        &["quota", "list"],
        &["quota", "get", "crm"],
        &["quota", "audit", "crm"],
        &[
            "quota",
            "plan",
            "crm",
            "--customers",
            "100",
            "--duration",
            "1h",
        ],
        &["sends", "status", "crm", "--key", "k1"],
        &["sends", "list-paused", "crm"],
        &["consent", "get", "crm", "+34612340001"],
    ];
    let mut answers = Vec::new();
    for read in reads {
        let mut words = args(read);
        words.extend(args(&["--output", "json", "--addr", &addr]));
        let (code, out, err) = run(words).await;
        assert_eq!(code, Some(0), "{read:?}: {err}");
        let json: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{read:?} is not JSON ({e}): {out}"));
        answers.push(json);
    }
    assert_eq!(answers[1]["tenant"], "crm");
    assert_eq!(answers[1]["messaging_limit"], 1000);
    assert!(answers[1]["forecast"].is_object(), "{}", answers[1]);
    let listed = &answers[0]["tenants"][0];
    assert_eq!(
        (&listed["tenant"], &listed["used"]),
        (&answers[1]["tenant"], &answers[1]["used"]),
        "list holds the same"
    );
    let state = answers[4]["state"].as_str().unwrap();
    assert!(
        ["SEND_STATE_DISPATCHED", "SEND_STATE_SENT"].contains(&state),
        "enums by name: {}",
        answers[4]
    );
    assert_eq!(answers[5]["pauses"], serde_json::json!([]));
    assert_eq!(answers[6]["state"], "CONSENT_STATE_NONE");

    // Refused by the service (NOT_FOUND), unreachable, a usage error: three exit codes.
    let (code, _, err) = run(args(&[
        "sends", "status", "crm", "--key", "nope", "--addr", &addr,
    ]))
    .await;
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("nope"), "{err}");
    let (code, _, err) = run(args(&["quota", "list", "--addr", "127.0.0.1:1"])).await;
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("cannot reach switchboard"), "{err}");
    let (code, _, _) = run(args(&["sends", "pause", "crm"])).await;
    assert_eq!(code, Some(2), "clap's usage error");
}

#[tokio::test]
async fn the_binary_prints_its_shell_completions() {
    for (shell, mark) in [
        ("bash", "_switchboard()"),
        ("zsh", "#compdef switchboard"),
        ("fish", "complete -c switchboard"),
    ] {
        let (code, out, err) = run(args(&["completions", shell])).await;
        assert_eq!(code, Some(0), "{err}");
        assert!(
            out.contains(mark),
            "{shell}: {}",
            &out[..out.len().min(200)]
        );
        assert!(
            out.contains("list-paused"),
            "{shell} completes the subcommands"
        );
    }
}
