//! The `softmaxd-bench` binary: parse flags, start in-process servers if
//! asked, run the load and print the report.
// Unsafe only in `keep_freed_memory`: one libc call, documented there.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use clap::Parser;
use softmaxd::bench::{self, in_process, BenchArgs, Target};
use std::process::ExitCode;

/// Makes glibc's malloc keep the memory the load frees instead of handing
/// it back to the kernel.
///
/// Each call allocates a request-sized encode buffer and an answer-sized
/// decode buffer (tonic's, one per call) and frees both when it ends. By
/// default glibc moves its mmap threshold with the process's history and
/// trims its heaps past a threshold that moves with it, so some of these
/// blocks go back to the kernel and come back as fresh pages. At
/// concurrency 16 the tool then took 40-110 page faults per call on
/// Backward [64,1000] and Forward [64,1000] typed, was the bottleneck of
/// the run, and measured its own allocator instead of the server. Fixed
/// thresholds (32 MiB, glibc's largest mmap threshold, and 1 GiB) take
/// that to under one fault per call. The same as
/// `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...:glibc.malloc.trim_threshold=...`,
/// which only works when set before the process starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_memory() {
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    const TRIM_THRESHOLD: libc::c_int = 1 << 30;
    // SAFETY: mallopt only sets malloc parameters. It takes glibc's malloc
    // lock itself, and it runs here before any other thread exists. Values
    // out of range make it return 0 and change nothing, which is harmless:
    // the tool then runs with glibc's defaults.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    keep_freed_memory();
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
