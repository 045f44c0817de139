//! Length-prefixed framing for the request-response protocols (`/hearth/control/1`,
//! `/hearth/blob/1`).
//!
//! A frame is a 4-byte big-endian length followed by that many bytes. The length is checked
//! against the protocol's limit *before* anything is allocated, so a peer cannot make us
//! reserve more than the limit. The payload stays opaque here.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;

/// Request-response codec for one frame per direction with per-direction size caps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameCodec {
    max_request: usize,
    max_response: usize,
}

impl FrameCodec {
    pub(crate) fn new(max_request: usize, max_response: usize) -> Self {
        Self {
            max_request,
            max_response,
        }
    }
}

/// Read one frame of at most `max` bytes.
pub(crate) async fn read_frame<T>(io: &mut T, max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the {max}-byte limit"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Write one frame, refusing (locally) to send more than `max` bytes.
pub(crate) async fn write_frame<T>(io: &mut T, data: &[u8], max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    if data.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes is over the {max}-byte limit", data.len()),
        ));
    }
    // `data.len() <= max`, and every limit in this crate is far below u32::MAX.
    let len = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_request).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_response).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, self.max_request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, self.max_response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frame_round_trip_and_limits() {
        let mut buf = Vec::new();
        write_frame(&mut futures::io::Cursor::new(&mut buf), b"hello", 16)
            .await
            .unwrap();
        assert_eq!(&buf[..4], &5u32.to_be_bytes());
        let got = read_frame(&mut futures::io::Cursor::new(&buf), 16)
            .await
            .unwrap();
        assert_eq!(got, b"hello");
        // Over the reader's limit: refused before allocating.
        assert!(read_frame(&mut futures::io::Cursor::new(&buf), 4)
            .await
            .is_err());
        // A length prefix claiming 4 GiB with no body.
        let huge = u32::MAX.to_be_bytes();
        assert!(read_frame(&mut futures::io::Cursor::new(&huge[..]), 1024)
            .await
            .is_err());
        // Truncated body.
        let mut short = 10u32.to_be_bytes().to_vec();
        short.extend_from_slice(b"abc");
        assert!(read_frame(&mut futures::io::Cursor::new(&short), 1024)
            .await
            .is_err());
        // Writer refuses oversize.
        let mut out = Vec::new();
        assert!(
            write_frame(&mut futures::io::Cursor::new(&mut out), &[0; 17], 16)
                .await
                .is_err()
        );
    }
}
