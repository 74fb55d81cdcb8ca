//! A WebSocket client of `/ws/v1/tasks` for tests.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::Wharf;

/// A WebSocket client of `/ws/v1/tasks` that sends and receives JSON.
pub struct WsClient {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl WsClient {
    pub async fn connect(w: &Wharf) -> WsClient {
        let url = format!("{}/ws/v1/tasks", w.api.replacen("http://", "ws://", 1));
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        WsClient { socket }
    }

    /// Connects as `credential`, sent as `?access_token=` (as a browser must).
    pub async fn connect_as(w: &Wharf, credential: &str) -> WsClient {
        let url = format!(
            "{}/ws/v1/tasks?access_token={credential}",
            w.api.replacen("http://", "ws://", 1)
        );
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        WsClient { socket }
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    /// Waits up to `deadline` for the server to close the socket, skipping any message before
    /// the close: the close frame's code, or `None` when the connection ended without one.
    /// Fails the test when the socket is still open after `deadline`.
    pub async fn close_code(&mut self, deadline: Duration) -> Option<u16> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        tokio::time::timeout(deadline, async {
            loop {
                match self.socket.next().await {
                    None | Some(Err(_)) => return None,
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the socket is still open after {deadline:?}"))
    }

    /// Writes `bytes` to the connection as they are, under the WebSocket layer: frames the
    /// client library would never send (unmasked, oversized, cut short).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = self.socket.get_mut() else {
            panic!("raw frames only over plain TCP");
        };
        tcp.write_all(bytes).await.unwrap();
        tcp.flush().await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        use futures::SinkExt;
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
            .await
            .unwrap();
    }

    /// The next JSON message, failing the test after 30 s.
    pub async fn next(&mut self) -> Value {
        use futures::StreamExt;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .expect("a websocket message within 30 s")
                .expect("the socket is open")
                .unwrap();
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                return serde_json::from_str(&t).unwrap();
            }
        }
    }

    /// Messages until (and including) the first whose `type` is terminal for `task_id`.
    pub async fn until_terminal(&mut self, task_id: Uuid) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let m = self.next().await;
            let done = m["task_id"] == task_id.to_string()
                && matches!(
                    m["type"].as_str(),
                    Some("task:complete" | "task:error" | "task:cancelled")
                );
            out.push(m);
            if done {
                return out;
            }
        }
    }
}
