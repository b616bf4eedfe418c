//! Simulated Envoys for pepctl's xDS server: each holds its own connection and ECDS stream,
//! subscribes to the filter configuration and answers every response as Envoy does, with an
//! ACK (or, for the last `--refusing`, a NACK; the last `--silent` never answer). Used by
//! tests/pepctl/test_xds_swarm.py to hold 1,000 subscribed Envoys.
//!
//! Prints `ready N` once every stream got its first configuration, then one line per later
//! configuration received by all: `version V received by N in X ms` (from the first stream
//! that got it to the last).

use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_client::ExtensionConfigDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status;
use tokio::sync::{mpsc, Mutex};
use tokio_stream::StreamExt;

const TYPE_URL: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

struct Args {
    address: String,
    envoys: usize,
    silent: usize,
    refusing: usize,
    name: String,
}

fn args() -> Result<Args, String> {
    let mut a = Args { address: String::new(), envoys: 1000, silent: 0, refusing: 0, name: "uma-pep".into() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--address" => a.address = value.clone(),
            "--envoys" => a.envoys = number()?,
            "--silent" => a.silent = number()?,
            "--refusing" => a.refusing = number()?,
            "--name" => a.name = value.clone(),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.address.is_empty() {
        return Err("--address host:port is required".into());
    }
    Ok(a)
}

#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Ack,
    Nack,
    Never,
}

/// One received configuration: which stream, which version, when.
type Received = (usize, String, Instant);

async fn envoy(
    index: usize,
    args: Arc<Args>,
    answer: Answer,
    seen: mpsc::UnboundedSender<Received>,
) -> Result<(), String> {
    let mut client = ExtensionConfigDiscoveryServiceClient::connect(format!("http://{}", args.address))
        .await
        .map_err(|e| format!("envoy {index}: {e}"))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let first = DiscoveryRequest {
        node: Some(Node { id: format!("sim-{index:04}"), cluster: "swarm".into(), ..Default::default() }),
        resource_names: vec![args.name.clone()],
        type_url: TYPE_URL.into(),
        ..Default::default()
    };
    tx.send(first).map_err(|e| e.to_string())?;
    let mut responses = client
        .stream_extension_configs(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .map_err(|e| format!("envoy {index}: {e}"))?
        .into_inner();
    while let Some(response) = responses.next().await {
        let response = response.map_err(|e| format!("envoy {index}: {e}"))?;
        let _ = seen.send((index, response.version_info.clone(), Instant::now()));
        let reply = match answer {
            Answer::Never => continue,
            Answer::Ack => DiscoveryRequest {
                version_info: response.version_info,
                response_nonce: response.nonce,
                type_url: TYPE_URL.into(),
                resource_names: vec![args.name.clone()],
                ..Default::default()
            },
            Answer::Nack => DiscoveryRequest {
                response_nonce: response.nonce,
                type_url: TYPE_URL.into(),
                resource_names: vec![args.name.clone()],
                error_detail: Some(Status { code: 3, message: "simulated refusal".into(), details: vec![] }),
                ..Default::default()
            },
        };
        tx.send(reply).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("xds_swarm: {e}");
            std::process::exit(2);
        }
    };
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<Received>();
    let failures = Arc::new(Mutex::new(0usize));
    for i in 0..args.envoys {
        let answer = if i >= args.envoys - args.silent.min(args.envoys) {
            Answer::Never
        } else if i >= args.envoys - (args.silent + args.refusing).min(args.envoys) {
            Answer::Nack
        } else {
            Answer::Ack
        };
        let (args, seen_tx, failures) = (args.clone(), seen_tx.clone(), failures.clone());
        tokio::spawn(async move {
            if let Err(e) = envoy(i, args, answer, seen_tx).await {
                eprintln!("{e}");
                *failures.lock().await += 1;
            }
        });
        // Connections opened at a steady pace, as Envoys starting over some time do.
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    drop(seen_tx);
    // Per version: the streams that got it, the first and last arrival.
    let mut versions: Vec<(String, std::collections::HashSet<usize>, Instant, Instant)> = Vec::new();
    let mut ready = false;
    while let Some((index, version, at)) = seen.recv().await {
        let entry = match versions.iter_mut().position(|v| v.0 == version) {
            Some(p) => &mut versions[p],
            None => {
                versions.push((version.clone(), Default::default(), at, at));
                let last = versions.len() - 1;
                &mut versions[last]
            }
        };
        entry.1.insert(index);
        entry.3 = at;
        if entry.1.len() == args.envoys {
            if !ready {
                ready = true;
                println!("ready {}", args.envoys);
            } else {
                println!(
                    "version {} received by {} in {} ms",
                    entry.0,
                    args.envoys,
                    entry.3.duration_since(entry.2).as_millis()
                );
            }
        }
    }
    eprintln!("xds_swarm: every stream ended ({} failed)", failures.lock().await);
}
