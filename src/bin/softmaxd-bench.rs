//! The `softmaxd-bench` binary: parse flags, start in-process servers if
//! asked, run the load and print the report.
#![forbid(unsafe_code)]

use clap::Parser;
use softmaxd::bench::{self, in_process, BenchArgs, Target};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    // Started before the load's runtime: their runtime must not nest in it.
    let servers = if args.in_process {
        match in_process::start(usize::from(args.server_threads)) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("softmaxd-bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let (target, echo) = match &servers {
        Some(s) => (
            Target {
                label: "softmaxd".into(),
                addr: s.softmaxd.to_string(),
            },
            Some(Target {
                label: "echo".into(),
                addr: s.echo.to_string(),
            }),
        ),
        None => (
            Target {
                label: args.addr.clone(),
                addr: args.addr.clone(),
            },
            args.compare_echo.as_ref().map(|a| Target {
                label: format!("echo {a}"),
                addr: a.clone(),
            }),
        ),
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        runtime.worker_threads(usize::from(n));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("softmaxd-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(bench::execute(&args, &target, echo.as_ref()));
    drop(runtime);
    drop(servers);
    match result {
        Ok(output) => {
            if args.json {
                match serde_json::to_string_pretty(&output) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("softmaxd-bench: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", output.text());
            }
            // Failed calls are reported above; the exit code tells scripts.
            if output.failed() > 0 {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("softmaxd-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
