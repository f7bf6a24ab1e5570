//! Compiles `proto/switchboard/v1/*.proto` with a vendored `protoc`, so building needs nothing
//! but the Rust toolchain. Also writes the encoded descriptor set that server reflection serves.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let mut prost = tonic_prost_build::Config::new();
    prost.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let mut builder = tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("switchboard_descriptor.bin"));
    // What the operators' commands print with `--output json` (enums by name).
    for read in [
        "ListQuotasResponse",
        "PortfolioQuota",
        "NumberQuota",
        "OverrideInfo",
        "QuotaForecast",
        "ListAuditResponse",
        "AuditEntry",
        "CampaignPlan",
        "SendStatus",
        "ListPausedResponse",
        "PauseInfo",
        "Consent",
        "CancelResponse",
        "ResumeResponse",
        "ReloadConfigResponse",
    ] {
        builder = builder.type_attribute(
            format!("switchboard.v1.{read}"),
            "#[derive(serde::Serialize)]",
        );
    }
    for (field, name) in [
        ("PortfolioQuota.shadow", "quota_rules"),
        ("SendStatus.state", "send_state"),
        ("SendStatus.reason", "refusal_reason"),
        ("Consent.state", "consent_state"),
    ] {
        builder = builder.field_attribute(
            format!("switchboard.v1.{field}"),
            format!("#[serde(serialize_with = \"crate::wire::json::{name}\")]"),
        );
    }
    builder.compile_with_config(
        prost,
        &["proto/switchboard/v1/switchboard.proto"],
        &["proto"],
    )?;
    Ok(())
}
