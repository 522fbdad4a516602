//! Machine names and UUIDs, validated as systemd-machined validates them.

/// machined's rule: a valid hostname of at most 64 characters: [A-Za-z0-9_.-], no leading or
/// trailing dot or hyphen, no "..".
pub fn name_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with(['.', '-'])
        && !name.ends_with(['.', '-'])
        && !name.contains("..")
}

/// The default name from a directory's base name, cleaned as nspawn's hostname_cleanup does.
pub fn name_from_dir(dir: &std::path::Path) -> Option<String> {
    let base = dir.file_name()?.to_string_lossy();
    let mut name: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    while name.contains("..") {
        name = name.replace("..", ".");
    }
    let name = name.trim_matches(['.', '-']);
    let name: String = name.chars().take(64).collect();
    let name = name.trim_end_matches(['.', '-']).to_string();
    name_is_valid(&name).then_some(name)
}

/// A 128-bit id as systemd prints a UUID: 8-4-4-4-12 lowercase hex.
pub fn format_uuid(id: &[u8; 16]) -> String {
    let h: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parses a machine-id (32 hex digits) or a UUID with dashes. All zeros is not an id.
pub fn parse_id(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.trim().chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    (id != [0; 16]).then_some(id)
}

/// A random v4 UUID from the kernel's CSPRNG.
pub fn random_id() -> std::io::Result<[u8; 16]> {
    let mut id = [0u8; 16];
    let mut filled = 0;
    while filled < id.len() {
        // SAFETY: writes into our own buffer within bounds.
        let n = unsafe { libc::getrandom(id[filled..].as_mut_ptr().cast(), id.len() - filled, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
            continue;
        }
        filled += n as usize;
    }
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn validates_like_machined() {
        for ok in ["busybox", "web-1", "a.b_c", "x"] {
            assert!(name_is_valid(ok), "{ok}");
        }
        for bad in ["", ".x", "x.", "-x", "a..b", "a/b", "a b", &"x".repeat(65)] {
            assert!(!name_is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn default_name_is_cleaned_base_name() {
        assert_eq!(
            name_from_dir(Path::new("/var/lib/machines/deb ian")).as_deref(),
            Some("debian")
        );
        assert_eq!(
            name_from_dir(Path::new("/x/.hidden")).as_deref(),
            Some("hidden")
        );
        assert_eq!(name_from_dir(Path::new("/")), None);
    }

    #[test]
    fn ids_round_trip_and_zero_is_refused() {
        let id = parse_id("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(format_uuid(&id), "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(parse_id(&format_uuid(&id)), Some(id));
        assert_eq!(parse_id(&"0".repeat(32)), None);
        assert_eq!(parse_id("uninitialized"), None);
        let r = random_id().unwrap();
        assert_eq!(r[6] >> 4, 4);
    }
}
