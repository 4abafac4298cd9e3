//! Small shared helpers below every subsystem: Go durations, Kubernetes versions, text
//! escaping and one-line descriptions, and I/O errors in plain words.

pub mod duration;
pub mod report;
pub mod text;
pub mod version;

/// An I/O error in plain words, for messages: "no such file or directory", "permission denied"
/// (never the library's "(os error 2)").
pub fn io_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let words = match e.kind() {
        K::NotFound => "no such file or directory",
        K::PermissionDenied => "permission denied",
        K::AlreadyExists => "it already exists",
        K::IsADirectory => "it is a directory, not a file",
        K::NotADirectory => "a part of the path is not a directory",
        K::BrokenPipe => "the reader went away (broken pipe)",
        K::StorageFull => "no space left on the device",
        K::ReadOnlyFilesystem => "the file system is read-only",
        K::InvalidData => "it is not UTF-8 text",
        K::UnexpectedEof => "it ended early",
        K::QuotaExceeded => "the disk quota is exceeded",
        K::FileTooLarge => "the file is too large",
        K::TooManyLinks => "too many links",
        K::InvalidFilename => "the file name is too long or invalid",
        K::Interrupted => "interrupted",
        _ => "",
    };
    if !words.is_empty() {
        return words.to_string();
    }
    // Anything else: the system's words without the "(os error N)" suffix.
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn io_errors_in_plain_words() {
        let e = std::fs::read("/nonexistent/kubebundle-io-words").unwrap_err();
        assert_eq!(super::io_words(&e), "no such file or directory");
        let e = std::io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(super::io_words(&e), "input/output error");
    }
}
