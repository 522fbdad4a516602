//! Exit codes, podman's convention: berth's own failures exit 125, a command that cannot be
//! executed 126, a command that does not exist 127; otherwise the container's own status
//! (128+N when it was killed by signal N).

pub const FAILURE: u8 = 125;
pub const NOT_EXECUTABLE: u8 = 126;
pub const NOT_FOUND: u8 = 127;

/// An error that carries its own exit code (the payload could not be executed, ...).
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct Coded {
    pub code: u8,
    pub msg: String,
}

pub fn code_for(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Coded>().map(|c| c.code))
        .unwrap_or(FAILURE)
}

/// Joins the context chain into one line: "starting container: mounting /proc: EPERM".
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string();
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}
