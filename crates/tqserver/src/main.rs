//! The `tqserver` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    tqserver::cli::main()
}
