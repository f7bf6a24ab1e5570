//! What the black-box tests share: a real server on 127.0.0.1:0 and a guard for steps that
//! would otherwise hang a broken test. (Each test file uses what it needs.)
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use switchboard::config::Config;
use switchboard::server::Parts;
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub struct Server {
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts the service on loopback ports the OS picks.
    pub async fn start(config: Config, parts: Parts) -> Server {
        // `RUST_LOG=switchboard=debug cargo test ...` shows the service's logs.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, metrics_addr) = (grpc.local_addr().unwrap(), metrics.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            switchboard::server::run_with(config, grpc, metrics, shutdown, parts)
                .await
                .expect("server runs and stops cleanly");
        });
        Server {
            grpc: grpc_addr,
            metrics: metrics_addr,
            stop,
            task,
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .expect("connects to the test server")
    }

    /// Stops the server and waits until it has (cleanly: `run_with` returned Ok).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        guard(self.task).await.unwrap();
    }
}

/// Bounds a step that would otherwise hang a broken test forever. Not a timing assertion.
pub async fn guard<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("step did not finish within the test guard")
}

/// A plain HTTP/1.1 GET, enough to scrape /metrics without an HTTP client dependency; the
/// answer must be 200.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let out = http_answer(addr, path).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// A plain HTTP/1.1 GET: the whole answer (status line, headers, body), whatever its status.
pub async fn http_answer(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Scrapes `/metrics` until every family in `families` is there (bounded by the guard; then
/// it names the missing ones).
pub async fn scrape_until(addr: SocketAddr, families: &[&str]) -> String {
    let missing = std::sync::Mutex::new(Vec::new());
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let body = http_get(addr, "/metrics").await;
            let absent: Vec<&str> = families
                .iter()
                .copied()
                .filter(|f| !body.contains(&format!("# TYPE {f}")))
                .collect();
            if absent.is_empty() {
                return body;
            }
            *missing.lock().unwrap() = absent;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("families never exported: {:?}", missing.lock().unwrap()))
}
