//! The gRPC upload client of Custody: declares a file, streams its bytes from wherever the server says to
//! resume, and commits, presenting a station credential on every call. The docking-station agent, `custody
//! bench upload` and the tests all upload through it.
//!
//! It owns no policy (what to upload, when to retry, when a file may be freed): callers decide. It must
//! never import server crates (store, ingest, transports): it speaks only the wire contract of
//! `custody-proto` and converts receipts to `custody-core`'s offline proof type.

use bytes::Bytes;
use custody_proto::v1 as pb;
use custody_proto::v1::upload_client::UploadClient;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Default bytes per write message.
pub const DEFAULT_CHUNK: usize = 1 << 20;

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("server url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("station credential: {0}")]
    Credential(String),
    #[error("connecting to {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Where an upload's bytes come from.
#[derive(Clone)]
pub enum Source {
    /// A file on disk, read chunk by chunk on a blocking thread.
    File(PathBuf),
    /// Bytes made on demand: `f(offset, len)` must always return the same bytes for the same arguments.
    Generated(Arc<dyn Fn(u64, usize) -> Bytes + Send + Sync>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "File({})", p.display()),
            Self::Generated(_) => f.write_str("Generated"),
        }
    }
}

/// Why an upload stopped: the server refused or failed, or the bytes could not be read here.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("server answered {}: {}", .0.code(), .0.message())]
    Server(#[from] Status),
    #[error("reading {path} at offset {offset}: {source}")]
    Source {
        path: String,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
}

impl UploadError {
    /// The server's answer, when it was one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Self::Server(s) => Some(s),
            Self::Source { .. } => None,
        }
    }

    /// The server's status code; `Unknown` for a failure to read the source.
    pub fn code(&self) -> tonic::Code {
        self.status().map_or(tonic::Code::Unknown, Status::code)
    }

    /// The server's message, or this error's own text.
    pub fn message(&self) -> String {
        match self {
            Self::Server(s) => s.message().to_string(),
            other => other.to_string(),
        }
    }
}

impl Source {
    async fn chunk(&self, offset: u64, len: usize) -> Result<Bytes, UploadError> {
        match self {
            Self::Generated(f) => Ok(f(offset, len)),
            Self::File(path) => {
                let path = path.clone();
                let shown = path.display().to_string();
                tokio::task::spawn_blocking(move || -> std::io::Result<Bytes> {
                    use std::os::unix::fs::FileExt;
                    let f = std::fs::File::open(&path)?;
                    let mut buf = vec![0u8; len];
                    f.read_exact_at(&mut buf, offset)?;
                    Ok(buf.into())
                })
                .await
                .map_err(|e| UploadError::Source {
                    path: shown.clone(),
                    offset,
                    source: std::io::Error::other(e),
                })?
                .map_err(|source| UploadError::Source {
                    path: shown,
                    offset,
                    source,
                })
            }
        }
    }
}

/// A shared bandwidth cap: a token bucket of `rate` bytes per second holding at most one second of
/// tokens. Every upload of a station draws from the same bucket.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl Throttle {
    /// A cap of `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1) as f64;
        Self {
            rate,
            state: tokio::sync::Mutex::new((rate, Instant::now())),
        }
    }

    /// Waits until `n` bytes may be sent. Callers are served in turn: the lock is held while waiting, so a
    /// large request cannot be starved by small ones.
    pub async fn take(&self, n: usize) {
        let mut st = self.state.lock().await;
        let (tokens, last) = &mut *st;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.rate);
        *last = now;
        *tokens -= n as f64;
        if *tokens < 0.0 {
            let wait = Duration::from_secs_f64(-*tokens / self.rate);
            tokio::time::sleep(wait).await;
            *tokens = 0.0;
            *last = Instant::now();
        }
    }
}

/// Adds the station credential to every request.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    /// The `authorization` value for a credential `<station id>:<secret>`.
    pub fn new(credential: &str) -> Result<Self, ConnectError> {
        format!("Bearer {}", credential.trim())
            .parse()
            .map(Self)
            .map_err(|_| ConnectError::Credential("must be ASCII text".into()))
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// The HTTP/2 settings every upload connection uses: large windows, so that one stream can fill a fast
/// link, and keep-alives, so that a dead server is noticed.
fn endpoint(url: &str) -> Result<tonic::transport::Endpoint, ConnectError> {
    let bad = |reason: &str| ConnectError::Url {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(bad("expected http://host:port"));
    }
    Ok(tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| bad(&e.to_string()))?
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20)))
}

/// Called with the number of bytes just handed to the transport.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// A connection to the upload service, as one station.
#[derive(Clone)]
pub struct Uploader {
    client: UploadClient<InterceptedService<Channel, Bearer>>,
    chunk: usize,
    throttle: Option<Arc<Throttle>>,
    progress: Option<Progress>,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("chunk", &self.chunk)
            .field("throttle", &self.throttle)
            .finish()
    }
}

impl Uploader {
    /// Connects to `url` (`http://host:port`) as the station whose credential (`<station id>:<secret>`)
    /// is given.
    pub async fn connect(url: &str, credential: &str) -> Result<Self, ConnectError> {
        let bearer = Bearer::new(credential)?;
        let channel = endpoint(url)?
            .connect()
            .await
            .map_err(|source| ConnectError::Transport {
                url: url.to_string(),
                source,
            })?;
        Ok(Self::with_channel(channel, bearer))
    }

    /// Like [`Uploader::connect`], but connects on first use: a server that is down now is not an error
    /// (each call fails until it is up).
    pub fn connect_lazy(url: &str, credential: &str) -> Result<Self, ConnectError> {
        Ok(Self::with_channel(
            endpoint(url)?.connect_lazy(),
            Bearer::new(credential)?,
        ))
    }

    fn with_channel(channel: Channel, bearer: Bearer) -> Self {
        Self {
            client: UploadClient::with_interceptor(channel, bearer)
                .max_decoding_message_size(custody_proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(custody_proto::MAX_MESSAGE_BYTES),
            chunk: DEFAULT_CHUNK,
            throttle: None,
            progress: None,
        }
    }

    /// Connects to a server on `addr` over plain HTTP/2.
    pub async fn connect_addr(
        addr: std::net::SocketAddr,
        credential: &str,
    ) -> Result<Self, ConnectError> {
        Self::connect(&format!("http://{addr}"), credential).await
    }

    pub fn with_chunk_size(mut self, chunk: usize) -> Self {
        self.chunk = chunk.clamp(1, custody_proto::MAX_MESSAGE_BYTES / 2);
        self
    }

    /// Shares a bandwidth cap with other uploaders.
    pub fn with_throttle(mut self, throttle: Arc<Throttle>) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// Reports bytes as they are sent.
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    pub async fn begin(
        &mut self,
        req: pb::BeginRequest,
    ) -> Result<pb::begin_response::Result, Status> {
        self.client
            .begin(req)
            .await?
            .into_inner()
            .result
            .ok_or_else(|| Status::internal("begin answered with neither a session nor a receipt"))
    }

    /// Streams bytes `from..to` of `source` in one write stream; returns the committed size.
    pub async fn write(
        &mut self,
        upload_id: &str,
        source: &Source,
        from: u64,
        to: u64,
    ) -> Result<u64, UploadError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::WriteRequest>(4);
        let (id, src, chunk) = (upload_id.to_string(), source.clone(), self.chunk);
        let (throttle, progress) = (self.throttle.clone(), self.progress.clone());
        let producer = tokio::spawn(async move {
            let mut off = from;
            while off < to {
                let len = usize::try_from((to - off).min(chunk as u64)).unwrap_or(chunk);
                let data = src.chunk(off, len).await?;
                if let Some(t) = &throttle {
                    t.take(len).await;
                }
                let msg = pb::WriteRequest {
                    upload_id: id.clone(),
                    offset: off as i64,
                    data,
                };
                if tx.send(msg).await.is_err() {
                    break; // the server ended the stream; its answer says why
                }
                if let Some(p) = &progress {
                    p(len as u64);
                }
                off += len as u64;
            }
            Ok::<(), UploadError>(())
        });
        let result = self
            .client
            .write(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        // A source that could not be read ends the stream early; the server then answers with the
        // committed size, but the caller must hear about the source.
        let produced = producer.await;
        let committed = u64::try_from(result?.into_inner().committed_size).unwrap_or(0);
        match produced {
            Ok(Err(source_error)) => Err(source_error),
            _ => Ok(committed),
        }
    }

    pub async fn query(&mut self, upload_id: &str) -> Result<pb::QueryResponse, Status> {
        Ok(self
            .client
            .query(pb::QueryRequest {
                upload_id: upload_id.into(),
            })
            .await?
            .into_inner())
    }

    pub async fn commit(&mut self, upload_id: &str) -> Result<pb::Receipt, Status> {
        self.client
            .commit(pb::CommitRequest {
                upload_id: upload_id.into(),
            })
            .await?
            .into_inner()
            .receipt
            .ok_or_else(|| Status::internal("commit answered without a receipt"))
    }

    /// The whole protocol: begin, write whatever the server lacks, commit.
    pub async fn upload(
        &mut self,
        req: pb::BeginRequest,
        source: &Source,
    ) -> Result<pb::Receipt, UploadError> {
        let size = u64::try_from(req.size)
            .map_err(|_| UploadError::Server(Status::invalid_argument("negative size")))?;
        match self.begin(req).await? {
            pb::begin_response::Result::Receipt(r) => Ok(r),
            pb::begin_response::Result::Session(s) => {
                let committed = u64::try_from(s.committed_size).unwrap_or(0);
                if committed < size {
                    self.write(&s.upload_id, source, committed, size).await?;
                }
                Ok(self.commit(&s.upload_id).await?)
            }
        }
    }
}

/// A receipt's ledger proof as the offline type whose JSON `custody verify receipt` reads (the inverse of
/// the gRPC edge's encoding). `None` when the receipt carries no proof or an audit-path hash is not 32
/// bytes long.
pub fn receipt_proof(r: &pb::Receipt) -> Option<custody_core::ledger::LedgerProof> {
    let l = r.ledger.as_ref()?;
    let hashes = l
        .inclusion_proof
        .iter()
        .map(|h| Some(custody_core::ledger::TreeHash(h.as_ref().try_into().ok()?)))
        .collect::<Option<Vec<_>>>()?;
    Some(custody_core::ledger::LedgerProof::new(
        l.entry.as_bytes(),
        l.leaf_index,
        &hashes,
        l.checkpoint.as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_throttle_lets_one_second_of_bytes_through_then_paces_the_rest() {
        let t = Throttle::new(1000);
        let start = tokio::time::Instant::now();
        t.take(1000).await;
        assert!(start.elapsed() < Duration::from_millis(5));
        for _ in 0..4 {
            t.take(500).await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1990) && took < Duration::from_millis(2100),
            "{took:?}"
        );
    }
}
