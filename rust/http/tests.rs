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

/// Every event of a framed body, read until the end (or the error).
fn read_events(stream: &body::BodyStream) -> (Vec<sse::Event>, Option<HttpError>) {
    let mut events = Vec::new();
    for _ in 0..10_000 {
        let (tx, rx) = mpsc::channel::<body::Batch>();
        let batch = match stream.next_events_or_wait(2, Box::new(move |b| tx.send(b).unwrap())) {
            Some(b) => b,
            None => rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        };
        match batch {
            Ok(b) if b.is_empty() => return (events, None),
            Ok(b) => {
                assert!(b.len() <= 2, "a batch is capped at the asked count");
                events.extend(b)
            }
            Err(e) => return (events, Some(e)),
        }
    }
    panic!("the stream never ended")
}

#[test]
fn sse_body_is_framed_into_whole_events_across_chunks() {
    let base = rt().block_on(serve(|mut sock| async move {
        read_request(&mut sock).await.unwrap();
        // a Content-Length reply: framed and streamed anyway
        let wire =
            b"data: {\"a\":1}\r\n\r\nevent: x\ndata: 2\n\ndata: 3\n\ndata: [DONE]\n\ndata: cut";
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", wire.len());
        sock.write_all(head.as_bytes()).await.unwrap();
        for piece in wire.chunks(3) {
            sock.write_all(piece).await.unwrap();
            sock.flush().await.unwrap();
        }
    }));
    let client = HttpClient::new(HttpConfig::default());
    let reply = rt()
        .block_on(client.send_framed(get(&base), None, None, sse::Framing::Sse))
        .unwrap();
    let ReplyBody::Stream(stream) = reply.body else {
        panic!("a framed 2xx body always streams")
    };
    let mut out = Vec::new();
    assert!(stream.next_or_wait(10, Box::new(|_| {})).unwrap().is_err());
    let (events, err) = read_events(&stream);
    assert!(err.is_none(), "{err:?}");
    for e in &events {
        out.push((e.event.clone(), e.data.clone()));
    }
    let want: Vec<(&[u8], &[u8])> = vec![
        (b"message", b"{\"a\":1}"),
        (b"x", b"2"),
        (b"message", b"3"),
        (b"message", b"[DONE]"),
    ];
    let got: Vec<(&[u8], &[u8])> = out.iter().map(|(e, d)| (&e[..], &d[..])).collect();
    assert_eq!(got, want, "the partial event at the end is not dispatched");
}

#[test]
fn framed_error_reply_is_read_whole_and_ndjson_cut_is_an_error() {
    let base = rt().block_on(serve(|mut sock| async move {
        let (head, _) = read_request(&mut sock).await.unwrap();
        if head.starts_with("GET /err") {
            let reply = "HTTP/1.1 429 Too Many\r\nContent-Length: 2\r\n\r\n{}";
            sock.write_all(reply.as_bytes()).await.unwrap();
            return;
        }
        sock.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        sock.write_all(b"9\r\n{\"a\":1}\n{\r\n").await.unwrap();
        sock.flush().await.unwrap();
        // closed mid-body, without the last chunk
    }));
    let client = HttpClient::new(HttpConfig::default());
    let framed = |path: &str| {
        rt().block_on(client.send_framed(
            get(&format!("{base}{path}")),
            None,
            None,
            sse::Framing::Ndjson,
        ))
    };
    let reply = framed("/err").unwrap();
    assert_eq!(reply.status, 429);
    assert!(matches!(reply.body, ReplyBody::Full(ref b) if &b[..] == b"{}"));
    let reply = framed("/ok").unwrap();
    let ReplyBody::Stream(stream) = reply.body else {
        panic!("a framed 2xx body always streams")
    };
    let (events, err) = read_events(&stream);
    assert_eq!(events.len(), 1);
    assert_eq!(&events[0].data[..], b"{\"a\":1}");
    let err = err.expect("a cut body is an error, its partial line dropped");
    assert!(
        matches!(err.kind, HttpErrorKind::Protocol | HttpErrorKind::Read),
        "{err}"
    );
}

#[test]
fn framed_body_idle_gap_is_a_read_timeout() {
    let base = rt().block_on(serve(|mut sock| async move {
        read_request(&mut sock).await.unwrap();
        sock.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        sock.write_all(b"8\r\ndata: a\n\r\n1\r\n\n\r\n")
            .await
            .unwrap();
        sock.flush().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    }));
    let client = HttpClient::new(HttpConfig::default());
    let idle = Some(Duration::from_millis(100));
    let reply = rt()
        .block_on(client.send_framed(get(&base), None, idle, sse::Framing::Sse))
        .unwrap();
    let ReplyBody::Stream(stream) = reply.body else {
        panic!("a framed 2xx body always streams")
    };
    let (events, err) = read_events(&stream);
    assert_eq!(events.len(), 1);
    assert_eq!(err.map(|e| e.kind), Some(HttpErrorKind::ReadTimeout));
}
