//! The gateway's own accept loop: plain TCP or TLS (rustls), HTTP/1.1 with bounded request
//! heads, a deadline to send them, and graceful shutdown.
//!
//! `axum::serve` offers none of these knobs, so connections are served with hyper directly:
//! each accepted socket gets `TCP_NODELAY`, its TLS handshake (in its own task, with a deadline,
//! so a slow client never holds up the others), and an HTTP/1.1 connection that may upgrade to
//! a WebSocket. On shutdown the loop stops accepting, every connection finishes the request it
//! is on and closes, and the call returns when the last one has.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// `[gateway.tls]`: serve HTTPS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `Strict-Transport-Security: max-age=` sent with every answer; 0 sends none.
    #[serde(default = "default_hsts")]
    pub hsts_max_age_secs: u64,
}

fn default_hsts() -> u64 {
    365 * 24 * 3600
}

/// How connections are served.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (request line and headers), in bytes; at least 8 KiB. Beyond it
    /// the answer is 431.
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Time a client has to send a whole request head (and, on TLS, to finish the handshake).
    pub header_timeout: Duration,
}

/// A TLS acceptor for `config`, refusing files that do not hold a usable certificate and key.
pub fn tls_acceptor(config: &TlsConfig) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| format!("gateway.tls: {}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&config.cert_file)?)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("gateway.tls.cert_file: {e}"))?;
    if certs.is_empty() {
        return Err("gateway.tls.cert_file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&config.key_file)?)
        .map_err(|e| format!("gateway.tls.key_file: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("gateway.tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("gateway.tls: the certificate and key do not fit: {e}"))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Serves `router` on `listener` until `shutdown` fires, then drains. Each request carries
/// `ConnectInfo<SocketAddr>` of its client.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let http = Arc::new(http);
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Events are small writes that must leave at once: without TCP_NODELAY a second one
        // waits for the client's delayed ACK (tens of milliseconds).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let tcp = Conn::new(tcp, limits.header_timeout);
        let received = tcp.received.clone();
        let service =
            router
                .clone()
                .map_request(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.extensions_mut().insert(received.clone());
                    request.map(axum::body::Body::new)
                });
        let service = hyper_util::service::TowerToHyperService::new(service);
        let (http, tls, shutdown) = (http.clone(), tls.clone(), shutdown.clone());
        let timeout = limits.header_timeout;
        connections.spawn(async move {
            match tls {
                None => connection(&http, TokioIo::new(tcp), service, &shutdown).await,
                Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        connection(&http, TokioIo::new(stream), service, &shutdown).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake took too long"),
                },
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Serves one connection; once `shutdown` fires, finishes the request in progress and closes.
async fn connection<I, S>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    service: S,
    shutdown: &CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = http.serve_connection(io, service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Bytes a connection has received so far, as a request it carries can read them: a WebSocket
/// session uses it to tell a message that is still arriving from a quiet socket.
#[derive(Debug, Clone, Default)]
pub struct Received(Arc<AtomicU64>);

impl Received {
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// An accepted socket: counts what it receives ([`Received`]) and, once the connection is done
/// with it, closes it with a lingering close.
///
/// A server that closes a socket with unread bytes in it makes the kernel answer with a reset,
/// and a client still sending its body (one answered 413 before it was read) then loses the
/// answer with it: curl reads it, Python's `urllib` gets a broken pipe. So the socket is not
/// closed outright: its sending side is shut (the client sees the answer, then the end), and
/// what still arrives is read and thrown away until the client closes its side, for at most
/// `linger`.
struct Conn {
    tcp: Option<TcpStream>,
    received: Received,
    linger: Duration,
}

impl Conn {
    fn new(tcp: TcpStream, linger: Duration) -> Conn {
        Conn {
            tcp: Some(tcp),
            received: Received::default(),
            linger,
        }
    }

    fn tcp(&mut self) -> &mut TcpStream {
        self.tcp
            .as_mut()
            .expect("the socket is only taken when dropped")
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(self.tcp()).poll_read(cx, buf);
        let got = (buf.filled().len() - before) as u64;
        if got > 0 {
            self.received.0.fetch_add(got, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.tcp()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.tcp()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.as_ref().is_some_and(|t| t.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.tcp()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.tcp()).poll_shutdown(cx)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let (Some(tcp), Ok(runtime)) = (self.tcp.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(linger(tcp, self.linger));
    }
}

/// The lingering close of [`Conn`]: no more sending, then read and drop whatever arrives until
/// the client closes, or `limit` passes, or it sent 64 MiB more.
async fn linger(mut tcp: TcpStream, limit: Duration) {
    const MOST: usize = 64 << 20;
    let _ = tcp.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 16 * 1024];
        let mut read = 0;
        while read < MOST {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(limit, drain).await;
}
