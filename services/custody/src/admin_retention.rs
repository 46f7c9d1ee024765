//! `custody admin retention`: runs a retention pass by hand (or lists, with `--dry-run`, what one would
//! delete, now or as of a later date) and shows the configured periods.

use crate::config::StorageArgs;
use custody_cases::{ItemOutcome, Retention};
use custody_core::Timestamp;
use std::path::Path;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RetentionCommand {
    /// Delete the bytes of every item whose retention is over, as the worker in `serve` does every
    /// `retention_interval`: each keeps its row as a tombstone and gets a `retention_delete` ledger
    /// event (sequenced by the running server). Nothing on legal hold or linked to an open case is
    /// ever deleted. With --dry-run, only list what would be deleted.
    Run {
        /// List what would be deleted, with the rule that ended for each, and change nothing
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: decide as of this RFC 3339 instant (e.g. 2027-07-01T00:00:00+08:00) instead
        /// of now, to see what will be due by then
        #[arg(long, requires = "dry_run")]
        at: Option<String>,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Show the configured retention periods and classes
    Policy {
        #[command(flatten)]
        storage: StorageArgs,
    },
}

pub async fn retention(
    config_file: &Path,
    explicit: bool,
    cmd: RetentionCommand,
) -> anyhow::Result<()> {
    match cmd {
        RetentionCommand::Policy { storage } => {
            let config = crate::Config::load(config_file, explicit, &storage)?;
            let p = config.retention_policy()?;
            println!("every item:                 {} from capture", p.default);
            println!("evidence linked to a case:  {}", p.case_evidence);
            println!("obstruction of duty:        {}", p.obstruction);
            for (name, period) in &p.classes {
                println!("class {name:<20} {period}");
            }
            println!("legal hold, open case:      kept until released or closed");
            Ok(())
        }
        RetentionCommand::Run {
            dry_run,
            at,
            storage,
        } => {
            let config = crate::Config::load(config_file, explicit, &storage)?;
            let at = match at {
                Some(s) => Timestamp::parse_rfc3339(&s).map_err(|e| {
                    anyhow::anyhow!("--at: {e} (expected RFC 3339, e.g. 2027-07-01T00:00:00+08:00)")
                })?,
                None => crate::now(),
            };
            let (meta, blobs) = crate::app::open_storage(&config).await?;
            let retention = Retention::new(meta.clone(), blobs, None, config.retention()?);
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(if dry_run {
                "looking for items whose retention is over"
            } else {
                "deleting items whose retention is over"
            });
            let report = retention
                .run_once(at, dry_run, |item, outcome| {
                    let e = &item.evidence;
                    let what = match outcome {
                        ItemOutcome::WouldDelete => "would delete",
                        ItemOutcome::Deleted => "deleted",
                        ItemOutcome::Changed => "kept (changed meanwhile)",
                    };
                    bar.suspend(|| {
                        println!(
                            "{what:<12} {} {} captured {} {} bytes: {}",
                            e.id,
                            e.file_name.as_str(),
                            e.captured_at,
                            e.size,
                            item.reason
                        )
                    });
                    bar.tick();
                })
                .await;
            bar.finish_and_clear();
            meta.close().await;
            let r = report?;
            if dry_run {
                println!(
                    "dry run as of {at}: {} of {} item(s) old enough to look at would be deleted ({}); nothing was changed",
                    r.due,
                    r.examined,
                    humanize(r.due_bytes)
                );
            } else {
                println!(
                    "{} item(s) deleted ({}), {} kept because they changed meanwhile, {} interrupted deletion(s) finished; {} item(s) looked at",
                    r.deleted,
                    humanize(r.bytes_deleted),
                    r.changed,
                    r.finished,
                    r.examined
                );
            }
            Ok(())
        }
    }
}

fn humanize(n: u64) -> String {
    bytesize::ByteSize::b(n).to_string()
}
