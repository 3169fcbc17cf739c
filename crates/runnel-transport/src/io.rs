//! The byte-stream seam, reading frames, and the writer task that owns a
//! connection's write half.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use runnel_wire::frame::{LENGTH_PREFIX_LEN, frame_length};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::TransportError;

/// A connection's bytes: plaintext TCP, or TLS over it.
pub trait ByteStream: Send + 'static {
    type Reader: AsyncRead + Send + Unpin + 'static;
    type Writer: FrameWrite;
    fn into_split(self) -> (Self::Reader, Self::Writer);
}

/// The write half of a [`ByteStream`], able to send a file range.
pub trait FrameWrite: AsyncWrite + Send + Unpin + 'static {
    /// Writes `range` to the stream. The default reads it through a
    /// buffer; plaintext TCP sends it with `sendfile` instead.
    fn write_file(&mut self, range: &FileRange) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            let mut buffer = vec![0; range.len.min(256 << 10) as usize];
            let mut done = 0;
            while done < range.len {
                let chunk = (range.len - done).min(buffer.len() as u64) as usize;
                range
                    .file
                    .read_exact_at(&mut buffer[..chunk], range.position + done)?;
                self.write_all(&buffer[..chunk]).await?;
                done += chunk as u64;
            }
            Ok(())
        }
    }
}

impl ByteStream for TcpStream {
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;

    fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        TcpStream::into_split(self)
    }
}

impl FrameWrite for OwnedWriteHalf {
    async fn write_file(&mut self, range: &FileRange) -> io::Result<()> {
        let socket: &TcpStream = self.as_ref();
        let mut position = range.position;
        let end = range.position + range.len;
        while position < end {
            let count = (end - position).min(1 << 30) as usize;
            let sent = socket
                .async_io(Interest::WRITABLE, || {
                    let mut offset = position;
                    rustix::fs::sendfile(socket, &*range.file, Some(&mut offset), count)
                        .map_err(io::Error::from)
                })
                .await?;
            if sent == 0 {
                // The file is shorter than the range (truncated under us):
                // the frame's length is already sent, so the connection
                // cannot continue.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file ended inside the range being sent",
                ));
            }
            position += sent as u64;
        }
        Ok(())
    }
}

/// Bytes of a file sent as a frame's tail, without copying them through
/// user space where the stream allows.
#[derive(Debug, Clone)]
pub struct FileRange {
    pub file: Arc<File>,
    pub position: u64,
    pub len: u64,
}

/// A frame to write: its bytes, then optionally a tail.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub bytes: Vec<u8>,
    pub tail: Tail,
    /// A stream's share of its queued-bytes limit, given back once the
    /// frame is written (when this is dropped).
    pub held: Option<tokio::sync::OwnedSemaphorePermit>,
}

#[derive(Debug)]
pub(crate) enum Tail {
    None,
    Bytes(Bytes),
    File(FileRange),
}

/// Reads one frame (after its length prefix) into memory. `Ok(None)` on a
/// clean end of stream between frames. The length is checked before the
/// buffer is allocated.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    min_len: usize,
    max_len: usize,
) -> Result<Option<BytesMut>, TransportError> {
    let mut prefix = [0; LENGTH_PREFIX_LEN];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let length = frame_length(prefix, min_len, max_len)?;
    // The buffer grows as bytes arrive (doubling from 64 KiB), so a length
    // prefix alone, without its bytes, does not claim its size in memory.
    let mut frame = BytesMut::with_capacity(length.min(FIRST_READ_BYTES));
    while frame.len() < length {
        let remaining = length - frame.len();
        if frame.capacity() == frame.len() {
            frame.reserve(remaining.min(frame.len().max(FIRST_READ_BYTES)));
        }
        let room = (frame.capacity() - frame.len()).min(remaining);
        let read = reader.read_buf(&mut (&mut frame).limit(room)).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed inside a frame of {length} bytes"),
            )
            .into());
        }
    }
    Ok(Some(frame))
}

/// First buffer for a frame's bytes; larger frames grow it as they arrive.
const FIRST_READ_BYTES: usize = 64 << 10;

/// No Nagle delay (frames are written whole), and keepalive probes so a
/// peer that vanished without closing (power loss, a dropped NAT entry) is
/// noticed in about 25 s instead of never.
pub(crate) fn tune_socket(socket: &TcpStream) {
    let _ = socket.set_nodelay(true);
    let _ = rustix::net::sockopt::set_socket_keepalive(socket, true);
    let _ = rustix::net::sockopt::set_tcp_keepidle(socket, std::time::Duration::from_secs(10));
    let _ = rustix::net::sockopt::set_tcp_keepintvl(socket, std::time::Duration::from_secs(5));
    let _ = rustix::net::sockopt::set_tcp_keepcnt(socket, 3);
}

/// Writes queued frames until the queue closes or `closing` is cancelled,
/// coalescing whatever is queued into one flush. Once `closing` is
/// cancelled it writes only the frames already queued and shuts the stream
/// down: a request still running holds a sender, and must not keep a
/// closing connection open.
pub(crate) async fn write_loop<W: FrameWrite>(
    writer: W,
    mut queue: mpsc::Receiver<Outgoing>,
    closing: CancellationToken,
) -> io::Result<()> {
    let mut writer = BufWriter::with_capacity(64 << 10, writer);
    loop {
        let next = tokio::select! {
            biased;
            frame = queue.recv() => frame,
            _ = closing.cancelled() => queue.try_recv().ok(),
        };
        let Some(mut frame) = next else {
            break;
        };
        loop {
            writer.write_all(&frame.bytes).await?;
            match &frame.tail {
                Tail::None => {}
                Tail::Bytes(bytes) => writer.write_all(bytes).await?,
                Tail::File(range) => {
                    writer.flush().await?;
                    writer.get_mut().write_file(range).await?;
                }
            }
            match queue.try_recv() {
                Ok(next) => frame = next,
                Err(_) => break,
            }
        }
        writer.flush().await?;
    }
    writer.shutdown().await
}
