//! The HTTP client: building a request, and a keep-alive loopback round trip
//! to a minimal HTTP/1.1 server on the shared runtime.

use bytes::Bytes;
use criterion::Criterion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use _core::http::{build_request, HttpClient, HttpConfig, ReplyBody};
use _core::runtime;

const BODY: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const REPLY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";

/// A server answering every request (one read = one request here) with `REPLY`.
async fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 || sock.write_all(REPLY).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    format!("http://{addr}/v1/chat/completions")
}

pub fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("http");
    let headers: [(&[u8], &[u8]); 3] = [
        (b"authorization", b"Bearer sk-test"),
        (b"content-type", b"application/json"),
        (b"accept", b"*/*"),
    ];
    g.bench_function("build_request", |b| {
        b.iter(|| {
            build_request(
                "POST",
                "http://127.0.0.1:8000/v1/chat/completions",
                headers,
                Bytes::from_static(BODY),
            )
            .unwrap()
        })
    });
    let rt = runtime::handle().unwrap();
    let url = rt.block_on(serve());
    let client = HttpClient::new(HttpConfig::default());
    g.bench_function("loopback_round_trip", |b| {
        b.iter(|| {
            let req = build_request("POST", &url, headers, Bytes::from_static(BODY)).unwrap();
            let reply = rt.block_on(client.send(req, None)).unwrap();
            assert!(matches!(reply.body, ReplyBody::Full(ref b) if b.len() == 2));
        })
    });
    g.finish();
}
