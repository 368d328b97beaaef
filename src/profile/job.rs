//! The profile's data model: one backup job, one firewall endpoint, the
//! document header, and the limits of PROTOCOL section 2.1.
//!
//! Invariant kept here: a value of these types is always within the protocol
//! limits. Scalar fields live in fixed-capacity `heapless` strings, so a job
//! never allocates per field; repeated children (sources, excludes, emails,
//! options) live in one reusable arena whose size the limits bound, so memory
//! does not grow with the number of jobs in a profile.

use heapless::String as HString;

/// Bytes of a `path`, `pattern`, `pre`/`post` command or option `value`.
pub const MAX_LONG: usize = 4096;
/// Bytes of any other value.
pub const MAX_VALUE: usize = 256;
/// Bytes of a job `id`.
pub const MAX_ID: usize = 64;
/// Characters of a job `name` (UTF-8, so up to four bytes each).
pub const MAX_NAME_CHARS: usize = 128;
/// Bytes a name of `MAX_NAME_CHARS` characters can take.
pub const MAX_NAME_BYTES: usize = MAX_NAME_CHARS * 4;
/// Sources, excludes, emails or options per job (each counted separately).
pub const MAX_CHILDREN: usize = 256;
/// Jobs per profile.
pub const MAX_JOBS: usize = 100_000;
/// Element nesting depth, unknown elements included.
pub const MAX_DEPTH: usize = 32;
/// Highest `job/@retries`.
pub const MAX_RETRIES: u8 = 99;
/// The only profile schema this agent speaks.
pub const SCHEMA: &str = "3";

pub type Id = HString<MAX_ID>;
pub type Name = HString<MAX_NAME_BYTES>;
pub type Value = HString<MAX_VALUE>;
pub type LongValue = HString<MAX_LONG>;

/// A job's `type`, what it backs up or through what. The discriminants are
/// the store's one-byte codes: they reach the disk, so a new type takes the
/// next free number, never a place in the alphabet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum JobType {
    /// `CCS`
    Ccs = 0,
    /// `CIFS`
    Cifs = 1,
    /// `FTP`
    Ftp = 2,
    /// `FTPS`
    Ftps = 3,
    /// `MSSQL`
    Mssql = 4,
    /// `SFTP`
    Sftp = 5,
    /// `RSYNC`
    Rsync = 6,
    /// `WIMG`
    Wimg = 7,
}

impl JobType {
    /// Every type, in the order of their codes.
    pub const ALL: [JobType; 8] = [
        JobType::Ccs,
        JobType::Cifs,
        JobType::Ftp,
        JobType::Ftps,
        JobType::Mssql,
        JobType::Sftp,
        JobType::Rsync,
        JobType::Wimg,
    ];

    /// The type as the profile writes it (`"CCS"`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Ccs => "CCS",
            JobType::Cifs => "CIFS",
            JobType::Ftp => "FTP",
            JobType::Ftps => "FTPS",
            JobType::Mssql => "MSSQL",
            JobType::Sftp => "SFTP",
            JobType::Rsync => "RSYNC",
            JobType::Wimg => "WIMG",
        }
    }

    /// The type the profile writes as `s`, if it is one.
    pub fn parse(s: &str) -> Option<JobType> {
        JobType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Stable one-byte code used by the store's record format.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The type whose store code is `code`.
    pub fn from_code(code: u8) -> Option<JobType> {
        JobType::ALL.into_iter().find(|t| t.code() == code)
    }
}

/// When an `email` child is sent a report (`email/@when`). The
/// discriminants are the store's one-byte codes (see `JobType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EmailWhen {
    /// After every run of the job.
    Always = 0,
    /// After a failed run.
    Error = 1,
    /// Never.
    Never = 2,
}

impl EmailWhen {
    /// The value as the profile writes it (`"always"`).
    pub fn as_str(self) -> &'static str {
        match self {
            EmailWhen::Always => "always",
            EmailWhen::Error => "error",
            EmailWhen::Never => "never",
        }
    }

    /// The value the profile writes as `s`, if it is one.
    pub fn parse(s: &str) -> Option<EmailWhen> {
        [EmailWhen::Always, EmailWhen::Error, EmailWhen::Never]
            .into_iter()
            .find(|w| w.as_str() == s)
    }

    /// Stable one-byte code used by the store's record format.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The value whose store code is `code`.
    pub fn from_code(code: u8) -> Option<EmailWhen> {
        [EmailWhen::Always, EmailWhen::Error, EmailWhen::Never]
            .into_iter()
            .find(|w| w.code() == code)
    }
}

/// A job's `target`: where the job's data goes or comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// A host name or address, never empty.
    pub host: Value,
    /// 1 to 65535.
    pub port: u16,
    /// The user to log in as, when the profile names one.
    pub user: Option<Value>,
}

/// `credential/@password` is a secret: `Debug` never prints it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credential {
    /// The user name.
    pub user: Value,
    /// The password, as sent: a secret, never to be logged.
    pub password: Value,
}

impl core::fmt::Debug for Credential {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Credential")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// The kinds of repeated child a job has, each kept in document order. The
/// discriminants are the arena's (and so the store's) one-byte codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ChildKind {
    /// `<source path>`
    Source = 0,
    /// `<exclude pattern>`
    Exclude = 1,
    /// `<email to when>`
    Email = 2,
    /// `<option name value>`
    Option = 3,
}

impl ChildKind {
    /// Every kind, in the order of their codes.
    pub const ALL: [ChildKind; 4] = [
        ChildKind::Source,
        ChildKind::Exclude,
        ChildKind::Email,
        ChildKind::Option,
    ];

    /// The child's element name.
    pub fn element(self) -> &'static str {
        match self {
            ChildKind::Source => "source",
            ChildKind::Exclude => "exclude",
            ChildKind::Email => "email",
            ChildKind::Option => "option",
        }
    }

    fn from_code(code: u8) -> Option<ChildKind> {
        ChildKind::ALL.into_iter().find(|k| *k as u8 == code)
    }
}

/// One repeated child. `Email` and `Option` have two parts; the others one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Child<'a> {
    /// A path to back up (`source/@path`).
    Source(&'a str),
    /// A pattern of paths to leave out (`exclude/@pattern`).
    Exclude(&'a str),
    /// A report's recipient.
    Email {
        /// The address (`email/@to`).
        to: &'a str,
        /// When it is sent (`email/@when`).
        when: EmailWhen,
    },
    /// A job-type-specific setting.
    Option {
        /// `option/@name`
        name: &'a str,
        /// `option/@value`, possibly empty.
        value: &'a str,
    },
}

impl Child<'_> {
    /// Which kind of child this is.
    pub fn kind(&self) -> ChildKind {
        match self {
            Child::Source(_) => ChildKind::Source,
            Child::Exclude(_) => ChildKind::Exclude,
            Child::Email { .. } => ChildKind::Email,
            Child::Option { .. } => ChildKind::Option,
        }
    }
}

/// The repeated children of one job, in document order, in one arena.
///
/// Arena format (also the tail of the store's record, so it must stay
/// byte-order independent): per child, one kind byte, then one or two strings,
/// each a little-endian `u16` length and UTF-8 bytes; an email's `when` is one
/// byte after its address. Lengths fit `u16` because every string is at most
/// `MAX_LONG` bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Children {
    bytes: Vec<u8>,
    counts: [u16; 4],
}

impl core::fmt::Debug for Children {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A child could not be added: the job already has `MAX_CHILDREN` of its kind,
/// or a string is longer than its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildError {
    TooMany(ChildKind),
    TooLong { kind: ChildKind, limit: usize },
}

impl Children {
    /// No children.
    pub fn new() -> Children {
        Children::default()
    }

    /// Empties the arena but keeps its capacity, so parsing the next job does
    /// not allocate again.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.counts = [0; 4];
    }

    /// How many children of `kind` the job has.
    pub fn count(&self, kind: ChildKind) -> usize {
        usize::from(self.counts[kind as usize])
    }

    /// Adds a child after the others of its kind, within the protocol's
    /// limits of count and length.
    pub fn push(&mut self, child: Child<'_>) -> Result<(), ChildError> {
        let kind = child.kind();
        if self.count(kind) >= MAX_CHILDREN {
            return Err(ChildError::TooMany(kind));
        }
        let (first, second, when) = match child {
            Child::Source(p) | Child::Exclude(p) => (p, None, None),
            Child::Email { to, when } => (to, None, Some(when)),
            Child::Option { name, value } => (name, Some(value), None),
        };
        let first_limit = match kind {
            ChildKind::Source | ChildKind::Exclude => MAX_LONG,
            ChildKind::Email | ChildKind::Option => MAX_VALUE,
        };
        if first.len() > first_limit {
            return Err(ChildError::TooLong {
                kind,
                limit: first_limit,
            });
        }
        if second.is_some_and(|v| v.len() > MAX_LONG) {
            return Err(ChildError::TooLong {
                kind,
                limit: MAX_LONG,
            });
        }
        self.bytes.push(kind as u8);
        put_str(&mut self.bytes, first);
        if let Some(v) = second {
            put_str(&mut self.bytes, v);
        }
        if let Some(w) = when {
            self.bytes.push(w.code());
        }
        self.counts[kind as usize] += 1;
        Ok(())
    }

    /// The arena's bytes, for the store's record.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Rebuilds the arena from bytes written by `as_bytes`, checking every
    /// length, code and limit; `None` if the bytes are not such an arena.
    pub fn from_bytes(bytes: &[u8]) -> Option<Children> {
        let mut children = Children::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            children.push(take_child(&mut rest)?).ok()?;
        }
        Some(children)
    }

    /// Every child in document order.
    pub fn iter(&self) -> ChildIter<'_> {
        ChildIter { rest: &self.bytes }
    }

    /// The `source/@path` values, in document order.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.iter().filter_map(|c| match c {
            Child::Source(p) => Some(p),
            _ => None,
        })
    }

    /// The `exclude/@pattern` values, in document order.
    pub fn excludes(&self) -> impl Iterator<Item = &str> {
        self.iter().filter_map(|c| match c {
            Child::Exclude(p) => Some(p),
            _ => None,
        })
    }

    /// The `email` children (`to`, `when`), in document order.
    pub fn emails(&self) -> impl Iterator<Item = (&str, EmailWhen)> {
        self.iter().filter_map(|c| match c {
            Child::Email { to, when } => Some((to, when)),
            _ => None,
        })
    }

    /// The `option` children (`name`, `value`), in document order.
    pub fn options(&self) -> impl Iterator<Item = (&str, &str)> {
        self.iter().filter_map(|c| match c {
            Child::Option { name, value } => Some((name, value)),
            _ => None,
        })
    }
}

/// Appends `s` as a little-endian `u16` length and its bytes (the string
/// encoding of the arena and of the store's records).
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    // Callers keep to the protocol limits; MAX_LONG < u16::MAX.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// Takes a string written by `put_str` off the front of `rest`.
pub(crate) fn take_str<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let (len, tail) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len));
    if tail.len() < len {
        return None;
    }
    let (s, tail) = tail.split_at(len);
    *rest = tail;
    core::str::from_utf8(s).ok()
}

pub struct ChildIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for ChildIter<'a> {
    type Item = Child<'a>;

    fn next(&mut self) -> Option<Child<'a>> {
        // The arena was written by `push` or checked by `from_bytes`, so a
        // malformed entry cannot occur; stopping is the safe answer if it did.
        take_child(&mut self.rest)
    }
}

/// Decodes the child at the front of `rest` and advances past it.
fn take_child<'a>(rest: &mut &'a [u8]) -> Option<Child<'a>> {
    let (&code, tail) = rest.split_first()?;
    let mut cur = tail;
    let first = take_str(&mut cur)?;
    let child = match ChildKind::from_code(code)? {
        ChildKind::Source => Child::Source(first),
        ChildKind::Exclude => Child::Exclude(first),
        ChildKind::Email => {
            let (&w, tail) = cur.split_first()?;
            cur = tail;
            Child::Email {
                to: first,
                when: EmailWhen::from_code(w)?,
            }
        }
        ChildKind::Option => Child::Option {
            name: first,
            value: take_str(&mut cur)?,
        },
    };
    *rest = cur;
    Some(child)
}

/// `job/@id`: 1 to `MAX_ID` characters of `A-Za-z0-9._-`.
pub fn valid_id(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `job/@name`: 1 to `MAX_NAME_CHARS` characters (its bytes are bounded by
/// the type).
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.chars().count())
}

/// The fields of a cron `schedule`; a valid one has 5 or 6. Fields are runs
/// of bytes between white space (ASCII, so never inside a character):
/// counted bytewise, not by `split` over characters, which cost a profile
/// byte about one instruction.
pub fn schedule_fields(schedule: &str) -> usize {
    let mut fields = 0;
    let mut in_field = false;
    for b in schedule.bytes() {
        let space = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        fields += usize::from(!space && !in_field);
        in_field = !space;
    }
    fields
}

/// One backup job of the profile, every field of PROTOCOL 2.1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// Unique in the profile: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    pub id: Id,
    /// 1 to 128 characters.
    pub name: Name,
    /// `type`.
    pub job_type: JobType,
    /// `enabled="yes"` (the default) or `"no"`.
    pub enabled: bool,
    /// A cron schedule of 5 or 6 fields, kept as text; empty when absent.
    pub schedule: Value,
    /// 0 (the default) to 99.
    pub retries: u8,
    /// At most one `target`.
    pub target: Option<Target>,
    /// At most one `credential`.
    pub credential: Option<Credential>,
    /// The `pre` command, run before the job.
    pub pre: Option<LongValue>,
    /// The `post` command, run after the job.
    pub post: Option<LongValue>,
    /// The repeated children: sources, excludes, emails, options.
    pub children: Children,
}

impl Default for Job {
    fn default() -> Job {
        Job {
            id: Id::new(),
            name: Name::new(),
            job_type: JobType::Ccs,
            enabled: true,
            schedule: Value::new(),
            retries: 0,
            target: None,
            credential: None,
            pre: None,
            post: None,
            children: Children::new(),
        }
    }
}

impl Job {
    /// Resets every field to its default, keeping the arena's capacity.
    pub fn clear(&mut self) {
        self.id.clear();
        self.name.clear();
        self.job_type = JobType::Ccs;
        self.enabled = true;
        self.schedule.clear();
        self.retries = 0;
        self.target = None;
        self.credential = None;
        self.pre = None;
        self.post = None;
        self.children.clear();
    }
}

/// One `firewall/endpoint` of the profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// A host name or address, never empty.
    pub host: Value,
    /// 1 to 65535.
    pub port: u16,
    /// `tcp` unless the profile says otherwise.
    pub proto: Value,
    /// What the endpoint is for (`prime`), possibly empty.
    pub purpose: Value,
}

/// The root element's attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub device: Value,
    pub generated: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_fields_are_runs_between_white_space() {
        for (schedule, fields) in [
            ("", 0),
            (" \t\r\n", 0),
            ("0 30 1 * * *", 6),
            ("  0\t30\r\n1 *  * ", 5),
            ("\u{e9}\u{3000}x y", 2),
            ("*", 1),
        ] {
            let by_split = schedule
                .split([' ', '\t', '\n', '\r'])
                .filter(|f| !f.is_empty())
                .count();
            assert_eq!(schedule_fields(schedule), fields, "{schedule:?}");
            assert_eq!(by_split, fields, "{schedule:?}");
        }
    }

    #[test]
    fn children_round_trip_through_bytes_in_document_order() {
        let mut c = Children::new();
        c.push(Child::Source("/share/A")).unwrap();
        c.push(Child::Option {
            name: "chunksize",
            value: "10M",
        })
        .unwrap();
        c.push(Child::Email {
            to: "ops@example.com",
            when: EmailWhen::Error,
        })
        .unwrap();
        c.push(Child::Source("/share/HR & Payroll")).unwrap();
        let back = Children::from_bytes(c.as_bytes()).unwrap();
        assert_eq!(back, c);
        assert_eq!(
            back.sources().collect::<Vec<_>>(),
            ["/share/A", "/share/HR & Payroll"]
        );
        assert_eq!(back.count(ChildKind::Source), 2);
        assert_eq!(back.iter().count(), 4);
    }

    #[test]
    fn children_refuse_more_than_the_limit_and_overlong_values() {
        let mut c = Children::new();
        for _ in 0..MAX_CHILDREN {
            c.push(Child::Exclude("*.tmp")).unwrap();
        }
        assert_eq!(
            c.push(Child::Exclude("*.bak")),
            Err(ChildError::TooMany(ChildKind::Exclude))
        );
        let long = "x".repeat(MAX_LONG + 1);
        assert!(matches!(
            c.push(Child::Source(&long)),
            Err(ChildError::TooLong { .. })
        ));
    }

    #[test]
    fn children_from_bytes_rejects_garbage() {
        assert!(Children::from_bytes(&[9, 0, 0]).is_none());
        assert!(Children::from_bytes(&[0, 5, 0, b'a']).is_none());
        assert!(Children::from_bytes(&[2, 1, 0, b'a', 7]).is_none());
    }

    #[test]
    fn codes_that_reach_the_disk_are_pinned() {
        // Stored records carry these numbers: changing one silently remaps
        // every store on every appliance. Add, never renumber.
        let types: Vec<(&str, u8)> = JobType::ALL
            .iter()
            .map(|t| (t.as_str(), t.code()))
            .collect();
        assert_eq!(
            types,
            [
                ("CCS", 0),
                ("CIFS", 1),
                ("FTP", 2),
                ("FTPS", 3),
                ("MSSQL", 4),
                ("SFTP", 5),
                ("RSYNC", 6),
                ("WIMG", 7)
            ]
        );
        for t in JobType::ALL {
            assert_eq!(JobType::from_code(t.code()), Some(t));
        }
        assert_eq!(JobType::from_code(8), None);
        let whens = [EmailWhen::Always, EmailWhen::Error, EmailWhen::Never];
        let codes: Vec<(&str, u8)> = whens.iter().map(|w| (w.as_str(), w.code())).collect();
        assert_eq!(codes, [("always", 0), ("error", 1), ("never", 2)]);
        for w in whens {
            assert_eq!(EmailWhen::from_code(w.code()), Some(w));
        }
        assert_eq!(EmailWhen::from_code(3), None);
        let kinds: Vec<(&str, u8)> = ChildKind::ALL
            .iter()
            .map(|k| (k.element(), *k as u8))
            .collect();
        assert_eq!(
            kinds,
            [("source", 0), ("exclude", 1), ("email", 2), ("option", 3)]
        );
        for k in ChildKind::ALL {
            assert_eq!(ChildKind::from_code(k as u8), Some(k));
        }
        assert_eq!(ChildKind::from_code(4), None);
    }

    #[test]
    fn credential_debug_hides_the_password() {
        let mut cred = Credential::default();
        cred.password.push_str("s3cr<t").unwrap();
        assert!(!format!("{cred:?}").contains("s3cr"));
    }
}
