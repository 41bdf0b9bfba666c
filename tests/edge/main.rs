//! Integration tests for `flexphoto-edge`: each test starts the real binary on a free port
//! against a local directory (and, when `FLEXPHOTO_TEST_S3_ENDPOINT` is set, a real
//! S3-protocol server), speaks HTTP to it over TCP, and checks outputs by decoding them with
//! libvips.

mod abuse;
mod cache_tiers;
mod errors;
mod harness;
mod http_semantics;
mod operations;
mod options;
#[path = "../support/ports.rs"]
mod ports;
mod s3;
mod security;
#[path = "../support/skip.rs"]
mod skip;
#[path = "../support/tiny_disk.rs"]
mod tiny_disk;
mod withheld;
