//! Named keys → the bytes a terminal sends for them.

/// The bytes for a named key (`Enter`, `C-c`, `M-x`, `F5`, …); `None` if unknown.
/// `app_cursor` selects the application-cursor-mode arrow sequences (`ESC O A`).
pub fn key_bytes(name: &str, app_cursor: bool) -> Option<Vec<u8>> {
    if let Some(rest) = name.strip_prefix("C-").or_else(|| name.strip_prefix("c-")) {
        return ctrl(rest);
    }
    if let Some(rest) = name.strip_prefix("M-").or_else(|| name.strip_prefix("m-")) {
        if rest.is_empty() {
            return None;
        }
        let inner = if rest.chars().count() == 1 {
            rest.as_bytes().to_vec()
        } else {
            key_bytes(rest, app_cursor)?
        };
        let mut v = vec![0x1b];
        v.extend(inner);
        return Some(v);
    }
    let arrow = |c: u8| {
        if app_cursor {
            vec![0x1b, b'O', c]
        } else {
            vec![0x1b, b'[', c]
        }
    };
    let seq = |s: &str| Some(s.as_bytes().to_vec());
    match name.to_ascii_lowercase().as_str() {
        "enter" | "return" | "cr" => seq("\r"),
        "tab" => seq("\t"),
        "btab" | "s-tab" | "backtab" => seq("\x1b[Z"),
        "escape" | "esc" => seq("\x1b"),
        "backspace" | "bspace" | "bs" => seq("\x7f"),
        "space" => seq(" "),
        "up" => Some(arrow(b'A')),
        "down" => Some(arrow(b'B')),
        "right" => Some(arrow(b'C')),
        "left" => Some(arrow(b'D')),
        "home" => seq("\x1b[H"),
        "end" => seq("\x1b[F"),
        "pageup" | "pgup" | "ppage" => seq("\x1b[5~"),
        "pagedown" | "pgdn" | "npage" => seq("\x1b[6~"),
        "delete" | "del" | "dc" => seq("\x1b[3~"),
        "insert" | "ic" => seq("\x1b[2~"),
        "f1" => seq("\x1bOP"),
        "f2" => seq("\x1bOQ"),
        "f3" => seq("\x1bOR"),
        "f4" => seq("\x1bOS"),
        "f5" => seq("\x1b[15~"),
        "f6" => seq("\x1b[17~"),
        "f7" => seq("\x1b[18~"),
        "f8" => seq("\x1b[19~"),
        "f9" => seq("\x1b[20~"),
        "f10" => seq("\x1b[21~"),
        "f11" => seq("\x1b[23~"),
        "f12" => seq("\x1b[24~"),
        _ => None,
    }
}

fn ctrl(rest: &str) -> Option<Vec<u8>> {
    let mut chars = rest.chars();
    let c = chars.next()?;
    if chars.next().is_some() {
        return match rest.to_ascii_lowercase().as_str() {
            "space" => Some(vec![0]),
            _ => None,
        };
    }
    let b = match c.to_ascii_lowercase() {
        c @ 'a'..='z' => c as u8 - b'a' + 1,
        '@' | ' ' | '2' => 0,
        '[' | '3' => 0x1b,
        '\\' | '4' => 0x1c,
        ']' | '5' => 0x1d,
        '^' | '6' => 0x1e,
        '_' | '7' | '/' => 0x1f,
        '?' | '8' => 0x7f,
        _ => return None,
    };
    Some(vec![b])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(key_bytes("Enter", false).unwrap(), b"\r");
        assert_eq!(key_bytes("C-c", false).unwrap(), b"\x03");
        assert_eq!(key_bytes("C-a", false).unwrap(), b"\x01");
        assert_eq!(key_bytes("C-z", false).unwrap(), b"\x1a");
        assert_eq!(key_bytes("M-x", false).unwrap(), b"\x1bx");
        assert_eq!(key_bytes("Up", false).unwrap(), b"\x1b[A");
        assert_eq!(key_bytes("Up", true).unwrap(), b"\x1bOA");
        assert_eq!(key_bytes("Backspace", false).unwrap(), b"\x7f");
        assert_eq!(key_bytes("F1", false).unwrap(), b"\x1bOP");
        assert_eq!(key_bytes("F12", false).unwrap(), b"\x1b[24~");
        assert_eq!(key_bytes("PageDown", false).unwrap(), b"\x1b[6~");
        assert_eq!(key_bytes("Space", false).unwrap(), b" ");
        assert!(key_bytes("Hyper", false).is_none());
        assert!(key_bytes("C-", false).is_none());
        assert!(key_bytes("C-!", false).is_none());
    }
}
