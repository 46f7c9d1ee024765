//! `custody verify`: checks that stored evidence and the ledger are what the ledger says they are.
//!
//! `verify ledger` trusts nothing it reads: it recomputes every stored hash, tile and entry bundle from the
//! entries, checks every checkpoint's signature and root, every per-recorder and per-item chain link,
//! every evidence row against its ingest entry and every evidence object against its hashes, and names
//! each mismatch (which entry, which object, which row). `verify receipt` checks one receipt offline.

use crate::config::Config;
use anyhow::Context;
use custody_core::ledger::{
    EdgeTree, EventKind, LedgerEntry, LedgerProof, Tile, TreeHash, encode_entry_bundle,
    parse_tile_path, tile_path, verify_checkpoint,
};
use custody_core::{EvidenceFilter, EvidenceId, content_path};
use custody_store::{Blobs, Metadata};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Flags of `custody verify ledger`; storage flags override the same keys of the file and environment.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct VerifyLedgerArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub storage: crate::config::StorageArgs,
    /// Verifier key file(s) every checkpoint must be signed with [default: the .pub beside the
    /// configured ledger key(s)]
    #[arg(long = "key")]
    #[serde(skip)]
    pub keys: Vec<PathBuf>,
    /// Skip re-hashing evidence bytes (rows, ledger and tiles are still checked)
    #[arg(long)]
    #[serde(skip)]
    pub skip_content: bool,
}

/// Checks one receipt file offline and describes what it proves.
pub fn receipt(file: &Path, keys: &[PathBuf]) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let proof: LedgerProof = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a ledger receipt (JSON)", file.display()))?;
    let keys = read_keys(keys)?;
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let v = proof
        .verify(&refs)
        .with_context(|| format!("receipt {} does NOT verify", file.display()))?;
    let e = &v.entry;
    Ok(format!(
        "OK: {} is valid.\n  event:      {} of evidence {} by {}\n  sha256:     {}\n  size:       {} bytes\n  \
         recorder:   {}\n  leaf:       {} of {} in log {:?}\n  root:       {}\n  signed by:  {} key(s)",
        file.display(),
        e.kind,
        e.evidence_id,
        e.actor,
        e.sha256,
        e.size,
        e.device_id,
        v.leaf_index,
        v.checkpoint.size,
        v.checkpoint.origin,
        hex::encode(v.checkpoint.root.0),
        refs.len(),
    ))
}

fn read_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    paths
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .with_context(|| format!("reading verifier key {}", p.display()))
        })
        .collect()
}

/// What one verification run found.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    pub entries: u64,
    pub checkpoints: u64,
    pub tiles: u64,
    pub evidence: u64,
    /// Evidence rows that are retention tombstones (their bytes are not checked).
    pub deleted: u64,
    pub content_bytes: u64,
}

impl Report {
    fn fail(&mut self, msg: impl Into<String>) {
        let msg = msg.into();
        println!("FAIL {msg}");
        self.problems.push(msg);
    }

    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// `custody verify ledger`: loads the configuration like `serve`, then checks everything. Returns whether
/// all was well (problems are printed as found).
pub async fn ledger(
    config_file: &Path,
    explicit: bool,
    args: VerifyLedgerArgs,
) -> anyhow::Result<bool> {
    let config = Config::load(config_file, explicit, &args)?;
    let key_files = if args.keys.is_empty() {
        let mut k = vec![crate::admin::verifier_path(&config.ledger_key_path())];
        if let Some(sm2) = &config.ledger_sm2_key_file {
            k.push(crate::admin::verifier_path(sm2));
        }
        k
    } else {
        args.keys.clone()
    };
    let keys = read_keys(&key_files)?;
    let (meta, blobs) = crate::app::open_storage(&config).await?;
    let report = check(&meta, &blobs, &keys, !args.skip_content).await?;
    meta.close().await;
    println!(
        "{}: {} entries, {} checkpoints, {} tiles, {} evidence items ({} deleted by retention; {} bytes re-hashed); {} problem(s)",
        if report.ok() { "OK" } else { "FAILED" },
        report.entries,
        report.checkpoints,
        report.tiles,
        report.evidence,
        report.deleted,
        report.content_bytes,
        report.problems.len()
    );
    Ok(report.ok())
}

/// What the entry pass remembers of each item's ingest.
struct IngestSeen {
    index: u64,
    entry: LedgerEntry,
    deleted: bool,
}

/// The tiles being rebuilt: hashes per (level, tile index), filled as the tree grows.
#[derive(Default)]
struct TileBuilder {
    open: BTreeMap<(u8, u64), Vec<TreeHash>>,
}

/// Entries are read from the database this many at a time.
const PAGE: u64 = 4096;

/// Runs every check against open storage.
pub async fn check(
    meta: &Metadata,
    blobs: &Blobs,
    keys: &[String],
    content: bool,
) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let state = meta.ledger_state().await?;

    // Checkpoints: signatures now, roots when the recomputed tree reaches their size.
    let mut checkpoints = Vec::new();
    let mut from = 1;
    loop {
        let page = meta.checkpoints(from, 1000).await?;
        let Some(last) = page.last() else { break };
        from = last.size + 1;
        checkpoints.extend(page);
    }
    let mut pending_roots: BTreeMap<u64, TreeHash> = BTreeMap::new();
    for cp in &checkpoints {
        r.checkpoints += 1;
        match verify_checkpoint(cp.note.as_bytes(), &key_refs) {
            Ok(v) if v.size != cp.size || v.root != cp.root => r.fail(format!(
                "checkpoint row of size {}: its signed note says size {} root {}, the row says root {}",
                cp.size,
                v.size,
                hex::encode(v.root.0),
                hex::encode(cp.root.0)
            )),
            Ok(_) => {}
            Err(e) => r.fail(format!("checkpoint of size {}: {e}", cp.size)),
        }
        pending_roots.insert(cp.size, cp.root);
    }
    match (
        meta.latest_checkpoint().await?,
        blobs.get_all("ledger/checkpoint").await,
    ) {
        (Some(cp), Ok(published)) if published.as_ref() != cp.note.as_bytes() => r.fail(format!(
            "object ledger/checkpoint differs from the newest checkpoint row (size {})",
            cp.size
        )),
        (Some(cp), Err(e)) => r.fail(format!(
            "object ledger/checkpoint (newest checkpoint, size {}) cannot be read: {e}",
            cp.size
        )),
        _ => {}
    }

    // Entries: decode, chain links, stored hashes, tiles, bundles, checkpoint roots.
    let mut tree = EdgeTree::default();
    let mut tiles = TileBuilder::default();
    let tile_objects = group_tile_objects(blobs, &mut r).await?;
    let mut checked_tiles: std::collections::HashSet<(u8, u64, bool)> = Default::default();
    let mut device_head: HashMap<String, u64> = HashMap::new();
    let mut evidence_head: HashMap<EvidenceId, u64> = HashMap::new();
    let mut ingests: HashMap<EvidenceId, IngestSeen> = HashMap::new();
    let mut bundle: Vec<Vec<u8>> = Vec::new();
    let mut next = 0u64;
    let mut broken = false;
    while next < state.size && !broken {
        let rows = meta.ledger_entries(next, next + PAGE).await?;
        let mut expected_hashes: Vec<(u64, TreeHash)> = Vec::new();
        for row in rows {
            if row.index != next {
                r.fail(format!(
                    "ledger entry {next} is missing from the database (ledger_entries jumps from {} to {}); \
                     the tree cannot be recomputed past it",
                    next.saturating_sub(1),
                    row.index
                ));
                broken = true;
                break;
            }
            r.entries += 1;
            match LedgerEntry::decode(&row.entry) {
                Ok(entry) => check_entry(
                    &mut r,
                    next,
                    &row,
                    entry,
                    &mut device_head,
                    &mut evidence_head,
                    &mut ingests,
                ),
                // The bytes are still hashed below: the tree covers whatever is stored.
                Err(e) => r.fail(format!("ledger entry {next}: {e}")),
            }
            let (_, added) = tree
                .append(&row.entry)
                .map_err(|e| anyhow::anyhow!("recomputing the tree at entry {next}: {e}"))?;
            for (i, h) in &added {
                let (level, n) = custody_core::ledger::split_stored_hash_index(*i);
                if level % 8 == 0 {
                    tiles.open.entry((level / 8, n >> 8)).or_default().push(*h);
                }
            }
            expected_hashes.extend(added);
            bundle.push(row.entry);
            next += 1;
            tree.prune();
            if let Some(root) = pending_roots.remove(&next) {
                let got = tree
                    .root()
                    .map_err(|e| anyhow::anyhow!("root at size {next}: {e}"))?;
                if got != root {
                    r.fail(format!(
                        "checkpoint of size {next} signs root {}, but the entries give {}",
                        hex::encode(root.0),
                        hex::encode(got.0)
                    ));
                }
            }
            // Full tiles are complete now; check them and the bundle.
            let full: Vec<(u8, u64)> = tiles
                .open
                .iter()
                .filter(|(_, v)| v.len() == 256)
                .map(|(k, _)| *k)
                .collect();
            for (level, n) in full {
                if let Some(hashes) = tiles.open.remove(&(level, n)) {
                    check_tile(
                        &mut r,
                        blobs,
                        &tile_objects,
                        (level, n),
                        &hashes,
                        &mut checked_tiles,
                    )
                    .await;
                }
            }
            if bundle.len() == 256 {
                check_bundle(
                    &mut r,
                    blobs,
                    &tile_objects,
                    (next - 1) >> 8,
                    &bundle,
                    &mut checked_tiles,
                )
                .await;
                bundle.clear();
            }
        }
        // Stored hashes in the database must be what the entries give.
        let indexes: Vec<u64> = expected_hashes.iter().map(|(i, _)| *i).collect();
        match meta.ledger_hashes(&indexes).await {
            Ok(stored) => {
                for (i, h) in &expected_hashes {
                    if stored.get(i) != Some(h) {
                        r.fail(format!(
                            "ledger_hashes row {i} differs from the hash the entries give"
                        ));
                    }
                }
            }
            Err(e) => r.fail(format!("ledger hashes: {e}")),
        }
        if next < state.size && !broken && meta.ledger_entries(next, next + 1).await?.is_empty() {
            r.fail(format!(
                "ledger entry {next} is missing from the database; the log holds {} entries",
                state.size
            ));
            broken = true;
        }
    }
    if !broken {
        // The last, partial tiles and bundle.
        let partial: Vec<((u8, u64), Vec<TreeHash>)> =
            std::mem::take(&mut tiles.open).into_iter().collect();
        for ((level, n), hashes) in partial {
            check_tile(
                &mut r,
                blobs,
                &tile_objects,
                (level, n),
                &hashes,
                &mut checked_tiles,
            )
            .await;
        }
        if !bundle.is_empty() {
            check_bundle(
                &mut r,
                blobs,
                &tile_objects,
                next >> 8,
                &bundle,
                &mut checked_tiles,
            )
            .await;
        }
        for (size, _) in pending_roots {
            r.fail(format!(
                "checkpoint of size {size} is larger than the log ({} entries)",
                state.size
            ));
        }
    }
    r.tiles = checked_tiles.len() as u64;
    for key in tile_objects.keys().filter(|k| !checked_tiles.contains(k)) {
        if !broken {
            r.fail(format!(
                "tile objects of {} hold hashes the log does not have",
                tile_name(key)
            ));
        }
    }

    // Evidence rows against their ingest entries, and bytes against their hashes. Retention deletes
    // bytes only with a `retention_delete` entry (or one still queued for the sequencer).
    let queued_deletions: std::collections::HashSet<EvidenceId> =
        meta.pending_deletions().await?.into_iter().collect();
    let mut after = None;
    let mut rows_seen = std::collections::HashSet::new();
    loop {
        let page = meta
            .list_evidence(
                &EvidenceFilter::default(),
                &custody_core::access::EvidenceScope::everything(),
                after,
                500,
            )
            .await?;
        for e in &page.items {
            r.evidence += 1;
            rows_seen.insert(e.id);
            let Some(seen) = ingests.get(&e.id) else {
                if !broken {
                    r.fail(format!(
                        "evidence row {} (sha256 {}) has no ingest entry in the ledger",
                        e.id, e.sha256
                    ));
                }
                continue;
            };
            let l = &seen.entry;
            if l.sha256 != e.sha256
                || l.sm3 != e.sm3
                || l.size != e.size
                || l.device_id != e.device_id
            {
                r.fail(format!(
                    "evidence row {} disagrees with its ingest entry {}: row sha256 {} size {} recorder {}, \
                     entry sha256 {} size {} recorder {}",
                    e.id, seen.index, e.sha256, e.size, e.device_id, l.sha256, l.size, l.device_id
                ));
            }
            match (e.deleted(), seen.deleted) {
                (Some(_), false) if queued_deletions.contains(&e.id) => {}
                (Some(d), false) => r.fail(format!(
                    "evidence {} is marked deleted by retention at {}, but the ledger has no retention_delete entry for it",
                    e.id, d.at
                )),
                (None, true) => r.fail(format!(
                    "the ledger records the retention deletion of evidence {}, but its row is not a tombstone",
                    e.id
                )),
                _ => {}
            }
            r.deleted += u64::from(e.deleted().is_some());
            if content && e.deleted().is_none() && !seen.deleted {
                let path = content_path(&e.sha256);
                match blobs.hash(&path, e.sm3.is_some()).await {
                    Ok(d) => {
                        r.content_bytes += d.size;
                        if d.sha256 != e.sha256
                            || d.size != e.size
                            || (e.sm3.is_some() && d.sm3 != e.sm3)
                        {
                            r.fail(format!(
                                "object {path} (evidence {}): its bytes hash to sha256 {} ({} bytes), \
                                 but the evidence is sha256 {} ({} bytes)",
                                e.id, d.sha256, d.size, e.sha256, e.size
                            ));
                        }
                    }
                    Err(err) => r.fail(format!("object {path} (evidence {}): {err}", e.id)),
                }
            }
        }
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    for (id, seen) in &ingests {
        if !rows_seen.contains(id) {
            r.fail(format!(
                "ledger entry {} records the ingest of evidence {id} (sha256 {}), but the evidence row is gone",
                seen.index, seen.entry.sha256
            ));
        }
    }
    if state.checkpoint_size > state.tiles_size || state.tiles_size > state.size {
        r.fail(format!(
            "ledger_state is inconsistent: size {}, tiles_size {}, checkpoint_size {}",
            state.size, state.tiles_size, state.checkpoint_size
        ));
    }
    Ok(r)
}

/// Checks one decoded entry against its columns and the chains, and remembers ingests.
fn check_entry(
    r: &mut Report,
    index: u64,
    row: &custody_store::StoredEntry,
    entry: LedgerEntry,
    device_head: &mut HashMap<String, u64>,
    evidence_head: &mut HashMap<EvidenceId, u64>,
    ingests: &mut HashMap<EvidenceId, IngestSeen>,
) {
    if entry.kind != row.kind
        || entry.evidence_id != row.evidence_id
        || entry.device_id != row.device_id
    {
        r.fail(format!(
            "ledger entry {index}: its columns (kind {}, evidence {}, recorder {}) disagree with its bytes",
            row.kind, row.evidence_id, row.device_id
        ));
    }
    let dev = entry.device_id.as_str().to_string();
    if entry.prev_device_leaf != device_head.get(&dev).copied() {
        r.fail(format!(
            "ledger entry {index}: recorder {dev}'s chain says the previous entry is {:?}, but it is {:?} \
             (an entry of this recorder was removed, added or reordered)",
            entry.prev_device_leaf,
            device_head.get(&dev)
        ));
    }
    if entry.prev_evidence_leaf != evidence_head.get(&entry.evidence_id).copied() {
        r.fail(format!(
            "ledger entry {index}: evidence {}'s chain says the previous entry is {:?}, but it is {:?}",
            entry.evidence_id,
            entry.prev_evidence_leaf,
            evidence_head.get(&entry.evidence_id)
        ));
    }
    device_head.insert(dev, index);
    evidence_head.insert(entry.evidence_id, index);
    match entry.kind {
        EventKind::Ingest => {
            if let Some(first) = ingests.get(&entry.evidence_id) {
                r.fail(format!(
                    "ledger entry {index}: evidence {} was already ingested at entry {}",
                    entry.evidence_id, first.index
                ));
            } else {
                ingests.insert(
                    entry.evidence_id,
                    IngestSeen {
                        index,
                        entry,
                        deleted: false,
                    },
                );
            }
        }
        EventKind::RetentionDelete => {
            if let Some(i) = ingests.get_mut(&entry.evidence_id) {
                i.deleted = true;
            }
        }
        _ => {}
    }
}

/// Tile objects by (level, tile index, is entry bundle).
type TileObjects = BTreeMap<(u8, u64, bool), Vec<(String, Tile)>>;

async fn group_tile_objects(blobs: &Blobs, r: &mut Report) -> anyhow::Result<TileObjects> {
    let mut out: TileObjects = BTreeMap::new();
    for key in blobs.list("ledger/tile").await? {
        let rel = key.strip_prefix("ledger/").unwrap_or(&key);
        match parse_tile_path(rel) {
            Ok(t) => out
                .entry((t.level(), t.level_index(), t.is_data()))
                .or_default()
                .push((key.clone(), t)),
            Err(_) => r.fail(format!("object {key} is not a tile or entry bundle")),
        }
    }
    Ok(out)
}

/// How many hashes (or entries) a tile object holds.
fn width(t: &Tile) -> usize {
    match t.width() {
        0 => 256,
        w => w as usize,
    }
}

fn tile_name(key: &(u8, u64, bool)) -> String {
    if key.2 {
        format!("entry bundle {}", key.1)
    } else {
        format!("tile level {} index {}", key.0, key.1)
    }
}

/// Checks every stored object of one tile (full and partial widths) against the recomputed hashes.
async fn check_tile(
    r: &mut Report,
    blobs: &Blobs,
    objects: &TileObjects,
    (level, n): (u8, u64),
    hashes: &[TreeHash],
    checked: &mut std::collections::HashSet<(u8, u64, bool)>,
) {
    let key = (level, n, false);
    checked.insert(key);
    let want: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
    check_objects(r, blobs, objects, key, &want, hashes.len() as u64).await;
}

async fn check_bundle(
    r: &mut Report,
    blobs: &Blobs,
    objects: &TileObjects,
    n: u64,
    entries: &[Vec<u8>],
    checked: &mut std::collections::HashSet<(u8, u64, bool)>,
) {
    let key = (0, n, true);
    checked.insert(key);
    let Some(objs) = objects.get(&key) else {
        r.fail(format!(
            "entry bundle {n} ({} entries) is missing from the object store",
            entries.len()
        ));
        return;
    };
    if !objs.iter().any(|(_, t)| width(t) == entries.len()) {
        r.fail(format!(
            "entry bundle {n} of {} entries is missing from the object store",
            entries.len()
        ));
    }
    for (path, tile) in objs {
        let w = width(tile);
        let want = encode_entry_bundle(&entries[..w.min(entries.len())]).unwrap_or_default();
        match blobs.get_all(path).await {
            Ok(got) if w <= entries.len() && got.as_ref() == want.as_slice() => {}
            Ok(_) => r.fail(format!(
                "object {path}: entry bundle differs from the entries in the database"
            )),
            Err(e) => r.fail(format!("object {path}: {e}")),
        }
    }
}

/// Compares each stored width of a tile with the prefix of `want` it must hold; the widest (the
/// current size) must exist.
async fn check_objects(
    r: &mut Report,
    blobs: &Blobs,
    objects: &TileObjects,
    key: (u8, u64, bool),
    want: &[u8],
    have: u64,
) {
    let name = tile_path(&Tile::new(8, key.0, key.1, have as u32, false));
    let Some(objs) = objects.get(&key) else {
        r.fail(format!(
            "ledger/{name} is missing from the object store ({})",
            tile_name(&key)
        ));
        return;
    };
    if !objs.iter().any(|(_, t)| width(t) as u64 == have) {
        r.fail(format!(
            "ledger/{name} is missing from the object store ({} hashes expected)",
            have
        ));
    }
    for (path, tile) in objs {
        let w = width(tile);
        if w as u64 > have {
            r.fail(format!(
                "object {path} holds {w} hashes, but the log has only {have} in that tile"
            ));
            continue;
        }
        match blobs.get_all(path).await {
            Ok(got) if got.as_ref() == &want[..w * 32] => {}
            Ok(_) => r.fail(format!(
                "object {path}: tile differs from the hashes recomputed from the entries"
            )),
            Err(e) => r.fail(format!("object {path}: {e}")),
        }
    }
}
