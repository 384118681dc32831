//! Times kernel operations and prints one JSON object per case (ns per
//! element, median of repeats), for `bench/compare.py`.
//!
//! Usage: `kernel_bench [CASE...]` where a case is `op:dtype:ROWSxK[:pool]`,
//! op ∈ forward, forward_masked, log_softmax, backward, jacobian, cross_entropy, memcpy,
//! memset; dtype ∈ f32, f64. Without arguments, the issue-3 shapes.

use ndarray::{Array1, Array2, Array3};
use softmaxd::kernel::{self, Element, Exec, Form, Screened, Target};
use std::hint::black_box;
use std::time::{Duration, Instant};

const DEFAULT: &[&str] = &[
    "memcpy:f32:64x1000",
    "forward:f32:64x1000",
    "memcpy:f32:1024x1024",
    "forward:f32:1024x1024",
    "log_softmax:f32:1024x1024",
    "backward:f32:1024x1024",
    "cross_entropy:f32:1024x1024",
    "memcpy:f32:4096x4096",
    "forward:f32:4096x4096",
    "forward:f32:4096x4096:pool",
    "memcpy:f64:1024x1024",
    "forward:f64:1024x1024",
    "memset:f32:16000x1000",
    "jacobian:f32:16x1000",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cases: Vec<String> = if args.is_empty() {
        DEFAULT.iter().map(|s| s.to_string()).collect()
    } else {
        args
    };
    for case in &cases {
        match run_case(case) {
            Some(ns) => println!("{{\"case\": \"{case}\", \"ns_per_element\": {ns:.5}}}"),
            None => eprintln!("bad case {case:?} (want op:dtype:ROWSxK[:pool])"),
        }
    }
}

fn run_case(case: &str) -> Option<f64> {
    let mut parts = case.split(':');
    let op = parts.next()?;
    let dtype = parts.next()?;
    let (rows, k) = parts.next()?.split_once('x')?;
    let (rows, k): (usize, usize) = (rows.parse().ok()?, k.parse().ok()?);
    let exec = if parts.next() == Some("pool") {
        Exec::Pool
    } else {
        Exec::Inline
    };
    match dtype {
        "f32" => time_op::<f32>(op, rows, k, exec),
        "f64" => time_op::<f64>(op, rows, k, exec),
        _ => None,
    }
}

fn logits<F: Element>(rows: usize, k: usize) -> Array2<F> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    Array2::from_shape_simple_fn((rows, k), || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        F::of(((state >> 40) as f64 / (1u64 << 24) as f64) * 16.0 - 8.0)
    })
}

/// Best ns per element of `f` over short repeats filling about a second:
/// on a shared machine the fastest sample is the one least disturbed by
/// other processes (criterion, in `benches/`, reports the full spread).
fn measure(elements: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    f();
    let once = start.elapsed().max(Duration::from_nanos(100));
    let inner = (Duration::from_millis(5).as_nanos() / once.as_nanos()).max(1) as usize;
    let mut best = f64::INFINITY;
    let budget = Instant::now();
    let mut samples = 0;
    while samples < 5 || (budget.elapsed() < Duration::from_secs(1) && samples < 1000) {
        let t = Instant::now();
        for _ in 0..inner {
            f();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / (inner * elements) as f64);
        samples += 1;
    }
    best
}

fn time_op<F: Element>(op: &str, rows: usize, k: usize, exec: Exec) -> Option<f64> {
    let n = rows * k;
    let x = logits::<F>(rows, k);
    let mut out = Array2::<F>::zeros((rows, k));
    let ns = match op {
        "memcpy" => {
            let src = vec![F::one(); n];
            let mut dst = vec![F::zero(); n];
            measure(n, || dst.copy_from_slice(black_box(&src)))
        }
        "memset" => {
            let mut dst = vec![F::zero(); n];
            measure(n, || dst.fill(black_box(F::one())))
        }
        "forward" | "log_softmax" => {
            let form = if op == "forward" {
                Form::Probs
            } else {
                Form::LogProbs
            };
            measure(n, || {
                let _ = kernel::forward(black_box(x.view()), out.view_mut(), F::one(), form, exec);
            })
        }
        // Causal-attention style: row r keeps its first r·k/rows + 1 logits
        // and masks the rest with -inf (half the values overall).
        "forward_masked" => {
            let mut x = x;
            for (r, mut row) in x.rows_mut().into_iter().enumerate() {
                let keep = r * k / rows + 1;
                row.iter_mut()
                    .skip(keep)
                    .for_each(|v| *v = F::neg_infinity());
            }
            measure(n, || {
                let _ = kernel::forward(
                    black_box(x.view()),
                    out.view_mut(),
                    F::one(),
                    Form::Probs,
                    exec,
                );
            })
        }
        "backward" => {
            let mut s = Array2::<F>::zeros((rows, k));
            let screened = kernel::forward(x.view(), s.view_mut(), F::one(), Form::Probs, exec);
            if screened.ok()? != Screened::Clean {
                return None;
            }
            let g = logits::<F>(rows, k);
            measure(n, || {
                let _ = kernel::backward(
                    s.view(),
                    g.view(),
                    out.view_mut(),
                    F::one(),
                    Form::Probs,
                    exec,
                );
            })
        }
        "cross_entropy" => {
            let labels: Vec<u32> = (0..rows).map(|r| (r * 7 % k) as u32).collect();
            let mut loss = Array1::<F>::zeros(rows);
            measure(n, || {
                let _ = kernel::cross_entropy(
                    x.view(),
                    Target::Labels(&labels),
                    loss.view_mut(),
                    out.view_mut(),
                    F::one(),
                    exec,
                );
            })
        }
        "jacobian" => {
            let mut s = Array2::<F>::zeros((rows, k));
            let screened = kernel::forward(x.view(), s.view_mut(), F::one(), Form::Probs, exec);
            if screened.ok()? != Screened::Clean {
                return None;
            }
            let mut j = Array3::<F>::zeros((rows, k, k));
            // Per output value: the Jacobian writes k² of them per row.
            measure(rows * k * k, || {
                let _ = kernel::jacobian(s.view(), j.view_mut(), F::one(), Form::Probs, exec);
            })
        }
        // Single row operations, to see where time goes.
        "row_max" => {
            let x = x.as_slice()?;
            measure(n, || {
                black_box(F::row_max(black_box(x)));
            })
        }
        "row_exp" => {
            let x = x.as_slice()?;
            let o = out.as_slice_mut()?;
            measure(n, || {
                black_box(F::exp_shifted(black_box(x), F::one(), F::one(), o));
            })
        }
        "row_sum_exp" => {
            let x = x.as_slice()?;
            measure(n, || {
                black_box(F::sum_exp_shifted(black_box(x), F::one(), F::one()));
            })
        }
        "row_dot" => {
            let x = x.as_slice()?;
            let o = out.as_slice()?;
            measure(n, || {
                black_box(F::dot(black_box(x), o));
            })
        }
        _ => return None,
    };
    Some(ns)
}
