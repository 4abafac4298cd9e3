//! Text that reaches a terminal or a one-line field: what counts as printable, how anything
//! else is shown (escaped, never raw), and the rule for token descriptions.

/// A token description holds at most this many characters; longer ones are clipped.
pub const MAX_DESCRIPTION: usize = 256;

/// Characters that must never reach a terminal raw or sit in a one-line field: control
/// characters (C0 with newline, tab and ESC, DEL, C1), the line and paragraph separators, and
/// the bidirectional controls that reorder what a terminal shows.
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unprintable character escaped (`\n`, `\t`, `\r`, `\x1b`, `\u{202e}`), for
/// tables and messages: an ANSI escape sequence or a newline in a name, path or description is
/// shown, never acted on.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_unprintable) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_unprintable(c) && (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if is_unprintable(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A token description is one line of printable characters, at most `MAX_DESCRIPTION` long.
pub enum Description {
    /// Fine as it is.
    Ok(String),
    /// Longer than `MAX_DESCRIPTION` characters: its first ones, and how many it had.
    Clipped(String, usize),
}

/// Checks a description: the first unprintable character (with its 1-based position in
/// characters) is an error; a long one is clipped.
pub fn description(text: &str) -> Result<Description, (char, usize)> {
    if let Some((i, c)) = text.chars().enumerate().find(|(_, c)| is_unprintable(*c)) {
        return Err((c, i + 1));
    }
    let count = text.chars().count();
    Ok(if count > MAX_DESCRIPTION {
        Description::Clipped(text.chars().take(MAX_DESCRIPTION).collect(), count)
    } else {
        Description::Ok(text.to_string())
    })
}

/// How an unprintable character is named in a message: `newline (U+000A)`, `U+001B`.
pub fn name_of(c: char) -> String {
    let name = match c {
        '\n' => "a newline ",
        '\r' => "a carriage return ",
        '\t' => "a tab ",
        '\u{1b}' => "an escape character ",
        _ => "the control character ",
    };
    format!("{name}(U+{:04X})", c as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprintable_characters_are_shown_escaped() {
        assert_eq!(escape("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(escape("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(escape("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(escape("\u{9b}31m \u{7f} \u{202e}txt.exe"), "\\x9b31m \\x7f \\u{202e}txt.exe");
    }

    #[test]
    fn descriptions_are_one_printable_line_of_at_most_256_characters() {
        assert!(matches!(description("for the new rack"), Ok(Description::Ok(d)) if d == "for the new rack"));
        assert!(matches!(description("two\nlines"), Err(('\n', 4))));
        assert!(matches!(description("\x1b[31mred"), Err(('\u{1b}', 1))));
        let long = "é".repeat(300);
        match description(&long) {
            Ok(Description::Clipped(d, 300)) => assert_eq!(d.chars().count(), 256),
            _ => panic!("not clipped"),
        }
        assert!(matches!(description(&"x".repeat(256)), Ok(Description::Ok(_))));
        assert_eq!(name_of('\u{1b}'), "an escape character (U+001B)");
    }
}
