//! A small HTTP server on tokio's multi-thread runtime and hyper — the
//! shape of the management agents — for the image tests: it shows that an
//! unmodified tokio program (epoll, eventfd, non-blocking sockets, timers)
//! serves on Mantle as on Linux.
//!
//! Usage: `tokio_httpd [PORT]` (default 8080). `GET /echo/<token>` answers
//! 200 with `<token>\n` repeated 100 times; `GET /sleep/<ms>` answers
//! `slept <ms>` after a tokio timer of that many milliseconds (at most
//! 10 s); anything else is 404. Prints `tokio_httpd: listening on ADDR`
//! once it accepts connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The body `/echo/<token>` answers with.
fn echo_body(token: &str) -> String {
    format!("{token}\n").repeat(100)
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        Ok(r)
    };
    if let Some(token) = path.strip_prefix("/echo/") {
        return reply(StatusCode::OK, echo_body(token));
    }
    if let Some(ms) = path.strip_prefix("/sleep/").and_then(|m| m.parse::<u64>().ok()) {
        let ms = ms.min(10_000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return reply(StatusCode::OK, format!("slept {ms}"));
    }
    reply(StatusCode::NOT_FOUND, "not found\n".into())
}

async fn serve(port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await?;
    println!("tokio_httpd: listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or memory: back off, keep serving.
                eprintln!("tokio_httpd: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(answer)).await {
                eprintln!("tokio_httpd: connection: {e}");
            }
        });
    }
}

fn main() {
    let port = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(8080);
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio_httpd: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(serve(port)) {
        eprintln!("tokio_httpd: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn echo_body_repeats_the_token() {
        let b = super::echo_body("ab");
        assert_eq!(b.len(), 300);
        assert!(b.starts_with("ab\nab\n"));
    }
}
