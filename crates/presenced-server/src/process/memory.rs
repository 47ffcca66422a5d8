//! How the process asks the kernel for memory.
//!
//! mimalloc marks the arenas it reserves (1 GiB at a time) with
//! `MADV_HUGEPAGE`, and on kernels whose transparent huge pages are in
//! `madvise` mode (the common default) the kernel then backs every touched
//! 2 MiB of them with a whole huge page. Memory that presenced spreads
//! thinly (a few KiB per open connection, freed and reused in place) became
//! resident 2 MiB at a time: with 2,000 open idle long-polls
//! (`scripts/longpoll-memory`), the idle server's RSS went from 135 MiB to
//! 38 MiB and each long-poll's from 29.5 KiB to 23.4 KiB with huge pages
//! off, and workload 1's CPU per update did not move beyond the noise
//! (BENCHMARKS.md, "Connection memory").

/// Turns transparent huge pages off for this process (and its children),
/// for memory already mapped as well as later mappings: the kernel checks
/// the flag at each page fault. Called first thing in `main`, before the
/// heap has grown. Where the call is refused (not Linux, or an old kernel)
/// nothing changes but RSS.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("presenced: could not turn transparent huge pages off: {e}");
    }
}
