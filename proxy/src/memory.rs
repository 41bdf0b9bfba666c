//! Process memory tuning.

/// Limits glibc's malloc to `arenas` arenas unless `MALLOC_ARENA_MAX` is set.
///
/// glibc gives each thread that allocates concurrently its own arena (up to 8 per core), and
/// memory freed by libvips' worker threads stays in those arenas: under a miss storm RSS grew
/// ~120 MB above what two arenas hold, with the same throughput (loadtest/README.md). Call it
/// first thing in `main`, before threads start.
pub fn limit_malloc_arenas(arenas: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        const M_ARENA_MAX: std::ffi::c_int = -8;
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: mallopt only changes allocator tuning; called before other threads exist.
        unsafe {
            mallopt(M_ARENA_MAX, arenas);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}
