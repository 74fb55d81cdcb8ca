//! Secrets in URLs (a NATS password, a token in an MCP server's query): read where they are
//! needed, shown nowhere. The helpers here give a URL's shown form, find its secrets in a text,
//! and list them for the log writer to keep out (`wharf_telemetry::redact`).

/// `raw` without the secrets it may hold, for logs, errors and reads of the configuration: a
/// user and password become `***`, and so does the value of every query parameter (a
/// `?token=` is as secret as a password, and which parameters are secrets cannot be told). A
/// URL with an `@` or a `?` that does not parse is not shown at all: where its secrets end
/// cannot be told.
pub fn redact_url(raw: &str) -> String {
    if let Some(urls) = url_list(raw) {
        return urls
            .into_iter()
            .map(redact_url)
            .collect::<Vec<_>>()
            .join(",");
    }
    if !raw.contains('@') && !raw.contains('?') {
        return raw.to_owned();
    }
    let Ok(mut u) = url::Url::parse(raw) else {
        return "<a URL that does not parse>".into();
    };
    let mut changed = false;
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_password(None);
        let _ = u.set_username("***");
        changed = true;
    }
    if let Some(query) = u.query().filter(|q| !q.is_empty()) {
        let redacted = redact_query(query);
        u.set_query(Some(&redacted));
        changed = true;
    }
    if changed {
        u.to_string()
    } else {
        raw.to_owned()
    }
}

/// A query string with each value replaced by `***`; names stay, as they were written.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}=***"),
            None if pair.is_empty() => String::new(),
            None => "***".to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The secrets `url` holds, in the forms a log line may quote them (as written and decoded): a
/// password, a user part long enough to be a token, each query value. For
/// `wharf_telemetry::redact::keep_out_of_logs`.
pub fn url_secrets(url: &str) -> Vec<String> {
    if let Some(urls) = url_list(url) {
        let mut out: Vec<String> = Vec::new();
        for secret in urls.into_iter().flat_map(url_secrets) {
            if !out.contains(&secret) {
                out.push(secret);
            }
        }
        return out;
    }
    let Ok(u) = url::Url::parse(url) else {
        return Vec::new();
    };
    let mut raw: Vec<&str> = Vec::new();
    raw.extend(u.password());
    if u.username().len() >= 8 {
        raw.push(u.username());
    }
    if let Some(query) = u.query() {
        raw.extend(
            query
                .split('&')
                .map(|pair| pair.split_once('=').map_or(pair, |(_, value)| value))
                .filter(|v| !v.is_empty()),
        );
    }
    let mut out: Vec<String> = Vec::new();
    for secret in raw {
        for form in [secret.to_owned(), decode(&secret.replace('+', " "))] {
            if !out.contains(&form) {
                out.push(form);
            }
        }
    }
    out
}

/// `text` (an error message that may quote `url`, say) with the secrets of `url` in it replaced
/// as [`redact_url`] replaces them, in whichever form the text quotes the URL.
pub fn scrub_url(text: &str, url: &str) -> String {
    let redacted = redact_url(url);
    if redacted == url {
        return text.to_owned();
    }
    let mut out = text.replace(url, &redacted);
    if let Ok(u) = url::Url::parse(url) {
        out = out.replace(u.as_str(), &redacted);
        if let Some(query) = u.query().filter(|q| !q.is_empty()) {
            out = out.replace(query, &redact_query(query));
        }
        if let Some(password) = u.password().filter(|p| p.len() >= 4) {
            out = out.replace(password, "***");
        }
        // A user part may be the secret itself (`nats://token@host`); short ones are names.
        if u.username().len() >= 8 {
            out = out.replace(u.username(), "***");
        }
    }
    out
}

/// The URLs of a comma-separated list (`nats://a:4222,nats://b:4222`, how several NATS servers
/// are named), or `None` when `raw` is one URL (which may hold a comma in its query).
pub(crate) fn url_list(raw: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = raw.split(',').map(str::trim).collect();
    (parts.len() > 1 && parts.iter().all(|p| p.contains("://"))).then_some(parts)
}

/// Undoes the percent-encoding of a URL's user or password.
pub(crate) fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_are_read_and_never_shown() {
        assert_eq!(
            redact_url("nats://wharf:s3cret@nats:4222"),
            "nats://***@nats:4222"
        );
        assert_eq!(redact_url("nats://token@nats"), "nats://***@nats");
        assert_eq!(
            redact_url("nats://u:s3cret@a:4222, nats://u:s3cret@b:4222"),
            "nats://***@a:4222,nats://***@b:4222"
        );
        assert_eq!(
            redact_url("https://mcp.example.com/mcp?ids=1,2"),
            "https://mcp.example.com/mcp?ids=***"
        );
        assert_eq!(redact_url("nats://nats:4222"), "nats://nats:4222");
        assert_eq!(redact_url("nats://nats/a@b"), "nats://nats/a@b");
        assert_eq!(
            redact_url("nats://u:pa/ss@host:4222"),
            "<a URL that does not parse>"
        );
        assert_eq!(
            redact_url("nats://u:pa%2Fss@host:4222"),
            "nats://***@host:4222"
        );
        assert_eq!(
            redact_url("https://mcp.example.com/mcp?token=s3cret&mode=fast"),
            "https://mcp.example.com/mcp?token=***&mode=***"
        );
        assert_eq!(
            redact_url("https://u:p@mcp.example.com/?key"),
            "https://***@mcp.example.com/?***"
        );
        assert_eq!(
            redact_url("https://mcp.example.com/mcp?"),
            "https://mcp.example.com/mcp?"
        );
        let url = "http://127.0.0.1:9/mcp?token=s3cretvalue";
        let said = "error sending request for url (http://127.0.0.1:9/mcp?token=s3cretvalue)";
        let scrubbed = scrub_url(said, url);
        assert!(!scrubbed.contains("s3cretvalue"), "{scrubbed}");
        assert!(
            scrubbed.contains("http://127.0.0.1:9/mcp?token=***"),
            "{scrubbed}"
        );
        // The form a client library prints (normalised) is found too.
        let url = "HTTP://Example.com:80/a?token=s3cretvalue";
        assert!(
            !scrub_url("for url (http://example.com/a?token=s3cretvalue)", url).contains("s3cret")
        );
        assert_eq!(
            url_secrets("https://u:p%40ss@h/mcp?token=a%2Fb&x"),
            ["p%40ss", "p@ss", "a%2Fb", "a/b", "x"]
        );
        assert!(url_secrets("https://h/mcp").is_empty());
        assert_eq!(
            url_secrets("nats://u:one1@a:4222,nats://u:two2@b:4222"),
            ["one1", "two2"]
        );
        assert_eq!(decode("p%40ss%3Aword"), "p@ss:word");
        assert_eq!(decode("p%C3%A4ss%2Fw"), "päss/w");
        assert_eq!(decode("plain"), "plain");
    }
}
