//! How the `clew` binary's allocator (mimalloc) gives freed memory back to
//! the system: after [`PURGE_DELAY_MS`] in a server, whose memory should
//! shrink back after a burst; not at all while a command rebuilds the
//! catalogue ([`keep_freed_memory`]), which would otherwise give back and
//! fault in again the same memory chunk after chunk; after
//! [`CATCH_UP_PURGE_DELAY_MS`] while a server's node brings its catalogue
//! up to the ledger at start, the same work in a process that goes on
//! running; and at once, on request, once a server has opened its stores
//! ([`return_freed_memory`]). `MIMALLOC_PURGE_DELAY`, when set, wins over
//! all but the last.

/// Gives the system back the memory this thread freed while opening the
/// stores. mimalloc (the `clew` binary's allocator) keeps a thread's freed
/// pages until that thread allocates again after a delay, and the thread
/// that opened the stores does little once the server runs. On a
/// 3.5M-event catalogue the server's RSS once started was 1,285 MiB; 1,263
/// with this call alone; 1,302 with the catalogue's store opened a second
/// time after loading the lineage graph (`clew_catalog::Catalog`) alone;
/// 896 with both. Nothing to give back when mimalloc is not the allocator.
pub fn return_freed_memory() {
    // SAFETY: mi_collect takes no pointers; it only returns free pages of
    // mimalloc's heaps to the system.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// mimalloc's `purge_delay` option (number 15 of `mi_option_t` in mimalloc
/// v2 and v3; `libmimalloc-sys` names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed pages before giving them back to the
/// system, unless `MIMALLOC_PURGE_DELAY` says otherwise (mimalloc v3's own
/// default is 1,000 ms). Measured with `clew-bench api` (1.0–1.9M events,
/// each setting alternated with the default): 300 ms held 50–54 MiB less
/// once warm, with a query's CPU and the write path's within the runs'
/// spread; 100 ms held 60–76 MiB less but the write path took about 10%
/// more CPU, and 0 ms 95 MiB less for about 20% more (probably tantivy's
/// arenas, freed at each search commit every 200 ms, given back and
/// faulted in again; not profiled).
pub const PURGE_DELAY_MS: i64 = 300;

/// How long freed memory stays with the allocator while a node brings its
/// catalogue up to the ledger at start (`clew serve` on a catalogue behind
/// its ledger, or none): long enough that each chunk of events reuses what
/// the chunk before it freed instead of faulting it in afresh, short enough
/// that what the catch-up leaves unused goes back to the system seconds
/// after it ends, unlike [`keep_freed_memory`]'s "never".
pub const CATCH_UP_PURGE_DELAY_MS: i64 = 10_000;

/// The allocator's settings for a `clew` process: [`set_purge_delay`], and
/// [`CATCH_UP_PURGE_DELAY_MS`] while a node catches up at start. The `clew`
/// binary and the benchmarks call it first thing in `main`.
pub fn set_allocator_policy() {
    set_purge_delay();
    clew_node::while_catching_up(|| Box::new(keep_freed_memory_while_catching_up()));
}

/// Sets how long freed memory stays with the allocator before it goes back
/// to the system ([`PURGE_DELAY_MS`]), unless `MIMALLOC_PURGE_DELAY` is set.
pub fn set_purge_delay() {
    if set_by_environment() {
        return;
    }
    // SAFETY: sets one of mimalloc's options; no pointers.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) }
}

/// Whether `MIMALLOC_PURGE_DELAY` sets the delay, which then wins over
/// ours.
fn set_by_environment() -> bool {
    std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
}

/// Freed memory kept by the allocator instead of given back to the system
/// until this is dropped ([`keep_freed_memory`]).
#[must_use = "freed memory is kept only while this lives"]
pub struct FreedMemoryKept {
    /// The purge delay to restore; `None` when `MIMALLOC_PURGE_DELAY` is
    /// set and was left alone.
    restore: Option<std::os::raw::c_long>,
}

/// Keeps freed memory with the allocator until the returned value is
/// dropped, unless `MIMALLOC_PURGE_DELAY` is set. For a command that
/// projects a whole ledger (`clew reindex`, and the benchmark that times
/// it): each chunk of events frees what the one before allocated some
/// 300 ms earlier, so with the server's delay the same memory went back to
/// the system and was faulted in again chunk after chunk. `clew reindex` of
/// a 1.19M-event ledger, alternated twice with the delay as `clew serve`
/// has it: 790k page faults against 28k, 7.0–7.3 s of system CPU against
/// 4.4–4.8, 40.0 s against 32.1–36.7 s, peak RSS 1.51–1.53 GB against
/// 1.58–1.61; `clew-bench catalog`'s projection 45.0–45.2 µs of CPU an
/// event against 39.0–39.4. Memory freed meanwhile stays with the
/// allocator afterwards too (it is never marked for giving back), so a
/// long-running server does not use this.
pub fn keep_freed_memory() -> FreedMemoryKept {
    // A negative delay is mimalloc's "never" (v3 `arena.c`, `os.c`).
    purge_after(-1)
}

/// Catch-ups under way in this process, and the guard that set the delay
/// for them all (the first to start sets it; the last to end sets it back).
static CATCHING_UP: std::sync::Mutex<(usize, Option<FreedMemoryKept>)> =
    std::sync::Mutex::new((0, None));

/// Freed memory kept while a catch-up runs ([`keep_freed_memory_while_catching_up`]).
#[must_use = "freed memory is kept only while this lives"]
pub struct CatchingUp(());

/// Keeps freed memory with the allocator for [`CATCH_UP_PURGE_DELAY_MS`]
/// until the returned value is dropped, unless `MIMALLOC_PURGE_DELAY` is
/// set: for a server's catch-up at start, which projects chunk after chunk
/// as `clew reindex` does but goes on serving afterwards. Catch-ups that
/// overlap (several nodes in one process) share the setting, which the last
/// to end sets back, giving back at once what they left unused
/// ([`return_freed_memory`]): an idle server's threads may not allocate
/// again for hours, and only then would mimalloc purge it.
pub fn keep_freed_memory_while_catching_up() -> CatchingUp {
    if let Ok(mut running) = CATCHING_UP.lock() {
        if running.0 == 0 {
            running.1 = Some(purge_after(CATCH_UP_PURGE_DELAY_MS));
        }
        running.0 += 1;
    }
    CatchingUp(())
}

impl Drop for CatchingUp {
    fn drop(&mut self) {
        let last = CATCHING_UP.lock().ok().and_then(|mut running| {
            running.0 = running.0.saturating_sub(1);
            if running.0 == 0 {
                running.1.take()
            } else {
                None
            }
        });
        if let Some(kept) = last {
            drop(kept);
            return_freed_memory();
        }
    }
}

/// Sets the purge delay to `delay_ms` until the returned value is dropped.
fn purge_after(delay_ms: i64) -> FreedMemoryKept {
    if set_by_environment() {
        return FreedMemoryKept { restore: None };
    }
    // SAFETY: reads and sets one of mimalloc's options; no pointers.
    let previous = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay_ms as _) };
    FreedMemoryKept {
        restore: Some(previous),
    }
}

impl Drop for FreedMemoryKept {
    fn drop(&mut self) {
        if let Some(previous) = self.restore {
            // SAFETY: sets one of mimalloc's options; no pointers.
            unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, previous) }
        }
    }
}

#[cfg(test)]
mod tests {
    const CHILD: &str = "CLEW_TEST_PURGE_DELAY_CHILD";
    const TEST: &str = "memory::tests::the_purge_delay_is_option_15_its_variable_wins_and_kept_memory_sets_it_back";

    /// mimalloc's purge delay as this process sees it.
    fn purge_delay() -> i64 {
        // SAFETY: reads one of mimalloc's options; no pointers.
        unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) as i64 }
    }

    /// mimalloc reads its options from the environment when the process
    /// starts, so each case runs this test binary again: with
    /// `MIMALLOC_PURGE_DELAY` set, option 15 holds its value before and
    /// after [`super::set_purge_delay`] and while freed memory is kept;
    /// without it, [`super::set_allocator_policy`] sets
    /// [`super::PURGE_DELAY_MS`] and the nodes' catch-up hook, keeping freed
    /// memory sets "never" (-1), catch-ups set
    /// [`super::CATCH_UP_PURGE_DELAY_MS`] until the last of them ends, and
    /// dropping the guards sets the delay back.
    #[test]
    fn the_purge_delay_is_option_15_its_variable_wins_and_kept_memory_sets_it_back() {
        match std::env::var(CHILD).as_deref() {
            Ok("variable") => {
                assert_eq!(purge_delay(), 1234, "option 15 is not the purge delay");
                super::set_purge_delay();
                assert_eq!(purge_delay(), 1234, "the variable was overridden");
                let kept = super::keep_freed_memory();
                assert_eq!(purge_delay(), 1234, "the variable was overridden");
                drop(kept);
                let kept = super::keep_freed_memory_while_catching_up();
                assert_eq!(purge_delay(), 1234, "the variable was overridden");
                drop(kept);
                assert_eq!(purge_delay(), 1234);
                return;
            }
            Ok("none") => {
                super::set_allocator_policy();
                assert_eq!(purge_delay(), super::PURGE_DELAY_MS);
                let kept = super::keep_freed_memory();
                assert_eq!(purge_delay(), -1, "freed memory is not kept");
                drop(kept);
                assert_eq!(purge_delay(), super::PURGE_DELAY_MS, "not set back");
                // Two catch-ups overlapping, the first ending first: the
                // delay holds until the last ends.
                let first = super::keep_freed_memory_while_catching_up();
                assert_eq!(purge_delay(), super::CATCH_UP_PURGE_DELAY_MS);
                let second = super::keep_freed_memory_while_catching_up();
                drop(first);
                assert_eq!(purge_delay(), super::CATCH_UP_PURGE_DELAY_MS);
                drop(second);
                assert_eq!(purge_delay(), super::PURGE_DELAY_MS, "not set back");
                // The policy gave every node of the process its catch-up
                // hook: a second one is refused.
                assert!(
                    !clew_node::while_catching_up(|| Box::new(())),
                    "no catch-up hook was set"
                );
                return;
            }
            _ => {}
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        for (case, variable) in [("variable", Some("1234")), ("none", None)] {
            let mut child = std::process::Command::new(&exe);
            child.args(["--exact", TEST]).env(CHILD, case);
            match variable {
                Some(v) => child.env("MIMALLOC_PURGE_DELAY", v),
                None => child.env_remove("MIMALLOC_PURGE_DELAY"),
            };
            let out = child.output().expect("the test binary runs again");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "case {case} failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
