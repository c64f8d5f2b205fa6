//! The `clew` command; all logic lives in the `clew` library.

/// mimalloc: the server allocates per request and per query; glibc's malloc
/// took about a third of its CPU under the API benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    clew::memory::set_allocator_policy();
    clew::cli::main()
}
