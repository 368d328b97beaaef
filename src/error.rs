//! The agent's one error type, and the one place that maps errors to the exit
//! codes of PROTOCOL section 7.
//!
//! Every message is one line a field technician can act on: it names the file,
//! the INI section and key, the job id and field, or the URL involved, and
//! never contains a secret.

use std::fmt;

/// Exit codes of PROTOCOL section 7.
pub mod exit {
    /// The run did what it was asked.
    pub const OK: u8 = 0;
    /// A bad command line or configuration ([`Error::Config`](crate::Error::Config)).
    pub const USAGE: u8 = 2;
    /// [`Error::Network`](crate::Error::Network).
    pub const NETWORK: u8 = 3;
    /// [`Error::Auth`](crate::Error::Auth).
    pub const AUTH: u8 = 4;
    /// [`Error::Profile`](crate::Error::Profile).
    pub const PROFILE: u8 = 5;
    /// [`Error::Store`](crate::Error::Store).
    pub const STORE: u8 = 6;
    /// [`Error::Locked`](crate::Error::Locked).
    pub const LOCKED: u8 = 7;
    /// `--status` only: no run has been recorded (PROTOCOL 7 is silent;
    /// the next free code).
    pub const NO_RUN_RECORDED: u8 = 8;
}

/// Why something failed, as one line a field technician can act on (its
/// `Display`), in the category that decides the exit code.
#[derive(Debug)]
pub enum Error {
    /// A missing or bad configuration file, section, key or value, or a file
    /// the configuration names that cannot be used.
    Config(Reason),
    /// The cncop network could not be reached, TLS failed, or it kept failing.
    Network(Reason),
    /// The network refused this device (401, 403, 404).
    Auth(Reason),
    /// The profile was refused: not well-formed, wrong shape, wrong device or
    /// schema, over a limit.
    Profile(Reason),
    /// The local job store, lock or spool could not be read or written.
    Store(Reason),
    /// Another run holds the lock.
    Locked(Reason),
}

impl Error {
    /// The message without its category, for a file that is not what the
    /// category names (the run record is neither configuration nor store).
    pub fn detail(&self) -> &str {
        self.reason().as_str()
    }

    /// The message and cause, whatever the category.
    fn reason(&self) -> &Reason {
        match self {
            Error::Config(r)
            | Error::Network(r)
            | Error::Auth(r)
            | Error::Profile(r)
            | Error::Store(r)
            | Error::Locked(r) => r,
        }
    }

    /// The process exit code for this error ([`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            // A bad command line never reaches the library: main.rs
            // answers it with the usage line and this same code.
            Error::Config(_) => exit::USAGE,
            Error::Network(_) => exit::NETWORK,
            Error::Auth(_) => exit::AUTH,
            Error::Profile(_) => exit::PROFILE,
            Error::Store(_) => exit::STORE,
            Error::Locked(_) => exit::LOCKED,
        }
    }

    /// Turns an error met while reading the profile body back into the agent's
    /// error: the body reader wraps its own refusals (such as an oversized
    /// body) as `io::Error::other(Error)`; anything else is the network's.
    pub fn from_body_read(err: std::io::Error) -> Error {
        if err.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            if let Some(Ok(inner)) = err.into_inner().map(|b| b.downcast::<Error>()) {
                return *inner;
            }
            return Error::Network("profile download failed".into());
        }
        Error::Network(format!("profile download interrupted: {err}").into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, msg) = match self {
            Error::Config(m) => ("configuration error", m),
            Error::Network(m) => ("network error", m),
            Error::Auth(m) => ("refused by the cncop network", m),
            Error::Profile(m) => ("profile rejected", m),
            Error::Store(m) => ("job store error", m),
            Error::Locked(m) => ("already running", m),
        };
        write!(f, "{what}: {msg}")
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let cause = self.reason().cause.as_deref()?;
        Some(cause)
    }
}

/// The lower-level error behind a [`Reason`]: an I/O, redb or TLS error.
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An [`Error`]'s message (its one line, without the category) and the
/// lower-level error it came from, if any. The cause is kept only for
/// [`std::error::Error::source`]: the message already says what the
/// technician needs, so the cause never changes what is shown.
pub struct Reason {
    text: String,
    cause: Option<Cause>,
}

impl Reason {
    /// A message with the lower-level error that caused it.
    pub(crate) fn caused_by(text: impl Into<String>, cause: impl Into<Cause>) -> Reason {
        Reason {
            text: text.into(),
            cause: Some(cause.into()),
        }
    }

    /// The message.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl From<String> for Reason {
    fn from(text: String) -> Reason {
        Reason { text, cause: None }
    }
}

impl From<&str> for Reason {
    fn from(text: &str) -> Reason {
        Reason::from(text.to_string())
    }
}

impl std::ops::Deref for Reason {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

// Shows the cause's Debug too: the causes are I/O, redb and TLS errors,
// which hold no secret.
impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(cause) => write!(f, "{:?} (cause: {cause:?})", self.text),
            None => write!(f, "{:?}", self.text),
        }
    }
}

/// A result whose error is the agent's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// A short reason for an I/O error, without the "(os error N)" noise.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

/// A value from the network, a file or the command line as it goes into a
/// message, the one way every message shows one: a single line (control
/// characters escaped) and at most 64 characters. Quoted, it is a Rust string
/// literal (`"NAS 42"`, a cut one `"NAS..."... (300 bytes)`); bare, for a
/// name between `<` and `>` or a key id, it is the characters themselves.
#[cfg_attr(not(feature = "agent"), allow(dead_code))] // the store reader shows no values
pub(crate) struct Shown<'a> {
    text: &'a str,
    quoted: bool,
}

#[cfg_attr(not(feature = "agent"), allow(dead_code))]
impl<'a> Shown<'a> {
    pub(crate) fn quoted(text: &'a str) -> Shown<'a> {
        Shown { text, quoted: true }
    }

    pub(crate) fn bare(text: &'a str) -> Shown<'a> {
        Shown {
            text,
            quoted: false,
        }
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 64;
        let cut = self.text.char_indices().nth(MAX).map(|(i, _)| i);
        let head = self
            .text
            .get(..cut.unwrap_or(self.text.len()))
            .unwrap_or_default();
        if self.quoted {
            write!(f, "{head:?}")?;
            if cut.is_some() {
                write!(f, "... ({} bytes)", self.text.len())?;
            }
            return Ok(());
        }
        for c in head.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        if cut.is_some() {
            f.write_str("...")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_messages_are_one_short_line() {
        assert_eq!(Shown::quoted("NAS \"42\"").to_string(), r#""NAS \"42\"""#);
        assert_eq!(Shown::bare("a\nb").to_string(), r"a\nb");
        let long = "é".repeat(100);
        let quoted = Shown::quoted(&long).to_string();
        assert!(quoted.ends_with("... (200 bytes)"), "{quoted}");
        assert_eq!(quoted.chars().filter(|&c| c == 'é').count(), 64);
        let bare = Shown::bare(&long).to_string();
        assert_eq!(bare, format!("{}...", "é".repeat(64)));
    }

    #[test]
    fn body_read_errors_keep_the_agent_error_inside() {
        let io = std::io::Error::other(Error::Profile("larger than 10 bytes".into()));
        assert_eq!(Error::from_body_read(io).exit_code(), exit::PROFILE);
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        assert_eq!(Error::from_body_read(io).exit_code(), exit::NETWORK);
    }
}
