//! Wiring: picks the backends named by the configuration, builds the services and runs the HTTP and gRPC
//! servers and background workers until shutdown. The only place that knows every crate.

use crate::config::Config;
use anyhow::Context;
use custody_api::ApiState;
use custody_ingest::{Ingest, IngestConfig, IngestMetrics, Ledger, LedgerConfig, Stations};
use custody_store::{BlobConfig, Blobs, Metadata};
use custody_tracking::{Devices, Tracking, TrackingMetrics};
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A built server: backends open, listeners bound, nothing served yet.
#[derive(Debug)]
pub struct App {
    http: TcpListener,
    grpc: TcpListener,
    /// Where MQTT messages come in.
    mqtt: MqttIn,
    ingest: Ingest,
    stations: Stations,
    devices: Devices,
    tracking: Tracking,
    /// Durable media jobs (probe, poster, thumbnails, proxy) and their results.
    media: custody_media::Media,
    /// Accounts and sessions, officers and check-outs, cases.
    accounts: custody_cases::Accounts,
    officers: custody_cases::Officers,
    cases: custody_cases::Cases,
    /// Download and export requests (approval before copy).
    requests: custody_cases::Requests,
    /// Export packages of cases.
    exporter: custody_cases::Exporter,
    /// The retention worker, legal holds and marks.
    retention: custody_cases::Retention,
    meta: Metadata,
    registry: Arc<Registry>,
    config: Config,
}

/// Where MQTT messages come in: the embedded endpoint's listener, or the bridge to an external broker.
#[derive(Debug)]
enum MqttIn {
    Endpoint(TcpListener, custody_mqtt::Endpoint),
    Bridge(Box<custody_mqtt::Bridge>),
}

/// The addresses a running server listens on (written to `ready_file`).
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub struct BoundAddrs {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// The embedded MQTT endpoint, when it runs.
    pub mqtt: Option<SocketAddr>,
}

/// Opens the metadata database (running its migrations) and the object store named by the configuration.
pub async fn open_storage(config: &Config) -> anyhow::Result<(Metadata, Blobs)> {
    let db_url = config.database_url();
    let meta = Metadata::connect(&db_url, config.database_max_connections)
        .await
        .with_context(|| format!("opening database {}", crate::config::redact_url(&db_url)))?;
    let mut blob_cfg = BlobConfig::from_url(&config.object_store_url())?;
    if let BlobConfig::S3 {
        endpoint,
        region,
        access_key_id,
        secret_access_key,
        allow_http,
        ..
    } = &mut blob_cfg
    {
        *endpoint = config.s3_endpoint.clone();
        *region = config.s3_region.clone();
        *access_key_id = config.s3_access_key_id.clone();
        *secret_access_key = config.s3_secret()?;
        *allow_http = config.s3_allow_http;
    }
    let part_size = usize::try_from(config.upload_part_size.as_u64())
        .context("upload_part_size is too large")?;
    let blobs = Blobs::open(&blob_cfg, part_size, config.upload_flush_bytes.as_u64()).await?;
    blobs
        .ping()
        .await
        .with_context(|| format!("reaching the object store ({})", blobs.describe()))?;
    tracing::info!(database = %crate::config::redact_url(&db_url), objects = blobs.describe(), "storage ready");

    Ok((meta, blobs))
}

/// Opens the configured backends, runs migrations and binds both listeners.
pub async fn build(config: Config) -> anyhow::Result<App> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    // Keys first: a server that cannot sign must not accept evidence it cannot give receipts for.
    let keys = crate::admin::load_ledger_keys(
        &config.ledger_key_path(),
        config.ledger_sm2_key_file.as_deref(),
    )?;
    tracing::info!(origin = %keys.origin, keys = keys.verifiers.len(), "ledger keys loaded");
    let (meta, blobs) = open_storage(&config).await?;

    let mut registry = Registry::default();
    let metrics = IngestMetrics::default();
    metrics.register(&mut registry);
    let ledger = Ledger::new(
        meta.clone(),
        blobs.clone(),
        LedgerConfig {
            batch_max: config.ledger_batch_max,
            batch_interval: config.ledger_batch_interval,
            receipt_timeout: config.ledger_receipt_timeout,
        },
        keys,
    );
    let ingest = Ingest::new(
        meta.clone(),
        blobs.clone(),
        ledger,
        IngestConfig {
            max_upload_size: config.max_upload_size.as_u64(),
            upload_ttl: config.upload_ttl,
            always_sm3: config.always_sm3,
        },
        metrics,
    );
    let stations = Stations::new(meta.clone());
    let devices = Devices::new(meta.clone());
    let media_metrics = custody_media::MediaMetrics::default();
    media_metrics.register(&mut registry);
    let media =
        custody_media::Media::new(meta.clone(), blobs.clone(), config.media(), media_metrics);
    let accounts = custody_cases::Accounts::new(
        meta.clone(),
        custody_cases::AccountsConfig {
            session_ttl: config.session_ttl,
        },
    );
    let officers = custody_cases::Officers::new(meta.clone());
    let cases = custody_cases::Cases::new(meta.clone(), ingest.ledger().clone(), config.cases());
    let requests = custody_cases::Requests::new(meta.clone(), cases.clone(), config.requests());
    let exporter = custody_cases::Exporter::new(
        meta.clone(),
        blobs.clone(),
        ingest.ledger().clone(),
        cases.clone(),
        requests.clone(),
        custody_cases::ExportConfig {
            checkpoint_timeout: config.ledger_receipt_timeout,
        },
    );
    let retention = custody_cases::Retention::new(
        meta.clone(),
        blobs.clone(),
        Some(ingest.ledger().clone()),
        config.retention()?,
    );
    let tracking_metrics = TrackingMetrics::default();
    tracking_metrics.register(&mut registry);
    let tracking = Tracking::open(meta.clone(), config.tracking(), tracking_metrics)
        .await
        .context("loading telemetry state")?;
    let http = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("binding http_listen {}", config.http_listen))?;
    let grpc = TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("binding grpc_listen {}", config.grpc_listen))?;
    // The MQTT side is checked here, like the listeners, so that a bad broker URL stops start-up.
    let router = Arc::new(crate::mqtt::MqttRouter {
        stations: stations.clone(),
        devices: devices.clone(),
        tracking: tracking.clone(),
    });
    let mqtt = match &config.mqtt_url {
        None => {
            let endpoint = custody_mqtt::Endpoint::new(router, Default::default());
            tracking.set_command_sink(Arc::new(crate::mqtt::EndpointCommands(endpoint.clone())));
            MqttIn::Endpoint(
                TcpListener::bind(config.mqtt_listen)
                    .await
                    .with_context(|| format!("binding mqtt_listen {}", config.mqtt_listen))?,
                endpoint,
            )
        }
        Some(url) => {
            let mut bridge = custody_mqtt::BridgeConfig::new(url, &config.mqtt_client_id);
            bridge.username = config.mqtt_username.clone();
            bridge.password = config.mqtt_password()?;
            bridge.share_group = config.mqtt_share_group.clone();
            bridge.max_in_flight = config.mqtt_max_in_flight;
            bridge.filters = custody_mqtt::topics::INBOUND_FILTERS
                .iter()
                .map(|f| f.to_string())
                .collect();
            let bridge = custody_mqtt::Bridge::new(bridge, router).context("mqtt_url")?;
            tracking.set_command_sink(Arc::new(crate::mqtt::BridgeCommands(bridge.handle())));
            MqttIn::Bridge(Box::new(bridge))
        }
    };
    Ok(App {
        http,
        grpc,
        mqtt,
        ingest,
        stations,
        devices,
        tracking,
        media,
        accounts,
        officers,
        cases,
        requests,
        exporter,
        retention,
        meta,
        registry: Arc::new(registry),
        config,
    })
}

impl App {
    pub fn addrs(&self) -> anyhow::Result<BoundAddrs> {
        Ok(BoundAddrs {
            http: self.http.local_addr()?,
            grpc: self.grpc.local_addr()?,
            mqtt: match &self.mqtt {
                MqttIn::Endpoint(l, _) => Some(l.local_addr()?),
                MqttIn::Bridge(_) => None,
            },
        })
    }

    pub fn accounts(&self) -> &custody_cases::Accounts {
        &self.accounts
    }

    pub fn officers(&self) -> &custody_cases::Officers {
        &self.officers
    }

    pub fn cases(&self) -> &custody_cases::Cases {
        &self.cases
    }

    pub fn requests(&self) -> &custody_cases::Requests {
        &self.requests
    }

    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    pub fn stations(&self) -> &Stations {
        &self.stations
    }

    pub fn devices(&self) -> &Devices {
        &self.devices
    }

    pub fn tracking(&self) -> &Tracking {
        &self.tracking
    }

    pub fn media(&self) -> &custody_media::Media {
        &self.media
    }

    pub fn retention(&self) -> &custody_cases::Retention {
        &self.retention
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets requests in flight finish (an upload
    /// stream's received bytes are made durable), stops the workers and closes the database.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addrs = self.addrs()?;
        let token = CancellationToken::new();
        let trigger = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: draining requests in flight");
            trigger.cancel();
        });

        let api = custody_api::router(ApiState {
            ingest: self.ingest.clone(),
            stations: self.stations.clone(),
            tracking: self.tracking.clone(),
            devices: self.devices.clone(),
            media: self.media.clone(),
            mqtt_superusers: self.config.mqtt_superusers.clone(),
            mqtt_password: self.config.mqtt_password()?,
            registry: self.registry.clone(),
            accounts: self.accounts.clone(),
            officers: self.officers.clone(),
            cases: self.cases.clone(),
            requests: self.requests.clone(),
            exporter: self.exporter.clone(),
            retention: self.retention.clone(),
        });
        let http = tokio::spawn(custody_api::serve(
            self.http,
            api,
            token.clone().cancelled_owned(),
        ));

        let incoming =
            tonic::transport::server::TcpIncoming::from(self.grpc).with_nodelay(Some(true));
        let grpc = tokio::spawn(
            tonic::transport::Server::builder()
                .initial_stream_window_size(Some(8 << 20))
                .initial_connection_window_size(Some(32 << 20))
                .max_frame_size(Some((1 << 20) - 1))
                .add_service(custody_grpc::upload_server(
                    self.ingest.clone(),
                    self.stations.clone(),
                ))
                .add_service(custody_grpc::telemetry_server(
                    self.tracking.clone(),
                    self.devices.clone(),
                ))
                .serve_with_incoming_shutdown(incoming, token.clone().cancelled_owned()),
        );

        let shutdown = token.clone().cancelled_owned();
        let mqtt = match self.mqtt {
            MqttIn::Endpoint(listener, endpoint) => tokio::spawn(async move {
                endpoint
                    .serve(listener, shutdown)
                    .await
                    .context("mqtt endpoint")
            }),
            MqttIn::Bridge(bridge) => {
                tokio::spawn(async move { bridge.run(shutdown).await.context("mqtt bridge") })
            }
        };

        // Live streams (WebSocket, gRPC Watch) never end by themselves: end them at shutdown so that
        // the servers can drain.
        let hub = self.tracking.hub().clone();
        let closing = token.clone();
        tokio::spawn(async move {
            closing.cancelled().await;
            hub.close();
        });
        // The position writer stops after the transports (below), so that what they took is written.
        let writer_stop = CancellationToken::new();
        let writer = tokio::spawn(self.tracking.clone().run_writer(writer_stop.clone()));
        let retention = tokio::spawn(self.tracking.clone().run_retention(token.clone()));
        // Evidence retention: deletes the bytes of items whose time is over (tombstone + ledger event).
        let evidence_retention = tokio::spawn(self.retention.clone().run(token.clone()));
        let expiry = tokio::spawn(self.ingest.clone().run_expiry(
            self.config.upload_expiry_interval,
            token.clone().cancelled_owned(),
        ));
        // Media jobs stop with everything else: a job in progress is handed back to the queue.
        let media = tokio::spawn(self.media.clone().run(token.clone()));
        let sequencer = tokio::spawn(
            self.ingest
                .ledger()
                .clone()
                .run(token.clone().cancelled_owned()),
        );

        if let Some(path) = &self.config.ready_file {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&addrs)?)
                .and_then(|()| std::fs::rename(&tmp, path))
                .with_context(|| format!("writing ready_file {}", path.display()))?;
        }
        tracing::info!(http = %addrs.http, grpc = %addrs.grpc, mqtt = ?addrs.mqtt,
            mqtt_broker = ?self.config.mqtt_url, "custody is serving");

        let (h, g) = tokio::join!(http, grpc);
        token.cancel();
        match mqtt.await {
            Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "mqtt stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "mqtt task failed"),
            Ok(Ok(())) => {}
        }
        writer_stop.cancel();
        let _ = writer.await;
        let _ = retention.await;
        let _ = evidence_retention.await;
        let _ = expiry.await;
        let _ = media.await;
        let _ = sequencer.await;
        self.meta.close().await;
        h.context("http server task")?.context("http server")?;
        g.context("grpc server task")?.context("grpc server")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
