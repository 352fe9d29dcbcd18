//! One request on an open connection: the head and the body go out in one vectored write, the
//! answer's head is read (interim ones skipped), then its body as the head frames it, kept up to
//! [`MAX_RESPONSE_BODY`] bytes; the connection is kept only when every byte of the exchange was
//! written and read and the receiver keeps it.

use super::Failure;
use super::connect::Open;
use super::response::{Body, Framing};
use http::StatusCode;
use std::io::IoSlice;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Response bodies are read (to keep the connection) up to this size, and quoted in errors.
pub(super) const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// What a request came to: the response's status, `Retry-After`, and its body.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) retry_after: Option<Duration>,
    pub(super) body: Body,
}

/// A read buffer grown past this (by a long response head) is let go after the exchange.
const KEPT_READ_BUFFER: usize = 16 * 1024;

impl Open {
    /// Writes the request and reads the answer; `true` with it if the connection can be kept.
    pub(super) async fn exchange(
        &mut self,
        head: &[u8],
        body: &[u8],
    ) -> Result<(Answer, bool), Failure> {
        let written = self.write_request(head, body).await;
        let wrote_all = written.is_ok();
        let head = match (self.final_head().await, written) {
            (Ok(head), Ok(())) => head,
            // A receiver that stops reading may have answered first (413 to a body too big):
            // that answer stands, unless it claims to have taken what it could not read.
            (Ok(head), Err(_)) if !head.status.is_success() => head,
            (_, Err(e)) | (Err(e), Ok(())) => return Err(e),
        };
        let (body, whole) = match head.framing {
            _ if head.status == StatusCode::NO_CONTENT
                || head.status == StatusCode::NOT_MODIFIED =>
            {
                (Ok(Vec::new()), true)
            }
            Framing::Length(n) => {
                let mut kept = Vec::new();
                match self.read_body(Some(n), &mut kept).await {
                    Ok(all) => (Ok(kept), all),
                    Err(e) => (Err(e), false),
                }
            }
            Framing::Chunked => {
                let mut kept = Vec::new();
                match self.read_chunked(&mut kept).await {
                    Ok(all) => (Ok(kept), all),
                    Err(e) => (Err(e), false),
                }
            }
            Framing::UntilClose => {
                // The body is what comes before the close; a reset is no close.
                let mut kept = Vec::new();
                match self.read_body(None, &mut kept).await {
                    Ok(_) => (Ok(kept), false),
                    Err(e) => (Err(e), false),
                }
            }
        };
        let keep = wrote_all && head.keep_alive && whole && self.unread().is_empty();
        if keep {
            self.read.clear();
            self.at = 0;
            if self.read.capacity() > KEPT_READ_BUFFER {
                self.read = Vec::with_capacity(1024);
            }
        }
        let answer = Answer {
            status: head.status,
            retry_after: head.retry_after,
            body,
        };
        Ok((answer, keep))
    }

    /// Writes the head and the body, in one write when the connection takes it.
    pub(super) async fn write_request(&mut self, head: &[u8], body: &[u8]) -> Result<(), Failure> {
        let mut parts = [IoSlice::new(head), IoSlice::new(body)];
        let mut left = &mut parts[..];
        while !left.is_empty() {
            let n = self.io.write_vectored(left).await?;
            if n == 0 {
                return Err("the connection took no more bytes".into());
            }
            IoSlice::advance_slices(&mut left, n);
        }
        self.io.flush().await?;
        Ok(())
    }
}
