//! A gRPC upload client: declares a file, streams its bytes from wherever the server says to resume, and
//! commits. Used by `custody bench upload` and by tests; the docking-station agent builds on the same calls.

use bytes::Bytes;
use custody_proto::v1 as pb;
use custody_proto::v1::upload_client::UploadClient;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tonic::Status;
use tonic::transport::Channel;

/// Default bytes per write message.
pub const DEFAULT_CHUNK: usize = 1 << 20;

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

impl Source {
    async fn chunk(&self, offset: u64, len: usize) -> Result<Bytes, Status> {
        match self {
            Self::Generated(f) => Ok(f(offset, len)),
            Self::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || -> std::io::Result<Bytes> {
                    use std::os::unix::fs::FileExt;
                    let f = std::fs::File::open(&path)?;
                    let mut buf = vec![0u8; len];
                    f.read_exact_at(&mut buf, offset)?;
                    Ok(buf.into())
                })
                .await
                .map_err(|e| Status::internal(format!("reading source: {e}")))?
                .map_err(|e| Status::internal(format!("reading source at {offset}: {e}")))
            }
        }
    }
}

/// A connection to the upload service.
#[derive(Debug, Clone)]
pub struct Uploader {
    client: UploadClient<Channel>,
    chunk: usize,
}

impl Uploader {
    pub async fn connect(grpc: SocketAddr) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(32 << 20))
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(Self {
            client: UploadClient::new(channel)
                .max_decoding_message_size(custody_grpc::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(custody_grpc::MAX_MESSAGE_BYTES),
            chunk: DEFAULT_CHUNK,
        })
    }

    pub fn with_chunk_size(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
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
    ) -> Result<u64, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::WriteRequest>(4);
        let (id, src, chunk) = (upload_id.to_string(), source.clone(), self.chunk);
        let producer = tokio::spawn(async move {
            let mut off = from;
            while off < to {
                let len = usize::try_from((to - off).min(chunk as u64)).unwrap_or(chunk);
                let data = src.chunk(off, len).await?;
                let msg = pb::WriteRequest {
                    upload_id: id.clone(),
                    offset: off as i64,
                    data,
                };
                if tx.send(msg).await.is_err() {
                    break; // the server ended the stream; its answer says why
                }
                off += len as u64;
            }
            Ok::<(), Status>(())
        });
        let result = self
            .client
            .write(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        producer.abort();
        Ok(u64::try_from(result?.into_inner().committed_size).unwrap_or(0))
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
    ) -> Result<pb::Receipt, Status> {
        let size =
            u64::try_from(req.size).map_err(|_| Status::invalid_argument("negative size"))?;
        match self.begin(req).await? {
            pb::begin_response::Result::Receipt(r) => Ok(r),
            pb::begin_response::Result::Session(s) => {
                let committed = u64::try_from(s.committed_size).unwrap_or(0);
                if committed < size {
                    self.write(&s.upload_id, source, committed, size).await?;
                }
                self.commit(&s.upload_id).await
            }
        }
    }
}

/// SHA-256 and SM3 of a file, hex, computed on the calling (blocking) thread.
pub fn hash_file(
    path: &std::path::Path,
) -> Result<(String, String, u64), custody_store::StoreError> {
    let d = custody_store::hash_file(path, true)?;
    Ok((
        d.sha256.to_hex(),
        d.sm3.map(|s| s.to_hex()).unwrap_or_default(),
        d.size,
    ))
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
