//! Machine-readable output (`-o json`) shared by every command that has it (`generate`, `verify`,
//! `token list`, and `certs check-expiration`'s `-o json|yaml`): one JSON object per run that
//! opens with `apiVersion` (this module's `API_VERSION`, the same for every command) and the
//! report's `kind`, then the report's own keys in camelCase. README "Machine-readable output"
//! documents each kind; fields are only ever added, never renamed or removed, under one
//! `apiVersion`. Nothing here prints: the CLI writes the text to standard output alone.

use serde::Serialize;

/// `apiVersion` of every report.
pub const API_VERSION: &str = "kubebundle.dev/v1alpha1";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a, T: Serialize> {
    api_version: &'static str,
    kind: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

/// `body` as one indented JSON object of kind `kind`, ending with a newline.
pub fn json<T: Serialize>(kind: &str, body: &T) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&Envelope { api_version: API_VERSION, kind, body }).map(|s| s + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_comes_first_and_the_body_follows_flat() {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            some_field: u32,
        }
        let text = json("Thing", &Body { some_field: 3 }).unwrap();
        assert!(text.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["kind"], "Thing");
        assert_eq!(v["someField"], 3);
        assert!(text.find("apiVersion").unwrap() < text.find("someField").unwrap());
    }
}
