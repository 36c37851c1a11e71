//! MaxAI contracts: the Rust code generated from `proto/` (tonic servers and clients, prost
//! messages) nested by package, and the encoded descriptor set of every file.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/maxai_modules.rs"));

/// Encoded `FileDescriptorSet` of every contract and its imports, with source comments.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/maxai_descriptor.bin"));
