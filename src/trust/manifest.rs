//! The profile manifest (PROTOCOL 8.2): the `Cncop-Profile` header every 200
//! and 304 to a profile request carries, signed as role `profile` over the
//! header value's bytes, and what it allows: a 200 of a newer (or the same)
//! profile, of exactly `size` bytes hashing to `sha256`; a 304 that names
//! what is stored.

use crate::clock::{self, UnixTime};
use std::fmt;

/// The response header.
pub const HEADER: &str = "Cncop-Profile";
/// Longest header value accepted (a real one is about 150 bytes).
pub const MAX_LEN: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub device: String,
    pub version: u64,
    pub size: u64,
    pub sha256: [u8; 32],
    pub expires: UnixTime,
}

/// What the job store holds of the profile it was built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    pub version: u64,
    pub sha256: [u8; 32],
}

impl Manifest {
    /// Parses `device=.. version=.. size=.. sha256=.. expires=..`: fields
    /// separated by single spaces, each once; unknown fields are ignored.
    pub fn parse(value: &str) -> Result<Manifest, String> {
        if value.len() > MAX_LEN {
            return Err(format!("is longer than {MAX_LEN} bytes"));
        }
        let (mut device, mut version, mut size, mut sha256, mut expires) =
            (None, None, None, None, None);
        for field in value.split(' ') {
            let (name, v) = field.split_once('=').ok_or_else(|| {
                format!("has '{}', not name=value", crate::error::Shown::bare(field))
            })?;
            let slot = match name {
                "device" => &mut device,
                "version" => &mut version,
                "size" => &mut size,
                "sha256" => &mut sha256,
                "expires" => &mut expires,
                _ => continue,
            };
            if slot.replace(v).is_some() {
                return Err(format!("names {name} twice"));
            }
        }
        fn need<'v>(v: Option<&'v str>, name: &str) -> Result<&'v str, String> {
            v.ok_or_else(|| format!("has no {name}"))
        }
        let number = |v: &str, name: &str| {
            v.parse::<u64>()
                .ok()
                .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    format!(
                        "{name} '{}' is not a whole number",
                        crate::error::Shown::bare(v)
                    )
                })
        };
        let device = need(device, "device")?;
        if device.is_empty() || device.len() > 256 || !device.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "device '{}' is not a device id",
                crate::error::Shown::bare(device)
            ));
        }
        let version = number(need(version, "version")?, "version")?;
        let size = number(need(size, "size")?, "size")?;
        let hex = need(sha256, "sha256")?;
        let mut digest = [0; 32];
        if !super::hex_decode(&hex.to_ascii_lowercase(), &mut digest) {
            return Err(format!(
                "sha256 '{}' is not 64 hex digits",
                crate::error::Shown::bare(hex)
            ));
        }
        let when = need(expires, "expires")?;
        let expires = clock::parse_rfc3339(when).ok_or_else(|| {
            format!(
                "expires '{}' is not a UTC time",
                crate::error::Shown::bare(when)
            )
        })?;
        Ok(Manifest {
            device: device.to_string(),
            version,
            size,
            sha256: digest,
            expires,
        })
    }

    /// A 200's manifest against what is stored: the version never goes down,
    /// and the same version means the same bytes.
    pub fn allows_replacing(&self, stored: Option<&Stored>) -> Result<(), String> {
        match stored {
            Some(s) if self.version < s.version => Err(format!(
                "version {} is lower than the stored version {} (a rollback)",
                self.version, s.version
            )),
            Some(s) if self.version == s.version && self.sha256 != s.sha256 => Err(format!(
                "version {} is the stored version but its sha256 {} is not the stored {}",
                self.version,
                super::hex(&self.sha256),
                super::hex(&s.sha256)
            )),
            _ => Ok(()),
        }
    }

    /// A 304's manifest must name exactly what is stored.
    pub fn confirms(&self, stored: Option<&Stored>) -> Result<(), String> {
        match stored {
            None => Err("answers 304 but no signed profile is stored".to_string()),
            Some(s) if s.version != self.version || s.sha256 != self.sha256 => Err(format!(
                "304 names version {} sha256 {}, the store holds version {} sha256 {}",
                self.version,
                super::short_hex(&self.sha256),
                s.version,
                super::short_hex(&s.sha256)
            )),
            Some(_) => Ok(()),
        }
    }
}

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "version {}, {} bytes, sha256 {}, expires {}",
            self.version,
            self.size,
            super::short_hex(&self.sha256),
            clock::rfc3339(self.expires)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(version: u64) -> String {
        format!(
            "device=NAS-00042 version={version} size=444786 sha256={} expires=2026-11-28T07:00:00Z",
            "ab".repeat(32)
        )
    }

    #[test]
    fn parses_the_header() {
        let m = Manifest::parse(&value(1234)).expect("parse");
        assert_eq!(m.device, "NAS-00042");
        assert_eq!((m.version, m.size), (1234, 444_786));
        assert_eq!(m.sha256, [0xab; 32]);
        assert_eq!(clock::rfc3339(m.expires), "2026-11-28T07:00:00Z");
        assert!(Manifest::parse(&(value(1) + " future=x")).is_ok());
        for (bad, want) in [
            (value(1).replace("version=1", "version=-1"), "version '-1'"),
            (value(1) + " version=2", "twice"),
            (value(1).replace("device=NAS-00042 ", ""), "no device"),
            (value(1).replace("Z", ""), "expires"),
            (value(1).replace(" size", "  size"), "not name=value"),
            (value(1).replace(&"ab".repeat(32), "ab"), "64 hex"),
        ] {
            let err = Manifest::parse(&bad).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn versions_only_go_up_and_304s_name_the_store() {
        let m = Manifest::parse(&value(10)).expect("parse");
        let same = Stored {
            version: 10,
            sha256: m.sha256,
        };
        let other = Stored {
            version: 10,
            sha256: [1; 32],
        };
        let newer = Stored {
            version: 11,
            sha256: m.sha256,
        };
        assert!(m.allows_replacing(None).is_ok());
        assert!(m.allows_replacing(Some(&same)).is_ok());
        assert!(
            m.allows_replacing(Some(&Stored {
                version: 9,
                sha256: [1; 32]
            }))
            .is_ok()
        );
        assert!(
            m.allows_replacing(Some(&other))
                .unwrap_err()
                .contains("is the stored version")
        );
        assert!(
            m.allows_replacing(Some(&newer))
                .unwrap_err()
                .contains("rollback")
        );
        assert!(m.confirms(Some(&same)).is_ok());
        assert!(m.confirms(Some(&other)).is_err());
        assert!(m.confirms(Some(&newer)).is_err());
        assert!(m.confirms(None).is_err());
    }
}
