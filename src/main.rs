//! The `hearth` binary: everything lives in the library; see `hearth::cli`.

fn main() -> std::process::ExitCode {
    match hearth::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", hearth::cli::report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
