//! The `kmsentry` binary: parse arguments, run the library, print the error chain, exit with
//! the status the outcome maps to (0 clean, 1 drift, 2 usage/policy, 3 integrity).

fn main() -> std::process::ExitCode {
    match kmsentry::cli::run() {
        Ok(code) => std::process::ExitCode::from(code.code()),
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            for line in msg.lines() {
                eprintln!("kmsentry: error: {line}");
            }
            std::process::ExitCode::from(e.exit_code().code())
        }
    }
}
