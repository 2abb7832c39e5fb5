//! The client side: resolve, connect, TLS, opening handshake (RFC 6455 §4.1),
//! then hand over to `conn::run`.

use super::conn::{self, Cmd, Inbox, Options, Setup};
use super::tls::{self, TlsSettings};
use super::{ConnectError, ConnectFailure, Event, Sink};
use crate::proto::deflate::{negotiate, DeflateConfig, DeflateParams};
use crate::proto::handshake;
use crate::proto::mask::MaskKeys;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Where to connect, from a ws:// or wss:// URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The URL as the script gave it (for messages).
    pub url: String,
    pub secure: bool,
    pub host: String,
    pub port: u16,
    /// Value of the Host header.
    pub host_header: String,
    /// Path and query ("/" at least).
    pub resource: String,
}

/// Parses a WebSocket URL. http:// and https:// are accepted too, as tcllib
/// (which rewrites ws to http) does.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("Invalid URL '{url}': {e}"))?;
    let secure = match parsed.scheme() {
        "ws" | "http" => false,
        "wss" | "https" => true,
        s => {
            return Err(format!(
                "Invalid URL '{url}': unsupported scheme '{s}' (use ws:// or wss://)"
            ))
        }
    };
    // A fragment (RFC 6455 §3: meaningless here) is dropped, as tcllib's
    // http::geturl drops it: it never reaches the wire.
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(format!("Invalid URL '{url}': no host")),
    };
    let default_port = if secure { 443 } else { 80 };
    let port = parsed.port().unwrap_or(default_port);
    let host_in_header = match parsed.host() {
        Some(url::Host::Ipv6(a)) => format!("[{a}]"),
        _ => host.clone(),
    };
    let host_header = if port == default_port {
        host_in_header
    } else {
        format!("{host_in_header}:{port}")
    };
    let mut resource = parsed.path().to_string();
    if resource.is_empty() {
        resource.push('/');
    }
    if let Some(q) = parsed.query() {
        resource.push('?');
        resource.push_str(q);
    }
    Ok(Target {
        url: url.to_string(),
        secure,
        host,
        port,
        host_header,
        resource,
    })
}

/// Everything `::websocket::open` decided.
#[derive(Clone, Debug)]
pub struct Request {
    pub target: Target,
    pub protocols: Vec<String>,
    pub headers: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub myaddr: Option<String>,
    pub tls: TlsSettings,
    /// permessage-deflate to offer (None: offer no extension).
    pub deflate: Option<DeflateConfig>,
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

enum Transport {
    Tcp(TcpStream),
    Tls(Box<dyn Stream>),
}

struct Established {
    stream: Transport,
    leftover: Vec<u8>,
    protocol: String,
    deflate: Option<DeflateParams>,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
}

/// What the server's 101 answer settled besides the stream.
struct Answer {
    leftover: Vec<u8>,
    protocol: String,
    deflate: Option<DeflateParams>,
}

async fn connect_tcp(req: &Request) -> Result<TcpStream, ConnectError> {
    let net = |m: String| ConnectError::new(ConnectFailure::Network, m);
    let t = &req.target;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((t.host.as_str(), t.port))
        .await
        .map_err(|e| net(format!("Cannot resolve host '{}': {e}", t.host)))?
        .collect();
    if addrs.is_empty() {
        return Err(net(format!("Cannot resolve host '{}'", t.host)));
    }
    let local: Option<std::net::IpAddr> = match &req.myaddr {
        None => None,
        Some(a) => Some(match a.parse() {
            Ok(ip) => ip,
            Err(_) => tokio::net::lookup_host((a.as_str(), 0))
                .await
                .ok()
                .and_then(|mut it| it.next())
                .map(|s| s.ip())
                .ok_or_else(|| net(format!("Cannot resolve -myaddr '{a}'")))?,
        }),
    };
    let mut last = String::new();
    for addr in addrs {
        if let Some(ip) = local {
            if ip.is_ipv4() != addr.is_ipv4() {
                continue;
            }
        }
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        };
        let socket = match socket {
            Ok(s) => s,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        if let Some(ip) = local {
            if let Err(e) = socket.bind(SocketAddr::new(ip, 0)) {
                return Err(net(format!("Cannot bind to -myaddr '{ip}': {e}")));
            }
        }
        match socket.connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(net(format!("Cannot connect to {}: {last}", t.url)))
}

/// How far connecting got, for the message when `-timeout` ends it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Stage {
    Connecting = 0,
    Tls,
    AwaitingAnswer,
    PartAnswered,
}

/// Where a connection attempt is, readable after its future was dropped.
struct Progress(AtomicU8);

impl Progress {
    fn set(&self, stage: Stage) {
        self.0.store(stage as u8, Ordering::Relaxed);
    }

    /// tcllib's text, and what the package can tell of why.
    fn timeout_message(&self, url: &str) -> String {
        let why = match self.0.load(Ordering::Relaxed) {
            x if x == Stage::Connecting as u8 => {
                return format!("Timeout when connecting to {url}")
            }
            x if x == Stage::Tls as u8 => "the TLS handshake did not finish",
            x if x == Stage::AwaitingAnswer as u8 => {
                "the server accepted the connection but never answered the WebSocket handshake"
            }
            _ => "the server's answer to the WebSocket handshake never ended",
        };
        format!("Timeout when connecting to {url}: {why}")
    }
}

async fn handshake_on<S: Stream>(
    mut stream: S,
    req: &Request,
    progress: &Progress,
) -> Result<(S, Answer), ConnectError> {
    let io = |m: String| ConnectError::new(ConnectFailure::Io, m);
    let key = handshake::generate_key(&mut MaskKeys::new());
    // The package negotiates extensions itself: an offer the script put in
    // -headers gives way to ours.
    let mut headers = req.headers.clone();
    if let Some(cfg) = &req.deflate {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case("Sec-WebSocket-Extensions"));
        headers.push((
            "Sec-WebSocket-Extensions".into(),
            negotiate::client_offer(cfg),
        ));
    }
    let head = handshake::build_client_request(
        &req.target.host_header,
        &req.target.resource,
        &key,
        &req.protocols,
        &headers,
    )
    .map_err(|e| io(e.message))?;
    stream.write_all(&head).await.map_err(|e| {
        io(format!(
            "Cannot send the handshake to {}: {e}",
            req.target.url
        ))
    })?;
    stream.flush().await.map_err(|e| io(e.to_string()))?;
    progress.set(Stage::AwaitingAnswer);
    let mut buf = Vec::with_capacity(1024);
    loop {
        match handshake::parse_response(&buf) {
            Ok(Some((resp, used))) => {
                if resp.status != 101 {
                    return Err(ConnectError::new(
                        ConnectFailure::Status(resp.status),
                        format!(
                            "HTTP error code {} when establishing WebSocket connection with {}",
                            resp.status, req.target.url
                        ),
                    ));
                }
                let (protocol, deflate) = handshake::validate_response_with(
                    &resp,
                    &key,
                    &req.protocols,
                    req.deflate.as_ref(),
                )
                .map_err(|e| {
                    ConnectError::handshake(&e, format!("{} (from {})", e.message, req.target.url))
                })?;
                let leftover = buf[used..].to_vec();
                return Ok((
                    stream,
                    Answer {
                        leftover,
                        protocol,
                        deflate,
                    },
                ));
            }
            Ok(None) => {}
            Err(e) => {
                let message = format!(
                    "Invalid handshake response from {}: {}",
                    req.target.url, e.message
                );
                return Err(ConnectError::handshake(&e, message));
            }
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(|e| {
            io(format!(
                "Connection to {} failed during the handshake: {e}",
                req.target.url
            ))
        })?;
        if n == 0 {
            return Err(io(format!(
                "Connection to {} closed during the handshake",
                req.target.url
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
        progress.set(Stage::PartAnswered);
    }
}

async fn establish(req: &Request, progress: &Progress) -> Result<Established, ConnectError> {
    let tls_err = |m: String| ConnectError::new(ConnectFailure::Tls, m);
    let tcp = connect_tcp(req).await?;
    let peer = tcp.peer_addr().ok();
    let local = tcp.local_addr().ok();
    if req.target.secure {
        progress.set(Stage::Tls);
        let config = tls::client_config(&req.tls)
            .map_err(|e| tls_err(format!("TLS setup for {} failed: {e}", req.target.url)))?;
        let name = req
            .tls
            .servername
            .clone()
            .unwrap_or_else(|| req.target.host.clone());
        let server_name = ServerName::try_from(name.clone())
            .map_err(|_| tls_err(format!("Invalid TLS server name '{name}'")))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .map_err(|e| tls_err(format!("TLS handshake with {} failed: {e}", req.target.url)))?;
        let (s, a) = handshake_on(tls, req, progress).await?;
        Ok(Established {
            stream: Transport::Tls(Box::new(s)),
            leftover: a.leftover,
            protocol: a.protocol,
            deflate: a.deflate,
            peer,
            local,
        })
    } else {
        let (s, a) = handshake_on(tcp, req, progress).await?;
        Ok(Established {
            stream: Transport::Tcp(s),
            leftover: a.leftover,
            protocol: a.protocol,
            deflate: a.deflate,
            peer,
            local,
        })
    }
}

/// Connects in the background; reports `Connected`, `Error` or `Timeout`,
/// then runs the connection.
pub fn spawn(req: Request, mut opts: Options, id: u64, sink: Arc<dyn Sink>, mut inbox: Inbox) {
    super::runtime::handle().spawn(async move {
        let progress = Progress(AtomicU8::new(Stage::Connecting as u8));
        let connect = async {
            match req.timeout {
                Some(t) => tokio::time::timeout(t, establish(&req, &progress))
                    .await
                    .ok(),
                None => Some(establish(&req, &progress).await),
            }
        };
        tokio::pin!(connect);
        // The owner may give up (close, interpreter deleted) while we connect.
        let outcome = loop {
            tokio::select! {
                r = &mut connect => break r,
                cmd = inbox.recv() => match cmd {
                    None | Some(Cmd::Close(_)) => return,
                    Some(Cmd::Keepalive(k, payload)) => {
                        opts.keepalive = k;
                        opts.ping_payload = payload;
                    }
                    Some(Cmd::Data(_)) => {}
                },
            }
        };
        match outcome {
            None => sink.emit(
                id,
                Event::Timeout(progress.timeout_message(&req.target.url)),
            ),
            Some(Err(e)) => sink.emit(id, Event::Error(e)),
            Some(Ok(e)) => {
                sink.emit(
                    id,
                    Event::Connected {
                        protocol: e.protocol,
                        deflate: e.deflate,
                        peer: e.peer,
                        local: e.local,
                    },
                );
                if let (Some(params), Some(cfg)) = (e.deflate, &req.deflate) {
                    opts.deflate = Some((params, cfg.clone()));
                }
                let setup = Setup {
                    buffered: e.leftover,
                    preamble: Vec::new(),
                    opts,
                    id,
                    sink,
                    inbox,
                };
                // A task of its own: this one, sized for the handshake
                // (and TLS's), ends here.
                match e.stream {
                    Transport::Tcp(s) => tokio::spawn(conn::run_tcp(s, setup)),
                    Transport::Tls(s) => tokio::spawn(conn::run_stream(s, setup)),
                };
            }
        }
    });
}

/// Runs a connection over a Tcl-channel bridge.
pub fn spawn_bridged(stream: super::bridge::BridgeStream, setup: Setup) {
    super::runtime::handle().spawn(conn::run_stream(stream, setup));
}

/// Runs a connection on a socket taken over from Tcl.
pub fn spawn_taken(fd: std::os::fd::OwnedFd, setup: Setup) {
    let rt = super::runtime::handle();
    // from_std registers the socket with the runtime's reactor.
    let _in_runtime = rt.enter();
    let std_stream = std::net::TcpStream::from(fd);
    let stream = std_stream
        .set_nonblocking(true)
        .and_then(|_| TcpStream::from_std(std_stream));
    match stream {
        Ok(s) => {
            rt.spawn(conn::run_tcp(s, setup));
        }
        Err(e) => setup.sink.emit(
            setup.id,
            Event::Closed {
                code: crate::proto::close::ABNORMAL,
                reason: format!("cannot use the socket: {e}"),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("ws://example.com/chat?x=1").unwrap();
        assert_eq!(
            (
                t.secure,
                t.port,
                t.host_header.as_str(),
                t.resource.as_str()
            ),
            (false, 80, "example.com", "/chat?x=1")
        );
        let t = parse_url("wss://127.0.0.1:8443").unwrap();
        assert_eq!(
            (
                t.secure,
                t.port,
                t.host_header.as_str(),
                t.resource.as_str()
            ),
            (true, 8443, "127.0.0.1:8443", "/")
        );
        let t = parse_url("ws://[::1]:9000/a").unwrap();
        assert_eq!(
            (t.host.as_str(), t.host_header.as_str()),
            ("::1", "[::1]:9000")
        );
        assert!(parse_url("ftp://x/").is_err());
        let t = parse_url("ws://x/a?b#frag").unwrap();
        assert_eq!(t.resource, "/a?b", "the fragment never reaches the wire");
        assert!(parse_url("not a url").is_err());
    }
}
