//! `custody admin`: operator commands that change keys and registries.

use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File names of the ledger key pair inside the key directory.
pub const SIGNING_KEY_FILE: &str = "ledger.key";
pub const VERIFIER_KEY_FILE: &str = "ledger.pub";

/// Creates a new Ed25519 ledger key pair for the log named `origin` in `dir`: `ledger.key` (the signing
/// key, readable by its owner only) and `ledger.pub` (the verifier key, to hand to stations, witnesses and
/// courts). Refuses to replace an existing key: a lost or replaced key breaks every receipt already issued.
pub fn keygen(origin: &str, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    anyhow::ensure!(
        signed_note_name_ok(origin),
        "origin {origin:?} must be non-empty and contain no spaces or '+' (e.g. custody.example.gov.cn/ledger)"
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (skey_path, vkey_path) = (dir.join(SIGNING_KEY_FILE), dir.join(VERIFIER_KEY_FILE));
    for p in [&skey_path, &vkey_path] {
        anyhow::ensure!(
            !p.exists(),
            "{} already exists; refusing to replace a ledger key",
            p.display()
        );
    }
    let (skey, vkey) = custody_core::ledger::generate_key(&mut rand_core_06::OsRng, origin);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&skey_path)
        .with_context(|| format!("creating {}", skey_path.display()))?;
    writeln!(f, "{skey}")?;
    f.sync_all()?;
    std::fs::write(&vkey_path, format!("{vkey}\n"))
        .with_context(|| format!("writing {}", vkey_path.display()))?;
    Ok((skey_path, vkey_path))
}

fn signed_note_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_core::ledger::{MemoryTree, sign_checkpoint, verify_checkpoint};

    #[test]
    fn keygen_writes_a_pair_that_signs_and_verifies_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let (skey, vkey) = keygen("custody.test/ledger", dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&skey).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let (s, v) = (
            std::fs::read_to_string(&skey).unwrap(),
            std::fs::read_to_string(&vkey).unwrap(),
        );
        let mut t = MemoryTree::new();
        t.append(b"entry").unwrap();
        let note =
            sign_checkpoint("custody.test/ledger", 1, t.root(1).unwrap(), &[s.trim()]).unwrap();
        assert_eq!(verify_checkpoint(&note, v.trim()).unwrap().size, 1);
        let again = keygen("custody.test/ledger", dir.path()).unwrap_err();
        assert!(again.to_string().contains("refusing to replace"), "{again}");
        assert!(keygen("bad name", dir.path()).is_err());
    }
}
