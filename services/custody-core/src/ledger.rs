//! Ledger maths: the versioned, canonical encoding of one ledger entry, and RFC 6962 Merkle hashing and
//! proofs over entries (through `tlog_tiles`, the Go sumdb tlog port that Cloudflare's CT log uses).
//!
//! Pure: the sequencer that stores hashes and tiles, signs checkpoints and serves proofs lives in the
//! service crates and reads stored hashes through [`tlog_tiles::HashReader`].
//!
//! An entry is stored and hashed exactly as encoded here. Encoding is canonical: one event has one byte
//! string, and [`LedgerEntry::decode`] refuses any other spelling of it, so a verifier who decodes an entry
//! and encodes it again gets the bytes whose hash is in the tree.

use crate::hash::{Sha256, Sm3};
use crate::ids::{DeviceId, EvidenceId, StationId};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

pub use tlog_tiles::{
    Error as TlogError, Hash as TreeHash, HashReader, RecordProof, TreeProof, prove_record,
    prove_tree, split_stored_hash_index, tree_hash,
};

/// The on-disk version of [`LedgerEntry`] written today.
pub const ENTRY_VERSION: u32 = 1;

/// What happened to an item of evidence. Every state change and every access is one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventKind {
    Ingest,
    Link,
    Unlink,
    View,
    Download,
    Export,
    LegalHold,
    RetentionDelete,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        Self::Ingest,
        Self::Link,
        Self::Unlink,
        Self::View,
        Self::Download,
        Self::Export,
        Self::LegalHold,
        Self::RetentionDelete,
    ];

    /// The name used in entries, in the database and in APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Link => "link",
            Self::Unlink => "unlink",
            Self::View => "view",
            Self::Download => "download",
            Self::Export => "export",
            Self::LegalHold => "legal_hold",
            Self::RetentionDelete => "retention_delete",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("ledger event kind {s:?} is not one of ingest, link, unlink, view, download, export, legal_hold, retention_delete"))
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ledger entry (version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerEntry {
    /// Encoding version; always [`ENTRY_VERSION`] for entries written by this code.
    pub v: u32,
    pub kind: EventKind,
    pub evidence_id: EvidenceId,
    pub sha256: Sha256,
    pub sm3: Option<Sm3>,
    pub size: u64,
    /// The recorder that captured the evidence.
    pub device_id: DeviceId,
    pub station_id: Option<StationId>,
    /// Badge number (警号) of the officer holding the recorder at capture time, when known.
    pub officer: Option<String>,
    /// Who caused the event: a user, a station, or `system` for workers.
    pub actor: String,
    /// Capture time by the recorder's own clock.
    pub device_time: Option<Timestamp>,
    /// When the server recorded the event.
    pub server_time: Timestamp,
    /// Leaf index of the previous evidence event of the same recorder: the per-recorder hash chain.
    pub prev_device_leaf: Option<u64>,
    /// Leaf index of the previous event of the same evidence item.
    pub prev_evidence_leaf: Option<u64>,
    /// Event-specific detail (case and role of a link, reason of a hold), free text.
    pub detail: Option<String>,
}

/// Why bytes are not a valid ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("ledger entry is not valid JSON of version {ENTRY_VERSION}: {0}")]
    Malformed(String),
    #[error("ledger entry has version {0}; this build reads version {ENTRY_VERSION}")]
    UnknownVersion(u32),
    #[error("ledger entry is not in canonical form (it decodes, but encodes to other bytes)")]
    NotCanonical,
}

impl LedgerEntry {
    /// The canonical bytes: compact JSON, fields in declaration order, absent values as `null`.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a struct of strings, integers and options cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses entry bytes, refusing unknown versions and non-canonical spellings.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let version: Version =
            serde_json::from_slice(bytes).map_err(|e| EntryError::Malformed(e.to_string()))?;
        if version.v != ENTRY_VERSION {
            return Err(EntryError::UnknownVersion(version.v));
        }
        let entry: Self =
            serde_json::from_slice(bytes).map_err(|e| EntryError::Malformed(e.to_string()))?;
        if entry.encode() != bytes {
            return Err(EntryError::NotCanonical);
        }
        Ok(entry)
    }

    /// The RFC 6962 leaf hash of this entry: SHA-256(0x00 ‖ encoding).
    pub fn leaf_hash(&self) -> TreeHash {
        tlog_tiles::record_hash(&self.encode())
    }
}

/// Stored hashes of a whole tree held in memory: for tests, for verifying an export package offline, and
/// for `custody verify`, which recomputes every hash from the entries.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    /// Every stored hash, in `tlog_tiles` stored-hash order.
    stored: Vec<TreeHash>,
    size: u64,
}

/// Why a tree operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("tree of size {size} has no leaf {index}")]
    NoSuchLeaf { index: u64, size: u64 },
    #[error("tree size {asked} is larger than the {size} leaves held")]
    TooLarge { asked: u64, size: u64 },
    #[error("proof does not verify")]
    InvalidProof,
    #[error("tree hashing failed: {0}")]
    Tlog(String),
}

fn tlog(e: tlog_tiles::Error) -> TreeError {
    match e {
        tlog_tiles::Error::InvalidProof => TreeError::InvalidProof,
        e => TreeError::Tlog(e.to_string()),
    }
}

impl HashReader for MemoryTree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<TreeHash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.stored.get(i).copied())
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl MemoryTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one entry's bytes as the next leaf; returns its index.
    pub fn append(&mut self, entry: &[u8]) -> Result<u64, TreeError> {
        let index = self.size;
        let new = tlog_tiles::stored_hashes(index, entry, self).map_err(tlog)?;
        self.stored.extend(new);
        self.size += 1;
        Ok(index)
    }

    /// The root hash of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<TreeHash, TreeError> {
        if size > self.size {
            return Err(TreeError::TooLarge {
                asked: size,
                size: self.size,
            });
        }
        tlog_tiles::tree_hash(size, self).map_err(tlog)
    }

    /// Proof that leaf `index` is in the tree of `size` leaves.
    pub fn prove_inclusion(&self, index: u64, size: u64) -> Result<RecordProof, TreeError> {
        if size > self.size {
            return Err(TreeError::TooLarge {
                asked: size,
                size: self.size,
            });
        }
        if index >= size {
            return Err(TreeError::NoSuchLeaf { index, size });
        }
        tlog_tiles::prove_record(size, index, self).map_err(tlog)
    }

    /// Proof that the tree of `old` leaves is a prefix of the tree of `new` leaves.
    pub fn prove_consistency(&self, old: u64, new: u64) -> Result<TreeProof, TreeError> {
        if new > self.size {
            return Err(TreeError::TooLarge {
                asked: new,
                size: self.size,
            });
        }
        tlog_tiles::prove_tree(new, old, self).map_err(tlog)
    }
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(
    proof: &RecordProof,
    size: u64,
    root: TreeHash,
    index: u64,
    leaf: TreeHash,
) -> Result<(), TreeError> {
    tlog_tiles::check_record(proof, size, root, index, leaf).map_err(tlog)
}

/// Checks that the tree (`old`, `old_root`) is a prefix of the tree (`new`, `new_root`).
pub fn verify_consistency(
    proof: &TreeProof,
    new: u64,
    new_root: TreeHash,
    old: u64,
    old_root: TreeHash,
) -> Result<(), TreeError> {
    tlog_tiles::check_tree(proof, new, new_root, old, old_root).map_err(tlog)
}

/// Tile height of the log: 2^8 = 256 hashes a tile, as C2SP tlog-tiles requires.
pub const TILE_HEIGHT: u8 = 8;

pub use tlog_tiles::Tile;

/// The tiles to (re)write when the tree grows from `old` to `new` leaves, partial tiles included.
pub fn tiles_for_growth(old: u64, new: u64) -> Vec<Tile> {
    Tile::new_tiles(TILE_HEIGHT, old, new)
}

/// The C2SP path of a tile: `tile/<L>/<N>[.p/<W>]`, or `tile/entries/<N>[.p/<W>]` for an entry bundle
/// (`tlog_tiles` writes the Go sumdb form, which carries the height: `tile/8/L/...`).
pub fn tile_path(tile: &Tile) -> String {
    let sumdb = tile.path();
    let rest = sumdb.strip_prefix("tile/8/").unwrap_or(&sumdb);
    match rest.strip_prefix("data/") {
        Some(n) => format!("tile/entries/{n}"),
        None => format!("tile/{rest}"),
    }
}

/// Parses a C2SP tile path as served over HTTP. Refuses anything else, so that a request path can never
/// name an object outside the ledger's tiles.
pub fn parse_tile_path(path: &str) -> Result<Tile, String> {
    let bad = || {
        format!(
            "tile path: expected tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>], got {path:?}"
        )
    };
    let rest = path.strip_prefix("tile/").ok_or_else(bad)?;
    let sumdb = match rest.strip_prefix("entries/") {
        Some(n) => format!("tile/8/data/{n}"),
        None => format!("tile/8/{rest}"),
    };
    let tile = Tile::from_path(&sumdb).map_err(|_| bad())?;
    if tile_path(&tile) != path {
        return Err(bad());
    }
    Ok(tile)
}

/// Why bytes are not an entry bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("entry {index} is {len} bytes; an entry bundle holds entries of at most 65535 bytes")]
    EntryTooLong { index: usize, len: usize },
    #[error("entry bundle is truncated at byte {at}")]
    Truncated { at: usize },
}

/// Encodes entries as a C2SP entry bundle: each as a big-endian u16 length followed by its bytes.
pub fn encode_entry_bundle<E: AsRef<[u8]>>(entries: &[E]) -> Result<Vec<u8>, BundleError> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.as_ref().len() + 2).sum());
    for (index, e) in entries.iter().enumerate() {
        let e = e.as_ref();
        let len = u16::try_from(e.len()).map_err(|_| BundleError::EntryTooLong {
            index,
            len: e.len(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// Splits a C2SP entry bundle into its entries.
pub fn decode_entry_bundle(bytes: &[u8]) -> Result<Vec<&[u8]>, BundleError> {
    let mut entries = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len_bytes = bytes.get(at..at + 2).ok_or(BundleError::Truncated { at })?;
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        let entry = bytes
            .get(at + 2..at + 2 + len)
            .ok_or(BundleError::Truncated { at })?;
        entries.push(entry);
        at += 2 + len;
    }
    Ok(entries)
}

/// Why a checkpoint could not be signed or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("key: {0}")]
    Key(String),
    #[error("checkpoint is malformed: {0}")]
    Malformed(String),
    #[error("checkpoint signature does not verify: {0}")]
    Signature(String),
    #[error("checkpoint origin is {got:?} but the key is for {want:?}")]
    WrongOrigin { got: String, want: String },
}

/// Makes a new Ed25519 signed-note key pair for a log named `origin`: (signing key, verifier key), in the
/// text forms `PRIVATE+KEY+<origin>+<id>+<base64>` and `<origin>+<id>+<base64>`.
pub use signed_note::generate_key;

/// A checkpoint whose signature was checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedCheckpoint {
    pub origin: String,
    pub size: u64,
    pub root: TreeHash,
}

/// A signer for a signing key in signed-note text form (`PRIVATE+KEY+<name>+<id>+<key>`): Ed25519, or SM2
/// (see [`crate::sm2note`]).
pub fn signer_from_text(
    skey: &str,
) -> Result<Box<dyn signed_note::Signer + Send + Sync>, CheckpointError> {
    if crate::sm2note::is_sm2_key(skey) {
        return crate::sm2note::Sm2Signer::new(skey)
            .map(|s| Box::new(s) as _)
            .map_err(|e| CheckpointError::Key(e.to_string()));
    }
    signed_note::StandardSigner::new(skey)
        .map(|s| Box::new(s) as _)
        .map_err(|e| CheckpointError::Key(e.to_string()))
}

/// A verifier for a verifier key in signed-note text form (`<name>+<id>+<key>`): Ed25519 or SM2.
pub fn verifier_from_text(
    vkey: &str,
) -> Result<Box<dyn signed_note::Verifier + Send + Sync>, CheckpointError> {
    if crate::sm2note::is_sm2_key(vkey) {
        return crate::sm2note::Sm2Verifier::new(vkey)
            .map(|v| Box::new(v) as _)
            .map_err(|e| CheckpointError::Key(e.to_string()));
    }
    signed_note::StandardVerifier::new(vkey)
        .map(|v| Box::new(v) as _)
        .map_err(|e| CheckpointError::Key(e.to_string()))
}

/// Signs a C2SP tlog-checkpoint (origin, size, base64 root) as a signed note with every given signing
/// key (Ed25519, plus SM2 where configured). The origin must be the keys' name, so that a verifier can
/// tell which log a checkpoint is for.
pub fn sign_checkpoint(
    origin: &str,
    size: u64,
    root: TreeHash,
    signing_keys: &[&str],
) -> Result<Vec<u8>, CheckpointError> {
    let checkpoint = tlog_tiles::Checkpoint::new(origin, size, root, "").map_err(|_| {
        CheckpointError::Malformed(format!(
            "origin {origin:?} is not a valid checkpoint origin"
        ))
    })?;
    if signing_keys.is_empty() {
        return Err(CheckpointError::Key("no signing key given".into()));
    }
    let signers = signing_keys
        .iter()
        .map(|k| signer_from_text(k))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(s) = signers.iter().find(|s| s.name() != origin) {
        return Err(CheckpointError::WrongOrigin {
            got: origin.to_string(),
            want: s.name().to_string(),
        });
    }
    let mut note = signed_note::Note::new(&checkpoint.to_bytes(), &[])
        .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    let refs: Vec<&dyn signed_note::Signer> = signers
        .iter()
        .map(|s| s.as_ref() as &dyn signed_note::Signer)
        .collect();
    note.add_sigs(&refs)
        .map_err(|e| CheckpointError::Key(e.to_string()))?;
    Ok(note.to_bytes())
}

/// Checks a signed checkpoint against verifier keys and returns what it commits to. Every given key must
/// have signed it (so a deployment that pins both its Ed25519 and its SM2 key requires both). Fails when
/// a signature is missing, made with another key, or does not match the text.
pub fn verify_checkpoint(
    signed: &[u8],
    verifier_keys: &[&str],
) -> Result<VerifiedCheckpoint, CheckpointError> {
    let verifiers = verifier_keys
        .iter()
        .map(|k| verifier_from_text(k))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(name) = verifiers.first().map(|v| v.name().to_string()) else {
        return Err(CheckpointError::Key("no verifier key given".into()));
    };
    let wanted: Vec<(String, u32)> = verifiers
        .iter()
        .map(|v| (v.name().to_string(), v.key_id()))
        .collect();
    let note = signed_note::Note::from_bytes(signed)
        .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    let list = signed_note::VerifierList::new(
        verifiers
            .into_iter()
            .map(|v| v as Box<dyn signed_note::Verifier>)
            .collect(),
    );
    let (verified, _) = note
        .verify(&list)
        .map_err(|e| CheckpointError::Signature(e.to_string()))?;
    for (n, id) in &wanted {
        if !verified.iter().any(|s| s.name() == n && s.id() == *id) {
            return Err(CheckpointError::Signature(format!(
                "no signature by key {n}+{id:08x}"
            )));
        }
    }
    let cp = tlog_tiles::Checkpoint::from_bytes(note.text())
        .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    if cp.origin() != name {
        return Err(CheckpointError::WrongOrigin {
            got: cp.origin().to_string(),
            want: name,
        });
    }
    Ok(VerifiedCheckpoint {
        origin: cp.origin().to_string(),
        size: cp.size(),
        root: *cp.hash(),
    })
}

/// The stored-hash indexes of the rightmost complete node at every level of a tree of `size` leaves. These
/// are all an append or a root computation reads from the existing tree, so a sequencer that keeps them
/// (plus what it appends) never has to read older hashes.
pub fn frontier_indexes(size: u64) -> Vec<u64> {
    (0..64u8)
        .take_while(|&l| size >> l >= 1)
        .map(|l| tlog_tiles::stored_hash_index(l, (size >> l) - 1))
        .collect()
}

/// Stored hashes appended to a tree held only at its edge: the frontier of the tree before the batch plus
/// everything the batch adds. Enough to append, to compute the new root, and to produce the batch's tiles'
/// level-0 hashes; anything else is an error.
#[derive(Debug, Clone, Default)]
pub struct EdgeTree {
    size: u64,
    hashes: std::collections::HashMap<u64, TreeHash>,
}

impl HashReader for EdgeTree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<TreeHash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| {
                self.hashes
                    .get(i)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl EdgeTree {
    /// A tree of `size` leaves known by the hashes at [`frontier_indexes`]`(size)`, in that order.
    pub fn from_frontier(size: u64, frontier: &[TreeHash]) -> Result<Self, TreeError> {
        let indexes = frontier_indexes(size);
        if indexes.len() != frontier.len() {
            return Err(TreeError::Tlog(format!(
                "a tree of {size} leaves has {} frontier hashes, got {}",
                indexes.len(),
                frontier.len()
            )));
        }
        Ok(Self {
            size,
            hashes: indexes.into_iter().zip(frontier.iter().copied()).collect(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one entry as the next leaf; returns its index and the stored hashes it added, as
    /// (stored-hash index, hash) pairs.
    pub fn append(&mut self, entry: &[u8]) -> Result<(u64, Vec<(u64, TreeHash)>), TreeError> {
        let index = self.size;
        let first = tlog_tiles::stored_hash_index(0, index);
        let new = tlog_tiles::stored_hashes(index, entry, self).map_err(tlog)?;
        let added: Vec<(u64, TreeHash)> = (first..).zip(new).collect();
        self.hashes.extend(added.iter().copied());
        self.size += 1;
        Ok((index, added))
    }

    /// The root hash of the whole tree.
    pub fn root(&self) -> Result<TreeHash, TreeError> {
        tlog_tiles::tree_hash(self.size, self).map_err(tlog)
    }

    /// Forgets every hash an append or a root computation will no longer read.
    pub fn prune(&mut self) {
        let keep: std::collections::HashSet<u64> =
            frontier_indexes(self.size).into_iter().collect();
        self.hashes.retain(|i, _| keep.contains(i));
    }

    /// The frontier hashes, in [`frontier_indexes`] order.
    pub fn frontier(&self) -> Result<Vec<TreeHash>, TreeError> {
        self.read_hashes(&frontier_indexes(self.size)).map_err(tlog)
    }
}

/// Finds which stored hashes a tree computation reads, so that a caller whose hashes live in a database
/// can fetch exactly those (in one query) and then run the computation over a [`HashMapReader`]. Tree
/// computations in `tlog_tiles` read hashes without branching on their values, so running one over
/// placeholder hashes asks for the same indexes as the real run.
pub fn hashes_read_by<T>(
    f: impl FnOnce(&IndexRecorder) -> Result<T, tlog_tiles::Error>,
) -> Result<Vec<u64>, TreeError> {
    let recorder = IndexRecorder::default();
    f(&recorder).map_err(tlog)?;
    let mut wanted = recorder.wanted.into_inner();
    wanted.sort_unstable();
    wanted.dedup();
    Ok(wanted)
}

/// The recording [`HashReader`] of [`hashes_read_by`]: answers every read with zero hashes.
#[derive(Debug, Default)]
pub struct IndexRecorder {
    wanted: std::cell::RefCell<Vec<u64>>,
}

impl HashReader for IndexRecorder {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<TreeHash>, tlog_tiles::Error> {
        self.wanted.borrow_mut().extend_from_slice(indexes);
        Ok(vec![TreeHash::default(); indexes.len()])
    }
}

/// Stored hashes fetched by index, as a [`HashReader`].
#[derive(Debug, Clone, Default)]
pub struct HashMapReader(pub std::collections::HashMap<u64, TreeHash>);

impl HashReader for HashMapReader {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<TreeHash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| {
                self.0
                    .get(i)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

/// Format tag of a [`LedgerProof`] as written today.
pub const PROOF_FORMAT: &str = "custody-ledger-proof/v1";

/// Proof that one entry is in the log, checkable offline with nothing but the log's public key(s): the
/// receipt a station keeps before it frees a file, and what an export package carries for each event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerProof {
    /// Always [`PROOF_FORMAT`].
    pub format: String,
    /// The entry exactly as hashed into the log (canonical JSON, see [`LedgerEntry::encode`]).
    pub entry: String,
    pub leaf_index: u64,
    /// RFC 6962 inclusion proof (audit path) of the leaf in the tree the checkpoint signs, hex hashes.
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint (C2SP tlog-checkpoint as a signed note) the proof leads to.
    pub checkpoint: String,
}

/// A proof that checked out, with what it proves.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedProof {
    pub entry: LedgerEntry,
    pub leaf_index: u64,
    pub checkpoint: VerifiedCheckpoint,
}

/// Why a [`LedgerProof`] does not prove its entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("proof format is {0:?}; this build reads {PROOF_FORMAT:?}")]
    Format(String),
    #[error("the entry: {0}")]
    Entry(#[from] EntryError),
    #[error("the checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("inclusion proof hash #{0} is not 64 hex digits")]
    BadHash(usize),
    #[error("leaf {index} cannot be in the tree of {size} leaves that the checkpoint signs")]
    OutOfRange { index: u64, size: u64 },
    #[error(
        "the entry is not leaf {index} of the tree of {size} leaves that the checkpoint signs: \
         the inclusion proof does not lead to its root"
    )]
    NotIncluded { index: u64, size: u64 },
}

impl LedgerProof {
    pub fn new(entry: &[u8], leaf_index: u64, proof: &RecordProof, checkpoint: &[u8]) -> Self {
        Self {
            format: PROOF_FORMAT.to_string(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            leaf_index,
            inclusion_proof: proof.iter().map(|h| hex::encode(h.0)).collect(),
            checkpoint: String::from_utf8_lossy(checkpoint).into_owned(),
        }
    }

    /// The inclusion proof's hashes.
    pub fn proof_hashes(&self) -> Result<Vec<TreeHash>, ProofError> {
        self.inclusion_proof
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let mut b = [0u8; 32];
                hex::decode_to_slice(h, &mut b).map_err(|_| ProofError::BadHash(i))?;
                Ok(TreeHash(b))
            })
            .collect()
    }

    /// Checks the checkpoint's signatures (every given key must have signed it), the entry's encoding, and
    /// that the entry is the stated leaf of the signed tree.
    pub fn verify(&self, verifier_keys: &[&str]) -> Result<VerifiedProof, ProofError> {
        if self.format != PROOF_FORMAT {
            return Err(ProofError::Format(self.format.clone()));
        }
        let checkpoint = verify_checkpoint(self.checkpoint.as_bytes(), verifier_keys)?;
        let entry = LedgerEntry::decode(self.entry.as_bytes())?;
        let proof = self.proof_hashes()?;
        let (index, size) = (self.leaf_index, checkpoint.size);
        if index >= size {
            return Err(ProofError::OutOfRange { index, size });
        }
        verify_inclusion(&proof, size, checkpoint.root, index, entry.leaf_hash())
            .map_err(|_| ProofError::NotIncluded { index, size })?;
        Ok(VerifiedProof {
            entry,
            leaf_index: index,
            checkpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn h(hex_str: &str) -> TreeHash {
        let mut b = [0u8; 32];
        hex::decode_to_slice(hex_str, &mut b).unwrap();
        TreeHash(b)
    }

    // The RFC 6962 test leaves and roots used by Certificate Transparency implementations.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn vector_tree() -> MemoryTree {
        let mut t = MemoryTree::new();
        for leaf in LEAVES {
            t.append(&hex::decode(leaf).unwrap()).unwrap();
        }
        t
    }

    /// RFC 6962 section 2.1 MTH, written out directly as an independent check of the library.
    fn mth(leaves: &[Vec<u8>]) -> [u8; 32] {
        match leaves.len() {
            0 => sha2::Sha256::digest([]).into(),
            1 => sha2::Sha256::digest([&[0u8][..], &leaves[0]].concat()).into(),
            n => {
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                let (l, r) = (mth(&leaves[..k]), mth(&leaves[k..]));
                sha2::Sha256::digest([&[1u8][..], &l, &r].concat()).into()
            }
        }
    }

    #[test]
    fn tree_roots_match_the_rfc_6962_test_vectors() {
        let t = vector_tree();
        for (i, want) in ROOTS.iter().enumerate() {
            assert_eq!(
                t.root(i as u64 + 1).unwrap(),
                h(want),
                "root of size {}",
                i + 1
            );
        }
    }

    #[test]
    fn tree_roots_match_the_rfc_6962_definition_for_odd_sizes() {
        let leaves: Vec<Vec<u8>> = (0..37u32)
            .map(|i| i.to_be_bytes().repeat(i as usize % 5))
            .collect();
        let mut t = MemoryTree::new();
        for (n, l) in leaves.iter().enumerate() {
            t.append(l).unwrap();
            assert_eq!(
                t.root(n as u64 + 1).unwrap().0,
                mth(&leaves[..=n]),
                "size {}",
                n + 1
            );
        }
    }

    #[test]
    fn the_rfc_6962_inclusion_path_of_leaf_0_in_the_tree_of_8_is_produced_and_checks() {
        let t = vector_tree();
        let proof = t.prove_inclusion(0, 8).unwrap();
        let want = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        assert_eq!(proof, want.map(h).to_vec());
        let leaf = tlog_tiles::record_hash(&[]);
        verify_inclusion(&proof, 8, t.root(8).unwrap(), 0, leaf).unwrap();
    }

    #[test]
    fn every_inclusion_proof_checks_and_a_wrong_leaf_or_root_does_not() {
        let mut t = MemoryTree::new();
        for i in 0..33u32 {
            t.append(&i.to_le_bytes()).unwrap();
        }
        for size in 1..=33 {
            let root = t.root(size).unwrap();
            for index in 0..size {
                let leaf = tlog_tiles::record_hash(&(index as u32).to_le_bytes());
                let p = t.prove_inclusion(index, size).unwrap();
                verify_inclusion(&p, size, root, index, leaf).unwrap();
                let other = tlog_tiles::record_hash(b"forged");
                assert_eq!(
                    verify_inclusion(&p, size, root, index, other),
                    Err(TreeError::InvalidProof)
                );
            }
            if size > 1 {
                let p = t.prove_inclusion(0, size).unwrap();
                let leaf = tlog_tiles::record_hash(&0u32.to_le_bytes());
                let wrong_root = t.root(size - 1).unwrap();
                assert!(verify_inclusion(&p, size, wrong_root, 0, leaf).is_err());
            }
        }
        assert_eq!(
            t.prove_inclusion(33, 33),
            Err(TreeError::NoSuchLeaf {
                index: 33,
                size: 33
            })
        );
        assert_eq!(
            t.prove_inclusion(0, 34),
            Err(TreeError::TooLarge {
                asked: 34,
                size: 33
            })
        );
    }

    #[test]
    fn every_consistency_proof_checks_and_a_forked_tree_does_not() {
        let mut t = MemoryTree::new();
        let mut fork = MemoryTree::new();
        for i in 0..20u32 {
            t.append(&i.to_le_bytes()).unwrap();
            fork.append(&(if i == 5 { 999 } else { i }).to_le_bytes())
                .unwrap();
        }
        for new in 1..=20 {
            for old in 1..=new {
                let p = t.prove_consistency(old, new).unwrap();
                verify_consistency(&p, new, t.root(new).unwrap(), old, t.root(old).unwrap())
                    .unwrap();
                if old > 5 && old < new {
                    // The fork rewrote leaf 5: its old root cannot be a prefix of the real tree.
                    let forged = fork.root(old).unwrap();
                    assert!(
                        verify_consistency(&p, new, t.root(new).unwrap(), old, forged).is_err()
                    );
                }
            }
        }
    }

    fn entry() -> LedgerEntry {
        LedgerEntry {
            v: ENTRY_VERSION,
            kind: EventKind::Ingest,
            evidence_id: EvidenceId::parse("0190b3f4-5c6d-7e8f-9a0b-1c2d3e4f5a6b").unwrap(),
            sha256: Sha256::from_bytes([7; 32]),
            sm3: None,
            size: 1234,
            device_id: DeviceId::parse("ZFY0001").unwrap(),
            station_id: Some(StationId::parse("ST-01").unwrap()),
            officer: Some("0123456".into()),
            actor: "station:ST-01".into(),
            device_time: Some(Timestamp::from_unix_micros(1_795_000_000_000_000)),
            server_time: Timestamp::from_unix_micros(1_795_000_100_000_000),
            prev_device_leaf: Some(41),
            prev_evidence_leaf: None,
            detail: None,
        }
    }

    #[test]
    fn an_entry_round_trips_through_its_canonical_bytes() {
        let e = entry();
        let bytes = e.encode();
        assert!(bytes.starts_with(
            br#"{"v":1,"kind":"ingest","evidence_id":"0190b3f4-5c6d-7e8f-9a0b-1c2d3e4f5a6b""#
        ));
        assert_eq!(LedgerEntry::decode(&bytes).unwrap(), e);
        assert_eq!(e.leaf_hash(), tlog_tiles::record_hash(&bytes));
    }

    #[test]
    fn another_spelling_of_the_same_entry_is_refused() {
        let bytes = entry().encode();
        let spaced = String::from_utf8(bytes).unwrap().replacen(",", ", ", 1);
        assert_eq!(
            LedgerEntry::decode(spaced.as_bytes()),
            Err(EntryError::NotCanonical)
        );
    }

    #[test]
    fn an_unknown_version_or_field_is_refused() {
        let bytes = String::from_utf8(entry().encode()).unwrap();
        let v2 = bytes.replacen("\"v\":1", "\"v\":2", 1);
        assert_eq!(
            LedgerEntry::decode(v2.as_bytes()),
            Err(EntryError::UnknownVersion(2))
        );
        let extra = bytes.replacen("\"detail\":null", "\"detail\":null,\"x\":1", 1);
        assert!(matches!(
            LedgerEntry::decode(extra.as_bytes()),
            Err(EntryError::Malformed(_))
        ));
        assert!(matches!(
            LedgerEntry::decode(b"not json"),
            Err(EntryError::Malformed(_))
        ));
    }
    fn keys(name: &str) -> (String, String) {
        generate_key(&mut rand_core_06::OsRng, name)
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_states_size_and_root() {
        let (skey, vkey) = keys("custody.example/ledger");
        let t = vector_tree();
        let note =
            sign_checkpoint("custody.example/ledger", 8, t.root(8).unwrap(), &[&skey]).unwrap();
        let text = String::from_utf8(note.clone()).unwrap();
        assert!(
            text.starts_with(
                "custody.example/ledger\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n"
            ),
            "{text}"
        );
        assert!(text.contains("\u{2014} custody.example/ledger "), "{text}");
        let v = verify_checkpoint(&note, &[&vkey]).unwrap();
        assert_eq!(
            (v.origin.as_str(), v.size, v.root),
            ("custody.example/ledger", 8, t.root(8).unwrap())
        );
    }

    #[test]
    fn a_checkpoint_signed_with_another_key_or_altered_is_refused() {
        let (_, vkey) = keys("custody.example/ledger");
        let (other_skey, other_vkey) = keys("custody.example/ledger");
        let root = vector_tree().root(8).unwrap();
        let note = sign_checkpoint("custody.example/ledger", 8, root, &[&other_skey]).unwrap();
        assert!(matches!(
            verify_checkpoint(&note, &[&vkey]),
            Err(CheckpointError::Signature(_))
        ));
        let altered = String::from_utf8(note)
            .unwrap()
            .replacen("\n8\n", "\n9\n", 1);
        assert!(matches!(
            verify_checkpoint(altered.as_bytes(), &[&other_vkey]),
            Err(CheckpointError::Signature(_))
        ));
    }

    #[test]
    fn a_key_for_another_log_cannot_sign_this_logs_checkpoints() {
        let (skey, _) = keys("other.example/log");
        let e = sign_checkpoint(
            "custody.example/ledger",
            1,
            vector_tree().root(1).unwrap(),
            &[&skey],
        )
        .unwrap_err();
        assert!(matches!(e, CheckpointError::WrongOrigin { .. }), "{e}");
    }
    #[test]
    fn tile_paths_follow_c2sp_and_parse_back() {
        for (tile, want) in [
            (Tile::new(8, 0, 0, 256, false), "tile/0/000"),
            (Tile::new(8, 0, 0, 5, false), "tile/0/000.p/5"),
            (Tile::new(8, 1, 1234, 256, false), "tile/1/x001/234"),
            (Tile::new(8, 0, 7, 3, true), "tile/entries/007.p/3"),
        ] {
            assert_eq!(tile_path(&tile), want);
            assert_eq!(tile_path(&parse_tile_path(want).unwrap()), want);
        }
        for bad in [
            "tile/8/0/000",
            "tile/0/../x",
            "ledger.key",
            "tile/entries/",
            "tile/0/0",
        ] {
            assert!(parse_tile_path(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_level_0_tile_holds_the_leaf_hashes_in_order() {
        let t = vector_tree();
        let tiles = tiles_for_growth(0, 8);
        let level0 = tiles
            .iter()
            .find(|x| x.level() == 0 && !x.is_data())
            .unwrap();
        assert_eq!(tile_path(level0), "tile/0/000.p/8");
        let data = level0.read_data(&t).unwrap();
        let want: Vec<u8> = LEAVES
            .iter()
            .flat_map(|l| tlog_tiles::record_hash(&hex::decode(l).unwrap()).0)
            .collect();
        assert_eq!(data, want);
    }

    #[test]
    fn entry_bundles_round_trip_and_refuse_truncation_and_oversized_entries() {
        let entries = [b"".to_vec(), b"a".to_vec(), vec![7u8; 300]];
        let bundle = encode_entry_bundle(&entries).unwrap();
        assert_eq!(&bundle[..5], &[0, 0, 0, 1, b'a']);
        let back: Vec<Vec<u8>> = decode_entry_bundle(&bundle)
            .unwrap()
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(back, entries);
        assert_eq!(
            decode_entry_bundle(&bundle[..bundle.len() - 1]),
            Err(BundleError::Truncated { at: 5 })
        );
        assert_eq!(
            decode_entry_bundle(&[0]),
            Err(BundleError::Truncated { at: 0 })
        );
        let big = vec![0u8; 70_000];
        assert_eq!(
            encode_entry_bundle(&[big]),
            Err(BundleError::EntryTooLong {
                index: 0,
                len: 70_000
            })
        );
    }
}
