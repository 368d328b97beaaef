//! The timestamp document (PROTOCOL 8.2): the current release's version,
//! size and digest, under a short expiry (it is what stops a freeze).

use super::document;
use crate::clock::UnixTime;

pub const NAME: &str = "timestamp.xml";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timestamp {
    pub version: u64,
    pub expires: UnixTime,
    pub release_version: u64,
    pub release_sha256: [u8; 32],
    /// At most `document::MAX_METADATA_BYTES`.
    pub release_size: u64,
}

impl Timestamp {
    pub fn parse(bytes: &[u8]) -> Result<Timestamp, String> {
        let mut head = None;
        let mut release = None;
        document::read_starts(NAME, bytes, |tag| {
            match (tag.depth, tag.name) {
                (1, _) => {
                    document::root_element(tag, "timestamp", NAME)?;
                    head = Some((
                        document::version(tag, "version")?,
                        document::time(tag, "expires")?,
                    ));
                }
                (2, "release") => {
                    if release.is_some() {
                        return Err("<release> appears twice".to_string());
                    }
                    let version = document::version(tag, "version")?;
                    let sha = document::sha256(tag, "sha256")?;
                    let size = document::size(tag, "size")?;
                    if size == 0 || size > document::MAX_METADATA_BYTES as u64 {
                        return Err(format!(
                            "<release> size {size} is not from 1 to {} bytes",
                            document::MAX_METADATA_BYTES
                        ));
                    }
                    release = Some((version, sha, size));
                }
                _ => {}
            }
            Ok(())
        })?;
        let (Some((version, expires)), Some((rv, sha, size))) = (head, release) else {
            return Err(format!("{NAME} names no <release>"));
        };
        Ok(Timestamp {
            version,
            expires,
            release_version: rv,
            release_sha256: sha,
            release_size: size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let sha = "ab".repeat(32);
        let xml = format!(
            "<timestamp version=\"912\" expires=\"2026-11-28T07:00:00Z\">\n  <release version=\"17\" sha256=\"{sha}\" size=\"2310\"/>\n</timestamp>\n"
        );
        let t = Timestamp::parse(xml.as_bytes()).expect("parse");
        assert_eq!(
            (t.version, t.release_version, t.release_size),
            (912, 17, 2310)
        );
        assert_eq!(t.release_sha256, [0xab; 32]);
        for (bad, want) in [
            (
                xml.replace("size=\"2310\"", "size=\"70000\""),
                "not from 1 to",
            ),
            (xml.replace(&sha, "ab"), "not 64 hex"),
            (xml.replace("<release ", "<other "), "names no <release>"),
            (
                xml.replace(
                    "</timestamp>",
                    &format!("<release version=\"1\" sha256=\"{sha}\" size=\"1\"/></timestamp>"),
                ),
                "appears twice",
            ),
        ] {
            let err = Timestamp::parse(bad.as_bytes()).unwrap_err();
            assert!(err.contains(want) && err.starts_with(NAME), "{want}: {err}");
        }
    }
}
