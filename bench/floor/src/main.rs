//! `bench-floor`: what answering one HTTP/1 request on loopback costs with hyper and tokio when the
//! application does nothing. The handler's figures are compared with these.
//!
//! `bench-floor PORT BODY_BYTES [current|multi]`: serves `127.0.0.1:PORT`; `GET` on either token
//! route answers 200 with `BODY_BYTES` of constant JSON-ish text and the handler's two response
//! headers; any other path answers 404. `multi` (the default) is tokio's multi-thread runtime,
//! sized like the handler's (`TOKIO_WORKER_THREADS`, else one worker per CPU); `current` is the
//! current-thread runtime. Prints `listening on ADDR` once the port is bound.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench-floor PORT BODY_BYTES [current|multi]";
    let port: u16 = args.get(1).and_then(|a| a.parse().ok()).expect(usage);
    let body_bytes: usize = args.get(2).and_then(|a| a.parse().ok()).expect(usage);
    let runtime = match args.get(3).map(String::as_str).unwrap_or("multi") {
        "current" => tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build(),
        "multi" => tokio::runtime::Builder::new_multi_thread()
            .enable_io()
            .build(),
        _ => panic!("{usage}"),
    }
    .expect("the runtime starts");

    let mut text = String::from("{\"sastoken\":\"");
    text.extend(std::iter::repeat_n(
        'x',
        body_bytes.saturating_sub(text.len() + 2),
    ));
    text.push_str("\"}");
    let body = Bytes::from(text);

    runtime.block_on(async move {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .expect("the port is free");
        println!("listening on {}", listener.local_addr().expect("bound"));
        let http = hyper::server::conn::http1::Builder::new();
        loop {
            let Ok((stream, _peer)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let path = request.uri().path();
                let hit = path == "/api/getSASTokenByDeviceID"
                    || (path.starts_with("/api/devices/") && path.ends_with("/sas-token"));
                let response = if hit {
                    let mut response = Response::new(Full::new(body.clone()));
                    let headers = response.headers_mut();
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    response
                } else {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::NOT_FOUND;
                    response
                };
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
    });
}
