//! A session a second client can join while the engine waits on a hook.
//!
//! [`connect`] opens the engine's session through an in-process relay: the
//! relay holds the socket to the server (TLS included) and passes the
//! engine client's protocol through unchanged. Between [`Door::open`] and
//! [`Door::close`] a libpq client (psycopg, psycopg2) may connect to the
//! relay's unix socket, in a directory only this user can enter, and is
//! let into the same session: inside the engine's open transaction, seeing
//! its uncommitted rows. The relay answers its startup itself (no second
//! login) with the session's parameters, and answers its `BEGIN`, `COMMIT`
//! and `ROLLBACK` itself too (the transaction stays the engine's, which
//! commits or rolls back after the hook); all else goes to the server.
//!
//! TLS to the server is the relay's (`sslmode` as for [`crate::connect`]);
//! the engine's client authenticates through it, so SCRAM channel binding
//! is not available on such a session (`channel_binding=require` fails).

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::config::SslMode as PgSslMode;
use tracing::debug;

use crate::conninfo::{ConnParams, Endpoint, Host, SslMode};
use crate::error::{Error, ErrorKind, Result};

/// The port in the door's socket name (`.s.PGSQL.5432`): a client connects
/// with `host=<socket dir> port=5432`.
pub const DOOR_PORT: u16 = 5432;

/// Lets a second client into the engine's session while a hook runs.
#[derive(Debug)]
pub struct Door {
    control: mpsc::Sender<Control>,
    dir: PathBuf,
}

enum Control {
    Open(oneshot::Sender<io::Result<()>>),
    /// Replies with the transaction status the side clients left: `b'T'`
    /// in a transaction, `b'E'` in a failed one.
    Close(oneshot::Sender<u8>),
}

impl Door {
    /// The directory of the door's unix socket (`host=` for libpq).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Starts letting clients in (one at a time).
    pub async fn open(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(Control::Open(reply))
            .await
            .map_err(|_| lost())?;
        answer
            .await
            .map_err(|_| lost())?
            .map_err(|e| Error::new(ErrorKind::Io, format!("opening the session's door: {e}")))
    }

    /// Stops letting clients in, cuts off one still connected and waits
    /// for the answers to what it sent. Fails when a side client left the
    /// transaction failed (its commit would only roll back).
    pub async fn close(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(Control::Close(reply))
            .await
            .map_err(|_| lost())?;
        match answer.await.map_err(|_| lost())? {
            b'E' => Err(Error::new(
                ErrorKind::Data,
                "a statement of the hook failed, so the batch's transaction is aborted: the batch is rolled back",
            )),
            _ => Ok(()),
        }
    }
}

fn lost() -> Error {
    Error::new(ErrorKind::ConnectionLost, "the session's relay has ended")
}

/// Opens a session through a relay (see the module documentation): the
/// client, and the door to its session. Endpoints are tried in order;
/// `target_session_attrs` other than `any` are refused.
pub async fn connect(params: &ConnParams) -> Result<(tokio_postgres::Client, Door)> {
    if !matches!(
        params.target_session_attrs,
        crate::conninfo::TargetSessionAttrs::Any
    ) {
        return Err(Error::config(
            "a shared session (on_before_visible) needs target_session_attrs=any",
        ));
    }
    let mut failures: Vec<Error> = Vec::new();
    for endpoint in &params.endpoints {
        match connect_endpoint(params, endpoint).await {
            Ok(done) => return Ok(done),
            Err(e) => {
                debug!(endpoint = %endpoint, error = %e, "relayed connection attempt failed");
                failures.push(e);
            }
        }
    }
    Err(crate::connect::combined(failures))
}

async fn connect_endpoint(
    params: &ConnParams,
    endpoint: &Endpoint,
) -> Result<(tokio_postgres::Client, Door)> {
    let connecting = upstream(params, endpoint);
    let upstream = match params.connect_timeout {
        Some(limit) => tokio::time::timeout(limit, connecting)
            .await
            .map_err(|_| Error::new(ErrorKind::Connect, format!("{endpoint}: timeout")))?,
        None => connecting.await,
    }?;
    let dir = private_dir()?;
    let (engine, relay_end) = tokio::io::duplex(256 * 1024);
    let (control, orders) = mpsc::channel(1);
    let relay = Relay {
        dir: dir.clone(),
        parameters: Vec::new(),
        key: None,
        status: b'I',
    };
    crate::connect::spawn_session_task(relay.run(upstream, relay_end, orders));
    let password = crate::connect::password_for(params, endpoint);
    let config = crate::connect::pg_config(
        params,
        endpoint,
        password.as_ref().map(|(p, _)| p),
        PgSslMode::Disable,
    );
    let (client, connection) = config
        .connect_raw(engine, tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            crate::connect::classify(endpoint, params, password.as_ref().map(|(_, o)| o), e)
        })?;
    crate::connect::spawn_session_task(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, "relayed connection closed with an error");
        }
    });
    Ok((client, Door { control, dir }))
}

/// Anything the relay can talk to the server over.
trait Wire: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Wire for T {}

/// The socket to the server, with TLS as `sslmode` says.
async fn upstream(params: &ConnParams, endpoint: &Endpoint) -> Result<Box<dyn Wire>> {
    let failed = |e: io::Error| Error::new(ErrorKind::Connect, format!("{endpoint}: {e}"));
    let port = endpoint.port;
    let (tcp, name) = match (&endpoint.host, endpoint.hostaddr) {
        (Host::Socket(dir), _) => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            return Ok(Box::new(UnixStream::connect(path).await.map_err(failed)?));
        }
        (Host::Tcp(name), Some(addr)) => (
            TcpStream::connect((addr, port)).await.map_err(failed)?,
            name.clone(),
        ),
        (Host::Tcp(name), None) => (
            TcpStream::connect((name.as_str(), port))
                .await
                .map_err(failed)?,
            name.clone(),
        ),
        (Host::AddrOnly, Some(addr)) => (
            TcpStream::connect((addr, port)).await.map_err(failed)?,
            addr.to_string(),
        ),
        (Host::AddrOnly, None) => {
            return Err(Error::new(
                ErrorKind::Connect,
                format!("{endpoint}: no host"),
            ));
        }
    };
    let _ = tcp.set_nodelay(true);
    let demand = match params.sslmode {
        SslMode::Disable | SslMode::Allow => return Ok(Box::new(tcp)),
        SslMode::Prefer => false,
        _ => true,
    };
    let mut tcp = tcp;
    // SSLRequest: length 8, code 80877103.
    tcp.write_all(&[0, 0, 0, 8, 4, 210, 22, 47])
        .await
        .map_err(failed)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(failed)?;
    if answer[0] != b'S' {
        if demand {
            return Err(Error::new(
                ErrorKind::Tls,
                format!("{endpoint}: the server does not support SSL, but sslmode demands it"),
            ));
        }
        return Ok(Box::new(tcp));
    }
    let config = crate::tls::connector(params.sslmode, &params.tls)?.config();
    let server = rustls_pki_types::ServerName::try_from(name.trim_matches(['[', ']']).to_owned())
        .map_err(|e| Error::new(ErrorKind::Tls, format!("{endpoint}: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server, tcp)
        .await
        .map_err(|e| Error::new(ErrorKind::Tls, format!("{endpoint}: TLS: {e}")))?;
    Ok(Box::new(tls))
}

/// A new directory only this user may enter, for the door's socket.
fn private_dir() -> Result<PathBuf> {
    use ring::rand::{SecureRandom, SystemRandom};
    use std::os::unix::fs::DirBuilderExt;
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::new(ErrorKind::Io, "no random source"))?;
    let dir = std::env::temp_dir().join(format!(
        "pgbulk-door-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(bytes)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::new(ErrorKind::Io, format!("creating {}: {e}", dir.display())))?;
    Ok(dir)
}

/// Complete protocol messages at the front of `buf` (tag, length, body),
/// removed from it; an incomplete one stays.
fn messages(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() >= at + 5 {
        let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
        if len < 4 || buf.len() < at + 1 + len {
            break;
        }
        out.push(buf[at..at + 1 + len].to_vec());
        at += 1 + len;
    }
    buf.drain(..at);
    out
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + 5);
    m.push(tag);
    m.extend_from_slice(
        &u32::try_from(body.len() + 4)
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    m.extend_from_slice(body);
    m
}

/// An empty simple query: the server answers it with EmptyQueryResponse
/// and ReadyForQuery after everything sent before it, and no client of the
/// session sends one, so its answer marks where earlier answers end.
const BARRIER: &[u8] = &[b'Q', 0, 0, 0, 5, 0];

/// Recognises the answer to [`BARRIER`] among the server's messages.
#[derive(Default)]
struct Barrier {
    empty_seen: bool,
}

impl Barrier {
    /// `None`: `m` is not the barrier's answer; `Some(false)`: it is (to be
    /// dropped); `Some(true)`: it is its final ReadyForQuery (the barrier
    /// has passed).
    fn answer(&mut self, m: &[u8]) -> Option<bool> {
        match m[0] {
            b'I' => {
                self.empty_seen = true;
                Some(false)
            }
            b'Z' if self.empty_seen => Some(true),
            _ => None,
        }
    }
}

/// What a side client's simple query is, when the relay answers it: the
/// command tag of a transaction command.
fn transaction_command(body: &[u8]) -> Option<&'static str> {
    let text = std::str::from_utf8(body.strip_suffix(&[0]).unwrap_or(body)).ok()?;
    let text = text
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_ascii_lowercase();
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["begin", ..] | ["start", "transaction", ..] => Some("BEGIN"),
        ["commit" | "end"] | ["commit" | "end", "work" | "transaction"] => Some("COMMIT"),
        ["rollback" | "abort"] | ["rollback" | "abort", "work" | "transaction"] => Some("ROLLBACK"),
        _ => None,
    }
}

struct Relay {
    dir: PathBuf,
    /// The session's `ParameterStatus` messages, as the server sent them.
    parameters: Vec<(Vec<u8>, Vec<u8>)>,
    /// The `BackendKeyData` message.
    key: Option<Vec<u8>>,
    /// The last `ReadyForQuery` status.
    status: u8,
}

impl Relay {
    /// Notes what the server says of the session.
    fn observe(&mut self, m: &[u8]) {
        match m[0] {
            b'S' => {
                let mut parts = m[5..].split(|b| *b == 0);
                if let (Some(name), Some(value)) = (parts.next(), parts.next()) {
                    match self.parameters.iter_mut().find(|(n, _)| n == name) {
                        Some(p) => p.1 = value.to_vec(),
                        None => self.parameters.push((name.to_vec(), value.to_vec())),
                    }
                }
            }
            b'K' => self.key = Some(m.to_vec()),
            b'Z' if m.len() > 5 => self.status = m[5],
            _ => {}
        }
    }

    async fn run(
        mut self,
        upstream: Box<dyn Wire>,
        engine: DuplexStream,
        mut orders: mpsc::Receiver<Control>,
    ) {
        let (mut up_r, mut up_w) = tokio::io::split(upstream);
        let (mut en_r, mut en_w) = tokio::io::split(engine);
        let mut up_buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut en_buf = vec![0u8; 64 * 1024];
        let mut listener: Option<UnixListener> = None;
        let mut orders_open = true;
        // A door asked for: the engine's bytes wait until the barrier's
        // answer shows every earlier request of the engine answered.
        let mut opening: Option<oneshot::Sender<io::Result<()>>> = None;
        let mut barrier = Barrier::default();
        let outcome: io::Result<()> = async {
            loop {
                tokio::select! {
                    n = en_r.read(&mut en_buf), if opening.is_none() => {
                        let n = n?;
                        if n == 0 {
                            let _ = up_w.shutdown().await;
                            return Ok(());
                        }
                        up_w.write_all(&en_buf[..n]).await?;
                    }
                    n = up_r.read_buf(&mut up_buf) => {
                        if n? == 0 {
                            return Ok(());
                        }
                        let mut through = false;
                        for m in messages(&mut up_buf) {
                            self.observe(&m);
                            if let (true, Some(done)) = (opening.is_some(), barrier.answer(&m)) {
                                through |= done;
                                continue;
                            }
                            en_w.write_all(&m).await?;
                        }
                        let opened = if through { opening.take() } else { None };
                        if let Some(reply) = opened {
                            if listener.is_none() {
                                let path = self.dir.join(format!(".s.PGSQL.{DOOR_PORT}"));
                                match UnixListener::bind(&path) {
                                    Ok(l) => listener = Some(l),
                                    Err(e) => {
                                        let _ = reply.send(Err(e));
                                        continue;
                                    }
                                }
                            }
                            let _ = reply.send(Ok(()));
                            if let Some(l) = listener.as_ref() {
                                self.side(l, &mut up_r, &mut up_w, &mut up_buf, &mut orders)
                                    .await?;
                            }
                        }
                    }
                    order = orders.recv(), if orders_open => match order {
                        None => orders_open = false,
                        Some(Control::Close(reply)) => {
                            let _ = reply.send(self.status);
                        }
                        Some(Control::Open(reply)) => {
                            up_w.write_all(BARRIER).await?;
                            barrier = Barrier::default();
                            opening = Some(reply);
                        }
                    },
                }
            }
        }
        .await;
        if let Err(e) = outcome {
            debug!(error = %e, "session relay ended");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// The door is open: side clients, one at a time, until closed.
    async fn side<R, W>(
        &mut self,
        listener: &UnixListener,
        up_r: &mut R,
        up_w: &mut W,
        up_buf: &mut Vec<u8>,
        orders: &mut mpsc::Receiver<Control>,
    ) -> io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut client: Option<UnixStream> = None;
        let mut side_buf: Vec<u8> = Vec::with_capacity(16 * 1024);
        // What the side client waits for, in order: the server's answer to
        // a query or Sync (`None`), or the relay's to a transaction command
        // (`Some(tag)`), sent once the answers before it went out.
        let mut slots: VecDeque<Option<&'static str>> = VecDeque::new();
        loop {
            tokio::select! {
                accepted = listener.accept(), if client.is_none() => {
                    let Ok((mut stream, _)) = accepted else { continue };
                    match self.greet(&mut stream).await {
                        Ok(()) => {
                            side_buf.clear();
                            slots.clear();
                            client = Some(stream);
                        }
                        Err(e) => debug!(error = %e, "side client's startup failed"),
                    }
                }
                n = async {
                    match client.as_mut() {
                        Some(c) => c.read_buf(&mut side_buf).await,
                        None => std::future::pending().await,
                    }
                } => {
                    if n.unwrap_or(0) == 0 {
                        client = None;
                        continue;
                    }
                    for m in messages(&mut side_buf) {
                        if m[0] == b'X' {
                            client = None;
                            break;
                        }
                        if m[0] == b'Q' {
                            if let Some(tag) = transaction_command(&m[5..]) {
                                slots.push_back(Some(tag));
                                self.answer_locally(&mut slots, &mut client).await;
                                continue;
                            }
                        }
                        if matches!(m[0], b'Q' | b'S') {
                            slots.push_back(None);
                        }
                        up_w.write_all(&m).await?;
                    }
                }
                n = up_r.read_buf(up_buf) => {
                    if n? == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed"));
                    }
                    for m in messages(up_buf) {
                        self.observe(&m);
                        if let Some(c) = client.as_mut() {
                            if c.write_all(&m).await.is_err() {
                                client = None;
                            }
                        }
                        if m[0] == b'Z' && slots.front() == Some(&None) {
                            slots.pop_front();
                            self.answer_locally(&mut slots, &mut client).await;
                        }
                    }
                }
                order = orders.recv() => match order {
                    Some(Control::Open(reply)) => {
                        let _ = reply.send(Ok(()));
                    }
                    Some(Control::Close(reply)) => {
                        drop(client.take());
                        self.drain(up_r, up_w, up_buf).await?;
                        let _ = reply.send(self.status);
                        return Ok(());
                    }
                    None => {
                        drop(client.take());
                        self.drain(up_r, up_w, up_buf).await?;
                        return Ok(());
                    }
                },
            }
        }
    }

    /// Sends the relay's answers at the front of `slots` (no answer of the
    /// server is due before them).
    async fn answer_locally(
        &self,
        slots: &mut VecDeque<Option<&'static str>>,
        client: &mut Option<UnixStream>,
    ) {
        while let Some(Some(tag)) = slots.front().copied() {
            slots.pop_front();
            let mut reply = message(b'C', format!("{tag}\0").as_bytes());
            reply.extend(message(b'Z', &[self.status]));
            if let Some(c) = client.as_mut() {
                if c.write_all(&reply).await.is_err() {
                    *client = None;
                }
            }
        }
    }

    /// Sends a barrier and drops the server's messages up to its answer:
    /// the answers to whatever a side client sent and did not wait for.
    async fn drain<R, W>(
        &mut self,
        up_r: &mut R,
        up_w: &mut W,
        up_buf: &mut Vec<u8>,
    ) -> io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        up_w.write_all(BARRIER).await?;
        let mut barrier = Barrier::default();
        loop {
            for m in messages(up_buf) {
                self.observe(&m);
                if barrier.answer(&m) == Some(true) {
                    return Ok(());
                }
            }
            let read = tokio::time::timeout(Duration::from_secs(600), up_r.read_buf(up_buf)).await;
            match read {
                Ok(Ok(0)) | Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "no answer from the server",
                    ));
                }
                Ok(r) => {
                    r?;
                }
            }
        }
    }

    /// Answers a side client's startup as the server would, without a
    /// login: its session is the engine's.
    async fn greet(&self, stream: &mut UnixStream) -> io::Result<()> {
        let minor = loop {
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).await?;
            let len = u32::from_be_bytes(len) as usize;
            if !(8..=10_000).contains(&len) {
                return Err(io::Error::other("bad startup packet"));
            }
            let mut body = vec![0u8; len - 4];
            stream.read_exact(&mut body).await?;
            let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            match code {
                // SSLRequest, GSSENCRequest: neither, on a local socket.
                80_877_103 | 80_877_104 => stream.write_all(b"N").await?,
                c if c >> 16 == 3 => break c & 0xffff,
                _ => return Err(io::Error::other("not a startup packet")),
            }
        };
        let mut out = message(b'R', &0u32.to_be_bytes());
        if minor > 0 {
            let mut body = 0u32.to_be_bytes().to_vec();
            body.extend_from_slice(&0u32.to_be_bytes());
            out.extend(message(b'v', &body));
        }
        for (name, value) in &self.parameters {
            let mut body = name.clone();
            body.push(0);
            body.extend_from_slice(value);
            body.push(0);
            out.extend(message(b'S', &body));
        }
        if let Some(key) = &self.key {
            out.extend_from_slice(key);
        }
        out.extend(message(b'Z', &[self.status]));
        stream.write_all(&out).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_split_whole_and_partial_ones_kept() {
        let mut buf = message(b'Z', b"I");
        buf.extend(message(b'C', b"SELECT 1\0"));
        buf.extend_from_slice(&[b'D', 0, 0]);
        let got = messages(&mut buf);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], vec![b'Z', 0, 0, 0, 5, b'I']);
        assert_eq!(buf, vec![b'D', 0, 0]);
    }

    #[test]
    fn the_barrier_is_its_empty_query_answer_and_the_ready_after_it() {
        let mut b = Barrier::default();
        assert_eq!(b.answer(&message(b'Z', b"T")), None);
        assert_eq!(b.answer(&message(b'C', b"COMMIT\0")), None);
        assert_eq!(b.answer(&message(b'I', b"")), Some(false));
        assert_eq!(b.answer(&message(b'Z', b"T")), Some(true));
    }

    #[test]
    fn transaction_commands_are_recognised_and_savepoints_are_not() {
        assert_eq!(transaction_command(b"BEGIN\0"), Some("BEGIN"));
        assert_eq!(
            transaction_command(b"begin isolation level read committed;\0"),
            Some("BEGIN")
        );
        assert_eq!(transaction_command(b" COMMIT \0"), Some("COMMIT"));
        assert_eq!(transaction_command(b"ROLLBACK\0"), Some("ROLLBACK"));
        assert_eq!(transaction_command(b"ROLLBACK TO SAVEPOINT s\0"), None);
        assert_eq!(transaction_command(b"SELECT 1\0"), None);
        assert_eq!(transaction_command(b"COMMIT; SELECT 1\0"), None);
    }
}
