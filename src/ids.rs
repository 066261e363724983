//! The one pattern every identifier taken from a URL path or from config must
//! match: projects, organisations and agent ids. Such ids end up in cursor AAD,
//! store keys and logs, so they are plain ASCII: an id that was not valid
//! UTF-8 in the URL (`%ff`) can never be decoded into one that collides with
//! another (`%fe`), because neither matches.

/// The pattern, as documented: `^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$`.
pub const PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$";
/// Longest id, bytes.
pub const MAX_LEN: usize = 128;

/// The pattern model APIs accept for tool names: `^[a-zA-Z0-9_-]{1,64}$`.
pub const TOOL_NAME_PATTERN: &str = "^[a-zA-Z0-9_-]{1,64}$";
/// Longest tool name.
pub const MAX_TOOL_NAME: usize = 64;

/// Whether `c` may appear in a tool name.
pub fn is_tool_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Whether `name` matches [`TOOL_NAME_PATTERN`] (every tool: configured,
/// discovered from an MCP server, or declared by a client).
pub fn is_tool_name(name: &str) -> bool {
    (1..=MAX_TOOL_NAME).contains(&name.len()) && name.chars().all(is_tool_name_char)
}

/// Whether `id` matches [`PATTERN`].
pub fn is_valid(id: &str) -> bool {
    let bytes = id.as_bytes();
    let Some((&first, rest)) = bytes.split_first() else {
        return false;
    };
    bytes.len() <= MAX_LEN
        && (first.is_ascii_alphanumeric() || first == b'_')
        && rest
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// `Ok` for a valid id, else a message naming `what` and the pattern (the
/// value is never quoted: it may be long or not printable).
pub fn check(what: &str, id: &str) -> Result<(), String> {
    if is_valid(id) {
        Ok(())
    } else {
        Err(format!("the {what} must match {PATTERN}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern() {
        for ok in ["demo", "a", "_x", "acme-prod", "org.eu:1", &"a".repeat(128)] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "-a",
            "a b",
            "a/b",
            "\u{fffd}",
            "é",
            "a\0",
            &"a".repeat(129),
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        assert!(is_tool_name("get_weather-2") && is_tool_name(&"a".repeat(64)));
        for bad in ["", "a.b", "a b", "é", &"a".repeat(65)] {
            assert!(!is_tool_name(bad), "{bad:?}");
        }
    }
}
