//! Server-Sent Events, as `GET /api/v1/tasks/{id}/events` writes them: frames ended by a blank
//! line, each with `event:`, `id:` and `data:` lines; `data` is a [`WsServerMessage`] as JSON.

use futures::{Stream, StreamExt};
use wharf_contract::WsServerMessage;

use crate::{Error, Result};

/// The messages of an SSE body, in order; comment frames (keep-alives) are skipped.
pub(crate) fn messages(
    body: impl Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static,
) -> impl Stream<Item = Result<WsServerMessage>> + Send + 'static {
    futures::stream::unfold(
        (Box::pin(body), Vec::<u8>::new(), false),
        |(mut body, mut buffer, mut done)| async move {
            loop {
                if let Some(frame) = next_frame(&mut buffer) {
                    match decode(&frame) {
                        Some(m) => return Some((m, (body, buffer, done))),
                        None => continue,
                    }
                }
                if done {
                    return None;
                }
                match body.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        done = true;
                        buffer.clear();
                        let e = Error::Decode(format!("the event stream broke: {e}"));
                        return Some((Err(e), (body, buffer, done)));
                    }
                    None => done = true,
                }
            }
        },
    )
}

/// Takes the first whole frame off `buffer`.
fn next_frame(buffer: &mut Vec<u8>) -> Option<String> {
    let end = buffer.windows(2).position(|w| w == b"\n\n")?;
    let frame: Vec<u8> = buffer.drain(..end + 2).collect();
    Some(String::from_utf8_lossy(&frame).into_owned())
}

/// A frame's message; `None` for a frame without data.
fn decode(frame: &str) -> Option<Result<WsServerMessage>> {
    let data: Vec<&str> = frame
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    let data = data.join("\n");
    let message = serde_json::from_str(&data).map_err(|e| Error::Decode(format!("an event: {e}")));
    Some(match message {
        // The gateway ends a stream with its problem when the credential lapses.
        Ok(WsServerMessage::ClientError {
            problem: Some(problem),
            ..
        }) => Err(Error::api(*problem, None)),
        Ok(WsServerMessage::ClientError { code, message, .. }) => Err(Error::Decode(format!(
            "the stream ended with an error: {code}: {message}"
        ))),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_event_is_the_problem_it_carries() {
        let text = "event: error\ndata: {\"type\":\"error\",\"code\":\"unauthenticated\",\"message\":\"revoked\",\"problem\":{\"type\":\"urn:wharf:problem:unauthenticated\",\"title\":\"authentication required\",\"status\":401,\"detail\":\"the key was revoked\",\"code\":\"unauthenticated\"}}\n\n";
        let chunks = vec![Ok(bytes::Bytes::from(text))];
        let got: Vec<_> = messages(futures::stream::iter(chunks)).collect().await;
        let e = got.into_iter().next().unwrap().unwrap_err();
        assert_eq!(e.status(), Some(401), "{e}");
        assert_eq!(e.problem().unwrap().detail, "the key was revoked");
    }

    #[tokio::test]
    async fn frames_split_anywhere_are_read_whole_and_comments_skipped() {
        let text = ": keep-alive\n\nevent: task:cancel_requested\nid: 7\ndata: {\"type\":\"task:cancel_requested\",\"task_id\":\"00000000-0000-0000-0000-000000000001\",\"seq\":7}\n\n";
        // One byte at a time: no frame boundary is where a chunk ends.
        let chunks: Vec<reqwest::Result<bytes::Bytes>> = text
            .bytes()
            .map(|b| Ok(bytes::Bytes::from(vec![b])))
            .collect();
        let got: Vec<_> = messages(futures::stream::iter(chunks)).collect().await;
        assert_eq!(got.len(), 1);
        match got.into_iter().next().unwrap().unwrap() {
            WsServerMessage::CancelRequested { seq, .. } => assert_eq!(seq, 7),
            other => panic!("{other:?}"),
        }
    }
}
