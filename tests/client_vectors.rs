//! The shared vectors (tests/vectors/*.json) through `softmaxd::client`, both
//! dtypes and both encodings, against the real server.

mod client_support;

use client_support::{array, close, number, vectors, Server, TestFloat};
use futures::StreamExt;
use ndarray::ArrayD;
use serde_json::Value;
use softmaxd::client::{Client, ClientError, ClientOptions, Encoding, Params, Source, Target};
use softmaxd::proto::v1::{BackwardRequest, CrossEntropyRequest, Tensor};
use std::collections::BTreeMap;
use std::time::Duration;

type Outputs<T> = BTreeMap<String, Vec<ArrayD<T>>>;

fn params(case: &Value) -> Params {
    Params {
        temperature: case.get("temperature").map(|t| number(t) as f32),
        log: case["log"].as_bool().unwrap_or(false),
    }
}

/// A proto tensor straight from JSON, in its own dtype: for requests that the
/// typed API rules out (mixed dtypes, two sources).
fn wire_tensor(t: &Value, dtype: &str) -> Tensor {
    let shape = client_support::shape(t).iter().map(|&d| d as u32).collect();
    let vals = client_support::values(t);
    match t.get("dtype").and_then(Value::as_str).unwrap_or(dtype) {
        "f32" => Tensor {
            shape,
            f32: vals.iter().map(|&v| v as f32).collect(),
            ..Tensor::default()
        },
        _ => Tensor {
            shape,
            f64: vals,
            ..Tensor::default()
        },
    }
}

/// Cases the typed API cannot express go through the generated client.
async fn run_wire(client: &Client, case: &Value, dtype: &str) -> Result<(), ClientError> {
    let ins = &case["inputs"];
    let t = |name: &str| ins.get(name).map(|v| wire_tensor(v, dtype));
    let p = params(case);
    match case["rpc"].as_str().unwrap() {
        "backward" => {
            let msg = BackwardRequest {
                output: t("output"),
                logits: t("logits"),
                grad_output: t("grad_output"),
                temperature: p.temperature,
                log: p.log,
            };
            client.raw().backward(client.request(msg)?).await?;
        }
        "cross_entropy" => {
            let labels = ins.get("labels").map(|l| {
                l.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
            });
            let msg = CrossEntropyRequest {
                logits: t("logits"),
                labels: labels.map(Iterator::collect).unwrap_or_default(),
                target: t("target"),
                temperature: p.temperature,
            };
            client.raw().cross_entropy(client.request(msg)?).await?;
        }
        other => panic!("no wire path for {other}"),
    }
    Ok(())
}

fn needs_wire(case: &Value) -> bool {
    let ins = case["inputs"].as_object().unwrap();
    let typed_override = ins.values().any(|v| v.get("dtype").is_some());
    let has = |k: &str| ins.contains_key(k);
    typed_override
        || (case["rpc"] == "backward" && has("output") == has("logits"))
        || (case["rpc"] == "cross_entropy" && has("labels") == has("target"))
}

async fn run<T: TestFloat>(client: &Client, case: &Value) -> Result<Outputs<T>, ClientError> {
    let ins = &case["inputs"];
    let a = |name: &str| ins.get(name).map(array::<T>);
    let p = params(case);
    let one = |name: &str, v: ArrayD<T>| BTreeMap::from([(name.to_string(), vec![v])]);
    let source = |x: Option<ArrayD<T>>, s: Option<ArrayD<T>>| (x, s);
    Ok(match case["rpc"].as_str().unwrap() {
        "forward" => one(
            "output",
            client.forward(a("logits").unwrap().view(), p).await?,
        ),
        "backward" => {
            let g = a("grad_output").unwrap();
            let out = match source(a("logits"), a("output")) {
                (Some(x), _) => {
                    client
                        .backward(Source::Logits(x.view()), g.view(), p)
                        .await?
                }
                (_, Some(s)) => {
                    client
                        .backward(Source::Output(s.view()), g.view(), p)
                        .await?
                }
                _ => unreachable!(),
            };
            one("grad_logits", out)
        }
        rpc @ ("jacobian" | "jacobian_stream") => {
            let stream = case
                .get("stream")
                .and_then(Value::as_bool)
                .unwrap_or(rpc == "jacobian_stream");
            let out = match source(a("logits"), a("output")) {
                (Some(x), _) => {
                    client
                        .jacobian_with(Source::Logits(x.view()), p, Some(stream))
                        .await?
                }
                (_, Some(s)) => {
                    client
                        .jacobian_with(Source::Output(s.view()), p, Some(stream))
                        .await?
                }
                _ => unreachable!(),
            };
            one("jacobian", out)
        }
        "cross_entropy" => {
            let x = a("logits").unwrap();
            let res = match (ins.get("labels"), a("target")) {
                (Some(l), _) => {
                    let labels: Vec<u32> = l
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap() as u32)
                        .collect();
                    client
                        .cross_entropy(x.view(), Target::Labels(&labels), p.temperature)
                        .await?
                }
                (_, Some(y)) => {
                    client
                        .cross_entropy(x.view(), Target::Distribution(y.view()), p.temperature)
                        .await?
                }
                _ => unreachable!(),
            };
            BTreeMap::from([
                ("loss".into(), vec![res.loss]),
                ("grad_logits".into(), vec![res.grad_logits]),
            ])
        }
        "forward_stream" => {
            let msgs: Vec<ArrayD<T>> = ins["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(array::<T>)
                .collect();
            let mut outs = Vec::new();
            let mut stream = Box::pin(
                client
                    .forward_stream(futures::stream::iter(msgs), p)
                    .await?,
            );
            while let Some(o) = stream.next().await {
                outs.push(o?);
            }
            BTreeMap::from([("outputs".into(), outs)])
        }
        other => panic!("unknown rpc {other}"),
    })
}

async fn check_case<T: TestFloat>(
    client: &Client,
    case: &Value,
    tol: &Value,
) -> Result<(), String> {
    let name = case["name"].as_str().unwrap();
    if let Some(code) = case.get("error").and_then(Value::as_str) {
        let result = if needs_wire(case) {
            run_wire(client, case, T::DTYPE).await.map(|_| ())
        } else {
            run::<T>(client, case).await.map(|_| ())
        };
        let err = match result {
            Ok(()) => return Err(format!("{name}: succeeded, want {code}")),
            Err(e) => e,
        };
        if format!("{:?}", err.code()).to_uppercase().replace('_', "") != code.replace('_', "") {
            return Err(format!("{name}: got {err}, want {code}"));
        }
        for word in case
            .get("message_contains")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let word = word.as_str().unwrap();
            if !err.message().contains(word) {
                return Err(format!("{name}: {word:?} not in {:?}", err.message()));
            }
        }
        return Ok(());
    }
    let got = run::<T>(client, case)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    for (field, want) in case["expect"].as_object().unwrap() {
        let wants: Vec<&Value> = match want.as_array() {
            Some(list) => list.iter().collect(),
            None => vec![want],
        };
        let gots = got
            .get(field.as_str())
            .ok_or_else(|| format!("{name}: no {field}"))?;
        if gots.len() != wants.len() {
            return Err(format!(
                "{name}: {} {field}, want {}",
                gots.len(),
                wants.len()
            ));
        }
        for (g, w) in gots.iter().zip(wants) {
            close(g, w, tol).map_err(|e| format!("{name} {field} {}: {e}", T::DTYPE))?;
        }
    }
    Ok(())
}

async fn run_file(name: &str) {
    let server = Server::start().await;
    let doc = vectors(name);
    let mut failures = Vec::new();
    let mut ran = 0;
    for encoding in [Encoding::Raw, Encoding::Typed] {
        let options = ClientOptions {
            encoding,
            timeout: Some(Duration::from_secs(300)),
            ..ClientOptions::default()
        };
        let client = server.client_with(options).await;
        for case in doc["cases"].as_array().unwrap() {
            for dtype in case["dtypes"].as_array().unwrap() {
                let result = match dtype.as_str().unwrap() {
                    "f32" => check_case::<f32>(&client, case, &doc["tolerance"]["f32"]).await,
                    _ => check_case::<f64>(&client, case, &doc["tolerance"]["f64"]).await,
                };
                ran += 1;
                if let Err(e) = result {
                    failures.push(format!("{encoding:?}: {e}"));
                }
            }
        }
    }
    assert!(ran > 0);
    assert!(
        failures.is_empty(),
        "{} of {ran} vector runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn forward_vectors() {
    run_file("forward").await;
}

#[tokio::test]
async fn backward_vectors() {
    run_file("backward").await;
}

#[tokio::test]
async fn jacobian_vectors() {
    run_file("jacobian").await;
}

#[tokio::test]
async fn cross_entropy_vectors() {
    run_file("cross_entropy").await;
}

#[tokio::test]
async fn forward_stream_vectors() {
    run_file("forward_stream").await;
}

#[tokio::test]
async fn error_vectors() {
    run_file("errors").await;
}
