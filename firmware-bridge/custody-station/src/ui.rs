//! Interactive mode: one progress bar per slot (recorder, officer, files and bytes done, speed, newest
//! error), redrawn a few times a second from the same report that goes over MQTT. Log lines are printed
//! above the bars instead of through them.

use crate::agent::Agent;
use crate::status;
use custody_core::station::SlotState;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A `tracing` writer that prints through the progress bars, so that log lines do not tear them.
#[derive(Clone, Debug)]
pub struct BarWriter(pub MultiProgress);

impl Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let _ = self.0.println(text.trim_end_matches('\n'));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BarWriter {
    type Writer = BarWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A new set of bars drawing on standard error.
pub fn bars() -> MultiProgress {
    MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5))
}

/// Draws the slots until `shutdown`.
pub async fn draw(agent: Arc<Agent>, mp: MultiProgress, shutdown: CancellationToken) {
    let style = ProgressStyle::with_template(
        "{prefix:>4} {wide_msg} [{bar:30.cyan/blue}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    loop {
        let r = status::report(&agent).await;
        for s in &r.slots {
            let bar = bars.entry(s.slot.clone()).or_insert_with(|| {
                let b = mp.add(ProgressBar::new(0).with_style(style.clone()));
                b.set_prefix(s.slot.clone());
                b
            });
            let total = s.bytes_done + s.bytes_pending;
            bar.set_length(total.max(1));
            bar.set_position(((total as f64) * s.progress) as u64);
            let who = match (&s.device_id, &s.officer) {
                (Some(d), Some(o)) => format!("{d} {} {}", o.badge, o.name),
                (Some(d), None) => d.to_string(),
                _ => "(empty)".to_string(),
            };
            let live = s
                .device_id
                .as_ref()
                .map(|d| agent.live(d))
                .map(|l| l.hashed.load(Ordering::Relaxed))
                .unwrap_or(0);
            let state = match s.state {
                SlotState::Empty => "empty".to_string(),
                SlotState::Done => {
                    format!("done: {} files, recorder may be undocked", s.files_done)
                }
                SlotState::Offloading => format!(
                    "{} of {} files, {} MiB hashed",
                    s.files_done,
                    s.files_done + s.files_pending,
                    live >> 20
                ),
                SlotState::Error => format!(
                    "{} of {} files; {}",
                    s.files_done,
                    s.files_done + s.files_pending,
                    s.last_error.as_deref().unwrap_or("error")
                ),
            };
            bar.set_message(format!("{who}  {state}"));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    for b in bars.values() {
        b.abandon();
    }
}
