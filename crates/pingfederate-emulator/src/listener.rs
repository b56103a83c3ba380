//! A TCP listener that can play a server that went away ([`Outage::Unreachable`]): while it
//! lasts, new connections are closed as soon as they are accepted, and every connection
//! accepted before it started is cut at its next read or write, also after it ended, since the
//! server that accepted it is gone.
//!
//! [`Outage::Unreachable`]: crate::Outage::Unreachable

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

use crate::server::{Shared, lock};

pub(crate) struct OutageListener {
    inner: TcpListener,
    pf: Shared,
}

impl OutageListener {
    pub(crate) fn new(inner: TcpListener, pf: Shared) -> Self {
        Self { inner, pf }
    }
}

impl axum::serve::Listener for OutageListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::debug!(%error, "PingFederate emulator: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let epoch = lock(&self.pf).accept_connection();
            match epoch {
                Some(epoch) => {
                    return (
                        Connection {
                            stream,
                            pf: self.pf.clone(),
                            epoch,
                            cut: false,
                        },
                        addr,
                    );
                }
                None => drop(stream),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection that fails once its server is gone.
pub(crate) struct Connection {
    stream: TcpStream,
    pf: Shared,
    epoch: u64,
    cut: bool,
}

impl Connection {
    fn is_cut(&mut self) -> bool {
        if !self.cut && lock(&self.pf).cut_connection(self.epoch) {
            self.cut = true;
        }
        self.cut
    }
}

fn reset() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "PingFederate emulator is unreachable",
    )
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_cut() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_cut() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.is_cut() {
            return Poll::Ready(Err(reset()));
        }
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
