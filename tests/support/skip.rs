//! Skipping a test (or part of one) whose service is missing, or failing it when the run
//! must not skip: `FLEXPHOTO_REQUIRE_SERVICES` is `1` (every service) or a comma list of
//! the services present, e.g. `postgres,s3,qdrant,tmpfs`, which `scripts/test` exports for
//! the ones it started. Shared by the control plane's and the edge's tests (`#[path]`).

/// Whether the environment says `service` is present, so a test must not skip it.
pub fn required(service: &str) -> bool {
    std::env::var("FLEXPHOTO_REQUIRE_SERVICES").is_ok_and(|v| {
        let v = v.trim();
        v == "1"
            || v.eq_ignore_ascii_case("all")
            || v.split(',').any(|s| s.trim().eq_ignore_ascii_case(service))
    })
}

/// Reports that a test did not run (part of) itself because `service` is missing: prints
/// `SKIPPED: {reason}`, or panics with it when `service` is required.
#[track_caller]
pub fn skip(service: &str, reason: &str) {
    if required(service) {
        panic!(
            "{reason}, but FLEXPHOTO_REQUIRE_SERVICES says {service} is present: failing instead of skipping"
        );
    }
    eprintln!("SKIPPED ({service}): {reason}");
}
