//! `socket`: records from TCP or Unix stream connections (newline or
//! RFC 6587 octet-counting framing) and from UDP datagrams (one record per
//! datagram, or per line with newline framing). Optionally parses each
//! record as syslog (RFC 5424 / 3164, stored as a JSON object) or checks it
//! is JSON.
//!
//! Connections read into a bounded queue that the source's task empties
//! into the log: when the log pushes back, the queue fills and connections
//! stop being read (TCP backpressure). Oversized frames are dropped and
//! counted; a record that fails the configured parse is dropped, counted
//! and logged, never stored half.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use shipper_core::chunk::now_nanos;
use shipper_core::plugin::{PluginError, Source, SourceContext};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::framing::lines::{LineOptions, LineSplitter, Overlong};
use crate::framing::octet::OctetDecoder;

/// Where the source listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// TCP on an address.
    Tcp(SocketAddr),
    /// UDP on an address.
    Udp(SocketAddr),
    /// A Unix stream socket at a path.
    Unix(PathBuf),
}

/// How a stream is cut into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketFraming {
    /// One record per line.
    Newline,
    /// RFC 6587 octet counting: `LEN SP MSG`.
    OctetCounting,
}

/// What is done to each record before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketParse {
    /// Stored as received.
    None,
    /// Parsed as syslog and stored as a JSON object.
    Syslog,
    /// Stored if it is one JSON value, dropped (counted) otherwise.
    Json,
}

/// Options of a [`SocketSource`].
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// Where to listen.
    pub listen: Listen,
    /// Stream framing (UDP: `Newline` splits datagrams into lines).
    pub framing: SocketFraming,
    /// Connections served at once; more are closed at once, counted.
    pub max_connections: usize,
    /// Longest record; longer ones are dropped and counted.
    pub max_frame_bytes: usize,
    /// Parsing of each record.
    pub parse: SocketParse,
}

/// Counters of a socket source.
#[derive(Debug, Default)]
pub struct SocketCounters {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections refused because `max_connections` were open.
    pub refused: AtomicU64,
    /// Records stored.
    pub records: AtomicU64,
    /// Frames dropped for being longer than `max_frame_bytes`.
    pub oversized: AtomicU64,
    /// Records dropped because they did not parse.
    pub unparsable: AtomicU64,
}

/// Records read by a connection, handed to the source's task.
#[derive(Debug, Default)]
struct Batch {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    fn push(&mut self, record: &[u8]) {
        self.data.extend_from_slice(record);
        self.ends.push(self.data.len());
    }
}

/// Applies the parse option; `None` means: drop it (counted).
fn prepare<'a>(
    parse: SocketParse,
    record: &'a [u8],
    scratch: &'a mut Vec<u8>,
    counters: &SocketCounters,
) -> Option<&'a [u8]> {
    match parse {
        SocketParse::None => Some(record),
        SocketParse::Json => match serde_json::from_slice::<serde::de::IgnoredAny>(record) {
            Ok(_) => Some(record),
            Err(error) => {
                counters.unparsable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "socket record is not JSON; dropped");
                None
            }
        },
        SocketParse::Syslog => match crate::parse::syslog::parse(record) {
            Ok(syslog) => {
                scratch.clear();
                crate::parse::syslog::write_json(&syslog, scratch);
                Some(&scratch[..])
            }
            Err(error) => {
                counters.unparsable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "socket record is not syslog; dropped");
                None
            }
        },
    }
}

/// Listens on a socket and emits every record it receives.
#[derive(Debug)]
pub struct SocketSource {
    options: SocketOptions,
    stream: String,
    bound: Option<Bound>,
    counters: Arc<SocketCounters>,
}

#[derive(Debug)]
enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
    Unix(UnixListener),
}

impl SocketSource {
    /// Binds the socket now, so that an address in use is an error at
    /// start. Records go to `stream`.
    pub async fn bind(options: SocketOptions, stream: &str) -> Result<Self, PluginError> {
        let bound = match &options.listen {
            Listen::Tcp(address) => Bound::Tcp(
                TcpListener::bind(address)
                    .await
                    .map_err(|e| PluginError::Fatal(format!("listening on tcp {address}: {e}")))?,
            ),
            Listen::Udp(address) => Bound::Udp(
                UdpSocket::bind(address)
                    .await
                    .map_err(|e| PluginError::Fatal(format!("binding udp {address}: {e}")))?,
            ),
            Listen::Unix(path) => {
                // A socket file left by an earlier run is replaced; any
                // other kind of file is not touched.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    let _ = std::fs::remove_file(path);
                }
                Bound::Unix(UnixListener::bind(path).map_err(|e| {
                    PluginError::Fatal(format!("listening on unix socket {}: {e}", path.display()))
                })?)
            }
        };
        Ok(SocketSource {
            options,
            stream: stream.to_owned(),
            bound: Some(bound),
            counters: Arc::default(),
        })
    }

    /// The bound address (TCP or UDP), e.g. after binding port 0.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self.bound.as_ref()? {
            Bound::Tcp(listener) => listener.local_addr().ok(),
            Bound::Udp(socket) => socket.local_addr().ok(),
            Bound::Unix(_) => None,
        }
    }

    /// The counters, shared with the running source.
    pub fn counters(&self) -> Arc<SocketCounters> {
        self.counters.clone()
    }
}

/// Reads one stream connection until it ends, sending its records.
async fn serve_stream<S: AsyncRead + Unpin>(
    mut stream: S,
    options: SocketOptions,
    counters: Arc<SocketCounters>,
    batches: mpsc::Sender<Batch>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut scratch = Vec::new();
    let mut lines = LineSplitter::new(LineOptions {
        max_line_bytes: options.max_frame_bytes,
        overlong: Overlong::Drop,
        ..LineOptions::default()
    });
    let mut octets = OctetDecoder::new(options.max_frame_bytes);
    loop {
        let n = match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut batch = Batch::default();
        match options.framing {
            SocketFraming::Newline => {
                let mut cursor = lines.feed(&buffer[..n]);
                while let Some(line) = cursor.next() {
                    if let Some(record) =
                        prepare(options.parse, line.bytes, &mut scratch, &counters)
                    {
                        batch.push(record);
                    }
                }
            }
            SocketFraming::OctetCounting => {
                let mut frames = octets.feed(&buffer[..n]);
                while let Some(frame) = frames.next() {
                    match frame {
                        Ok(frame) => {
                            if let Some(record) =
                                prepare(options.parse, frame.bytes, &mut scratch, &counters)
                            {
                                batch.push(record);
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "bad octet-counting frame; closing the connection");
                            let _ = batches.send(batch).await;
                            counters
                                .oversized
                                .store(octets.oversized_frames(), Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }
        }
        if !batch.ends.is_empty() && batches.send(batch).await.is_err() {
            return;
        }
    }
    let mut batch = Batch::default();
    if options.framing == SocketFraming::Newline {
        if let Some(last) = lines.finish() {
            if let Some(record) = prepare(options.parse, last.bytes, &mut scratch, &counters) {
                batch.push(record);
            }
        }
        counters
            .oversized
            .fetch_add(lines.dropped_lines(), Ordering::Relaxed);
    } else {
        counters
            .oversized
            .fetch_add(octets.oversized_frames(), Ordering::Relaxed);
    }
    if !batch.ends.is_empty() {
        let _ = batches.send(batch).await;
    }
}

/// Receives datagrams until the queue closes, sending their records.
async fn serve_udp(
    socket: UdpSocket,
    options: SocketOptions,
    counters: Arc<SocketCounters>,
    batches: mpsc::Sender<Batch>,
) {
    let mut buffer = vec![0u8; 65_536];
    let mut scratch = Vec::new();
    loop {
        let n = match socket.recv(&mut buffer).await {
            Ok(n) => n,
            Err(error) => {
                tracing::warn!(%error, "udp receive failed");
                continue;
            }
        };
        let datagram = &buffer[..n];
        let mut batch = Batch::default();
        let pieces: Vec<&[u8]> = match options.framing {
            SocketFraming::Newline => datagram
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .collect(),
            SocketFraming::OctetCounting => vec![datagram],
        };
        for piece in pieces {
            if piece.len() > options.max_frame_bytes {
                counters.oversized.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Some(record) = prepare(options.parse, piece, &mut scratch, &counters) {
                batch.push(record);
            }
        }
        if !batch.ends.is_empty() && batches.send(batch).await.is_err() {
            return;
        }
    }
}

#[async_trait]
impl Source for SocketSource {
    async fn run(&mut self, cx: &mut SourceContext) -> Result<(), PluginError> {
        let bound = self
            .bound
            .take()
            .ok_or_else(|| PluginError::Fatal("socket source run twice".into()))?;
        let (sender, mut receiver) = mpsc::channel::<Batch>(64);
        let mut tasks = JoinSet::new();
        let options = self.options.clone();
        let counters = self.counters.clone();
        match bound {
            Bound::Udp(socket) => {
                tasks.spawn(serve_udp(socket, options, counters, sender));
            }
            Bound::Tcp(listener) => {
                tasks.spawn(accept_loop(listener, options, counters, sender));
            }
            Bound::Unix(listener) => {
                tasks.spawn(accept_loop(listener, options, counters, sender));
            }
        }
        loop {
            let linger = super::linger(cx.emitter.deadline());
            tokio::select! {
                batch = receiver.recv() => match batch {
                    Some(batch) => self.emit(cx, &batch)?,
                    None => break,
                },
                () = linger => cx.emitter.poll(Instant::now())?,
                () = cx.shutdown.wait() => break,
            }
        }
        // Stop reading, then store what was already read.
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        while let Ok(batch) = receiver.try_recv() {
            self.emit(cx, &batch)?;
        }
        cx.emitter.durable().await?;
        Ok(())
    }
}

impl SocketSource {
    fn emit(&self, cx: &mut SourceContext, batch: &Batch) -> Result<(), PluginError> {
        let now = now_nanos();
        let mut start = 0;
        for &end in &batch.ends {
            cx.emitter
                .emit(&self.stream, &batch.data[start..end], now, None)?;
            start = end;
        }
        self.counters
            .records
            .fetch_add(batch.ends.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// A listener of stream connections.
trait Acceptor: Send + 'static {
    type Stream: AsyncRead + Unpin + Send + 'static;
    fn accept_stream(
        &self,
    ) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Acceptor for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_stream(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Acceptor for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_stream(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Accepts connections, serving at most `max_connections` at once.
async fn accept_loop<A: Acceptor>(
    listener: A,
    options: SocketOptions,
    counters: Arc<SocketCounters>,
    batches: mpsc::Sender<Batch>,
) {
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept_stream().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                max = options.max_connections,
                "connection refused: max_connections reached"
            );
            drop(stream);
            continue;
        };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let (options, counters, batches) = (options.clone(), counters.clone(), batches.clone());
        connections.spawn(async move {
            serve_stream(stream, options, counters, batches).await;
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
}
