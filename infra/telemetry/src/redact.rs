//! Secrets kept out of log lines, whoever writes them.
//!
//! A secret a Wharf part must use but never show (a token in the query of an MCP server's URL)
//! is registered here once ([`keep_out_of_logs`]); the log writer replaces it with `***` in
//! every line, Wharf's own and those of the libraries underneath (an HTTP client's error that
//! prints the URL it failed to reach, say). Lines are scanned only while something is
//! registered.

use std::io::Write;
use std::sync::RwLock;

use tracing_subscriber::fmt::MakeWriter;

/// What is replaced. Secrets are few (one per server URL that has one), so a list will do.
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Shorter strings are not taken for secrets: replacing them everywhere would garble the logs
/// and hide nothing worth hiding.
const SHORTEST: usize = 6;

/// From now on, `secret` is written `***` in every log line of this process.
pub fn keep_out_of_logs(secret: &str) {
    if secret.len() < SHORTEST {
        return;
    }
    let mut secrets = SECRETS.write().expect("never poisoned");
    if !secrets.iter().any(|s| s == secret) {
        secrets.push(secret.to_owned());
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `line` with every registered secret replaced; `None` when it holds none.
fn scrub(line: &[u8]) -> Option<Vec<u8>> {
    let secrets = SECRETS.read().expect("never poisoned");
    if secrets.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(line);
    let found = secrets.iter().filter(|s| text.contains(s.as_str()));
    let mut out: Option<String> = None;
    for secret in found {
        let current = out.as_deref().unwrap_or(&text);
        out = Some(current.replace(secret.as_str(), "***"));
    }
    out.map(String::into_bytes)
}

/// A log writer that scrubs each line before it reaches `W` (the formatter writes one event
/// per call).
pub(crate) struct Scrubbed<M>(pub(crate) M);

pub(crate) struct ScrubbedWriter<W>(W);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Scrubbed<M> {
    type Writer = ScrubbedWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedWriter(self.0.make_writer())
    }
}

impl<W: Write> Write for ScrubbedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match scrub(buf) {
            Some(clean) => self.0.write_all(&clean).map(|()| buf.len()),
            None => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_secret_never_reaches_a_line() {
        keep_out_of_logs("tok-12345678");
        keep_out_of_logs("abc");
        let mut out = Vec::new();
        let mut w = ScrubbedWriter(&mut out);
        w.write_all(b"url: \"http://h/mcp?token=tok-12345678\" abc\n")
            .unwrap();
        w.write_all(b"nothing secret here\n").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text, "url: \"http://h/mcp?token=***\" abc\nnothing secret here\n",
            "short strings are not secrets"
        );
    }
}
