//! The transport to an MCP server the worker starts as a child process and speaks to over its
//! standard input and output: one JSON-RPC message per line, as rmcp's `TokioChildProcess`.
//!
//! The difference is in reading. rmcp reads every line as a general JSON-RPC message whose
//! result is `ServerResult`, an untagged union of twenty kinds of result tried in order: the
//! line is first buffered as a tree of values, and the answer to `tools/call`, sixteenth in the
//! union, is reached after fifteen failed tries, each of which formats an error message. For a
//! short tool that was an eighth of the worker's time (about 5 µs a call, against 1 read this
//! way; docs/performance.md, item 21). This transport remembers which of its requests are
//! `tools/call` and reads their answers as `CallToolResult` directly; every other line, and any
//! answer that is not a plain tool result, is read as rmcp reads it. Writing is rmcp's own.

use std::collections::HashSet;
use std::time::Duration;

use rmcp::RoleClient;
use rmcp::model::{
    CallToolResult, ClientNotification, ClientRequest, ErrorData, JsonRpcMessage, JsonRpcResponse,
    JsonRpcVersion2_0, RequestId, ServerResult,
};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::async_rw::AsyncRwTransport;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The longest line read from a server (rmcp's limit): a longer one is dropped, not buffered.
const MAX_LINE: usize = 16 * 1024 * 1024;
/// How long a server may take to exit once its input is closed, and again after SIGTERM.
const EXIT_WAIT: Duration = Duration::from_secs(3);

/// A started MCP server, spoken to over its stdio.
pub type ChildTransport = Stdio<ChildStdout, ChildStdin>;

/// Starts `cmd` with piped stdin and stdout (its stderr goes where the worker's goes), in a
/// process group of its own: Ctrl-C in a terminal signals the worker's whole group, and the
/// server must go on answering the calls the worker drains before it stops (it closes the
/// server's input last; a server whose worker died sees its input end all the same).
pub fn spawn(mut cmd: Command) -> std::io::Result<ChildTransport> {
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = cmd.spawn()?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(std::io::Error::other("the child's stdio was not piped"));
    };
    Ok(Stdio::new(stdout, stdin, Some(child)))
}

/// Reads and writes JSON-RPC lines; see the module's documentation.
pub struct Stdio<R: AsyncRead, W: AsyncWrite> {
    read: BufReader<R>,
    /// The line being read. A read cancelled halfway (rmcp polls `receive` in a `select!`)
    /// leaves its part here, and the next one goes on from it.
    line: Vec<u8>,
    /// Dropping the rest of a line that was too long.
    discarding: bool,
    /// rmcp's line writer; its reading half is never used.
    write: AsyncRwTransport<RoleClient, tokio::io::Empty, W>,
    /// Ids of the `tools/call` requests sent and not yet answered or cancelled.
    calls: HashSet<RequestId>,
    /// A message of the wrong shape came: answer it with Invalid Request, as rmcp does.
    answer_invalid: bool,
    child: Option<Child>,
}

impl<R, W> Stdio<R, W>
where
    R: AsyncRead + Send + Unpin,
    W: AsyncWrite + Send + Unpin + 'static,
{
    pub fn new(read: R, write: W, child: Option<Child>) -> Self {
        Stdio {
            read: BufReader::new(read),
            line: Vec::new(),
            discarding: false,
            write: AsyncRwTransport::new(tokio::io::empty(), write),
            calls: HashSet::new(),
            answer_invalid: false,
            child,
        }
    }

    /// Notes the `tools/call` requests going out, and forgets the ones being cancelled.
    fn note(&mut self, item: &TxJsonRpcMessage<RoleClient>) {
        match item {
            JsonRpcMessage::Request(r) => {
                if matches!(r.request, ClientRequest::CallToolRequest(_)) {
                    self.calls.insert(r.id.clone());
                }
            }
            JsonRpcMessage::Notification(n) => {
                if let ClientNotification::CancelledNotification(c) = &n.notification
                    && let Some(id) = &c.params.request_id
                {
                    self.calls.remove(id);
                }
            }
            _ => {}
        }
    }

    /// A line as a message: the answer to a `tools/call` read directly when it is a tool
    /// result, anything else as rmcp reads it. `None` for a line to pass over.
    fn parse(&mut self, line: &[u8]) -> Option<RxJsonRpcMessage<RoleClient>> {
        if let Some(answer) = self.call_answer(line) {
            return Some(answer);
        }
        match serde_json::from_slice::<RxJsonRpcMessage<RoleClient>>(line) {
            Ok(message) => {
                if let JsonRpcMessage::Response(r) = &message {
                    self.calls.remove(&r.id);
                } else if let JsonRpcMessage::Error(e) = &message
                    && let Some(id) = &e.id
                {
                    self.calls.remove(id);
                }
                Some(message)
            }
            Err(e) if e.is_syntax() || e.is_eof() => {
                // Not JSON: there is no id to answer to (and answering garbage with an error
                // can start an echo storm). rmcp and the other SDKs pass over it.
                tracing::debug!(error = %e, "ignoring an unreadable line from an mcp server");
                None
            }
            Err(e) => {
                // JSON of the wrong shape. A notification gets no answer (JSON-RPC); anything
                // else is answered with Invalid Request.
                if !is_notification(line) {
                    tracing::debug!(error = %e, "an mcp server sent a message of the wrong shape");
                    self.answer_invalid = true;
                }
                None
            }
        }
    }

    /// The answer to one of the `tools/call` requests in flight, read as `CallToolResult`;
    /// `None` for any other line, or one that is not a plain tool result (a task, input
    /// required), which then takes rmcp's way.
    fn call_answer(&mut self, line: &[u8]) -> Option<RxJsonRpcMessage<RoleClient>> {
        #[derive(Deserialize)]
        struct Answer<'a> {
            jsonrpc: &'a str,
            id: RequestId,
            #[serde(borrow)]
            result: &'a RawValue,
            method: Option<serde::de::IgnoredAny>,
        }
        if self.calls.is_empty() {
            return None;
        }
        let answer: Answer = serde_json::from_slice(line).ok()?;
        if answer.jsonrpc != "2.0" || answer.method.is_some() || !self.calls.contains(&answer.id) {
            return None;
        }
        let result: CallToolResult = serde_json::from_str(answer.result.get()).ok()?;
        self.calls.remove(&answer.id);
        Some(JsonRpcMessage::Response(JsonRpcResponse {
            jsonrpc: JsonRpcVersion2_0,
            id: answer.id,
            result: ServerResult::CallToolResult(result),
        }))
    }

    /// Reads up to the next newline into `self.line` without letting it pass [`MAX_LINE`];
    /// `Ok(false)` at the end of the stream. Safe to cancel: what was read stays in the line.
    async fn read_line(&mut self) -> std::io::Result<bool> {
        loop {
            let available = self.read.fill_buf().await?;
            if available.is_empty() {
                return Ok(false);
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let take = newline.map_or(available.len(), |i| i + 1);
            if !self.discarding {
                if self.line.len() + take > MAX_LINE {
                    tracing::error!(
                        max = MAX_LINE,
                        "an mcp server sent a line longer than the limit; dropping it"
                    );
                    self.line.clear();
                    self.discarding = true;
                } else {
                    self.line.extend_from_slice(&available[..take]);
                }
            }
            self.read.consume(take);
            if newline.is_some() {
                if self.discarding {
                    self.discarding = false;
                    continue;
                }
                return Ok(true);
            }
        }
    }

    /// Sends the Invalid Request answer a message of the wrong shape asked for.
    async fn answer_invalid_request(&mut self) -> Result<(), std::io::Error> {
        let answer = TxJsonRpcMessage::<RoleClient>::error(
            ErrorData::invalid_request("Invalid request", None),
            None,
        );
        self.write.send(answer).await?;
        self.answer_invalid = false;
        Ok(())
    }

    /// Closes the server's input and waits for it to exit; then SIGTERM, then SIGKILL, as the
    /// MCP specification's stdio shutdown asks.
    async fn shut_down(&mut self) -> std::io::Result<()> {
        self.write.close().await?;
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if tokio::time::timeout(EXIT_WAIT, child.wait()).await.is_err() {
            if let Some(pid) = child.id() {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            }
            if tokio::time::timeout(EXIT_WAIT, child.wait()).await.is_err() {
                child.kill().await?;
            }
        }
        self.child = None;
        Ok(())
    }
}

impl<R, W> Transport<RoleClient> for Stdio<R, W>
where
    R: AsyncRead + Send + Unpin,
    W: AsyncWrite + Send + Unpin + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.note(&item);
        self.write.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        loop {
            if self.answer_invalid && self.answer_invalid_request().await.is_err() {
                return None;
            }
            match self.read_line().await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read from an mcp server");
                    return None;
                }
            }
            let line = std::mem::take(&mut self.line);
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
            let parsed = if text.is_empty() {
                None
            } else {
                self.parse(text)
            };
            // The buffer goes back, keeping its capacity for the next line.
            self.line = line;
            self.line.clear();
            if let Some(message) = parsed {
                return Some(message);
            }
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.shut_down()
    }
}

/// Whether a line of JSON is a notification: it names a method and carries no id.
fn is_notification(line: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Shape {
        method: Option<serde::de::IgnoredAny>,
        id: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Shape>(line).is_ok_and(|s| s.method.is_some() && s.id.is_none())
}

#[cfg(test)]
mod tests {
    use rmcp::model::{CallToolRequestParams, CancelledNotificationParam, Notification, Request};
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// A transport on in-memory pipes: what the server "writes" and what it "reads".
    fn pipes() -> (
        Stdio<DuplexStream, DuplexStream>,
        DuplexStream,
        DuplexStream,
    ) {
        let (ours_in, theirs_out) = tokio::io::duplex(1 << 20);
        let (ours_out, theirs_in) = tokio::io::duplex(1 << 20);
        (Stdio::new(ours_in, ours_out, None), theirs_out, theirs_in)
    }

    fn call(id: i64) -> TxJsonRpcMessage<RoleClient> {
        let request =
            ClientRequest::CallToolRequest(Request::new(CallToolRequestParams::new("echo")));
        TxJsonRpcMessage::<RoleClient>::request(request, RequestId::Number(id))
    }

    /// What rmcp's own reading makes of `line`, written out again (its result types cannot be
    /// compared directly).
    fn rmcp_reads(line: &str) -> serde_json::Value {
        let message: RxJsonRpcMessage<RoleClient> =
            serde_json::from_str(line).expect("rmcp reads it");
        serde_json::to_value(message).unwrap()
    }

    /// The same of what the transport received.
    async fn received(t: &mut Stdio<DuplexStream, DuplexStream>) -> serde_json::Value {
        serde_json::to_value(t.receive().await.expect("a message")).unwrap()
    }

    fn is_tool_result(m: &RxJsonRpcMessage<RoleClient>) -> bool {
        matches!(
            m,
            JsonRpcMessage::Response(JsonRpcResponse {
                result: ServerResult::CallToolResult(_),
                ..
            })
        )
    }

    #[tokio::test]
    async fn answers_to_calls_read_as_rmcp_reads_them() {
        let (mut t, mut server, _from_us) = pipes();
        let results = [
            json!({"content": [{"type": "text", "text": "hi"}], "isError": false}),
            json!({"content": [], "structuredContent": {"a": [1, 2]}, "_meta": {"k": "v"}}),
            json!({"isError": true, "content": [{"type": "text", "text": "no"}]}),
            json!({"content": [{"type": "text", "text": "x"}], "resultType": "complete", "extra": 1}),
        ];
        for (i, result) in results.iter().enumerate() {
            let id = i as i64 + 1;
            t.send(call(id)).await.unwrap();
            let line = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
            let fast = t
                .call_answer(line.as_bytes())
                .expect("the fast path takes it");
            assert!(is_tool_result(&fast));
            let rmcp: RxJsonRpcMessage<RoleClient> = serde_json::from_str(&line).unwrap();
            assert!(
                is_tool_result(&rmcp),
                "rmcp reads {line} as a tool result too"
            );
            t.send(call(id)).await.unwrap();
            server
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
            assert_eq!(received(&mut t).await, rmcp_reads(&line), "{line}");
        }
        assert!(t.calls.is_empty(), "every answered call is forgotten");
    }

    #[tokio::test]
    async fn other_answers_and_results_that_are_not_tool_results_take_rmcp_s_way() {
        let (mut t, mut server, _from_us) = pipes();
        t.send(call(7)).await.unwrap();
        let lines = [
            // An answer to a request that is not a call.
            json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": []}}).to_string(),
            // A call answered with a result that is not a complete tool result.
            json!({"jsonrpc": "2.0", "id": 7, "result": {"resultType": "input_required", "inputRequests": {}}})
                .to_string(),
        ];
        for line in &lines {
            assert!(
                t.call_answer(line.as_bytes()).is_none(),
                "no fast path for {line}"
            );
            server
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
            assert_eq!(received(&mut t).await, rmcp_reads(line), "{line}");
        }
        assert!(
            t.calls.is_empty(),
            "the call's answer, of whatever kind, ends it"
        );
    }

    #[tokio::test]
    async fn an_error_or_a_cancellation_ends_a_call() {
        let (mut t, mut server, _from_us) = pipes();
        t.send(call(1)).await.unwrap();
        t.send(call(2)).await.unwrap();
        let error =
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "boom"}})
                .to_string();
        server
            .write_all(format!("{error}\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(received(&mut t).await, rmcp_reads(&error));
        let cancel = ClientNotification::CancelledNotification(Notification::new(
            CancelledNotificationParam::new(Some(RequestId::Number(2)), None),
        ));
        t.send(TxJsonRpcMessage::<RoleClient>::notification(cancel))
            .await
            .unwrap();
        assert!(t.calls.is_empty());
    }

    #[tokio::test]
    async fn garbage_is_passed_over_and_a_wrong_shape_is_answered_with_invalid_request() {
        let (mut t, mut server, mut from_us) = pipes();
        let ping = json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}).to_string();
        // A ping too long to read: were it read, its id (8) would come before the next one's.
        let pad = "x".repeat(MAX_LINE);
        let long = json!({"jsonrpc": "2.0", "id": 8, "method": "ping", "params": {"pad": pad}});
        let input = format!(
            "not json\n\n{long}\n{}\n{}\n{ping}\n",
            json!({"jsonrpc": "2.0", "method": "notifications/unknown", "params": 5}),
            json!({"jsonrpc": "2.0", "id": 4, "weird": true}),
        );
        let writer = tokio::spawn(async move {
            server.write_all(input.as_bytes()).await.unwrap();
            server
        });
        // Only the ping comes through; the message of the wrong shape is answered.
        assert_eq!(received(&mut t).await, rmcp_reads(&ping));
        let _server = writer.await.unwrap();
        let mut written = vec![0u8; 4096];
        let n = from_us.read(&mut written).await.unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&written[..n]).unwrap();
        assert_eq!(answer["error"]["code"], -32600, "{answer}");
    }

    #[tokio::test]
    async fn a_line_cut_by_a_cancelled_read_is_read_whole_later() {
        let (mut t, mut server, _from_us) = pipes();
        let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
        let (first, rest) = ping.split_at(10);
        server.write_all(first.as_bytes()).await.unwrap();
        let cut = tokio::time::timeout(Duration::from_millis(50), t.receive()).await;
        assert!(cut.is_err(), "half a line is not a message");
        server
            .write_all(format!("{rest}\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(received(&mut t).await, rmcp_reads(&ping));
    }
}
