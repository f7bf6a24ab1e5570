//! Compiles `proto/switchboard/v1/*.proto` with a vendored `protoc`, so building needs nothing
//! but the Rust toolchain. Also writes the encoded descriptor set that server reflection serves.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let mut prost = tonic_prost_build::Config::new();
    prost.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("switchboard_descriptor.bin"))
        .compile_with_config(
            prost,
            &["proto/switchboard/v1/switchboard.proto"],
            &["proto"],
        )?;
    Ok(())
}
