//! Export packages (证据包) for review or court: one ZIP archive holding a case's linked evidence with
//! everything needed to check it offline — the manifest, each item's ingest receipt, the proof of its
//! `export` event, consistency proofs up to the package's checkpoint, the log's public keys, a printable
//! evidence list (证据清单) and instructions.
//!
//! The format (version [`MANIFEST_VERSION`]) is defined here and read back by `custody verify package`:
//! [`Manifest`], [`ConsistencyFile`], [`render_evidence_list`] and [`readme_text`] are pure, so that the
//! verifier regenerates the evidence list from the manifest and compares it byte for byte.
//!
//! Order of operations of [`Exporter::export`]: the caller must be able to read the case and hold a
//! live approved export request; each item's ingest receipt is taken; one `export` ledger event per item
//! is queued *before* any byte is written; the exporter waits until a signed checkpoint covers those
//! events, so the package's checkpoint covers its own export; then the archive is written on a blocking
//! thread, re-hashing every item's bytes as they are copied (stored, not compressed), and refusing to
//! finish a package whose stored bytes no longer match their hashes.

use crate::accounts::User;
use crate::cases::Cases;
use crate::error::CasesError;
use crate::now;
use crate::requests::Requests;
use bytes_stream::ChunkSource;
use custody_core::evidence::{FileName, MediaType};
use custody_core::hash::{ContentHasher, Digests};
use custody_core::ledger::{EventKind, LedgerEntry, LedgerProof, verify_checkpoint};
use custody_core::{CaseId, DeviceId, EvidenceId, Sha256, Sm3, StationId, StepId, Timestamp};
use custody_ingest::Ledger;
use custody_store::{Blobs, Metadata, PendingEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The manifest version written today.
pub const MANIFEST_VERSION: u32 = 1;
/// The `format` tag of a manifest.
pub const MANIFEST_FORMAT: &str = "custody-export";
/// The `format` tag of a consistency proof file.
pub const CONSISTENCY_FORMAT: &str = "custody-consistency-proof/v1";

/// Fixed member names of a package.
pub const MANIFEST_PATH: &str = "manifest.json";
pub const CHECKPOINT_PATH: &str = "checkpoint.txt";
pub const EVIDENCE_LIST_PATH: &str = "evidence-list.html";
pub const README_PATH: &str = "README.txt";
pub const KEY_PATH: &str = "keys/ledger.pub";
pub const SM2_KEY_PATH: &str = "keys/ledger-sm2.pub";

/// Where an item's bytes go in the archive.
pub fn file_path(id: EvidenceId, name: &FileName) -> String {
    format!("files/{id}/{}", name.as_str())
}

/// Where an item's ingest receipt goes.
pub fn receipt_path(id: EvidenceId) -> String {
    format!("receipts/{id}.json")
}

/// Where the proof of an item's `export` event (for this package) goes.
pub fn export_event_path(id: EvidenceId) -> String {
    format!("events/{id}-export.json")
}

/// Where the consistency proof from tree size `old` to `new` goes.
pub fn consistency_path(old: u64, new: u64) -> String {
    format!("consistency/{old}-{new}.json")
}

/// The manifest (`manifest.json`), version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Always [`MANIFEST_VERSION`] for packages written by this code.
    pub version: u32,
    pub package_id: uuid::Uuid,
    pub created_at: Timestamp,
    /// The user who exported (`user:<name>`).
    pub created_by: String,
    /// The origin (name) of the log whose checkpoint is `checkpoint.txt`.
    pub log_origin: String,
    /// Size of the tree that `checkpoint.txt` signs.
    pub checkpoint_size: u64,
    pub case: ManifestCase,
    pub steps: Vec<ManifestStep>,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestCase {
    pub id: CaseId,
    pub case_no: String,
    pub title: String,
    pub procedure: String,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestStep {
    pub id: StepId,
    pub title: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub place: Option<String>,
    pub continuous: bool,
    /// Badges (警号) of the officers present.
    pub officers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestOfficer {
    pub badge: String,
    /// From the officer registry at export time; `None` when the badge is not registered.
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestLink {
    pub role: String,
    pub note: Option<String>,
    pub step_id: Option<StepId>,
}

/// One item of evidence in the package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub evidence_id: EvidenceId,
    /// `files/<evidence id>/<original file name>`.
    pub path: String,
    pub file_name: FileName,
    pub size: u64,
    pub sha256: Sha256,
    pub sm3: Option<Sm3>,
    pub media_type: MediaType,
    /// Start of the recording by the recorder's clock.
    pub captured_at: Timestamp,
    pub device_id: DeviceId,
    pub station_id: StationId,
    /// The officer the item is attributed to.
    pub officer: Option<ManifestOfficer>,
    pub link: ManifestLink,
    /// Leaf index of the item's `ingest` entry (proved by `receipts/<id>.json`).
    pub ingest_leaf: u64,
    /// Leaf index of this package's `export` event of the item (proved by `events/<id>-export.json`).
    pub export_leaf: u64,
}

/// Why bytes are not a manifest this build reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not JSON of format {MANIFEST_FORMAT} version {MANIFEST_VERSION}: {0}")]
    Malformed(String),
    #[error("manifest format is {0:?}; expected {MANIFEST_FORMAT:?}")]
    Format(String),
    #[error("manifest has version {0}; this build reads version {MANIFEST_VERSION}")]
    UnknownVersion(u32),
}

impl Manifest {
    /// Pretty JSON, so that a reader can open it.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings, numbers and options always serialises.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses a manifest: the format tag and version first (so that a newer package says so instead of
    /// failing on a field), then the whole, refusing unknown fields.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        struct Head {
            format: String,
            version: u32,
        }
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if head.format != MANIFEST_FORMAT {
            return Err(ManifestError::Format(head.format));
        }
        if head.version != MANIFEST_VERSION {
            return Err(ManifestError::UnknownVersion(head.version));
        }
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))
    }
}

/// A consistency proof between two checkpoints (`consistency/<old>-<new>.json`). The roots are for
/// reading; a verifier takes them from the signed checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyFile {
    /// Always [`CONSISTENCY_FORMAT`].
    pub format: String,
    pub old_size: u64,
    pub new_size: u64,
    pub old_root: String,
    pub new_root: String,
    /// RFC 6962 consistency proof, hex hashes.
    pub proof: Vec<String>,
}

/// 证据类别 of an item. Video, audio and photos from a recorder are images and sound of the scene:
/// 视听资料. Anything else (text files a recorder writes) is 电子数据.
pub fn category_zh(m: MediaType) -> &'static str {
    match m {
        MediaType::Video | MediaType::Audio | MediaType::Photo => "视听资料",
        MediaType::Text => "电子数据",
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Bytes as people read them: `1.5 MiB`.
fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {} ({n} B)", UNITS[u])
    }
}

/// The 证据清单 (`evidence-list.html`): one self-contained page, no scripts or external resources.
/// Deterministic in the manifest, so that a verifier can regenerate and compare it.
pub fn render_evidence_list(m: &Manifest) -> String {
    let e = html_escape;
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str(&format!("<title>证据清单 {}</title>\n", e(&m.case.case_no)));
    h.push_str(
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #444;padding:4px 8px;vertical-align:top}\
         td.hash{font-family:monospace;font-size:85%;word-break:break-all}</style>\n</head>\n<body>\n",
    );
    h.push_str("<h1>证据清单</h1>\n<table>\n");
    for (k, v) in [
        ("案件编号", m.case.case_no.clone()),
        ("案件名称", m.case.title.clone()),
        ("证据包编号", m.package_id.to_string()),
        ("制作时间", m.created_at.to_string()),
        ("制作人", m.created_by.clone()),
        (
            "账本检查点",
            format!("{} ({} 条)", m.log_origin, m.checkpoint_size),
        ),
    ] {
        h.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>\n", k, e(&v)));
    }
    h.push_str("</table>\n<h2>证据</h2>\n<table>\n<tr><th>序号</th><th>证据名称</th><th>类别</th>\
                <th>格式</th><th>大小</th><th>采集时间</th><th>执法人员</th><th>完整性校验值</th></tr>\n");
    for (i, f) in m.files.iter().enumerate() {
        let officer = match &f.officer {
            Some(o) => match &o.name {
                Some(n) => format!("{n}（警号 {}）", o.badge),
                None => format!("警号 {}", o.badge),
            },
            None => "未知".to_string(),
        };
        let format_ = f
            .file_name
            .as_str()
            .rsplit_once('.')
            .map(|(_, ext)| ext.to_uppercase())
            .unwrap_or_else(|| f.media_type.as_str().to_string());
        let mut hashes = format!("SHA-256: {}", f.sha256);
        if let Some(sm3) = &f.sm3 {
            hashes.push_str(&format!("<br>SM3: {sm3}"));
        }
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"hash\">{}</td></tr>\n",
            i + 1,
            e(&f.path),
            category_zh(f.media_type),
            e(&format_),
            e(&human_size(f.size)),
            e(&f.captured_at.to_string()),
            e(&officer),
            hashes,
        ));
    }
    h.push_str("</table>\n<p>校验方法：<code>custody verify package 本文件所在的证据包.zip --key ledger.pub</code>（见 README.txt）。</p>\n</body>\n</html>\n");
    h
}

/// `README.txt`: how to check the package offline.
pub fn readme_text(m: &Manifest) -> String {
    format!(
        "Custody export package {id} (manifest format {MANIFEST_FORMAT} version {MANIFEST_VERSION})
Case {case_no}: {title}
Created {created} by {by}; {n} file(s); checkpoint of log {origin} at size {size}.

CONTENTS
  manifest.json          what the package holds: case, steps, and per file its path, size, SHA-256,
                         SM3, media type, capture time, recorder, station, officer and case link
  files/<id>/<name>      the evidence bytes exactly as stored (ZIP method \"stored\", not compressed)
  receipts/<id>.json     the signed ledger receipt of each file's ingest (entry, inclusion proof,
                         signed checkpoint)
  events/<id>-export.json  proof of this package's export event of each file, against checkpoint.txt
  consistency/<a>-<b>.json  proofs that the log of size a (a receipt's checkpoint) is a prefix of the
                         log of size b (checkpoint.txt): nothing was rewritten since
  checkpoint.txt         the newest signed checkpoint at export time; it covers the export events
  keys/ledger.pub        the log's public key (keys/ledger-sm2.pub: the SM2 key, where used)
  evidence-list.html     证据清单, the printable list of the evidence

HOW TO VERIFY (offline: no server, no network)
  custody verify package THIS.zip --key ledger.pub [--key ledger-sm2.pub]

Use the public key(s) published by the agency that runs the log, not the copy inside the package: the
copy in keys/ only shows which key signed it. Without --key the verifier uses the package's own keys,
says so, and prints their fingerprints to compare with the published ones.

For every file the verifier recomputes SHA-256 (and SM3) over the bytes in the archive and compares
them with the manifest; checks that the receipt is signed by the key(s), that its entry is the ingest of
exactly that evidence id, SHA-256, SM3 and size, and that it is included in the signed tree; checks the
consistency proof from the receipt's checkpoint to checkpoint.txt, the export event proof, and the
signature of checkpoint.txt. It prints PASS or FAIL per file (naming what differed), reports files that
are missing or not listed, and exits with status 1 on any failure.

Without the custody tool: each receipt's entry is canonical JSON; its leaf hash is
SHA-256(0x00 || entry) (RFC 6962) and the inclusion proof leads to the root in the checkpoint, a C2SP
tlog-checkpoint signed as a C2SP signed note with Ed25519.
",
        id = m.package_id,
        case_no = m.case.case_no,
        title = m.case.title,
        created = m.created_at,
        by = m.created_by,
        n = m.files.len(),
        origin = m.log_origin,
        size = m.checkpoint_size,
    )
}

// ---- writing the archive (blocking) ----

/// Where one member's bytes come from.
pub enum MemberSource {
    /// Small text held in memory (manifest, receipts, proofs, keys).
    Bytes(Vec<u8>),
    /// A local file read in place (evidence on a local-disk store; benchmarks).
    File(PathBuf),
    /// Chunks streamed from the object store by the async side.
    Chunks(ChunkSource),
}

impl std::fmt::Debug for MemberSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Self::File(p) => write!(f, "File({})", p.display()),
            Self::Chunks(_) => f.write_str("Chunks"),
        }
    }
}

/// One member of the archive to write.
#[derive(Debug)]
pub struct Member {
    pub path: String,
    pub source: MemberSource,
    /// Evidence bytes: stored (not compressed) and hashed while copied, with SM3 when `Some(true)`.
    /// Text members (`None`) are deflated.
    pub hash: Option<bool>,
}

/// Channel types for streamed members.
pub mod bytes_stream {
    /// Receives the chunks of one streamed member; `Err` aborts the archive.
    pub type ChunkSource = tokio::sync::mpsc::Receiver<Result<Vec<u8>, String>>;
}

const COPY_BUFFER: usize = 1 << 20;

/// Writes members into a new ZIP at `out` (blocking: run it on a blocking thread). Members arrive
/// through `members` in order; evidence members are hashed as they are copied and their digests
/// returned in order. The file is fsynced before this returns.
pub fn write_archive(
    out: &Path,
    members: impl Iterator<Item = Member>,
) -> Result<Vec<Digests>, String> {
    use zip::CompressionMethod;
    use zip::write::SimpleFileOptions;
    let file =
        std::fs::File::create(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::with_capacity(COPY_BUFFER, file));
    let mut digests = Vec::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    for m in members {
        let opts = SimpleFileOptions::default()
            .compression_method(if m.hash.is_some() {
                CompressionMethod::Stored
            } else {
                CompressionMethod::Deflated
            })
            // Always ZIP64-capable: a recording may exceed 4 GiB, and the size is not known up front
            // for streamed members.
            .large_file(m.hash.is_some())
            .unix_permissions(0o644);
        zip.start_file(m.path.as_str(), opts)
            .map_err(|e| format!("starting {}: {e}", m.path))?;
        let mut hasher = m.hash.map(ContentHasher::new);
        let mut put = |zip: &mut zip::ZipWriter<_>, data: &[u8]| -> Result<(), String> {
            if let Some(h) = hasher.as_mut() {
                h.update(data);
            }
            zip.write_all(data)
                .map_err(|e| format!("writing {}: {e}", m.path))
        };
        match m.source {
            MemberSource::Bytes(b) => put(&mut zip, &b)?,
            MemberSource::File(p) => {
                let mut f = std::fs::File::open(&p)
                    .map_err(|e| format!("opening {} for {}: {e}", p.display(), m.path))?;
                loop {
                    let n = f
                        .read(&mut buf)
                        .map_err(|e| format!("reading {}: {e}", p.display()))?;
                    if n == 0 {
                        break;
                    }
                    put(&mut zip, &buf[..n])?;
                }
            }
            MemberSource::Chunks(mut rx) => {
                while let Some(chunk) = rx.blocking_recv() {
                    put(&mut zip, &chunk?)?;
                }
            }
        }
        if let Some(h) = hasher {
            digests.push(h.finish());
        }
    }
    let w = zip
        .finish()
        .map_err(|e| format!("finishing {}: {e}", out.display()))?;
    let file = w
        .into_inner()
        .map_err(|e| format!("flushing {}: {e}", out.display()))?;
    file.sync_all()
        .map_err(|e| format!("syncing {}: {e}", out.display()))?;
    Ok(digests)
}

// ---- the service ----

#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// How long an export waits for a signed checkpoint to cover its export events.
    pub checkpoint_timeout: Duration,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            checkpoint_timeout: Duration::from_secs(10),
        }
    }
}

/// Makes export packages.
#[derive(Debug, Clone)]
pub struct Exporter {
    meta: Metadata,
    blobs: Blobs,
    ledger: Ledger,
    cases: Cases,
    requests: Requests,
    config: ExportConfig,
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub package_id: uuid::Uuid,
    pub case_no: String,
    pub files: usize,
    /// Evidence bytes in the package.
    pub evidence_bytes: u64,
    pub checkpoint_size: u64,
}

fn internal(what: &str) -> impl Fn(String) -> CasesError + '_ {
    move |e| CasesError::Internal(format!("{what}: {e}"))
}

fn ingest_err(e: custody_ingest::IngestError) -> CasesError {
    use custody_core::{ErrorCode, HasErrorCode};
    match e.code() {
        ErrorCode::Unavailable => {
            CasesError::Internal(format!("the ledger is behind, try the export again: {e}"))
        }
        _ => CasesError::Internal(format!("ledger: {e}")),
    }
}

/// What the export knows of one item before writing.
struct Item {
    file: ManifestFile,
    receipt: LedgerProof,
    receipt_size: u64,
    receipt_root: String,
}

impl Exporter {
    pub fn new(
        meta: Metadata,
        blobs: Blobs,
        ledger: Ledger,
        cases: Cases,
        requests: Requests,
        config: ExportConfig,
    ) -> Self {
        Self {
            meta,
            blobs,
            ledger,
            cases,
            requests,
            config,
        }
    }

    /// Writes the export package of case `case_id` to `out` (created or truncated). `by` must be able
    /// to read the case and hold a live approved export request for it.
    pub async fn export(
        &self,
        by: &User,
        case_id: CaseId,
        out: &Path,
    ) -> Result<ExportSummary, CasesError> {
        let case = self.cases.get(by, case_id).await?;
        self.requests.require_export(by, case_id).await?;
        let links = self.meta.links_of(case_id, false).await?;
        if links.is_empty() {
            return Err(CasesError::FailedPrecondition(format!(
                "case {} has no linked evidence to export",
                case.case_no
            )));
        }
        let steps = self.meta.steps_of(case_id).await?;
        let keys = self.ledger.keys().clone();
        let key_refs: Vec<&str> = keys.verifiers.iter().map(String::as_str).collect();

        // Receipts first: each proves the ingest against the checkpoint of its time, which the
        // consistency proofs then tie to the package's checkpoint.
        let mut items = Vec::with_capacity(links.len());
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for link in &links {
            let ev = self
                .meta
                .get_evidence(link.evidence_id)
                .await?
                .ok_or_else(|| CasesError::NotFound(format!("evidence {}", link.evidence_id)))?;
            // Only a closed case's evidence can be deleted, and only with retention_case_evidence
            // configured shorter than for ever; a package cannot hold bytes that are gone.
            if let Some(d) = ev.deleted() {
                return Err(CasesError::Gone(format!(
                    "evidence {} ({}) linked to this case was deleted at {} when its retention ended ({});                      the package would be incomplete",
                    ev.id,
                    ev.file_name.as_str(),
                    d.at,
                    d.reason
                )));
            }
            let receipt = self
                .ledger
                .ingest_receipt(ev.id)
                .await
                .map_err(ingest_err)?;
            let verified = receipt.verify(&key_refs).map_err(|e| {
                CasesError::Internal(format!("ingest receipt of evidence {}: {e}", ev.id))
            })?;
            let officer = match &ev.attribution.officer {
                Some(b) => {
                    if !names.contains_key(b.as_str()) {
                        let name = self.meta.get_officer(b).await?.map(|o| o.name);
                        names.insert(b.to_string(), name.unwrap_or_default());
                    }
                    let name = names.get(b.as_str()).filter(|n| !n.is_empty()).cloned();
                    Some(ManifestOfficer {
                        badge: b.to_string(),
                        name,
                    })
                }
                None => None,
            };
            items.push(Item {
                file: ManifestFile {
                    evidence_id: ev.id,
                    path: file_path(ev.id, &ev.file_name),
                    file_name: ev.file_name.clone(),
                    size: ev.size,
                    sha256: ev.sha256,
                    sm3: ev.sm3,
                    media_type: ev.media_type,
                    captured_at: ev.captured_at,
                    device_id: ev.device_id.clone(),
                    station_id: ev.station_id.clone(),
                    officer,
                    link: ManifestLink {
                        role: link.role.clone(),
                        note: link.note.clone(),
                        step_id: link.step_id,
                    },
                    ingest_leaf: verified.leaf_index,
                    export_leaf: 0,
                },
                receipt_size: verified.checkpoint.size,
                receipt_root: hex::encode(verified.checkpoint.root.0),
                receipt,
            });
        }

        // The export events, logged before any byte is written.
        let package_id = uuid::Uuid::now_v7();
        let created_at = now();
        let detail = serde_json::json!({
            "case_id": case.id,
            "case_no": case.case_no,
            "package_id": package_id,
        })
        .to_string();
        let events: Vec<PendingEvent> = items
            .iter()
            .map(|i| PendingEvent {
                kind: EventKind::Export,
                evidence_id: i.file.evidence_id,
                actor: by.actor(),
                officer: i.file.officer.as_ref().map(|o| o.badge.clone()),
                detail: Some(detail.clone()),
                server_time: created_at,
            })
            .collect();
        self.ledger.append_many(&events).await.map_err(ingest_err)?;

        // Wait until a signed checkpoint covers every export event of this package.
        let (cp, export_entries) = self.wait_for_export_events(&items, package_id).await?;
        let checkpoint = verify_checkpoint(cp.note.as_bytes(), &key_refs)
            .map_err(|e| CasesError::Internal(format!("the newest checkpoint: {e}")))?;

        let mut members: Vec<Member> = Vec::new();
        let text = |path: String, b: Vec<u8>| Member {
            path,
            source: MemberSource::Bytes(b),
            hash: None,
        };
        let mut consistency: BTreeMap<u64, ConsistencyFile> = BTreeMap::new();
        for (item, (index, entry)) in items.iter_mut().zip(&export_entries) {
            item.file.export_leaf = *index;
            let path = self
                .ledger
                .inclusion_proof(*index, cp.size)
                .await
                .map_err(ingest_err)?;
            let proof = LedgerProof::new(entry, *index, &path, cp.note.as_bytes());
            members.push(text(
                export_event_path(item.file.evidence_id),
                json_bytes(&proof),
            ));
            members.push(text(
                receipt_path(item.file.evidence_id),
                json_bytes(&item.receipt),
            ));
            if item.receipt_size < cp.size && !consistency.contains_key(&item.receipt_size) {
                let proof = self
                    .ledger
                    .consistency_proof(item.receipt_size, cp.size)
                    .await
                    .map_err(ingest_err)?;
                consistency.insert(
                    item.receipt_size,
                    ConsistencyFile {
                        format: CONSISTENCY_FORMAT.into(),
                        old_size: item.receipt_size,
                        new_size: cp.size,
                        old_root: item.receipt_root.clone(),
                        new_root: hex::encode(checkpoint.root.0),
                        proof: proof.iter().map(|h| hex::encode(h.0)).collect(),
                    },
                );
            }
        }
        for (old, c) in &consistency {
            members.push(text(consistency_path(*old, cp.size), json_bytes(c)));
        }

        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            package_id,
            created_at,
            created_by: by.actor(),
            log_origin: checkpoint.origin.clone(),
            checkpoint_size: cp.size,
            case: ManifestCase {
                id: case.id,
                case_no: case.case_no.to_string(),
                title: case.title.clone(),
                procedure: case.procedure.as_str().to_string(),
                status: case.status.as_str().to_string(),
            },
            steps: steps
                .iter()
                .map(|s| ManifestStep {
                    id: s.id,
                    title: s.title.clone(),
                    from: s.starts_at,
                    to: s.ends_at,
                    place: s.place.name.clone(),
                    continuous: s.continuous,
                    officers: s.officers.iter().map(|b| b.to_string()).collect(),
                })
                .collect(),
            files: items.iter().map(|i| i.file.clone()).collect(),
        };
        let mut head = vec![
            text(MANIFEST_PATH.into(), manifest.encode()),
            text(README_PATH.into(), readme_text(&manifest).into_bytes()),
            text(
                EVIDENCE_LIST_PATH.into(),
                render_evidence_list(&manifest).into_bytes(),
            ),
            text(CHECKPOINT_PATH.into(), cp.note.clone().into_bytes()),
        ];
        for k in &keys.verifiers {
            let path = if custody_core::sm2note::is_sm2_key(k) {
                SM2_KEY_PATH
            } else {
                KEY_PATH
            };
            head.push(text(path.into(), format!("{k}\n").into_bytes()));
        }
        head.append(&mut members);
        let evidence_bytes = self.write(out, head, &manifest.files).await?;
        tracing::info!(case = %case.case_no, package = %package_id, files = manifest.files.len(), bytes = evidence_bytes, by = %by.username, "case exported");
        Ok(ExportSummary {
            package_id,
            case_no: case.case_no.to_string(),
            files: manifest.files.len(),
            evidence_bytes,
            checkpoint_size: cp.size,
        })
    }

    /// Polls until every item's export event of `package` is in the log and a checkpoint covers them.
    /// Returns that checkpoint and, per item, the event's leaf index and entry bytes.
    async fn wait_for_export_events(
        &self,
        items: &[Item],
        package: uuid::Uuid,
    ) -> Result<(custody_store::StoredCheckpoint, Vec<(u64, Vec<u8>)>), CasesError> {
        let deadline = Instant::now() + self.config.checkpoint_timeout;
        let marker = format!("\"package_id\":\"{package}\"");
        loop {
            let mut found = Vec::with_capacity(items.len());
            for i in items {
                let entries = self.meta.ledger_entries_of(i.file.evidence_id).await?;
                let hit = entries.into_iter().find(|e| {
                    e.kind == EventKind::Export
                        && LedgerEntry::decode(&e.entry)
                            .is_ok_and(|x| x.detail.as_deref().is_some_and(|d| d.contains(&marker)))
                });
                match hit {
                    Some(e) => found.push((e.index, e.entry)),
                    None => break,
                }
            }
            if found.len() == items.len() {
                let last = found.iter().map(|(i, _)| *i).max().unwrap_or(0);
                if let Some(cp) = self.ledger.checkpoint().await.map_err(ingest_err)?
                    && cp.size > last
                {
                    return Ok((cp, found));
                }
            }
            if Instant::now() >= deadline {
                return Err(CasesError::Internal(format!(
                    "no signed checkpoint covered the export events of package {package} within {:?}; the ledger sequencer is behind (the events are logged; export again)",
                    self.config.checkpoint_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes the archive on a blocking thread, feeding evidence bytes to it (read in place on a local
    /// store, streamed otherwise), and checks every item's bytes against its hashes.
    async fn write(
        &self,
        out: &Path,
        head: Vec<Member>,
        files: &[ManifestFile],
    ) -> Result<u64, CasesError> {
        // Members go to the writer one at a time; evidence chunks a few at a time, so memory stays at a
        // few buffers whatever the size of a recording.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Member>(1);
        let out_path = out.to_path_buf();
        let writer = tokio::task::spawn_blocking(move || {
            write_archive(&out_path, std::iter::from_fn(move || rx.blocking_recv()))
        });
        let mut feed_error = None;
        for m in head {
            if tx.send(m).await.is_err() {
                break;
            }
        }
        for f in files {
            let key = custody_core::content_path(&f.sha256);
            let hash = Some(f.sm3.is_some());
            if let Some(p) = self.blobs.local_path(&key) {
                let m = Member {
                    path: f.path.clone(),
                    source: MemberSource::File(p),
                    hash,
                };
                if tx.send(m).await.is_err() {
                    break;
                }
                continue;
            }
            let (ctx, crx) = tokio::sync::mpsc::channel(4);
            let m = Member {
                path: f.path.clone(),
                source: MemberSource::Chunks(crx),
                hash,
            };
            if tx.send(m).await.is_err() {
                break;
            }
            match self.blobs.get(&key, None).await {
                Ok((_, _, mut stream)) => {
                    use futures::StreamExt;
                    while let Some(chunk) = stream.next().await {
                        let chunk = chunk.map(|b| b.to_vec()).map_err(|e| e.to_string());
                        let failed = chunk.is_err();
                        if ctx.send(chunk).await.is_err() || failed {
                            break;
                        }
                    }
                }
                Err(e) => {
                    let _ = ctx.send(Err(e.to_string())).await;
                    feed_error = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let digests = writer
            .await
            .map_err(|e| CasesError::Internal(format!("export writer task failed: {e}")))?
            .map_err(internal("writing the export package"))?;
        if let Some(e) = feed_error {
            return Err(e.into());
        }
        let mut total = 0;
        for (f, d) in files.iter().zip(&digests) {
            total += d.size;
            if d.sha256 != f.sha256 || d.size != f.size || (f.sm3.is_some() && d.sm3 != f.sm3) {
                let _ = std::fs::remove_file(out);
                return Err(CasesError::Internal(format!(
                    "stored bytes of evidence {} hash to sha256 {} ({} bytes), but the evidence is sha256 {} ({} bytes); the package was not made",
                    f.evidence_id, d.sha256, d.size, f.sha256, f.size
                )));
            }
        }
        if digests.len() != files.len() {
            let _ = std::fs::remove_file(out);
            return Err(CasesError::Internal(format!(
                "the export package holds {} of {} files",
                digests.len(),
                files.len()
            )));
        }
        Ok(total)
    }
}

fn json_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).unwrap_or_default();
    b.push(b'\n');
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            package_id: uuid::Uuid::nil(),
            created_at: Timestamp::from_unix_micros(1_795_000_000_000_000),
            created_by: "user:chief".into(),
            log_origin: "custody.example/ledger".into(),
            checkpoint_size: 12,
            case: ManifestCase {
                id: CaseId::parse("0190b3f4-5c6d-7e8f-9a0b-1c2d3e4f5a6b").unwrap(),
                case_no: "A-2026-1".into(),
                title: "<script>alert('x')</script> & 李四".into(),
                procedure: "general".into(),
                status: "investigating".into(),
            },
            steps: vec![],
            files: vec![ManifestFile {
                evidence_id: EvidenceId::parse("0190b3f4-5c6d-7e8f-9a0b-1c2d3e4f5a6c").unwrap(),
                path: "files/0190b3f4-5c6d-7e8f-9a0b-1c2d3e4f5a6c/A&B<1>.MP4".into(),
                file_name: FileName::parse("A&B<1>.MP4").unwrap(),
                size: 3 << 20,
                sha256: Sha256::from_bytes([7; 32]),
                sm3: None,
                media_type: MediaType::Video,
                captured_at: Timestamp::from_unix_micros(1_794_000_000_000_000),
                device_id: DeviceId::parse("ZFY0001").unwrap(),
                station_id: StationId::parse("ST-01").unwrap(),
                officer: Some(ManifestOfficer {
                    badge: "0001".into(),
                    name: Some("张\"三\"".into()),
                }),
                link: ManifestLink {
                    role: "现场".into(),
                    note: None,
                    step_id: None,
                },
                ingest_leaf: 3,
                export_leaf: 11,
            }],
        }
    }

    #[test]
    fn a_manifest_round_trips_through_its_encoding() {
        let m = manifest();
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn a_manifest_of_another_version_format_or_with_unknown_fields_is_refused() {
        let text = String::from_utf8(manifest().encode()).unwrap();
        let v2 = text.replacen("\"version\": 1", "\"version\": 2", 1);
        assert_eq!(
            Manifest::decode(v2.as_bytes()),
            Err(ManifestError::UnknownVersion(2))
        );
        let other = text.replacen("custody-export", "something-else", 1);
        assert!(matches!(
            Manifest::decode(other.as_bytes()),
            Err(ManifestError::Format(_))
        ));
        let extra = text.replacen("\"version\": 1,", "\"version\": 1, \"x\": 1,", 1);
        assert!(matches!(
            Manifest::decode(extra.as_bytes()),
            Err(ManifestError::Malformed(_))
        ));
        let bad_hash = text.replacen(&"07".repeat(32), "zz", 1);
        assert!(matches!(
            Manifest::decode(bad_hash.as_bytes()),
            Err(ManifestError::Malformed(_))
        ));
    }

    #[test]
    fn html_special_characters_are_escaped() {
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(html_escape("执法记录仪 1"), "执法记录仪 1");
    }

    #[test]
    fn the_evidence_list_escapes_every_field_and_has_the_chinese_headings() {
        let html = render_evidence_list(&manifest());
        for h in [
            "序号",
            "证据名称",
            "类别",
            "格式",
            "大小",
            "采集时间",
            "执法人员",
            "完整性校验值",
            "视听资料",
        ] {
            assert!(html.contains(h), "{h} missing");
        }
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; 李四"));
        assert!(html.contains("A&amp;B&lt;1&gt;.MP4"));
        assert!(html.contains("张&quot;三&quot;（警号 0001）"));
        assert!(!html.contains("http"), "no external resources");
        assert_eq!(html, render_evidence_list(&manifest()), "deterministic");
    }

    #[test]
    fn photos_audio_and_video_are_audio_visual_material() {
        assert_eq!(category_zh(MediaType::Video), "视听资料");
        assert_eq!(category_zh(MediaType::Photo), "视听资料");
        assert_eq!(category_zh(MediaType::Text), "电子数据");
    }

    #[test]
    fn an_archive_holds_its_members_and_the_digests_of_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.bin");
        std::fs::write(&src, vec![5u8; 3 << 20]).unwrap();
        let out = dir.path().join("p.zip");
        let digests = write_archive(
            &out,
            vec![
                Member {
                    path: "manifest.json".into(),
                    source: MemberSource::Bytes(b"{}".to_vec()),
                    hash: None,
                },
                Member {
                    path: "files/x/a.bin".into(),
                    source: MemberSource::File(src),
                    hash: Some(true),
                },
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(digests.len(), 1);
        assert_eq!(digests[0], ContentHasher::digest(&vec![5u8; 3 << 20], true));
        let mut z = zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
        let f = z.by_name("files/x/a.bin").unwrap();
        assert_eq!(f.compression(), zip::CompressionMethod::Stored);
        assert_eq!(f.size(), 3 << 20);
    }
}
