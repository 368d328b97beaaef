//! The release document (PROTOCOL 8.2): the software builds of every
//! platform, signed by the offline release keys.

use super::document;
use crate::clock::UnixTime;
use crate::profile::xml::StartTag;
use crate::update::Software;

/// Builds one release may list.
pub const MAX_ENTRIES: usize = 256;

/// `release/<M>.xml`, as messages name it.
pub fn name(version: u64) -> String {
    format!("release/{version}.xml")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub version: u64,
    pub expires: UnixTime,
    /// (platform, build), platforms distinct.
    pub entries: Vec<(String, Software)>,
}

impl Release {
    /// Parses the bytes of `release/<expected>.xml`.
    pub fn parse(expected: u64, bytes: &[u8]) -> Result<Release, String> {
        let doc = name(expected);
        let mut p = Parser::default();
        document::read_starts(&doc, bytes, |tag| match (tag.depth, tag.name) {
            (1, _) => {
                document::root_element(tag, "release", "the release document")?;
                p.head = Some((
                    document::version(tag, "version")?,
                    document::time(tag, "expires")?,
                ));
                Ok(())
            }
            (2, "software") => p.software(tag),
            _ => Ok(()),
        })?;
        let Some((version, expires)) = p.head else {
            return Err(format!("{doc} has no <release> element"));
        };
        Ok(Release {
            version,
            expires,
            entries: p.entries,
        })
    }

    /// The build for `platform`, if the release lists one.
    pub fn for_platform(&self, platform: &str) -> Option<&Software> {
        self.entries
            .iter()
            .find(|(p, _)| p == platform)
            .map(|(_, s)| s)
    }
}

#[derive(Default)]
struct Parser {
    head: Option<(u64, UnixTime)>,
    entries: Vec<(String, Software)>,
}

impl Parser {
    fn software(&mut self, tag: &StartTag<'_>) -> Result<(), String> {
        let platform = document::required(tag, "platform")?;
        let bad = |why: String| {
            format!(
                "<software platform=\"{}\">: {why}",
                crate::error::Shown::bare(platform)
            )
        };
        if self.entries.iter().any(|(p, _)| p == platform) {
            return Err(bad("the platform is listed twice".to_string()));
        }
        if self.entries.len() >= MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} <software> entries"));
        }
        let sw = Software::new(
            document::required(tag, "version")?,
            document::required(tag, "url")?,
            document::required(tag, "sha256")?,
            document::required(tag, "size")?,
        )
        .map_err(bad)?;
        self.entries.push((platform.to_string(), sw));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn xml(entries: &str) -> String {
        format!("<release version=\"17\" expires=\"2027-03-01T00:00:00Z\">\n{entries}</release>\n")
    }

    fn entry(platform: &str, version: &str) -> String {
        format!(
            "  <software platform=\"{platform}\" version=\"{version}\" url=\"https://dl.example.net/a?x=1&amp;y=2\" sha256=\"{HASH}\" size=\"1948368\"/>\n"
        )
    }

    #[test]
    fn parses_entries_by_platform() {
        let doc = xml(&(entry("armv7-unknown-linux-musleabihf", "3.5.0")
            + &entry("mips-unknown-linux-musl", "3.4.9")));
        let r = Release::parse(17, doc.as_bytes()).expect("parse");
        assert_eq!(r.version, 17);
        let sw = r.for_platform("mips-unknown-linux-musl").expect("mips");
        assert_eq!(sw.version.to_string(), "3.4.9");
        assert_eq!(sw.url, "https://dl.example.net/a?x=1&y=2");
        assert!(r.for_platform("x86_64-unknown-linux-gnu").is_none());
    }

    #[test]
    fn refuses_bad_entries_naming_the_platform() {
        for (doc, want) in [
            (
                xml(&(entry("a", "1.0") + &entry("a", "1.1"))),
                "listed twice",
            ),
            (xml(&entry("a", "1.x")), "platform=\"a\""),
            (
                xml(&entry("a", "1.0").replace("https://", "http://")),
                "https://",
            ),
            (
                xml(&entry("a", "1.0").replace("size=\"1948368\"", "size=\"-1\"")),
                "size",
            ),
        ] {
            let err = Release::parse(17, doc.as_bytes()).unwrap_err();
            assert!(
                err.contains(want) && err.starts_with("release/17.xml"),
                "{want}: {err}"
            );
        }
    }
}
