//! HTTP servers a test points the services at (webhook targets, telemetry receivers), on
//! free ports of 127.0.0.1, running until the test's runtime ends.
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `router`; returns where.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a test server");
    let addr = listener.local_addr().expect("test server address");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("test server") });
    addr
}

/// A bare HTTP/1.1 server with no HTTP stack to get in the way: it reads what arrives first
/// of each request (its head, at least), answers with the status `respond` picks for that text
/// (e.g. `"200 OK"`) and no body, and closes the connection.
pub async fn respond_with<F>(respond: F) -> SocketAddr
where
    F: Fn(&str) -> String + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a test server");
    let addr = listener.local_addr().expect("test server address");
    let respond = std::sync::Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let respond = respond.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                let n = socket.read(&mut buffer).await.unwrap_or(0);
                let status = respond(&String::from_utf8_lossy(&buffer[..n]));
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}
