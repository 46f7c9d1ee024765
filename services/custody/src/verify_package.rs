//! `custody verify package FILE`: checks an export package offline — no server, no database.
//!
//! Trusts nothing in the package but what the log's keys signed: every file's bytes are hashed and
//! compared with the manifest; each receipt must verify against the keys and name exactly that item
//! (evidence id, SHA-256, SM3, size); each receipt's checkpoint must be a prefix of the package's
//! checkpoint (consistency proof); each export event must be included in the package's checkpoint and
//! name this package; the evidence list must be what the manifest gives; and the archive must hold
//! nothing the manifest does not list. Prints one PASS or FAIL line per file and a summary.

use anyhow::Context;
use custody_cases::export::{
    self, CHECKPOINT_PATH, CONSISTENCY_FORMAT, ConsistencyFile, EVIDENCE_LIST_PATH, KEY_PATH,
    MANIFEST_PATH, Manifest, ManifestFile, README_PATH, SM2_KEY_PATH,
};
use custody_core::hash::ContentHasher;
use custody_core::ledger::{
    EventKind, LedgerProof, TreeHash, VerifiedCheckpoint, verify_checkpoint, verify_consistency,
};
use sha2::Digest;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What `verify package` found.
#[derive(Debug, Default)]
pub struct PackageReport {
    /// Lines printed, in order (`PASS …`, `FAIL …`, `WARNING …`, the summary).
    pub lines: Vec<String>,
    pub files: usize,
    pub failed: usize,
    /// Problems not tied to one listed file (manifest, checkpoint, extra members).
    pub package_problems: usize,
}

impl PackageReport {
    fn say(&mut self, line: String) {
        println!("{line}");
        self.lines.push(line);
    }

    fn package_fail(&mut self, what: &str, why: impl std::fmt::Display) {
        self.package_problems += 1;
        self.say(format!("FAIL {what}: {why}"));
    }

    pub fn ok(&self) -> bool {
        self.failed == 0 && self.package_problems == 0
    }
}

type Archive = zip::ZipArchive<std::fs::File>;

fn read_small(z: &mut Archive, name: &str) -> Result<Vec<u8>, String> {
    let mut f = z
        .by_name(name)
        .map_err(|_| "missing from the archive".to_string())?;
    if f.size() > 64 << 20 {
        return Err(format!("{} bytes is too large for this member", f.size()));
    }
    let mut b = Vec::with_capacity(f.size() as usize);
    f.read_to_end(&mut b)
        .map_err(|e| format!("cannot be read: {e}"))?;
    Ok(b)
}

fn fingerprint(key: &str) -> String {
    hex::encode(sha2::Sha256::digest(key.trim().as_bytes()))
}

fn decode_hashes(hs: &[String]) -> Result<Vec<TreeHash>, String> {
    hs.iter()
        .enumerate()
        .map(|(i, h)| {
            let mut b = [0u8; 32];
            hex::decode_to_slice(h, &mut b)
                .map_err(|_| format!("proof hash #{i} is not 64 hex digits"))?;
            Ok(TreeHash(b))
        })
        .collect()
}

/// Checks the package at `file`. `keys` are verifier key files; when empty, the package's own keys are
/// used (with a warning). Returns the report; it is printed as it is made.
pub fn package(file: &Path, keys: &[PathBuf]) -> anyhow::Result<PackageReport> {
    let mut r = PackageReport::default();
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut z = zip::ZipArchive::new(f)
        .with_context(|| format!("{} is not a ZIP archive", file.display()))?;

    let manifest = match read_small(&mut z, MANIFEST_PATH)
        .and_then(|b| Manifest::decode(&b).map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        Err(e) => {
            r.package_fail(MANIFEST_PATH, e);
            r.say(format!(
                "FAILED: {} cannot be checked without a readable manifest",
                file.display()
            ));
            return Ok(r);
        }
    };

    // Keys: the ones given, else the package's own (which only shows which key signed it).
    let key_texts: Vec<String> = if keys.is_empty() {
        let mut k = Vec::new();
        for path in [KEY_PATH, SM2_KEY_PATH] {
            match read_small(&mut z, path) {
                Ok(b) => {
                    let text = String::from_utf8_lossy(&b).trim().to_string();
                    r.say(format!(
                        "WARNING: no --key given; using {path} from the package itself. Compare its fingerprint \
                         with the key the log's operator publishes: {text} (SHA-256 {})",
                        fingerprint(&text)
                    ));
                    k.push(text);
                }
                Err(e) if path == KEY_PATH => r.package_fail(path, e),
                Err(_) => {}
            }
        }
        k
    } else {
        keys.iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(|s| s.trim().to_string())
                    .with_context(|| format!("reading verifier key {}", p.display()))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let key_refs: Vec<&str> = key_texts.iter().map(String::as_str).collect();

    // The package's checkpoint.
    let checkpoint: Option<VerifiedCheckpoint> = match read_small(&mut z, CHECKPOINT_PATH)
        .and_then(|b| verify_checkpoint(&b, &key_refs).map_err(|e| e.to_string()))
    {
        Ok(cp) => {
            if cp.size != manifest.checkpoint_size || cp.origin != manifest.log_origin {
                r.package_fail(
                    CHECKPOINT_PATH,
                    format!(
                        "it signs size {} of log {:?}, the manifest says size {} of log {:?}",
                        cp.size, cp.origin, manifest.checkpoint_size, manifest.log_origin
                    ),
                );
            }
            Some(cp)
        }
        Err(e) => {
            r.package_fail(CHECKPOINT_PATH, e);
            None
        }
    };

    // The evidence list must be what the manifest gives.
    match read_small(&mut z, EVIDENCE_LIST_PATH) {
        Ok(b) if b == export::render_evidence_list(&manifest).as_bytes() => {}
        Ok(_) => r.package_fail(
            EVIDENCE_LIST_PATH,
            "differs from the evidence list the manifest gives (edited after export)",
        ),
        Err(e) => r.package_fail(EVIDENCE_LIST_PATH, e),
    }

    // Every member must be expected.
    let mut expected: BTreeSet<String> = [
        MANIFEST_PATH,
        CHECKPOINT_PATH,
        EVIDENCE_LIST_PATH,
        README_PATH,
        KEY_PATH,
        SM2_KEY_PATH,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut seen_ids = BTreeSet::new();
    for f in &manifest.files {
        expected.insert(f.path.clone());
        expected.insert(export::receipt_path(f.evidence_id));
        expected.insert(export::export_event_path(f.evidence_id));
        if !seen_ids.insert(f.evidence_id) {
            r.package_fail(
                MANIFEST_PATH,
                format!("lists evidence {} twice", f.evidence_id),
            );
        }
    }
    let mut names: Vec<String> = Vec::new();
    for n in z.file_names() {
        match n {
            Ok(n) => names.push(n.into_owned()),
            Err(e) => r.package_fail(
                &file.display().to_string(),
                format!("a member name cannot be read: {e}"),
            ),
        }
    }
    for name in &names {
        let consistency = name
            .strip_prefix("consistency/")
            .is_some_and(|n| n.ends_with(".json"));
        if !expected.contains(name) && !consistency && !name.ends_with('/') {
            r.package_fail(name, "is in the archive but not listed in the manifest");
        }
    }

    for f in &manifest.files {
        r.files += 1;
        let problems = check_file(&mut z, &manifest, f, &key_refs, checkpoint.as_ref());
        if problems.is_empty() {
            r.say(format!("PASS {}", f.path));
        } else {
            r.failed += 1;
            r.say(format!("FAIL {}: {}", f.path, problems.join("; ")));
        }
    }
    let summary = if r.ok() {
        format!(
            "OK: {} file(s) of case {} in package {} verified against checkpoint {} of {:?}",
            r.files,
            manifest.case.case_no,
            manifest.package_id,
            manifest.checkpoint_size,
            manifest.log_origin
        )
    } else {
        format!(
            "FAILED: {} of {} file(s) failed, {} package problem(s) (package {} of case {})",
            r.failed, r.files, r.package_problems, manifest.package_id, manifest.case.case_no
        )
    };
    r.say(summary);
    Ok(r)
}

/// Everything wrong with one listed file, in words.
fn check_file(
    z: &mut Archive,
    manifest: &Manifest,
    f: &ManifestFile,
    keys: &[&str],
    checkpoint: Option<&VerifiedCheckpoint>,
) -> Vec<String> {
    let mut p = Vec::new();
    if f.path != export::file_path(f.evidence_id, &f.file_name) {
        p.push(format!(
            "the manifest puts it at {}, expected {}",
            f.path,
            export::file_path(f.evidence_id, &f.file_name)
        ));
    }
    // The bytes.
    match z.by_name(&f.path) {
        Err(_) => p.push("missing from the archive".into()),
        Ok(mut member) => {
            let mut h = ContentHasher::new(f.sm3.is_some());
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match member.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => h.update(&buf[..n]),
                    Err(e) => {
                        p.push(format!("cannot be read from the archive: {e}"));
                        break;
                    }
                }
            }
            let d = h.finish();
            if d.size != f.size {
                p.push(format!(
                    "the archive holds {} bytes, the manifest says {}",
                    d.size, f.size
                ));
            }
            if d.sha256 != f.sha256 {
                p.push(format!(
                    "sha256 of the bytes is {}, the manifest says {}",
                    d.sha256, f.sha256
                ));
            }
            if let (Some(want), Some(got)) = (&f.sm3, &d.sm3)
                && want != got
            {
                p.push(format!(
                    "sm3 of the bytes is {got}, the manifest says {want}"
                ));
            }
        }
    }
    // The ingest receipt.
    let receipt_name = export::receipt_path(f.evidence_id);
    let receipt = read_small(z, &receipt_name).and_then(|b| {
        serde_json::from_slice::<LedgerProof>(&b).map_err(|e| format!("is not a receipt: {e}"))
    });
    match receipt {
        Err(e) => p.push(format!("receipt {receipt_name} {e}")),
        Ok(receipt) => match receipt.verify(keys) {
            Err(e) => p.push(format!("receipt {receipt_name} does not verify: {e}")),
            Ok(v) => {
                let e = &v.entry;
                if e.kind != EventKind::Ingest {
                    p.push(format!(
                        "receipt {receipt_name} proves a {} event, not the ingest",
                        e.kind
                    ));
                }
                if e.evidence_id != f.evidence_id {
                    p.push(format!(
                        "receipt {receipt_name} is for evidence {}, not {}",
                        e.evidence_id, f.evidence_id
                    ));
                }
                if e.sha256 != f.sha256 {
                    p.push(format!(
                        "the receipt's entry has sha256 {}, the manifest says {}",
                        e.sha256, f.sha256
                    ));
                }
                if e.sm3 != f.sm3 {
                    p.push(format!(
                        "the receipt's entry has sm3 {:?}, the manifest says {:?}",
                        e.sm3.map(|s| s.to_string()),
                        f.sm3.map(|s| s.to_string())
                    ));
                }
                if e.size != f.size {
                    p.push(format!(
                        "the receipt's entry has size {}, the manifest says {}",
                        e.size, f.size
                    ));
                }
                if e.device_id != f.device_id
                    || e.station_id.as_ref() != Some(&f.station_id)
                    || e.device_time != Some(f.captured_at)
                {
                    p.push(format!(
                        "the receipt's entry names recorder {} station {:?} capture {:?}, the manifest says {} {} {}",
                        e.device_id,
                        e.station_id.as_ref().map(|s| s.to_string()),
                        e.device_time.map(|t| t.to_string()),
                        f.device_id,
                        f.station_id,
                        f.captured_at
                    ));
                }
                if v.leaf_index != f.ingest_leaf {
                    p.push(format!(
                        "the receipt proves leaf {}, the manifest says {}",
                        v.leaf_index, f.ingest_leaf
                    ));
                }
                if let Some(cp) = checkpoint {
                    check_consistency(z, &mut p, &v.checkpoint, cp);
                }
            }
        },
    }
    // This package's export event.
    let event_name = export::export_event_path(f.evidence_id);
    let event = read_small(z, &event_name).and_then(|b| {
        serde_json::from_slice::<LedgerProof>(&b).map_err(|e| format!("is not a ledger proof: {e}"))
    });
    match event {
        Err(e) => p.push(format!("export event {event_name} {e}")),
        Ok(ev) => match ev.verify(keys) {
            Err(e) => p.push(format!("export event {event_name} does not verify: {e}")),
            Ok(v) => {
                let marker = format!("\"package_id\":\"{}\"", manifest.package_id);
                if v.entry.kind != EventKind::Export
                    || v.entry.evidence_id != f.evidence_id
                    || v.entry.sha256 != f.sha256
                    || !v
                        .entry
                        .detail
                        .as_deref()
                        .is_some_and(|d| d.contains(&marker))
                {
                    p.push(format!(
                        "export event {event_name} is not this package's export of evidence {}",
                        f.evidence_id
                    ));
                }
                if v.leaf_index != f.export_leaf {
                    p.push(format!(
                        "the export event is leaf {}, the manifest says {}",
                        v.leaf_index, f.export_leaf
                    ));
                }
                if checkpoint.is_some_and(|cp| *cp != v.checkpoint) {
                    p.push(format!(
                        "export event {event_name} is proved against checkpoint {}, not the package's",
                        v.checkpoint.size
                    ));
                }
            }
        },
    }
    p
}

/// The receipt's checkpoint must be the package's or a prefix of it.
fn check_consistency(
    z: &mut Archive,
    p: &mut Vec<String>,
    old: &VerifiedCheckpoint,
    new: &VerifiedCheckpoint,
) {
    if old.origin != new.origin {
        p.push(format!(
            "the receipt is from log {:?}, the package's checkpoint from {:?}",
            old.origin, new.origin
        ));
        return;
    }
    if old.size == new.size {
        if old.root != new.root {
            p.push(format!(
                "the receipt's checkpoint and the package's both have size {} but different roots",
                old.size
            ));
        }
        return;
    }
    if old.size > new.size {
        p.push(format!(
            "the receipt's checkpoint ({}) is newer than the package's ({})",
            old.size, new.size
        ));
        return;
    }
    let name = export::consistency_path(old.size, new.size);
    let file = read_small(z, &name).and_then(|b| {
        serde_json::from_slice::<ConsistencyFile>(&b)
            .map_err(|e| format!("is not a consistency proof: {e}"))
    });
    let result = file.and_then(|c| {
        if c.format != CONSISTENCY_FORMAT || c.old_size != old.size || c.new_size != new.size {
            return Err(format!(
                "is not a {CONSISTENCY_FORMAT} proof from {} to {}",
                old.size, new.size
            ));
        }
        let proof = decode_hashes(&c.proof)?;
        verify_consistency(&proof, new.size, new.root, old.size, old.root).map_err(|_| {
            "does not prove that the receipt's log is a prefix of the package's".into()
        })
    });
    if let Err(e) = result {
        p.push(format!("consistency proof {name} {e}"));
    }
}
