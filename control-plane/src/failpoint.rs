//! Named crash points for fault-injection tests. With `FLEXPHOTO_FAILPOINTS=name,…` in the
//! environment, the process aborts (no cleanup runs, as with `kill -9`) when it reaches one of
//! the named points; without the variable nothing happens. Only multi-step operations that
//! must survive a crash between steps name points (e.g. `tier.after_copy`).

/// Aborts the process here when `name` is listed in `FLEXPHOTO_FAILPOINTS`.
pub fn hit(name: &str) {
    if let Ok(list) = std::env::var("FLEXPHOTO_FAILPOINTS") {
        if list.split(',').any(|p| p.trim() == name) {
            eprintln!("failpoint {name}: aborting as asked by FLEXPHOTO_FAILPOINTS");
            std::process::abort();
        }
    }
}
