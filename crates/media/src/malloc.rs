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

/// Lets glibc's malloc keep freed memory for reuse instead of returning it to the kernel at
/// once, unless `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` is set: buffers up to
/// `up_to` bytes come from the heap, and up to `up_to` bytes of free heap top are kept.
///
/// Image work allocates and frees buffers of megabytes for every image; mapping and zeroing
/// fresh pages for each cost ~12% of the control plane's ingest CPU and ~7% of the edge's
/// cold misses (kernel page faults and page clearing in `perf`). Keeping them raised
/// sustained ingest of 12-MP JPEGs from 8.0 to 9.0 images/s for ~20 MB more peak RSS
/// (loadtest/README.md). Call it first thing in `main`, before threads start.
pub fn reuse_freed_memory(up_to: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
            || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
        {
            return;
        }
        const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        let value = up_to.min(i32::MAX as usize) as std::ffi::c_int;
        // SAFETY: mallopt only changes allocator tuning; called before other threads exist.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, value);
            mallopt(M_TRIM_THRESHOLD, value);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = up_to;
}

/// Returns malloc's free memory to the system (`malloc_trim`): the free pages inside every
/// arena, not only at the top of the heap.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only releases free memory; safe to call from any thread.
        unsafe {
            malloc_trim(0);
        }
    }
}
