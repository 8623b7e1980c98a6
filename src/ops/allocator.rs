//! How the controller's allocator, mimalloc, is tuned at start. The binary chooses the allocator
//! (`#[global_allocator]` in `main.rs`); here are the two settings that keep what the process
//! holds close to what it uses after the burst of a start over a large fleet
//! (docs/benchmarks.md, "Scale 2, memory").

/// mimalloc's `mi_option_purge_delay`, the 16th entry of `mi_option_e` in the v2 header this
/// build vendors. libmimalloc-sys names no constant for it, so the name lives here, and
/// `the_purge_delay_option_is_the_one_set` checks it is the option whose default is 10 ms.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Both settings, before anything else allocates much.
pub fn tune() {
    keep_memory_in_small_pages();
    purge_freed_memory_at_once();
}

/// Gives memory back to the system as soon as it is freed. By default mimalloc purges freed
/// pages after a delay, at its next call in the same thread, and the threads that freed the
/// burst of a start over a large fleet may not call it again for long: the restart at
/// N = 20,000 held 132 MiB instead of 125 (docs/benchmarks.md).
fn purge_freed_memory_at_once() {
    // SAFETY: sets an integer option of the allocator; no memory is passed.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
}

/// Keeps this process's memory in small pages. mimalloc asks for transparent huge pages for its
/// arenas, and a node with THP enabled then backs each touched 2 MiB at once: 36 MiB instead of
/// 21 MiB for 100 resources, 48 instead of 35 for 1000. A controller gains nothing from fewer
/// TLB misses.
fn keep_memory_in_small_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag of this process; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option set at start is the purge delay: its default is 10 ms (the option before it,
    /// eager_commit_delay, defaults to 1 and the one after, use_numa_nodes, to 0). The options
    /// belong to mimalloc's library whichever allocator the test binary uses.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // Set from outside: its default cannot be seen.
        }
        // SAFETY: reads integer options of the allocator.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 10);
        purge_freed_memory_at_once();
        // SAFETY: as above.
        let set = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(set, 0);
    }
}
