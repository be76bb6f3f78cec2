//! The HTTP listener with a bound on open connections (`HTTP_MAX_CONNECTIONS`).
//!
//! Admission control bounds the sagas in flight, not the connections that ask for them. A
//! client that opens a connection for every request it cannot place on an idle one (an
//! open-loop client that falls behind, a retry storm) made orders-svc hold about 20,000
//! connections and 681 MB at twice its capacity. Past the bound the service stops accepting:
//! new connections wait in the kernel's accept queue, and a client sees a slower connect
//! instead of the service growing until it is killed. Each connection costs a few tens of
//! kilobytes (hyper's buffers and its task): 1,024 idle ones, the default, took orders-svc
//! from 39 to 78 MiB.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections open now, across the process's bounded listeners (`saga_http_connections`).
static OPEN: AtomicI64 = AtomicI64::new(0);
/// The bound of the process's listener, the last made (a service makes one).
static BOUND: AtomicI64 = AtomicI64::new(0);

/// Connections open now, and the bound they may reach, for the metrics.
pub fn connections() -> (i64, i64) {
    (
        OPEN.load(Ordering::Relaxed).max(0),
        BOUND.load(Ordering::Relaxed),
    )
}

/// A [`TcpListener`] that holds at most `max_connections` accepted connections open.
#[derive(Debug)]
pub struct BoundedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    max_connections: usize,
}

impl BoundedListener {
    /// `max_connections` of 0 is taken as 1: a listener that accepts nothing would hang every
    /// client without a word.
    pub fn new(inner: TcpListener, max_connections: usize) -> Self {
        let max_connections = max_connections.max(1);
        BOUND.store(
            i64::try_from(max_connections).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max_connections)),
            max_connections,
        }
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so waiting for a permit ends only when a connection
        // closes; were it closed, the connection is served without one rather than refused.
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                tracing::debug!(
                    max_connections = self.max_connections,
                    "connection bound reached; accepting again when one closes"
                );
                self.permits.clone().acquire_owned().await.ok()
            }
        };
        let (stream, address) = axum::serve::Listener::accept(&mut self.inner).await;
        OPEN.fetch_add(1, Ordering::Relaxed);
        (
            BoundedStream {
                stream,
                _permit: permit,
            },
            address,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection; closing it (dropping it) lets the listener accept another.
#[derive(Debug)]
pub struct BoundedStream {
    stream: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for BoundedStream {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for BoundedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoundedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Accepts on `listener` and echoes one byte per connection, holding each open until
    /// its client closes.
    async fn serve_echo(mut listener: BoundedListener) {
        loop {
            let (mut stream, _) = axum::serve::Listener::accept(&mut listener).await;
            tokio::spawn(async move {
                let mut byte = [0u8; 1];
                while let Ok(1) = stream.read(&mut byte).await {
                    if stream.write_all(&byte).await.is_err() {
                        break;
                    }
                }
            });
        }
    }

    async fn round_trip(stream: &mut TcpStream) -> io::Result<u8> {
        stream.write_all(b"x").await?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        Ok(byte[0])
    }

    #[tokio::test]
    async fn past_the_bound_a_connection_waits_until_another_closes() -> io::Result<()> {
        let inner = TcpListener::bind("127.0.0.1:0").await?;
        let address = inner.local_addr()?;
        tokio::spawn(serve_echo(BoundedListener::new(inner, 2)));

        let mut first = TcpStream::connect(address).await?;
        let mut second = TcpStream::connect(address).await?;
        assert_eq!(round_trip(&mut first).await?, b'x');
        assert_eq!(round_trip(&mut second).await?, b'x');

        // The third connect completes in the kernel's accept queue, but the service does not
        // accept it, so nothing answers it.
        let mut third = TcpStream::connect(address).await?;
        let waited = tokio::time::timeout(Duration::from_millis(300), round_trip(&mut third)).await;
        assert!(
            waited.is_err(),
            "the third connection was served past the bound of 2"
        );

        // One closing lets it in.
        drop(first);
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            let mut byte = [0u8; 1];
            third.read_exact(&mut byte).await.map(|_| byte[0])
        })
        .await;
        assert!(
            matches!(answered, Ok(Ok(b'x'))),
            "the waiting connection was not served once another closed: {answered:?}"
        );
        assert_eq!(round_trip(&mut second).await?, b'x');
        Ok(())
    }

    #[test]
    fn a_bound_of_zero_is_taken_as_one() -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let inner = TcpListener::bind("127.0.0.1:0").await?;
            assert_eq!(BoundedListener::new(inner, 0).max_connections(), 1);
            Ok(())
        })
    }
}
