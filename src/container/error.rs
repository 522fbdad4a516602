//! Errors inside the container before exec: each names the step that failed, so the one line
//! berth prints says what went wrong ("mounting proc on /proc: Operation not permitted").

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: nix::errno::Errno,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Msg(String),
}

impl SetupError {
    pub fn msg(m: impl Into<String>) -> Self {
        Self::Msg(m.into())
    }
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// `.ctx("what was being done")` on nix and io results.
pub trait Ctx<T> {
    fn ctx(self, what: impl Into<String>) -> Result<T, SetupError>;
}

impl<T> Ctx<T> for nix::Result<T> {
    fn ctx(self, what: impl Into<String>) -> Result<T, SetupError> {
        self.map_err(|source| SetupError::Sys {
            what: what.into(),
            source,
        })
    }
}

impl<T> Ctx<T> for std::io::Result<T> {
    fn ctx(self, what: impl Into<String>) -> Result<T, SetupError> {
        self.map_err(|source| SetupError::Io {
            what: what.into(),
            source,
        })
    }
}
