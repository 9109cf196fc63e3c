//! Tests of the HTTP client against tiny loopback servers written here.

use std::sync::mpsc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::body::Chunk;
use super::*;

/// Read one request head (and a Content-Length body); `None` at EOF.
async fn read_request(sock: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            let mut body = buf[end + 4..].to_vec();
            while body.len() < len {
                let n = sock.read(&mut tmp).await.ok()?;
                body.extend_from_slice(&tmp[..n]);
            }
            return Some((head, body));
        }
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// A server that runs `answer` on each connection; returns its base URL.
async fn serve<F, Fut>(answer: F) -> String
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(answer(sock));
        }
    });
    format!("http://{addr}")
}

fn get(url: &str) -> Request<Full<Bytes>> {
    build_request("GET", url, [], Bytes::new()).unwrap()
}

fn rt() -> tokio::runtime::Handle {
    runtime::handle().unwrap()
}

#[test]
fn post_echoes_body_and_headers_on_a_kept_alive_connection() {
    rt().block_on(async {
        let base = serve(|mut sock| async move {
            while let Some((head, body)) = read_request(&mut sock).await {
                let tag = if head.to_ascii_lowercase().contains("x-tag: a\r\nx-tag: b") {
                    "both"
                } else {
                    "missing"
                };
                let reply = format!(
                    "HTTP/1.1 201 Created\r\nContent-Length: {}\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Tag: {tag}\r\n\r\n",
                    body.len()
                );
                sock.write_all(reply.as_bytes()).await.unwrap();
                sock.write_all(&body).await.unwrap();
            }
        })
        .await;
        let client = HttpClient::new(HttpConfig::default());
        for i in 0..3 {
            let payload = Bytes::from(format!("hello {i}"));
            let headers: [(&[u8], &[u8]); 2] = [(b"x-tag", b"a"), (b"X-Tag", b"b")];
            let req = build_request("POST", &format!("{base}/v1"), headers, payload.clone()).unwrap();
            let reply = client.send(req, Some(Duration::from_secs(5))).await.unwrap();
            assert_eq!(reply.status, 201);
            assert_eq!(reply.version, Version::HTTP_11);
            assert_eq!(reply.headers.get_all("set-cookie").iter().count(), 2);
            assert_eq!(reply.headers["x-tag"], "both");
            match reply.body {
                ReplyBody::Full(b) => assert_eq!(b, payload),
                ReplyBody::Stream(_) => panic!("small body should be read whole"),
            }
        }
    });
}

#[test]
fn chunked_body_streams_in_coalesced_pieces() {
    let base = rt().block_on(serve(|mut sock| async move {
        read_request(&mut sock).await.unwrap();
        sock.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let mut wire = Vec::new();
        for _ in 0..100 {
            wire.extend_from_slice(b"5\r\nline\n\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        sock.write_all(&wire).await.unwrap();
    }));
    let client = HttpClient::new(HttpConfig::default());
    let reply = rt().block_on(client.send(get(&base), None)).unwrap();
    let ReplyBody::Stream(stream) = reply.body else {
        panic!("chunked body should stream")
    };
    // A reader slower than the network finds everything in one piece.
    for _ in 0..5000 {
        if stream.buffered() == 500 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut total = Vec::new();
    let mut reads = 0;
    for _ in 0..1000 {
        let (tx, rx) = mpsc::channel::<Chunk>();
        let chunk = match stream.next_or_wait(64 * 1024, Box::new(move |c| tx.send(c).unwrap())) {
            Some(c) => c,
            None => rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        }
        .unwrap();
        if chunk.is_empty() {
            break;
        }
        reads += 1;
        total.extend_from_slice(&chunk);
    }
    assert_eq!(total.len(), 500);
    assert_eq!(reads, 1, "{reads} reads for 100 chunks");
}

#[test]
fn refused_connection_is_a_connect_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = HttpClient::new(HttpConfig::default());
    let url = format!("http://127.0.0.1:{port}/");
    let err = rt().block_on(client.send(get(&url), None)).err().unwrap();
    assert_eq!(err.kind, HttpErrorKind::Connect, "{err}");
}

#[test]
fn silent_server_times_out_and_reset_is_a_read_error() {
    let hang = rt().block_on(serve(|mut sock| async move {
        read_request(&mut sock).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    }));
    let client = HttpClient::new(HttpConfig::default());
    let err = rt()
        .block_on(client.send(get(&hang), Some(Duration::from_millis(100))))
        .err()
        .unwrap();
    assert_eq!(err.kind, HttpErrorKind::ReadTimeout);

    let cut = rt().block_on(serve(|mut sock| async move {
        read_request(&mut sock).await;
        sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            .await
            .unwrap();
        // Closing with unread data would reset; a short body is enough here.
    }));
    let err = rt().block_on(client.send(get(&cut), None)).err().unwrap();
    assert!(
        matches!(err.kind, HttpErrorKind::Protocol | HttpErrorKind::Read),
        "{err}"
    );
}

#[test]
fn aborted_request_reports_once_and_bad_input_is_named() {
    let hang = rt().block_on(serve(|mut sock| async move {
        read_request(&mut sock).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    }));
    let client = HttpClient::new(HttpConfig::default());
    let (tx, rx) = mpsc::channel();
    let handle = client
        .spawn(get(&hang), None, move |r| {
            tx.send(r.err().unwrap().kind).unwrap()
        })
        .unwrap();
    handle.abort();
    let kind = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(kind, HttpErrorKind::Internal);

    let e = build_request("GET", "ftp://x/", [], Bytes::new()).unwrap_err();
    assert_eq!(e.kind, HttpErrorKind::UnsupportedProtocol);
    let e = build_request(
        "GET",
        "http://x/",
        [(&b"bad name"[..], &b"v"[..])],
        Bytes::new(),
    )
    .unwrap_err();
    assert!(e.message.starts_with("header name"), "{e}");
    let e = build_request("G ET", "http://x/", [], Bytes::new()).unwrap_err();
    assert!(e.message.starts_with("method"), "{e}");
    assert!(HttpConfig::new(0.0, 1.0, 1, true).is_err());
    assert!(HttpConfig::new(1.0, f64::NAN, 1, true).is_err());
}
