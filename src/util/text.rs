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

/// A string as the YAML scalar go-yaml (sigs.k8s.io/yaml, what client-go and `kubectl config
/// view` write with) emits for it in block context: plain where that reads back as the same
/// string, single-quoted where plain would be taken for YAML syntax (`a: b`, a leading `*`),
/// double-quoted where plain would read as another type (`""`, `true`, `no`, `1.5`, `0x1f`,
/// `~`) or the text holds characters a plain or single-quoted scalar cannot carry.
pub fn yaml_scalar(s: &str) -> String {
    if s.chars().any(|c| c.is_control() || c == '\u{feff}') || yaml_resolves_to_non_string(s) {
        return serde_json::to_string(s).unwrap_or_default();
    }
    if yaml_plain_allowed(s) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// go-yaml v2's `resolve`: whether a plain `s` reads as null, a boolean, a number or a merge key.
fn yaml_resolves_to_non_string(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "", "~", "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
        "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf",
        "-.INF", ".nan", ".NaN", ".NAN", "<<",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    if !s.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '-' | '+' | '.')) {
        return false;
    }
    let plain = s.replace('_', "");
    let unsigned = plain.strip_prefix(['-', '+']).unwrap_or(&plain);
    let digits = |t: &str, radix: u32| !t.is_empty() && t.chars().all(|c| c.is_digit(radix));
    // Integers (strconv.ParseInt with base 0: 0x, 0o, 0b, a leading 0 for octal) and 0b binary.
    let int = digits(unsigned, 10)
        || unsigned.strip_prefix("0x").or_else(|| unsigned.strip_prefix("0X")).is_some_and(|t| digits(t, 16))
        || unsigned.strip_prefix("0o").or_else(|| unsigned.strip_prefix("0O")).is_some_and(|t| digits(t, 8))
        || unsigned.strip_prefix("0b").or_else(|| unsigned.strip_prefix("0B")).is_some_and(|t| digits(t, 2));
    // Floats: ^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$ , and base-60 ones (1:30.5).
    let float = {
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
            None => (unsigned, None),
        };
        let mantissa_ok = match mantissa.split_once('.') {
            Some(("", frac)) => digits(frac, 10),
            Some((whole, frac)) => digits(whole, 10) && (frac.is_empty() || digits(frac, 10)),
            None => digits(mantissa, 10),
        };
        let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e), 10));
        mantissa_ok && exponent_ok
    };
    let base60 = {
        let t = s.strip_prefix(['-', '+']).unwrap_or(s);
        let (head, frac) = t.split_once('.').unwrap_or((t, ""));
        let mut parts = head.split(':');
        let first = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        head.contains(':')
            && first.starts_with(|c: char| c.is_ascii_digit())
            && first.chars().all(|c| c.is_ascii_digit() || c == '_')
            && rest.iter().all(|p| (1..=2).contains(&p.len()) && digits(p, 10) && (p.len() == 1 || p.as_bytes()[0] <= b'5'))
            && frac.chars().all(|c| c.is_ascii_digit() || c == '_')
    };
    int || float || base60
}

/// go-yaml's emitter (`yaml_emitter_analyze_scalar`): whether `s` may be written plain as a
/// block mapping value.
fn yaml_plain_allowed(s: &str) -> bool {
    if s.starts_with("---") || s.starts_with("...") {
        return false;
    }
    if s.starts_with([' ', '\t']) || s.ends_with([' ', '\t']) {
        return false;
    }
    let chars: Vec<char> = s.chars().collect();
    let blank_at = |i: usize| i >= chars.len() || matches!(chars[i], ' ' | '\t');
    for (i, &c) in chars.iter().enumerate() {
        let followed_by_blank = blank_at(i + 1);
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"' | '%' | '@' | '`' => return false,
                '?' | ':' | '-' if followed_by_blank => return false,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_blank => return false,
                '#' if matches!(chars[i - 1], ' ' | '\t') => return false,
                _ => {}
            }
        }
    }
    true
}

#[cfg(test)]
mod yaml_scalar_tests {
    use super::yaml_scalar;

    #[test]
    fn plain_where_go_yaml_writes_plain() {
        for s in [
            "kubernetes",
            "system:node:cp1",
            "https://10.0.0.1:6443",
            "/etc/kubernetes/pki/ca.crt",
            "abcdef.0123456789abcdef",
            "a b",
            "x-1",
        ] {
            assert_eq!(yaml_scalar(s), s);
        }
    }

    #[test]
    fn quoted_where_plain_would_change_it() {
        for (s, want) in [
            ("", "\"\""),
            ("yes", "\"yes\""),
            ("on", "\"on\""),
            ("null", "\"null\""),
            ("123456.0123456789012345", "\"123456.0123456789012345\""),
            ("0x1f", "\"0x1f\""),
            ("1e5", "\"1e5\""),
            ("1:30", "\"1:30\""),
            ("a: b", "'a: b'"),
            ("name:", "'name:'"),
            ("*x", "'*x'"),
            ("it's", "it's"),
            ("it's #1", "'it''s #1'"),
            ("a #b", "'a #b'"),
            ("- a", "'- a'"),
            (" a", "' a'"),
            ("a\nb", "\"a\\nb\""),
        ] {
            assert_eq!(yaml_scalar(s), want, "{s:?}");
        }
    }
}
