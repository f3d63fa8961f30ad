//! Loopback helpers the process-level tests and benchmarks share: a free
//! port, a name no other run uses, and a plain HTTP/1.1 exchange.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

/// A port nothing listens on right now, on 127.0.0.1.
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("binding 127.0.0.1:0")
        .local_addr()
        .expect("a local address")
        .port()
}

/// A name no other test or run uses: `shipper_test_<pid>_<nanos>_<name>`,
/// a plain identifier when `name` is one (a table, a subject, a topic).
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("shipper_test_{}_{nanos}_{name}", std::process::id())
}

/// One HTTP/1.1 request to 127.0.0.1:`port` on a fresh connection
/// (`Connection: close`), with `headers` and `body`: the answer's status
/// and body. A server that answers and closes before the whole body is
/// sent (a refusal by the headers) still has its answer read.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let stream = connect(port)?;
    exchange(stream, method, path, headers, body)
}

/// [`http`] over TLS with `config` (server name `localhost`): a failed
/// handshake is the error, with rustls's reason.
pub fn https(
    port: u16,
    config: std::sync::Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a DNS name");
    let connection = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(connection, connect(port)?);
    // The handshake now, so that its failure is reported as such.
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    exchange(stream, method, path, headers, body)
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    // A server that never answers fails the test instead of hanging it.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    Ok(stream)
}

fn exchange(
    mut stream: impl Read + Write,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let sent = stream.write_all(body).and_then(|()| stream.flush());
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let Some(status) = answer.get(9..12).and_then(|s| s.parse().ok()) else {
        // No answer: the failure to send or read is the error.
        sent?;
        read?;
        return Err(std::io::Error::other(format!(
            "not an HTTP answer: {answer:?}"
        )));
    };
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    Ok((status, body))
}
