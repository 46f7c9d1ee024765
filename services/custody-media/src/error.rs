//! The one error type of the ffmpeg half, sorted by what a caller should do about it.

/// Why probing, picturing or transcoding a file failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The bytes are not media ffmpeg can read, or are too damaged to read. Permanent: retrying cannot help.
    #[error("{0}")]
    Unreadable(String),
    /// The picture is larger than the configured limit; nothing was decoded.
    #[error("resolution {width}x{height} exceeds the limit of {max_pixels} pixels")]
    TooLarge {
        /// Picture width the file claims.
        width: u32,
        /// Picture height the file claims.
        height: u32,
        /// The limit in force.
        max_pixels: u64,
    },
    /// The file was read but holds no decodable picture / sound where one was expected.
    #[error("{0}")]
    NoFrames(String),
    /// A codec or format this ffmpeg build cannot decode or encode.
    #[error("{0}")]
    Unsupported(String),
    /// Reading the input or writing the output failed (disk full, ...). May pass.
    #[error("{context}: {source}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The caller asked the work to stop (shutdown). Not a failure of the media.
    #[error("cancelled")]
    Cancelled,
    /// ffmpeg failed in a way that says nothing about the input (encoder could not open, ...).
    #[error("ffmpeg: {0}")]
    Internal(String),
}

impl MediaError {
    /// Whether the failure is a property of the file, so that retrying the same work cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Unreadable(_) | Self::TooLarge { .. } | Self::NoFrames(_) | Self::Unsupported(_)
        )
    }
}
