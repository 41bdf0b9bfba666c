//! Named crash points for fault-injection tests. With `FLEXPHOTO_FAILPOINTS=name,…` in the
//! environment, the process aborts (no cleanup runs, as with `kill -9`) when it reaches one of
//! the named points; without the variable nothing happens. Only multi-step operations that
//! must survive a crash between steps name points (e.g. `tier.after_copy`).
//!
//! With `FLEXPHOTO_FAILPOINT_PAUSE=name=MS,…`, a [`pause`] point named there waits that many
//! milliseconds instead (a stall: a worker frozen past its lease, a slow disk), so a test can
//! make something happen in between.

/// Aborts the process here when `name` is listed in `FLEXPHOTO_FAILPOINTS`.
pub fn hit(name: &str) {
    if let Ok(list) = std::env::var("FLEXPHOTO_FAILPOINTS") {
        if list.split(',').any(|p| p.trim() == name) {
            eprintln!("failpoint {name}: aborting as asked by FLEXPHOTO_FAILPOINTS");
            std::process::abort();
        }
    }
}

/// Waits here when `name` is listed in `FLEXPHOTO_FAILPOINT_PAUSE` (`name=MS`).
pub async fn pause(name: &str) {
    let Ok(list) = std::env::var("FLEXPHOTO_FAILPOINT_PAUSE") else {
        return;
    };
    let ms = list.split(',').find_map(|p| {
        let (n, ms) = p.split_once('=')?;
        (n.trim() == name).then(|| ms.trim().parse::<u64>().ok())?
    });
    if let Some(ms) = ms {
        eprintln!("failpoint {name}: pausing {ms} ms as asked by FLEXPHOTO_FAILPOINT_PAUSE");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}
