//! What the station tells the world: a report of every slot (from the journal and the agent's view of
//! the slots), published retained over MQTT on `custody/v1/station/{id}/slots`, and a heartbeat on
//! `custody/v1/station/{id}/heartbeat` (with a last will saying `online: false`). Publishing never holds up
//! offloading: when the broker is unreachable, reports are dropped and the next one is sent once it is
//! back.

use crate::agent::{Agent, now};
use custody_core::station::{
    Heartbeat, OfficerBinding, REPORT_VERSION, SlotState, SlotStatus, SlotsReport,
};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The slots report as of now.
pub async fn report(agent: &Agent) -> SlotsReport {
    let mut slots = Vec::new();
    for s in agent.slots() {
        let mut st = SlotStatus {
            slot: s.slot.name.clone(),
            state: SlotState::Empty,
            device_id: None,
            officer: None,
            docked_at: None,
            clock_offset_ms: None,
            files_pending: 0,
            bytes_pending: 0,
            files_done: 0,
            bytes_done: 0,
            progress: 0.0,
            last_error: s.problem.clone(),
        };
        if s.problem.is_some() {
            st.state = SlotState::Error;
        }
        if let Some(d) = &s.docked {
            st.device_id = Some(d.info.device_id.clone());
            st.officer = Some(OfficerBinding {
                badge: d.info.badge.clone(),
                name: d.info.officer_name.clone(),
                unit_no: d.info.unit_no.clone(),
                unit_name: d.info.unit_name.clone(),
            });
            st.docked_at = Some(d.docked_at);
            st.clock_offset_ms = d.clock_offset_ms;
            let journal = agent.journal();
            if let Ok(t) = journal.tally(&d.info.device_id).await {
                st.files_pending = t.files_pending;
                st.bytes_pending = t.bytes_pending;
                st.files_done = t.files_done;
                st.bytes_done = t.bytes_done;
                let total = t.bytes_done + t.bytes_pending;
                let unsaved = agent
                    .live(&d.info.device_id)
                    .unsaved
                    .load(std::sync::atomic::Ordering::Relaxed);
                st.progress = if total == 0 {
                    if t.files_pending == 0 { 1.0 } else { 0.0 }
                } else {
                    ((t.bytes_done + t.bytes_uploaded + unsaved) as f64 / total as f64)
                        .clamp(0.0, 1.0)
                };
            }
            st.last_error = journal.last_error(&d.info.device_id).await.ok().flatten();
            st.state = if st.files_pending == 0 {
                SlotState::Done
            } else if st.last_error.is_some() {
                SlotState::Error
            } else {
                SlotState::Offloading
            };
        }
        slots.push(st);
    }
    SlotsReport {
        v: REPORT_VERSION,
        station_id: agent.station_id().clone(),
        at: now(),
        slots,
    }
}

fn heartbeat(agent: &Agent, report: &SlotsReport, online: bool) -> Heartbeat {
    Heartbeat {
        v: REPORT_VERSION,
        station_id: agent.station_id().clone(),
        at: now(),
        online,
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_s: agent.uptime().as_secs(),
        interval_s: agent.config().heartbeat_interval.as_secs().max(1),
        uploads_active: agent.uploads_active(),
        files_pending: report.slots.iter().map(|s| s.files_pending).sum(),
        bytes_pending: report.slots.iter().map(|s| s.bytes_pending).sum(),
    }
}

/// Parses `mqtt://host[:port]`.
pub fn parse_mqtt_url(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .ok_or_else(|| anyhow::anyhow!("mqtt_url {url:?}: expected mqtt://host:port"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse()
                .map_err(|_| anyhow::anyhow!("mqtt_url {url:?}: port {p:?} is not a number"))?,
        ),
        None => (rest, 1883),
    };
    anyhow::ensure!(!host.is_empty(), "mqtt_url {url:?}: no host");
    Ok((host.to_string(), port))
}

/// Publishes slot reports and heartbeats until `shutdown`, then says the station went offline.
pub async fn publish(
    agent: Arc<Agent>,
    url: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (host, port) = parse_mqtt_url(&url)?;
    let id = agent.station_id().to_string();
    let slots_topic = format!("custody/v1/station/{id}/slots");
    let hb_topic = format!("custody/v1/station/{id}/heartbeat");
    let mut opts = MqttOptions::new(format!("custody-station-{id}"), host, port);
    opts.set_credentials(id.clone(), agent.credential().secret_hex());
    opts.set_keep_alive(Duration::from_secs(30));
    let empty = report(&agent).await;
    opts.set_last_will(LastWill::new(
        &hb_topic,
        heartbeat(&agent, &empty, false).encode(),
        QoS::AtLeastOnce,
        false,
    ));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    // The event loop drives the connection; its errors are logged once per outage.
    let driver = tokio::spawn(async move {
        let mut down_since: Option<Instant> = None;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!(url = %url, "connected to the mqtt broker");
                    down_since = None;
                }
                Ok(Event::Incoming(Packet::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    if down_since.is_none() {
                        tracing::warn!(url = %url, error = %e,
                            "mqtt broker unreachable; status reports wait until it is back");
                        down_since = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    let mut last_slots: Option<Vec<custody_core::station::SlotStatus>> = None;
    let mut last_sent = Instant::now();
    let mut next_hb = Instant::now();
    loop {
        let r = report(&agent).await;
        // A report goes out when something changed, and at least every 15 s.
        if (last_slots.as_ref() != Some(&r.slots) || last_sent.elapsed() > Duration::from_secs(15))
            && client
                .try_publish(&slots_topic, QoS::AtLeastOnce, true, r.encode())
                .is_ok()
        {
            last_slots = Some(r.slots.clone());
            last_sent = Instant::now();
        }
        if Instant::now() >= next_hb {
            let _ = client.try_publish(
                &hb_topic,
                QoS::AtLeastOnce,
                false,
                heartbeat(&agent, &r, true).encode(),
            );
            next_hb = Instant::now() + agent.config().heartbeat_interval;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    let r = report(&agent).await;
    let _ = client.try_publish(&slots_topic, QoS::AtLeastOnce, true, r.encode());
    let _ = client.try_publish(
        &hb_topic,
        QoS::AtLeastOnce,
        false,
        heartbeat(&agent, &r, false).encode(),
    );
    // Give the last messages a moment to leave, then disconnect cleanly (no will).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls_are_parsed_strictly() {
        assert_eq!(
            parse_mqtt_url("mqtt://127.0.0.1:1884").unwrap(),
            ("127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse_mqtt_url("mqtt://broker").unwrap(),
            ("broker".into(), 1883)
        );
        assert!(parse_mqtt_url("tcp://x:1").is_err());
        assert!(parse_mqtt_url("mqtt://x:port").is_err());
    }
}
