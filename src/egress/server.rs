//! The egress server on one job port: the forward proxy ([`EGRESS_PROXY_PORT`]: `CONNECT
//! host:443` then TLS terminated with that host's certificate, or plain `GET
//! http://host/path`), TLS with the certificate the client's SNI names (443), or plain
//! HTTP by `Host` (80). Each request for a mapped host is answered under its rule's policy
//! (`Egress::answer`); anything else is refused at once, answered with an error status or a
//! closed connection, and recorded.
//!
//! One thread per connection, keep-alive, GET and HEAD only, no ranges. Request heads are
//! parsed with `httparse`, TLS is rustls.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{Answer, EGRESS_HTTP_PORT, EGRESS_HTTPS_PORT, EGRESS_PROXY_PORT, Egress, EgressRule};
use crate::error::{Error, IoContext, Result};
use crate::inputs::lock::InputsLock;
use crate::inputs::wake::Accepting;

/// One certificate whatever the client asks (a CONNECT tunnel's host is known already).
#[derive(Debug)]
pub(super) struct Fixed(pub(super) Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The egress serving one job port.
pub(crate) struct EgressListener {
    state: Arc<State>,
    accept: JoinHandle<()>,
}

struct State {
    egress: Arc<Egress>,
    port: u16,
    accepting: Accepting,
    /// What this listener answered (the job's share of the run's record).
    lock: Mutex<InputsLock>,
}

impl EgressListener {
    /// Serve `port`'s role on `listener` until [`EgressListener::stop`].
    pub(crate) fn serve(egress: Arc<Egress>, port: u16, listener: TcpListener) -> Result<Self> {
        listener
            .set_nonblocking(false)
            .ctx("configure listener", "egress listener")?;
        let state = Arc::new(State {
            egress,
            port,
            accepting: Accepting::new()
                .map_err(|e| Error::io("create an eventfd for", "the egress", e))?,
            lock: Mutex::new(InputsLock::default()),
        });
        let st = state.clone();
        let accept = std::thread::Builder::new()
            .name("egress-accept".into())
            .spawn(move || accept_loop(listener, st))
            .map_err(|e| Error::io("spawn thread", "egress", e))?;
        Ok(EgressListener { state, accept })
    }

    /// Stop accepting, let open connections end (a few seconds at most), and return every
    /// request answered on this port.
    pub(crate) fn stop(self) -> InputsLock {
        self.state.accepting.stop(self.accept);
        self.state.lock.lock().expect("not poisoned").clone()
    }
}

fn accept_loop(listener: TcpListener, st: Arc<State>) {
    let st2 = st.clone();
    st.accepting.run(
        &listener,
        "egress-conn",
        Arc::new(move |stream| {
            if let Err(e) = serve_conn(stream, &st2) {
                tracing::debug!("egress: connection: {e}");
            }
        }),
    );
}

fn serve_conn(stream: TcpStream, st: &State) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    if let Some(addr) = raw_address(&stream) {
        refuse_raw(&st.egress, addr);
        return Ok(());
    }
    if st.port == EGRESS_HTTPS_PORT {
        return serve_tls(stream, st, None);
    }
    let mut r = BufReader::with_capacity(16 * 1024, stream);
    let Some(head) = read_head(&mut r, st)? else {
        return Ok(());
    };
    let req = match parse_head(&head) {
        Ok(req) => req,
        Err(code) => return respond_error(r.get_mut(), code, false, "bad request"),
    };
    if req.method == "CONNECT" && st.port == EGRESS_PROXY_PORT {
        let (host, port) = split_authority(&req.target, 0);
        let what = format!("CONNECT {}", req.target);
        if let Some(reason) = refusal(&st.egress, &host, port, EGRESS_HTTPS_PORT) {
            st.egress.refuse(&host, port, what, reason);
            return respond_error(r.get_mut(), 403, false, reason);
        }
        if !r.buffer().is_empty() {
            return respond_error(r.get_mut(), 400, false, "data before the tunnel was open");
        }
        let mut stream = r.into_inner();
        stream.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
        return serve_tls(stream, st, Some(host));
    }
    // Plain HTTP: the proxy's absolute form, or origin form with `Host` (port 80).
    http_loop(r, st, None, Some(req))
}

/// Every IPv4 address is the job's own (`Job::loopback_catch_all`): a connect to any other
/// than loopback was meant for the outside, by address. Refused and recorded.
pub(super) fn refuse_raw(egress: &Egress, addr: SocketAddr) {
    egress.refuse(
        &addr.ip().to_string(),
        addr.port(),
        format!("connect to {addr}"),
        "a raw IP address; only mapped host names are reached",
    );
}

/// The address a connection was made to when it was not the job's loopback: the socket's
/// own (a container job's catch-all route), or the one a microVM guest's forwarder names
/// in a PROXY protocol v1 line (`vm/init`: such a forward sends that line alone). The line
/// is only ever a reason to refuse, so a job that writes one itself gains nothing.
/// `stream` has a read timeout; nothing is consumed.
pub(super) fn raw_address(stream: &TcpStream) -> Option<SocketAddr> {
    if let Ok(local) = stream.local_addr()
        && !local.ip().is_loopback()
    {
        return Some(local);
    }
    const TAG: &[u8] = b"PROXY ";
    // A v1 line is at most 107 bytes; it may come in pieces.
    let mut buf = [0u8; 108];
    for _ in 0..50 {
        let n = match stream.peek(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        let got = &buf[..n];
        if n == 0 || !(got.starts_with(TAG) || TAG.starts_with(got)) {
            return None;
        }
        if let Some(end) = got.windows(2).position(|w| w == b"\r\n") {
            return proxy_v1_destination(std::str::from_utf8(&got[..end]).ok()?);
        }
        if n == buf.len() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The destination of a PROXY protocol v1 line (`PROXY TCP4 SRC DST SPORT DPORT`).
fn proxy_v1_destination(line: &str) -> Option<SocketAddr> {
    let f: Vec<&str> = line.split(' ').collect();
    match f.as_slice() {
        ["PROXY", "TCP4" | "TCP6", _src, dst, _sport, dport] => {
            Some(SocketAddr::new(dst.parse().ok()?, dport.parse().ok()?))
        }
        _ => None,
    }
}

/// Why `host:port` may not be reached (`None`: it may, on `want`).
fn refusal(egress: &Egress, host: &str, port: u16, want: u16) -> Option<&'static str> {
    if host.is_empty() {
        Some("no host named")
    } else if host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
        Some("a raw IP address; only mapped host names are reached")
    } else if egress.rule(host).is_none() {
        Some("host not in the egress rules")
    } else if port != want {
        Some("port not served for this host")
    } else {
        None
    }
}

/// Split `host[:port]` (lowercase host); `default` when no port is given.
fn split_authority(a: &str, default: u16) -> (String, u16) {
    let a = a.to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        // [v6]:port
        let (ip, tail) = rest.split_once(']').unwrap_or((rest, ""));
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return (ip.to_string(), port.unwrap_or(default));
    }
    match a.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().unwrap_or(0)),
        None => (a, default),
    }
}

fn serve_tls(
    mut stream: TcpStream,
    st: &State,
    connect_host: Option<String>,
) -> std::io::Result<()> {
    let mut acceptor = Acceptor::default();
    let accepted = loop {
        match acceptor.read_tls(&mut stream) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if retry(&e) => {
                if st.accepting.stopping() {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        }
        match acceptor.accept() {
            Ok(Some(a)) => break a,
            Ok(None) => continue,
            Err((e, mut alert)) => {
                let _ = alert.write_all(&mut stream);
                return Err(std::io::Error::other(e));
            }
        }
    };
    let sni = accepted
        .client_hello()
        .server_name()
        .map(|s| s.to_ascii_lowercase());
    let host = match (connect_host, sni) {
        (Some(h), Some(s)) if h != s => {
            st.egress.refuse(
                &s,
                EGRESS_HTTPS_PORT,
                format!("TLS server name {s} in a tunnel to {h}"),
                "the server name differs from the CONNECT host",
            );
            return Ok(());
        }
        (Some(h), _) => h,
        (None, Some(s)) => s,
        (None, None) => {
            st.egress.refuse(
                "-",
                EGRESS_HTTPS_PORT,
                "TLS without a server name".into(),
                "no host named (a raw IP address?)",
            );
            return Ok(());
        }
    };
    let Some(config) = st.egress.tls.get(&host).cloned() else {
        st.egress.refuse(
            &host,
            EGRESS_HTTPS_PORT,
            format!("TLS server name {host}"),
            "host not in the egress rules",
        );
        return Ok(());
    };
    let conn = match accepted.into_connection(config) {
        Ok(c) => c,
        Err((e, mut alert)) => {
            let _ = alert.write_all(&mut stream);
            return Err(std::io::Error::other(e));
        }
    };
    let tls = rustls::StreamOwned::new(conn, stream);
    http_loop(
        BufReader::with_capacity(16 * 1024, tls),
        st,
        Some(host),
        None,
    )
}

fn retry(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

struct Head {
    method: String,
    target: String,
    host: Option<String>,
    close: bool,
    body: bool,
}

/// Serve requests until the client closes: over TLS for `tls_host`, else plain HTTP (the
/// first request may already have been read).
fn http_loop<S: Read + BodyOut>(
    mut r: BufReader<S>,
    st: &State,
    tls_host: Option<String>,
    mut first: Option<Head>,
) -> std::io::Result<()> {
    loop {
        let req = match first.take() {
            Some(h) => h,
            None => {
                let Some(head) = read_head(&mut r, st)? else {
                    return Ok(());
                };
                match parse_head(&head) {
                    Ok(h) => h,
                    Err(code) => return respond_error(r.get_mut(), code, false, "bad request"),
                }
            }
        };
        let head_only = req.method == "HEAD";
        let (scheme, host, port, path) = match &tls_host {
            Some(h) => ("https", h.clone(), EGRESS_HTTPS_PORT, req.target.clone()),
            None => {
                let (authority, path) = match req.target.strip_prefix("http://") {
                    Some(rest) => match rest.find('/') {
                        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
                        None => (rest.to_string(), "/".to_string()),
                    },
                    None if req.target.starts_with('/') => {
                        (req.host.clone().unwrap_or_default(), req.target.clone())
                    }
                    None => {
                        let what = format!("{} {}", req.method, req.target);
                        st.egress.refuse(
                            "-",
                            st.port,
                            what,
                            "not an http:// or origin-form target",
                        );
                        return respond_error(r.get_mut(), 400, head_only, "unsupported target");
                    }
                };
                let (h, p) = split_authority(&authority, EGRESS_HTTP_PORT);
                ("http", h, p, path)
            }
        };
        let want = if scheme == "https" {
            EGRESS_HTTPS_PORT
        } else {
            EGRESS_HTTP_PORT
        };
        let what = format!("{} {scheme}://{host}{path}", req.method);
        let refused = refusal(&st.egress, &host, port, want)
            .or_else(|| {
                (!matches!(req.method.as_str(), "GET" | "HEAD"))
                    .then_some("only GET and HEAD are served")
            })
            .or_else(|| req.body.then_some("a request with a body"))
            .or_else(|| (!path_is_safe(&path)).then_some("the path has . or .. segments"));
        if let Some(reason) = refused {
            st.egress.refuse(&host, port, what, reason);
            respond_error(r.get_mut(), 403, head_only, reason)?;
            return Ok(());
        }
        let rule: &EgressRule = st.egress.rule(&host).expect("checked above");
        let canonical = rule.canonical(scheme, &path);
        match st.egress.answer(rule, &canonical, &path, &st.lock) {
            Answer::Blob(blob, _) => send_blob(r.get_mut(), &blob, head_only, None)?,
            Answer::Oci(blob, _, media) => send_blob(r.get_mut(), &blob, head_only, Some(&media))?,
            Answer::ApiBase => send_api_base(r.get_mut(), head_only)?,
            Answer::Refused { code, reason, .. } => {
                respond_error(r.get_mut(), code, head_only, &reason)?
            }
        }
        if req.close {
            return Ok(());
        }
    }
}

/// Read one request head (through the blank line); `None` at the end of the connection or
/// on stop.
fn read_head<R: Read>(r: &mut BufReader<R>, st: &State) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        match r.read_until(b'\n', &mut head) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) if retry(&e) => {
                if st.accepting.stopping() {
                    return Ok(None);
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        if head.len() > 32 * 1024 {
            return Ok(Some(head)); // httparse refuses it as incomplete/too long
        }
        if !head.ends_with(b"\n") {
            continue;
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                head.clear(); // stray CRLF between requests
                continue;
            }
            return Ok(Some(head));
        }
    }
}

fn parse_head(bytes: &[u8]) -> std::result::Result<Head, u16> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(431),
        Err(_) => return Err(400),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(400);
    };
    let mut close = version == 0;
    let mut host = None;
    let mut body = false;
    for h in req.headers.iter() {
        let v = String::from_utf8_lossy(h.value).trim().to_string();
        if h.name.eq_ignore_ascii_case("connection") {
            if v.eq_ignore_ascii_case("close") {
                close = true;
            } else if v.eq_ignore_ascii_case("keep-alive") {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("host") {
            host = Some(v);
        } else if (h.name.eq_ignore_ascii_case("content-length") && v != "0")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
        {
            body = true;
        }
    }
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        host,
        close,
        body,
    })
}

fn path_is_safe(path: &str) -> bool {
    let p = path.split(['?', '#']).next().unwrap_or("");
    p.starts_with('/')
        && p[1..].split('/').all(|s| {
            let s = s.to_ascii_lowercase().replace("%2e", ".");
            s != "." && s != ".."
        })
}

fn respond_error(out: &mut impl Write, code: u16, head: bool, msg: &str) -> std::io::Result<()> {
    let resp = crate::inputs::mirror::error_response(code, head, msg, "reprobox-egress", true);
    out.write_all(resp.as_bytes())?;
    out.flush()
}

/// `oci`: a Distribution API body of that media type, sent with its digest.
fn send_blob(
    out: &mut impl BodyOut,
    blob: &crate::inputs::store::Blob,
    head: bool,
    oci: Option<&str>,
) -> std::io::Result<()> {
    let file = std::fs::File::open(&blob.path)?;
    let size = file.metadata()?.len();
    let sha = &blob.sha256;
    let typed = match oci {
        Some(media) => format!("Content-Type: {media}\r\nDocker-Content-Digest: sha256:{sha}\r\n"),
        None => "Content-Type: application/octet-stream\r\n".to_string(),
    };
    let h = format!(
        "HTTP/1.1 200 OK\r\n{typed}Content-Length: {size}\r\nX-Sha256: {sha}\r\nServer: reprobox-egress\r\n\r\n"
    );
    out.send_file(h.as_bytes(), (!head).then_some((&file, size)))
}

/// A connection that answers with a head and a file's bytes, each the fastest way its
/// transport allows. Through `std::io::copy` every 8 KiB of a body was one TLS record, one
/// `write(2)` and one wake-up of the client: the egress served a quarter of the plain
/// mirror's throughput (benches/README.md).
trait BodyOut: Write {
    /// Send `head`, then `body`'s first `size` bytes when given.
    fn send_file(
        &mut self,
        head: &[u8],
        body: Option<(&std::fs::File, u64)>,
    ) -> std::io::Result<()>;
}

/// Plain HTTP: the head, then `sendfile(2)` (no copy through user space), as the mirror.
impl BodyOut for TcpStream {
    fn send_file(
        &mut self,
        head: &[u8],
        body: Option<(&std::fs::File, u64)>,
    ) -> std::io::Result<()> {
        self.write_all(head)?;
        match body {
            Some((file, size)) => crate::inputs::mirror::sendfile_range(self, file, 0, size),
            None => Ok(()),
        }
    }
}

/// How much of a body is read and encrypted before it is written: 16 TLS records of
/// 16 KiB, written with one `writev(2)`.
const TLS_BATCH: usize = 256 * 1024;

/// TLS: the head and the body encrypted in batches of [`TLS_BATCH`] (the head shares the
/// first batch's write), each batch's records written at once.
impl BodyOut for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn send_file(
        &mut self,
        head: &[u8],
        body: Option<(&std::fs::File, u64)>,
    ) -> std::io::Result<()> {
        // The default limit (64 KiB of unsent records) would make `write` take only part
        // of a batch; each batch is written out before the next is read.
        self.conn.set_buffer_limit(None);
        let sent = (|| {
            self.conn.writer().write_all(head)?;
            let Some((mut file, size)) = body else {
                return drain(&mut self.conn, &mut self.sock);
            };
            let mut buf = vec![0u8; TLS_BATCH];
            let mut left = size;
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = file.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "blob shrank while serving",
                    ));
                }
                self.conn.writer().write_all(&buf[..n])?;
                drain(&mut self.conn, &mut self.sock)?;
                left -= n as u64;
            }
            Ok(())
        })();
        self.conn.set_buffer_limit(Some(64 * 1024));
        sent
    }
}

/// Write every pending TLS record to the socket.
fn drain(conn: &mut rustls::ServerConnection, sock: &mut TcpStream) -> std::io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(sock)?;
    }
    Ok(())
}

/// The Distribution API's version check: reprobox answers every registry's authentication
/// itself, so the job's client is never challenged.
fn send_api_base(out: &mut impl Write, head: bool) -> std::io::Result<()> {
    let body = "{}";
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDocker-Distribution-API-Version: registry/2.0\r\nContent-Length: {}\r\nServer: reprobox-egress\r\n\r\n",
        body.len()
    );
    if !head {
        resp.push_str(body);
    }
    out.write_all(resp.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_line_names_the_raw_address_and_nothing_else_does() {
        assert_eq!(
            proxy_v1_destination("PROXY TCP4 10.0.2.15 1.1.1.1 40000 443"),
            Some("1.1.1.1:443".parse().unwrap())
        );
        for bad in [
            "PROXY UNKNOWN",
            "PROXY TCP4 10.0.2.15 example.org 1 443",
            "PROXY TCP4 10.0.2.15 1.1.1.1 1",
            "GET / HTTP/1.1",
        ] {
            assert_eq!(proxy_v1_destination(bad), None, "{bad}");
        }
        // Over a socket: the line is peeked, not consumed; a request is not a line.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        for (sent, want) in [
            (
                &b"PROXY TCP4 1.2.3.4 9.9.9.9 5 80\r\n"[..],
                Some("9.9.9.9:80"),
            ),
            (&b"GET / HTTP/1.1\r\n\r\n"[..], None),
        ] {
            let mut c = TcpStream::connect(a).unwrap();
            c.write_all(sent).unwrap();
            let (s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            assert_eq!(raw_address(&s), want.map(|w| w.parse().unwrap()));
            let mut first = [0u8; 1];
            (&s).read_exact(&mut first).unwrap();
            assert_eq!(first[0], sent[0]);
        }
    }

    #[test]
    fn authorities_heads_and_paths() {
        assert_eq!(
            split_authority("Example.org:443", 0),
            ("example.org".into(), 443)
        );
        assert_eq!(
            split_authority("example.org", 80),
            ("example.org".into(), 80)
        );
        assert_eq!(split_authority("[::1]:443", 0), ("::1".into(), 443));
        assert_eq!(split_authority("x:notaport", 80), ("x".into(), 0));
        let h = parse_head(b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n").unwrap();
        assert_eq!(
            (h.method.as_str(), h.target.as_str()),
            ("GET", "http://a.example/x")
        );
        assert!(!h.close && !h.body);
        let h = parse_head(b"POST /x HTTP/1.0\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert!(h.close && h.body);
        assert_eq!(parse_head(b"GET /x HTTP/1.1\r\nHost").err(), Some(431));
        assert!(path_is_safe("/a/b?x=../y"));
        assert!(!path_is_safe("/a/../b"));
        assert!(!path_is_safe("/a/%2E%2e/b"));
        assert!(!path_is_safe("a"));
    }
}
