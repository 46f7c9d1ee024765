use custody_core::{ErrorCode, HasErrorCode};

/// Errors of the persistence layer. Each names the thing that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    /// The thing was removed on purpose (evidence bytes deleted by retention); the message says when and why.
    #[error("{0}")]
    Gone(String),
    /// A row with the same key exists and may not be created again.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A compare-and-set lost to a concurrent writer.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The disk (or a backend's quota) is full.
    #[error("storage is full while {0}")]
    Full(String),
    #[error("database error while {context}: {source}")]
    Database {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("object store error while {context}: {source}")]
    Object {
        context: String,
        #[source]
        source: object_store::Error,
    },
    #[error("io error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A stored row or object does not hold what it must: a sign of tampering or a bug.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    #[error("invalid storage configuration: {0}")]
    Config(String),
}

impl HasErrorCode for StoreError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Gone(_) => ErrorCode::Gone,
            Self::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Self::Conflict(_) => ErrorCode::Aborted,
            Self::Full(_) => ErrorCode::ResourceExhausted,
            Self::Database { source, .. } if is_connection_error(source) => ErrorCode::Unavailable,
            Self::Object {
                source: object_store::Error::NotFound { .. },
                ..
            } => ErrorCode::NotFound,
            Self::Database { .. } | Self::Migrate(_) | Self::Object { .. } | Self::Io { .. } => {
                ErrorCode::Internal
            }
            Self::Corrupt(_) | Self::Config(_) => ErrorCode::Internal,
        }
    }
}

fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
    )
}

/// Whether an error chain bottoms out in "no space left on device".
pub(crate) fn is_disk_full(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && (io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28))
        {
            return true;
        }
        cur = e.source();
    }
    false
}

impl StoreError {
    pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| {
            // SQLite reports a full disk as SQLITE_FULL (13); PostgreSQL as 53100 disk_full.
            if let sqlx::Error::Database(d) = &source
                && matches!(d.code().as_deref(), Some("13") | Some("53100"))
            {
                return Self::Full(context.to_string());
            }
            Self::Database { context, source }
        }
    }

    pub(crate) fn object(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> Self {
        move |source| {
            let context = context.into();
            if is_disk_full(&source) {
                Self::Full(context)
            } else {
                Self::Object { context, source }
            }
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        move |source| {
            let context = context.into();
            if is_disk_full(&source) {
                Self::Full(context)
            } else {
                Self::Io { context, source }
            }
        }
    }
}
