//! Bytes in an object store, and the staging area that makes uploads resumable on every backend.
//!
//! Evidence lives at its content address (`evidence/sha256/aa/bb/<hex>`), written once and never replaced.
//! An upload's bytes first go to `staging/<upload id>`:
//! - on local disk, a file appended in place and fsynced at least every `flush_bytes`; the committed size
//!   in the database says how much of it is durable, and a reopened file is cut back to that size;
//! - on S3, a multipart upload whose part ids are saved (through the returned [`Checkpoint`]) as soon as
//!   each part is stored, plus a small `staging/<upload id>.tail` object for the bytes after the last
//!   full part when a stream ends. Any replica can continue the upload from the saved state.
//!
//! Sealing turns the staging area into one object, which is hashed and then moved to its content address.

use crate::error::StoreError;
use bytes::{Bytes, BytesMut};
use custody_core::{ContentHasher, Digests, Sha256, UploadId, content_path};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RenameOptions, RenameTargetMode,
};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where bytes are kept.
#[derive(Debug, Clone)]
pub enum BlobConfig {
    /// A directory on local disk; every write is fsynced with its directory.
    Local { root: PathBuf },
    /// A bucket (and optional key prefix) on an S3-compatible server.
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: String,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        allow_http: bool,
    },
}

impl BlobConfig {
    /// Parses `file:///abs/dir`, a bare directory path, or `s3://bucket[/prefix]` (S3 settings are added by
    /// the caller).
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StoreError::Config(format!(
                    "object_store {url:?}: missing bucket name"
                )));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
                endpoint: None,
                region: "us-east-1".into(),
                access_key_id: None,
                secret_access_key: None,
                allow_http: false,
            });
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() || (url.contains("://") && !url.starts_with("file://")) {
            return Err(StoreError::Config(format!(
                "object_store must be a directory, file:///dir or s3://bucket[/prefix], got {url:?}"
            )));
        }
        Ok(Self::Local {
            root: PathBuf::from(path),
        })
    }
}

#[derive(Debug)]
enum Backend {
    Local {
        root: PathBuf,
        flush_bytes: u64,
    },
    S3 {
        multipart: Arc<AmazonS3>,
        part_size: usize,
    },
}

/// The object store, plus upload staging on it.
#[derive(Debug, Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    backend: Arc<Backend>,
    /// Prepended to every key (`""`, or `"prefix/"`), so that one bucket can hold several deployments.
    prefix: String,
    description: String,
}

/// A new durable point in an upload: persist it before acknowledging the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Bytes now durable.
    pub committed: u64,
    /// The staging state to save with it (opaque; pass it back to [`Blobs::stage_writer`]).
    pub staging: String,
}

/// Staging state of an S3 upload, saved in the upload row.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct S3Staging {
    v: u32,
    multipart_id: String,
    /// Content ids of the stored parts, in order; every part but the last is `part_size` bytes.
    parts: Vec<String>,
    /// Bytes after the last part, durable in the `.tail` object.
    tail: u64,
    /// The multipart upload is complete: the staged object exists whole.
    sealed: bool,
}

const LOCAL_STAGING: &str = r#"{"v":1}"#;
const HASH_BUFFER: usize = 1 << 20;

impl Blobs {
    /// Opens the object store. `part_size` is the S3 multipart part size (at least 5 MiB); `flush_bytes`
    /// how many bytes a local upload may hold unsynced before it fsyncs.
    pub async fn open(
        cfg: &BlobConfig,
        part_size: usize,
        flush_bytes: u64,
    ) -> Result<Self, StoreError> {
        match cfg {
            BlobConfig::Local { root } => {
                std::fs::create_dir_all(root.join("staging"))
                    .map_err(StoreError::io(format!("creating {}", root.display())))?;
                let root = std::fs::canonicalize(root)
                    .map_err(StoreError::io(format!("resolving {}", root.display())))?;
                let fs = LocalFileSystem::new_with_prefix(&root)
                    .map_err(StoreError::object(format!("opening {}", root.display())))?
                    .with_fsync(true);
                Ok(Self {
                    store: Arc::new(fs),
                    description: format!("local disk at {}", root.display()),
                    backend: Arc::new(Backend::Local {
                        root,
                        flush_bytes: flush_bytes.max(1),
                    }),
                    prefix: String::new(),
                })
            }
            BlobConfig::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                allow_http,
            } => {
                const MIN_PART: usize = 5 * 1024 * 1024;
                if part_size < MIN_PART {
                    return Err(StoreError::Config(format!(
                        "upload_part_size must be at least {MIN_PART} bytes on S3, got {part_size}"
                    )));
                }
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_allow_http(*allow_http);
                if let Some(e) = endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(k) = access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(s) = secret_access_key {
                    b = b.with_secret_access_key(s);
                }
                let s3 = Arc::new(
                    b.build()
                        .map_err(StoreError::object(format!("configuring bucket {bucket}")))?,
                );
                let prefix = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                };
                Ok(Self {
                    store: s3.clone(),
                    description: format!(
                        "s3 bucket {bucket} at {} (prefix {prefix:?})",
                        endpoint.as_deref().unwrap_or("aws")
                    ),
                    backend: Arc::new(Backend::S3 {
                        multipart: s3,
                        part_size,
                    }),
                    prefix,
                })
            }
        }
    }

    /// What this store is, for logs.
    pub fn describe(&self) -> &str {
        &self.description
    }

    fn key(&self, rel: &str) -> ObjPath {
        ObjPath::from(format!("{}{rel}", self.prefix))
    }

    fn staging_key(upload: UploadId) -> String {
        format!("staging/{upload}")
    }

    fn tail_key(upload: UploadId) -> String {
        format!("staging/{upload}.tail")
    }

    /// Checks that the store answers (a missing probe object is an answer).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self.store.head(&self.key("readyz-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::object("probing the object store")(e)),
        }
    }

    /// The size of an object, or `None` when it does not exist.
    pub async fn size_of(&self, rel: &str) -> Result<Option<u64>, StoreError> {
        match self.store.head(&self.key(rel)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::object(format!("reading metadata of {rel}"))(e)),
        }
    }

    /// Stores a whole small object (replacing any previous one at that key).
    pub async fn put(&self, rel: &str, data: Bytes) -> Result<(), StoreError> {
        self.store
            .put(&self.key(rel), PutPayload::from_bytes(data))
            .await
            .map(|_| ())
            .map_err(StoreError::object(format!("writing {rel}")))
    }

    /// The file holding an object, when the store is a local directory: media tools can then read
    /// evidence in place instead of copying it first. `None` on S3.
    pub fn local_path(&self, rel: &str) -> Option<PathBuf> {
        match &*self.backend {
            Backend::Local { root, .. } => Some(root.join(rel)),
            Backend::S3 { .. } => None,
        }
    }

    /// Copies an object into a local file (created or truncated), streaming; returns the bytes copied.
    pub async fn download_to(&self, rel: &str, dest: &Path) -> Result<u64, StoreError> {
        use tokio::io::AsyncWriteExt;
        let (_, _, mut stream) = self.get(rel, None).await?;
        let ctx = || format!("writing {} (a copy of {rel})", dest.display());
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(StoreError::io(ctx()))?;
        let mut copied = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            copied += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(StoreError::io(ctx()))?;
        }
        file.flush().await.map_err(StoreError::io(ctx()))?;
        Ok(copied)
    }

    /// Stores a local file as an object, streaming (multipart on S3), replacing any object at that key.
    /// Durable when it returns.
    pub async fn put_file(&self, rel: &str, src: &Path) -> Result<u64, StoreError> {
        use tokio::io::AsyncWriteExt;
        let mut file = tokio::fs::File::open(src)
            .await
            .map_err(StoreError::io(format!("opening {}", src.display())))?;
        let mut writer = object_store::buffered::BufWriter::new(self.store.clone(), self.key(rel));
        let copied = match tokio::io::copy(&mut file, &mut writer).await {
            Ok(n) => n,
            Err(e) => {
                // Leave no half-written multipart upload behind.
                let _ = writer.abort().await;
                return Err(StoreError::io(format!(
                    "storing {} as {rel}",
                    src.display()
                ))(e));
            }
        };
        writer
            .shutdown()
            .await
            .map_err(StoreError::io(format!("completing {rel}")))?;
        Ok(copied)
    }

    /// The keys of every object under `prefix` (relative to the store's root), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let root = self.prefix.clone();
        let full = self.key(prefix.trim_end_matches('/'));
        let mut keys: Vec<String> = self
            .store
            .list(Some(&full))
            .map(|r| {
                r.map(|m| {
                    let k = m.location.to_string();
                    k.strip_prefix(&root).unwrap_or(&k).to_string()
                })
            })
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(StoreError::object(format!("listing {prefix}")))?;
        keys.sort();
        Ok(keys)
    }

    /// Reads a whole small object into memory (tiles, checkpoints).
    pub async fn get_all(&self, rel: &str) -> Result<Bytes, StoreError> {
        let (_, _, stream) = self.get(rel, None).await?;
        let chunks: Vec<Bytes> = futures::TryStreamExt::try_collect(stream).await?;
        Ok(chunks.concat().into())
    }

    /// Reads an object or a byte range of it. Returns the object's total size, the range served and the
    /// bytes as a stream (never the whole object in memory).
    pub async fn get(
        &self,
        rel: &str,
        range: Option<Range<u64>>,
    ) -> Result<
        (
            u64,
            Range<u64>,
            BoxStream<'static, Result<Bytes, StoreError>>,
        ),
        StoreError,
    > {
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let ctx = format!("reading {rel}");
        let res = self
            .store
            .get_opts(&self.key(rel), opts)
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => {
                    StoreError::NotFound(format!("object {rel}"))
                }
                e => StoreError::object(ctx.clone())(e),
            })?;
        let size = res.meta.size;
        let served = res.range.clone();
        let stream = res
            .into_stream()
            .map(move |r| r.map_err(StoreError::object(ctx.clone())))
            .boxed();
        Ok((size, served, stream))
    }

    /// Hashes an object's bytes. CPU work runs on a blocking thread; memory stays at one buffer.
    pub async fn hash(&self, rel: &str, with_sm3: bool) -> Result<Digests, StoreError> {
        if let Backend::Local { root, .. } = &*self.backend {
            let path = root.join(rel);
            let rel = rel.to_string();
            return tokio::task::spawn_blocking(move || hash_file(&path, with_sm3))
                .await
                .map_err(|e| {
                    StoreError::Corrupt(format!("hashing task for {rel} panicked: {e}"))
                })?;
        }
        let (_, _, mut stream) = self.get(rel, None).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let hasher = tokio::task::spawn_blocking(move || {
            let mut h = ContentHasher::new(with_sm3);
            while let Some(b) = rx.blocking_recv() {
                h.update(&b);
            }
            h.finish()
        });
        while let Some(chunk) = stream.next().await {
            if tx.send(chunk?).await.is_err() {
                break;
            }
        }
        drop(tx);
        hasher
            .await
            .map_err(|e| StoreError::Corrupt(format!("hashing task for {rel} panicked: {e}")))
    }

    /// Creates the staging area of a new upload and returns its initial staging state.
    pub async fn stage_create(&self, upload: UploadId) -> Result<String, StoreError> {
        match &*self.backend {
            Backend::Local { root, .. } => {
                let path = root.join(Self::staging_key(upload));
                tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
                    let ctx = format!("creating {}", path.display());
                    let f =
                        std::fs::File::create_new(&path).map_err(StoreError::io(ctx.clone()))?;
                    f.sync_all().map_err(StoreError::io(ctx.clone()))?;
                    sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(StoreError::io(ctx))
                })
                .await
                .map_err(join_error)??;
                Ok(LOCAL_STAGING.to_string())
            }
            Backend::S3 { multipart, .. } => {
                let key = self.key(&Self::staging_key(upload));
                let id = multipart
                    .create_multipart(&key)
                    .await
                    .map_err(StoreError::object(format!(
                        "starting multipart upload {key}"
                    )))?;
                Ok(encode_s3(&S3Staging {
                    v: 1,
                    multipart_id: id,
                    ..Default::default()
                }))
            }
        }
    }

    /// Opens an upload's staging area for appending at `committed` (the durable size the database holds).
    pub async fn stage_writer(
        &self,
        upload: UploadId,
        staging: &str,
        committed: u64,
    ) -> Result<StagedWriter, StoreError> {
        match &*self.backend {
            Backend::Local { root, flush_bytes } => {
                let path = root.join(Self::staging_key(upload));
                let p = path.clone();
                let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File, StoreError> {
                    let ctx = format!("opening {}", p.display());
                    let mut f = match std::fs::OpenOptions::new().write(true).open(&p) {
                        Ok(f) => f,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            return Err(StoreError::Corrupt(format!(
                                "staged bytes of upload {upload} are missing at {}",
                                p.display()
                            )));
                        }
                        Err(e) => return Err(StoreError::io(ctx)(e)),
                    };
                    let len = f.metadata().map_err(StoreError::io(ctx.clone()))?.len();
                    if len < committed {
                        return Err(StoreError::Corrupt(format!(
                            "staged file of upload {upload} holds {len} bytes but {committed} were committed"
                        )));
                    }
                    // Bytes past the committed size were never acknowledged: drop them, the client resends.
                    f.set_len(committed).map_err(StoreError::io(ctx.clone()))?;
                    f.seek(SeekFrom::Start(committed)).map_err(StoreError::io(ctx))?;
                    Ok(f)
                })
                .await
                .map_err(join_error)??;
                Ok(StagedWriter {
                    upload,
                    committed,
                    inner: WriterInner::Local {
                        file: Some(file),
                        path,
                        pending: 0,
                        flush_bytes: *flush_bytes,
                    },
                })
            }
            Backend::S3 {
                multipart,
                part_size,
            } => {
                let st = decode_s3(staging)?;
                if st.sealed {
                    return Err(StoreError::Conflict(format!(
                        "upload {upload} is sealed for commit"
                    )));
                }
                // One part plus one incoming chunk: the buffer never holds more before a part is stored.
                let mut buffer = BytesMut::with_capacity(*part_size + (1 << 20));
                if st.tail > 0 {
                    let tail = self.read_tail(upload, st.tail).await?;
                    buffer.extend_from_slice(&tail);
                }
                let parts_bytes = st.parts.len() as u64 * *part_size as u64;
                if parts_bytes + st.tail != committed {
                    return Err(StoreError::Corrupt(format!(
                        "staging of upload {upload} holds {} bytes but {committed} were committed",
                        parts_bytes + st.tail
                    )));
                }
                Ok(StagedWriter {
                    upload,
                    committed,
                    inner: WriterInner::S3 {
                        blobs: self.clone(),
                        multipart: multipart.clone(),
                        part_size: *part_size,
                        state: st,
                        buffer,
                    },
                })
            }
        }
    }

    async fn read_tail(&self, upload: UploadId, len: u64) -> Result<Bytes, StoreError> {
        let rel = Self::tail_key(upload);
        let (_, _, stream) = self.get(&rel, None).await?;
        let chunks: Vec<Bytes> = futures::TryStreamExt::try_collect(stream).await?;
        let mut tail: Bytes = chunks.concat().into();
        let held = tail.len() as u64;
        if held < len {
            return Err(StoreError::Corrupt(format!(
                "tail of upload {upload} holds {held} bytes, expected {len}"
            )));
        }
        if held > len {
            // A server stopped after storing a longer tail but before saving its size: the bytes past
            // the committed size were never acknowledged (the tail only ever grows by appending to the
            // committed one), so they are dropped and the client resends them, as on local disk.
            tracing::warn!(%upload, held, committed_tail = len, "dropping unacknowledged bytes of a staged tail");
            tail.truncate(len as usize);
        }
        Ok(tail)
    }

    /// Makes the staged bytes one object of `size` bytes at `staging/<upload>`. Idempotent: a seal that
    /// was interrupted after the store completed it is recognised by the object's size.
    pub async fn stage_seal(
        &self,
        upload: UploadId,
        staging: &str,
        size: u64,
    ) -> Result<String, StoreError> {
        let rel = Self::staging_key(upload);
        match &*self.backend {
            Backend::Local { .. } => match self.size_of(&rel).await? {
                Some(n) if n == size => Ok(staging.to_string()),
                Some(n) => Err(StoreError::Corrupt(format!(
                    "staged file of upload {upload} holds {n} bytes, expected {size}"
                ))),
                None => Err(StoreError::NotFound(format!(
                    "staged bytes of upload {upload}"
                ))),
            },
            Backend::S3 { multipart, .. } => {
                let mut st = decode_s3(staging)?;
                if st.sealed || self.size_of(&rel).await? == Some(size) {
                    st.sealed = true;
                    return Ok(encode_s3(&st));
                }
                let key = self.key(&rel);
                let mut parts: Vec<PartId> = st
                    .parts
                    .iter()
                    .map(|c| PartId {
                        content_id: c.clone(),
                    })
                    .collect();
                if st.tail > 0 {
                    let tail = self.read_tail(upload, st.tail).await?;
                    let part = multipart
                        .put_part(
                            &key,
                            &st.multipart_id,
                            parts.len(),
                            PutPayload::from_bytes(tail),
                        )
                        .await
                        .map_err(StoreError::object(format!(
                            "storing the last part of {key}"
                        )))?;
                    parts.push(part);
                }
                multipart
                    .complete_multipart(&key, &st.multipart_id, parts)
                    .await
                    .map_err(StoreError::object(format!(
                        "completing multipart upload {key}"
                    )))?;
                match self.size_of(&rel).await? {
                    Some(n) if n == size => {}
                    other => {
                        return Err(StoreError::Corrupt(format!(
                            "sealed upload {upload} holds {other:?} bytes, expected {size}"
                        )));
                    }
                }
                st.sealed = true;
                if st.tail > 0 {
                    self.delete_quietly(&Self::tail_key(upload)).await;
                }
                Ok(encode_s3(&st))
            }
        }
    }

    /// Hashes the sealed staged object of an upload.
    pub async fn stage_hash(
        &self,
        upload: UploadId,
        with_sm3: bool,
    ) -> Result<Digests, StoreError> {
        self.hash(&Self::staging_key(upload), with_sm3).await
    }

    /// Moves verified staged bytes to their content address, never replacing an object already there.
    /// Idempotent: when the staged object is gone and the content object exists, the move already happened.
    pub async fn stage_promote(&self, upload: UploadId, sha256: &Sha256) -> Result<(), StoreError> {
        let from_rel = Self::staging_key(upload);
        let to_rel = content_path(sha256);
        let (from, to) = (self.key(&from_rel), self.key(&to_rel));
        match &*self.backend {
            Backend::Local { .. } => {
                let opts = RenameOptions {
                    target_mode: RenameTargetMode::Create,
                    ..Default::default()
                };
                match self.store.rename_opts(&from, &to, opts).await {
                    Ok(()) => Ok(()),
                    // The same bytes are already evidence: keep the stored object, drop the staged copy.
                    Err(object_store::Error::AlreadyExists { .. }) => {
                        self.delete_quietly(&from_rel).await;
                        Ok(())
                    }
                    Err(object_store::Error::NotFound { .. })
                        if self.size_of(&to_rel).await?.is_some() =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(StoreError::object(format!("moving {from} to {to}"))(e)),
                }
            }
            Backend::S3 { .. } => {
                if self.size_of(&to_rel).await?.is_none() {
                    match self.store.copy(&from, &to).await {
                        Ok(()) => {}
                        Err(object_store::Error::NotFound { .. })
                            if self.size_of(&to_rel).await?.is_some() => {}
                        Err(e) => {
                            return Err(StoreError::object(format!("copying {from} to {to}"))(e));
                        }
                    }
                }
                self.delete_quietly(&from_rel).await;
                Ok(())
            }
        }
    }

    /// Removes everything an upload staged (expired or failed uploads).
    pub async fn stage_discard(&self, upload: UploadId, staging: &str) -> Result<(), StoreError> {
        if let Backend::S3 { multipart, .. } = &*self.backend
            && let Ok(st) = decode_s3(staging)
            && !st.sealed
        {
            let key = self.key(&Self::staging_key(upload));
            if let Err(e) = multipart.abort_multipart(&key, &st.multipart_id).await {
                tracing::debug!(%upload, error = %e, "aborting multipart upload failed (it may be gone already)");
            }
            self.delete_quietly(&Self::tail_key(upload)).await;
        }
        match self
            .store
            .delete(&self.key(&Self::staging_key(upload)))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::object(format!(
                "removing staged bytes of upload {upload}"
            ))(e)),
        }
    }

    /// Deletes an object; deleting one that is already gone succeeds (retention finishing after a crash).
    pub async fn delete(&self, rel: &str) -> Result<(), StoreError> {
        match self.store.delete(&self.key(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::object(format!("deleting {rel}"))(e)),
        }
    }

    async fn delete_quietly(&self, rel: &str) {
        match self.store.delete(&self.key(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(key = rel, error = %e, "could not remove a staging object; it will be left behind")
            }
        }
    }
}

fn encode_s3(st: &S3Staging) -> String {
    serde_json::to_string(st).unwrap_or_default()
}

fn decode_s3(s: &str) -> Result<S3Staging, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("s3 staging state {s:?}: {e}")))
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Corrupt(format!("blocking storage task failed: {e}"))
}

/// Hashes a file on disk with one reusable buffer. Blocking: call it from a blocking thread.
pub fn hash_file(path: &Path, with_sm3: bool) -> Result<Digests, StoreError> {
    let ctx = || format!("hashing {}", path.display());
    let mut f = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound(format!("file {}", path.display())),
        _ => StoreError::io(ctx())(e),
    })?;
    let mut h = ContentHasher::new(with_sm3);
    let mut buf = vec![0u8; HASH_BUFFER];
    loop {
        let n = f.read(&mut buf).map_err(StoreError::io(ctx()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Appends to one upload's staging area. Not shared: one writer per upload at a time.
#[derive(Debug)]
pub struct StagedWriter {
    upload: UploadId,
    /// Bytes durable.
    committed: u64,
    inner: WriterInner,
}

enum WriterInner {
    Local {
        /// Taken while a blocking write runs.
        file: Option<std::fs::File>,
        path: PathBuf,
        /// Bytes written since the last fsync.
        pending: u64,
        flush_bytes: u64,
    },
    S3 {
        blobs: Blobs,
        multipart: Arc<AmazonS3>,
        part_size: usize,
        state: S3Staging,
        /// Bytes after the last stored part (the durable tail, if any, was loaded into it).
        buffer: BytesMut,
    },
}

impl std::fmt::Debug for WriterInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local { path, pending, .. } => f
                .debug_struct("Local")
                .field("path", path)
                .field("pending", pending)
                .finish(),
            Self::S3 { state, buffer, .. } => f
                .debug_struct("S3")
                .field("parts", &state.parts.len())
                .field("buffered", &buffer.len())
                .finish(),
        }
    }
}

impl StagedWriter {
    /// Bytes durable so far.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Bytes received so far, durable or not: where the next write must start.
    pub fn received(&self) -> u64 {
        match &self.inner {
            WriterInner::Local { pending, .. } => self.committed + pending,
            WriterInner::S3 { state, buffer, .. } => {
                self.committed - state.tail + buffer.len() as u64
            }
        }
    }

    /// Appends bytes. Returns a checkpoint when this made more bytes durable; the caller must save it
    /// before telling anyone those bytes are safe.
    pub async fn append(&mut self, data: Bytes) -> Result<Option<Checkpoint>, StoreError> {
        match &mut self.inner {
            WriterInner::Local {
                file,
                path,
                pending,
                flush_bytes,
            } => {
                let mut f = file.take().ok_or_else(|| {
                    StoreError::Corrupt(format!("writer of upload {} was poisoned", self.upload))
                })?;
                let sync = *pending + data.len() as u64 >= *flush_bytes;
                let ctx = format!("writing {}", path.display());
                let (f, res) = tokio::task::spawn_blocking(move || {
                    let r = f
                        .write_all(&data)
                        .and_then(|()| if sync { f.sync_data() } else { Ok(()) });
                    (f, r.map(|()| data.len() as u64))
                })
                .await
                .map_err(join_error)?;
                let n = res.map_err(StoreError::io(ctx))?;
                *file = Some(f);
                *pending += n;
                if sync {
                    self.committed += std::mem::take(pending);
                    return Ok(Some(Checkpoint {
                        committed: self.committed,
                        staging: LOCAL_STAGING.into(),
                    }));
                }
                Ok(None)
            }
            WriterInner::S3 {
                buffer, part_size, ..
            } => {
                buffer.extend_from_slice(&data);
                if buffer.len() >= *part_size {
                    return self.store_full_parts().await;
                }
                Ok(None)
            }
        }
    }

    async fn store_full_parts(&mut self) -> Result<Option<Checkpoint>, StoreError> {
        let WriterInner::S3 {
            blobs,
            multipart,
            part_size,
            state,
            buffer,
        } = &mut self.inner
        else {
            return Ok(None);
        };
        let key = blobs.key(&Blobs::staging_key(self.upload));
        let mut advanced = false;
        while buffer.len() >= *part_size {
            let part = buffer.split_to(*part_size).freeze();
            let id = multipart
                .put_part(
                    &key,
                    &state.multipart_id,
                    state.parts.len(),
                    PutPayload::from_bytes(part),
                )
                .await
                .map_err(StoreError::object(format!(
                    "storing part {} of {key}",
                    state.parts.len()
                )))?;
            state.parts.push(id.content_id);
            // The old tail's bytes are inside this part now; the tail object no longer counts.
            state.tail = 0;
            advanced = true;
        }
        if !advanced {
            return Ok(None);
        }
        self.committed = state.parts.len() as u64 * *part_size as u64;
        Ok(Some(Checkpoint {
            committed: self.committed,
            staging: encode_s3(state),
        }))
    }

    /// Makes every received byte durable. Returns the checkpoint to save, or `None` when nothing new.
    pub async fn flush(&mut self) -> Result<Option<Checkpoint>, StoreError> {
        match &mut self.inner {
            WriterInner::Local {
                file,
                path,
                pending,
                ..
            } => {
                if *pending == 0 {
                    return Ok(None);
                }
                let f = file.take().ok_or_else(|| {
                    StoreError::Corrupt(format!("writer of upload {} was poisoned", self.upload))
                })?;
                let ctx = format!("syncing {}", path.display());
                let (f, res) = tokio::task::spawn_blocking(move || {
                    let r = f.sync_data();
                    (f, r)
                })
                .await
                .map_err(join_error)?;
                res.map_err(StoreError::io(ctx))?;
                *file = Some(f);
                self.committed += std::mem::take(pending);
                Ok(Some(Checkpoint {
                    committed: self.committed,
                    staging: LOCAL_STAGING.into(),
                }))
            }
            WriterInner::S3 {
                blobs,
                state,
                buffer,
                part_size,
                ..
            } => {
                // Nothing past what is already durable (stored parts plus the saved tail).
                if buffer.len() as u64 == state.tail {
                    return Ok(None);
                }
                let tail = Bytes::copy_from_slice(buffer);
                blobs.put(&Blobs::tail_key(self.upload), tail).await?;
                state.tail = buffer.len() as u64;
                self.committed = state.parts.len() as u64 * *part_size as u64 + state.tail;
                Ok(Some(Checkpoint {
                    committed: self.committed,
                    staging: encode_s3(state),
                }))
            }
        }
    }
}
