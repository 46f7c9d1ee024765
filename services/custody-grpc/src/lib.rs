//! The gRPC edge of Custody: tonic services over the service crates, and the conversion between protobuf
//! messages and domain types. Generated types stop here; nothing inward sees them.
//!
//! It never touches SQL or object storage (it calls `custody-ingest` and `custody-tracking`), and maps every error through the
//! shared [`custody_core::ErrorCode`] so that gRPC and HTTP always agree.

mod status;
pub mod telemetry;
mod upload;

pub use status::to_status;
pub use telemetry::TelemetryService;
pub use upload::UploadService;

use custody_proto::v1::telemetry_server::TelemetryServer;
use custody_proto::v1::upload_server::UploadServer;

pub use custody_proto::MAX_MESSAGE_BYTES;

/// The tonic server for `custody.v1.Upload`; stations authenticate against `stations`.
pub fn upload_server(
    ingest: custody_ingest::Ingest,
    stations: custody_ingest::Stations,
) -> UploadServer<UploadService> {
    UploadServer::new(UploadService::new(ingest, stations))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The tonic server for `custody.v1.Telemetry`; recorders authenticate against `devices`.
pub fn telemetry_server(
    tracking: custody_tracking::Tracking,
    devices: custody_tracking::Devices,
) -> TelemetryServer<TelemetryService> {
    TelemetryServer::new(TelemetryService::new(tracking, devices))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
