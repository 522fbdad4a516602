//! Signal names as systemd accepts them: "SIGTERM", "TERM", "RTMIN+3", "SIGRTMIN+3", "15".

pub fn parse(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=libc::SIGRTMAX()).contains(&n).then_some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')?.parse().ok()?
        };
        let n = libc::SIGRTMIN() + off;
        return (n <= libc::SIGRTMAX()).then_some(n);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('-')?.parse().ok()?
        };
        let n = libc::SIGRTMAX() - off;
        return (n >= libc::SIGRTMIN()).then_some(n);
    }
    format!("SIG{name}")
        .parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_systemd_forms() {
        assert_eq!(super::parse("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(super::parse("TERM"), Some(libc::SIGTERM));
        assert_eq!(super::parse("9"), Some(9));
        assert_eq!(super::parse("RTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(super::parse("SIGRTMIN+4"), Some(libc::SIGRTMIN() + 4));
        assert_eq!(super::parse("SIGFOO"), None);
        assert_eq!(super::parse("0"), None);
        assert_eq!(super::parse("RTMIN+99"), None);
    }
}
