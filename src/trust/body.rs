//! The signed profile body: hashed while it streams (memory stays flat),
//! read up to the manifest's `size` (plus one byte, to tell a longer body),
//! and refused, as a read error the parser passes on, unless it is exactly
//! `size` bytes that hash to the manifest's `sha256`. The parser only sees the end of the body after the
//! digest matched, so a mismatch fails the store's replace before it commits.

use super::manifest::Manifest;
use crate::error::Error;
use ring::digest::{Context, SHA256};
use std::io::{self, Read};

pub struct CheckedBody<R> {
    inner: R,
    size: u64,
    sha256: [u8; 32],
    version: u64,
    read: u64,
    digest: Option<Context>,
}

impl<R: Read> CheckedBody<R> {
    pub fn new(inner: R, manifest: &Manifest) -> CheckedBody<R> {
        CheckedBody {
            inner,
            size: manifest.size,
            sha256: manifest.sha256,
            version: manifest.version,
            read: 0,
            digest: Some(Context::new(&SHA256)),
        }
    }

    fn refuse(&self, why: String) -> io::Error {
        io::Error::other(Error::Profile(format!(
            "the profile body does not match its signed manifest (version {}): {why}; the store keeps the previous profile",
            self.version
        ).into()))
    }
}

impl<R: Read> Read for CheckedBody<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read == self.size {
            // One byte more tells a body longer than signed; reading stops
            // there, so an endless body costs `size + 1` bytes.
            return match self.digest.take() {
                None => Ok(0),
                Some(_) if self.inner.read(&mut [0u8; 1])? > 0 => Err(self.refuse(format!(
                    "it is longer than the {} bytes the manifest says",
                    self.size
                ))),
                Some(ctx) => {
                    let got = ctx.finish();
                    if got.as_ref() == self.sha256 {
                        Ok(0)
                    } else {
                        Err(self.refuse(format!(
                            "its {} bytes have sha256 {}, the manifest says {}",
                            self.size,
                            super::short_hex(got.as_ref()),
                            super::short_hex(&self.sha256)
                        )))
                    }
                }
            };
        }
        let room = usize::try_from(self.size - self.read).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 && want > 0 {
            return Err(self.refuse(format!(
                "it ended after {} bytes, the manifest says {}",
                self.read, self.size
            )));
        }
        if let Some(ctx) = self.digest.as_mut() {
            ctx.update(&buf[..n]);
        }
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(body: &[u8]) -> Manifest {
        let mut sha256 = [0; 32];
        sha256.copy_from_slice(ring::digest::digest(&SHA256, body).as_ref());
        Manifest {
            device: "d".to_string(),
            version: 1,
            size: body.len() as u64,
            sha256,
            expires: 0,
        }
    }

    fn read_all(body: &[u8], m: &Manifest) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        CheckedBody::new(body, m)
            .read_to_end(&mut out)
            .map(|_| out)
            .map_err(Error::from_body_read)
    }

    #[test]
    fn exact_bytes_pass_others_are_refused() {
        let body = b"<profile/>";
        let m = manifest(body);
        assert_eq!(read_all(body, &m).expect("ok"), body);
        let mut longer = body.to_vec();
        longer.extend_from_slice(b"<!-- more -->");
        let long = read_all(&longer, &m).unwrap_err();
        assert!(
            long.to_string().contains("longer than the 10 bytes"),
            "{long}"
        );
        let short = read_all(&body[..5], &m).unwrap_err();
        assert!(short.to_string().contains("ended after 5 bytes"), "{short}");
        assert_eq!(short.exit_code(), crate::error::exit::PROFILE);
        let bad = read_all(b"<profile >", &m).unwrap_err();
        assert!(bad.to_string().contains("sha256"), "{bad}");
    }
}
