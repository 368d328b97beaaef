//! What the device keeps of signed metadata between runs (PROTOCOL 8.3), and
//! its encoding as the `trust` section of the agent's state file: the
//! trusted root's exact bytes, the highest timestamp and release versions
//! accepted, the release document, the highest software version announced.
//!
//! The encoding is versioned and length-prefixed; decoding is strict (any
//! surplus or shortfall is damage), and its bounds are the documents' own.

use super::document::MAX_METADATA_BYTES;

const MAGIC: &[u8; 4] = b"CNT1";
/// Longest software version text kept (the version parser's own limit).
const MAX_ANNOUNCED: usize = 64;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    /// The trusted root document, exactly as signed.
    pub root: Vec<u8>,
    /// 0: none accepted yet.
    pub timestamp: u64,
    /// 0: none accepted yet.
    pub release: u64,
    /// The accepted release document's bytes (empty: none).
    pub release_doc: Vec<u8>,
    /// The highest software version ever announced to ccs3updater.
    pub announced: Option<String>,
}

impl Kept {
    pub fn encode(&self) -> Vec<u8> {
        let announced = self.announced.as_deref().unwrap_or("");
        let mut out = Vec::with_capacity(40 + self.root.len() + self.release_doc.len());
        out.extend_from_slice(MAGIC);
        put_bytes(&mut out, &self.root);
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.extend_from_slice(&self.release.to_le_bytes());
        put_bytes(&mut out, &self.release_doc);
        put_bytes(&mut out, announced.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Kept, String> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err("the trust section has an unknown format".to_string());
        }
        let root = r.bytes(MAX_METADATA_BYTES)?.to_vec();
        let timestamp = r.u64()?;
        let release = r.u64()?;
        let release_doc = r.bytes(MAX_METADATA_BYTES)?.to_vec();
        let announced = r.bytes(MAX_ANNOUNCED)?;
        if !r.0.is_empty() {
            return Err("the trust section has bytes past its end".to_string());
        }
        let announced = std::str::from_utf8(announced)
            .map_err(|_| "the trust section's announced version is not text".to_string())?;
        if root.is_empty() {
            return Err("the trust section holds no root".to_string());
        }
        Ok(Kept {
            root,
            timestamp,
            release,
            release_doc,
            announced: (!announced.is_empty()).then(|| announced.to_string()),
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Every field is bounded far below 4 GiB.
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the trust section is cut short".to_string());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn bytes(&mut self, max: usize) -> Result<&'a [u8], String> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        let n = u32::from_le_bytes(b) as usize;
        if n > max {
            return Err("the trust section has a field over its limit".to_string());
        }
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let k = Kept {
            root: b"<root/>".to_vec(),
            timestamp: 912,
            release: 17,
            release_doc: b"<release/>".to_vec(),
            announced: Some("3.5.0".to_string()),
        };
        let bytes = k.encode();
        assert_eq!(Kept::decode(&bytes), Ok(k.clone()));
        let none = Kept {
            announced: None,
            ..k
        };
        assert_eq!(Kept::decode(&none.encode()), Ok(none));
        for cut in 0..bytes.len() {
            assert!(Kept::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut more = bytes.clone();
        more.push(0);
        assert!(Kept::decode(&more).is_err());
    }
}
