//! Compiles proto/ into Rust with protox (pure Rust, no protoc) and tonic-prost-build, and
//! writes the encoded descriptor set (with comments, for OpenAPI) that reflection, the gateway
//! and the orchestrator read.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = proto_files("proto")?;
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(&files)?;
    // Encoded by protox itself: going through prost_types would drop the custom options
    // (google.api.http, maxai.api.v1.auth) that the gateway reads.
    let encoded = compiler.encode_file_descriptor_set();
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("maxai_descriptor.bin"), &encoded)?;
    let fds = compiler.file_descriptor_set();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .include_file("maxai_modules.rs")
        .compile_fds(fds)?;
    Ok(())
}

/// Every .proto under `root`, relative to it, sorted so the output is stable.
fn proto_files(root: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::from(root)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "proto") {
                if let Ok(rel) = path.strip_prefix(root) {
                    files.push(rel.to_path_buf());
                }
            }
        }
    }
    files.sort();
    Ok(files)
}
