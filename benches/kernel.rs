//! Criterion benchmarks of every kernel operation at the issue-3 shapes, in
//! elements per second, with memcpy and memset baselines measured in the
//! same run, and the Inline-vs-Pool crossover.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{Array1, Array2, Array3};
use softmaxd::kernel::{self, Element, Exec, Form, Target};
use std::hint::black_box;

/// Deterministic logits in [-8, 8): a cheap LCG, no RNG dependency.
fn logits<F: Element>(rows: usize, k: usize) -> Array2<F> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    Array2::from_shape_simple_fn((rows, k), || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        F::of(((state >> 40) as f64 / (1u64 << 24) as f64) * 16.0 - 8.0)
    })
}

fn elements(rows: usize, k: usize) -> Throughput {
    Throughput::Elements((rows * k) as u64)
}

/// Copy and fill of `n` values: the ceilings for read+write and write-only
/// kernels.
fn baselines<F: Element>(c: &mut Criterion, name: &str, sizes: &[usize]) {
    let mut g = c.benchmark_group(format!("memcpy_{name}"));
    for &n in sizes {
        let src = vec![F::one(); n];
        let mut dst = vec![F::zero(); n];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| dst.copy_from_slice(black_box(&src)))
        });
    }
    g.finish();
    let mut g = c.benchmark_group(format!("memset_{name}"));
    for &n in sizes {
        let mut dst = vec![F::zero(); n];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| dst.fill(black_box(F::one())))
        });
    }
    g.finish();
}

fn forward<F: Element>(c: &mut Criterion, name: &str, shapes: &[(usize, usize, Exec)], form: Form) {
    let mut g = c.benchmark_group(name);
    for &(rows, k, exec) in shapes {
        let x = logits::<F>(rows, k);
        let mut out = Array2::<F>::zeros((rows, k));
        g.throughput(elements(rows, k));
        g.bench_function(format!("{rows}x{k}/{exec:?}"), |b| {
            b.iter(|| kernel::forward(black_box(x.view()), out.view_mut(), F::one(), form, exec))
        });
    }
    g.finish();
}

fn backward(c: &mut Criterion) {
    let mut g = c.benchmark_group("backward_f32");
    for (rows, k, exec) in [(1024, 1024, Exec::Inline), (4096, 4096, Exec::Pool)] {
        let x = logits::<f32>(rows, k);
        let mut s = Array2::<f32>::zeros((rows, k));
        let mut ls = Array2::<f32>::zeros((rows, k));
        let _ = kernel::forward(x.view(), s.view_mut(), 1.0, Form::Probs, Exec::Inline);
        let _ = kernel::forward(x.view(), ls.view_mut(), 1.0, Form::LogProbs, Exec::Inline);
        let grad = logits::<f32>(rows, k) * 0.1;
        let mut out = Array2::<f32>::zeros((rows, k));
        g.throughput(elements(rows, k));
        g.bench_function(format!("from_s/{rows}x{k}/{exec:?}"), |b| {
            b.iter(|| {
                kernel::backward(
                    s.view(),
                    grad.view(),
                    out.view_mut(),
                    1.0,
                    Form::Probs,
                    exec,
                )
            })
        });
        g.bench_function(format!("from_log_s/{rows}x{k}/{exec:?}"), |b| {
            b.iter(|| {
                kernel::backward(
                    ls.view(),
                    grad.view(),
                    out.view_mut(),
                    1.0,
                    Form::LogProbs,
                    exec,
                )
            })
        });
        g.bench_function(format!("from_logits/{rows}x{k}/{exec:?}"), |b| {
            b.iter(|| {
                kernel::backward_from_logits(
                    x.view(),
                    grad.view(),
                    out.view_mut(),
                    1.0,
                    Form::Probs,
                    exec,
                )
            })
        });
    }
    g.finish();
}

fn jacobian(c: &mut Criterion) {
    let mut g = c.benchmark_group("jacobian_f32");
    let (rows, k) = (16, 1000);
    let x = logits::<f32>(rows, k);
    let mut s = Array2::<f32>::zeros((rows, k));
    let _ = kernel::forward(x.view(), s.view_mut(), 1.0, Form::Probs, Exec::Inline);
    let mut out = Array3::<f32>::zeros((rows, k, k));
    // Throughput in output values: the Jacobian is write-bound.
    g.throughput(Throughput::Elements((rows * k * k) as u64));
    for exec in [Exec::Inline, Exec::Pool] {
        g.bench_function(format!("from_s/{rows}x{k}/{exec:?}"), |b| {
            b.iter(|| kernel::jacobian(s.view(), out.view_mut(), 1.0, Form::Probs, exec))
        });
    }
    g.bench_function(format!("from_logits/{rows}x{k}/Inline"), |b| {
        b.iter(|| {
            kernel::jacobian_from_logits(x.view(), out.view_mut(), 1.0, Form::Probs, Exec::Inline)
        })
    });
    g.finish();
}

fn cross_entropy(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_entropy_f32");
    let (rows, k) = (1024, 1024);
    let x = logits::<f32>(rows, k);
    let labels: Vec<u32> = (0..rows as u32).map(|r| (r * 7) % k as u32).collect();
    let mut y = Array2::<f32>::zeros((rows, k));
    let _ = kernel::forward(x.view(), y.view_mut(), 0.5, Form::Probs, Exec::Inline);
    let mut loss = Array1::<f32>::zeros(rows);
    let mut grad = Array2::<f32>::zeros((rows, k));
    g.throughput(elements(rows, k));
    g.bench_function(format!("labels/{rows}x{k}"), |b| {
        b.iter(|| {
            kernel::cross_entropy(
                x.view(),
                Target::Labels(&labels),
                loss.view_mut(),
                grad.view_mut(),
                1.0,
                Exec::Inline,
            )
        })
    });
    g.bench_function(format!("dist/{rows}x{k}"), |b| {
        b.iter(|| {
            kernel::cross_entropy(
                x.view(),
                Target::Dist(y.view()),
                loss.view_mut(),
                grad.view_mut(),
                1.0,
                Exec::Inline,
            )
        })
    });
    g.finish();
}

/// Forward f32 at growing request sizes, Inline against Pool: where Pool
/// starts winning is the service's parallel threshold.
fn crossover(c: &mut Criterion) {
    let mut g = c.benchmark_group("crossover_f32");
    for (rows, k) in [
        (2, 1000),
        (4, 1000),
        (8, 1000),
        (16, 1000),
        (32, 1000),
        (64, 1000),
        (128, 1000),
        (64, 64),
        (256, 64),
        (1024, 64),
    ] {
        let x = logits::<f32>(rows, k);
        let mut out = Array2::<f32>::zeros((rows, k));
        g.throughput(elements(rows, k));
        for exec in [Exec::Inline, Exec::Pool] {
            g.bench_function(format!("{rows}x{k}/{exec:?}"), |b| {
                b.iter(|| {
                    kernel::forward(black_box(x.view()), out.view_mut(), 1.0, Form::Probs, exec)
                })
            });
        }
    }
    g.finish();
}

/// The service's scan for NaN and ±inf, run before every kernel call: in
/// cache ([64,1000]) and from memory ([4096,4096]).
fn finite_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("all_finite_f32");
    for (rows, k) in [(64, 1000), (4096, 4096)] {
        let x = logits::<f32>(rows, k);
        let x = x.as_slice().unwrap_or_default();
        g.throughput(elements(rows, k));
        for neg_inf_ok in [false, true] {
            let masks = if neg_inf_ok {
                "masks_ok"
            } else {
                "finite_only"
            };
            g.bench_function(format!("{rows}x{k}/{masks}"), |b| {
                b.iter(|| f32::all_finite(black_box(x), neg_inf_ok))
            });
        }
    }
    g.finish();
}

fn all(c: &mut Criterion) {
    baselines::<f32>(
        c,
        "f32",
        &[64 * 1000, 1024 * 1024, 4096 * 4096, 16 * 1000 * 1000],
    );
    baselines::<f64>(c, "f64", &[1024 * 1024]);
    let f32_shapes = [
        (64, 1000, Exec::Inline),
        (1024, 1024, Exec::Inline),
        (4096, 4096, Exec::Inline),
        (1024, 1024, Exec::Pool),
        (4096, 4096, Exec::Pool),
    ];
    forward::<f32>(c, "forward_f32", &f32_shapes, Form::Probs);
    forward::<f32>(
        c,
        "log_softmax_f32",
        &[(1024, 1024, Exec::Inline), (4096, 4096, Exec::Pool)],
        Form::LogProbs,
    );
    forward::<f64>(
        c,
        "forward_f64",
        &[(1024, 1024, Exec::Inline), (1024, 1024, Exec::Pool)],
        Form::Probs,
    );
    forward::<f64>(
        c,
        "log_softmax_f64",
        &[(1024, 1024, Exec::Inline)],
        Form::LogProbs,
    );
    finite_check(c);
    backward(c);
    jacobian(c);
    cross_entropy(c);
    crossover(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
