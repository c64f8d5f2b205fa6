//! The `clew` command; all logic lives in the `clew` library.

fn main() -> std::process::ExitCode {
    clew::cli::main()
}
