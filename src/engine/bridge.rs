//! The engine's side of a Tcl-channel transport: an AsyncRead/AsyncWrite
//! whose bytes come from, and go to, a channel served on the Tcl thread.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

/// Where the stream's writes go (implemented over the Tcl thread's mailbox).
pub trait Outlet: Send + Sync + 'static {
    fn write(&self, data: Vec<u8>);
    fn shutdown(&self);
}

pub struct BridgeStream {
    input: UnboundedReceiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    eof: bool,
    outlet: Arc<dyn Outlet>,
    shut: bool,
}

/// Feeds a BridgeStream from the Tcl thread. An empty vector ends the stream.
pub type Feeder = UnboundedSender<Vec<u8>>;
pub type Input = UnboundedReceiver<Vec<u8>>;

pub fn input() -> (Feeder, Input) {
    mpsc::unbounded_channel()
}

impl BridgeStream {
    pub fn new(input: Input, outlet: Arc<dyn Outlet>) -> BridgeStream {
        BridgeStream {
            input,
            current: Vec::new(),
            pos: 0,
            eof: false,
            outlet,
            shut: false,
        }
    }
}

impl AsyncRead for BridgeStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.pos < self.current.len() {
                let n = (self.current.len() - self.pos).min(buf.remaining());
                let start = self.pos;
                buf.put_slice(&self.current[start..start + n]);
                self.pos += n;
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match self.input.poll_recv(cx) {
                Poll::Ready(Some(v)) if !v.is_empty() => {
                    self.current = v;
                    self.pos = 0;
                }
                Poll::Ready(_) => self.eof = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for BridgeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.shut {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.outlet.write(buf.to_vec());
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.shut {
            self.shut = true;
            self.outlet.shutdown();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for BridgeStream {
    fn drop(&mut self) {
        if !self.shut {
            self.outlet.shutdown();
        }
    }
}
