//! Compiles `custody/v1/*.proto` with protox (pure Rust, no `protoc` on the machine needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["custody/v1/upload.proto", "custody/v1/telemetry.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // `bytes` fields decode as `Bytes` slices of the received buffer: upload chunks are not copied.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
