//! Profile parsing: turns the profile body (PROTOCOL section 2.1), read in
//! fixed-size chunks, into a header, endpoints and jobs handed one at a time
//! to a sink, so memory stays flat whatever the number of jobs.
//!
//! `xml` owns well-formedness (xmlparser only tokenizes); this module owns the
//! document's shape, its limits and the error messages that name job and field.
//! Known elements are interpreted only at their path (`profile/firewall/
//! endpoint`, `profile/jobs/job/...`); everything else is skipped, though
//! `xml` still checks it. One `Job` is reused for every job.

mod bytes;
pub mod job;
mod start_tag;
pub(crate) mod xml;

pub use job::{Child, Credential, EmailWhen, Endpoint, Header, Job, JobType, Target};

use crate::error::{Error, Result, Shown};
use heapless::String as HString;
use job::{
    ChildError, LongValue, MAX_CHILDREN, MAX_ID, MAX_JOBS, MAX_LONG, MAX_NAME_CHARS, MAX_RETRIES,
    MAX_VALUE, SCHEMA, schedule_fields, valid_id, valid_name,
};
use std::fmt;
use std::io::Read;
use xml::{Handler, Limits, StartTag};

/// Receives the profile as it is parsed. Called in document order: `header`
/// once, then `endpoint` and `job` as their elements end. Duplicate job ids
/// are the sink's to detect (it has the store; the parser keeps no set, so
/// memory does not grow with the profile): it returns `Error::Profile`.
pub trait ProfileSink {
    fn header(&mut self, header: &Header) -> Result<()>;
    fn endpoint(&mut self, endpoint: &Endpoint) -> Result<()>;
    fn job(&mut self, job: &Job) -> Result<()>;
}

/// What a complete, valid profile held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub jobs: usize,
    pub endpoints: usize,
    pub bytes: u64,
}

/// Parses a whole profile document from `body`. Returns only after the root
/// element ended and the rest of the body was checked; any error means the
/// sink's work must be thrown away.
pub fn parse<R: Read, S: ProfileSink + ?Sized>(
    body: R,
    device: &str,
    sink: &mut S,
) -> Result<Summary> {
    parse_with(body, device, sink, Limits::DEFAULT)
}

fn parse_with<R: Read, S: ProfileSink + ?Sized>(
    body: R,
    device: &str,
    sink: &mut S,
    limits: Limits,
) -> Result<Summary> {
    let mut shape = Shape {
        device,
        sink,
        path: heapless::Vec::new(),
        firewall_seen: false,
        jobs_seen: false,
        job: Job::default(),
        job_number: 0,
        endpoint: Endpoint::default(),
        endpoint_number: 0,
        text_len: 0,
        jobs: 0,
        endpoints: 0,
    };
    let bytes = xml::read(body, &mut shape, limits)?;
    log::debug!(
        "profile parsed: {} jobs, {} firewall endpoints, {bytes} bytes",
        shape.jobs,
        shape.endpoints
    );
    Ok(Summary {
        jobs: shape.jobs,
        endpoints: shape.endpoints,
        bytes,
    })
}

/// The known elements; a path of them from the root is all the state the
/// shape needs, so unknown subtrees cost nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    Profile,
    Firewall,
    Endpoint,
    Jobs,
    Job,
    Pre,
    Post,
    /// `source`, `exclude`, `target`, `credential`, `email`, `option`: taken
    /// whole from their start tag.
    Child,
}

/// The longest known path: profile/jobs/job/pre.
const KNOWN_DEPTH: usize = 4;

struct Shape<'a, S: ?Sized> {
    device: &'a str,
    sink: &'a mut S,
    /// The known elements open from the root down; an element below an
    /// unknown one is unknown whatever its name.
    path: heapless::Vec<Known, KNOWN_DEPTH>,
    firewall_seen: bool,
    jobs_seen: bool,
    job: Job,
    /// Position of the current job in the document, from 1.
    job_number: usize,
    endpoint: Endpoint,
    endpoint_number: usize,
    /// Bytes of the current `pre`/`post` text so far.
    text_len: usize,
    jobs: usize,
    endpoints: usize,
}

impl<S: ProfileSink + ?Sized> Handler for Shape<'_, S> {
    fn start(&mut self, tag: &StartTag<'_>) -> Result<()> {
        if tag.depth == 1 {
            return self.root(tag);
        }
        let Some(&parent) = self.path.last() else {
            return Ok(());
        };
        if self.path.len() + 1 != tag.depth {
            return Ok(());
        }
        let known = match (parent, tag.name) {
            (Known::Profile, "firewall") => {
                if self.firewall_seen {
                    return Err(refuse("profile has a second firewall element"));
                }
                self.firewall_seen = true;
                Known::Firewall
            }
            (Known::Profile, "jobs") => {
                if self.jobs_seen {
                    return Err(refuse("profile has a second jobs element"));
                }
                self.jobs_seen = true;
                Known::Jobs
            }
            (Known::Firewall, "endpoint") => {
                self.start_endpoint(tag)?;
                Known::Endpoint
            }
            (Known::Jobs, "job") => {
                self.start_job(tag)?;
                Known::Job
            }
            (Known::Job, "pre" | "post") => self.start_command(tag.name)?,
            (Known::Job, _) => {
                if !self.child(tag)? {
                    return Ok(());
                }
                Known::Child
            }
            _ => return Ok(()),
        };
        self.path
            .push(known)
            .map_err(|_| refuse("profile elements are nested too deep"))
    }

    fn end(&mut self, _name: &str, depth: usize) -> Result<()> {
        if depth != self.path.len() {
            return Ok(());
        }
        match self.path.pop() {
            Some(Known::Profile) if !self.jobs_seen => Err(refuse(
                "profile has no jobs element (refused so that a server fault cannot empty the job store; an empty <jobs/> is the way to remove every job)",
            )),
            Some(Known::Endpoint) => {
                self.sink.endpoint(&self.endpoint)?;
                self.endpoints += 1;
                Ok(())
            }
            Some(Known::Job) => {
                self.sink.job(&self.job)?;
                self.jobs += 1;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn text(&mut self, text: &str, depth: usize) -> Result<()> {
        if depth != self.path.len() {
            return Ok(());
        }
        let (field, slot) = match self.path.last() {
            Some(Known::Pre) => ("pre", &mut self.job.pre),
            Some(Known::Post) => ("post", &mut self.job.post),
            _ => return Ok(()),
        };
        self.text_len = self.text_len.saturating_add(text.len());
        let stored =
            self.text_len <= MAX_LONG && slot.as_mut().is_some_and(|v| v.push_str(text).is_ok());
        if !stored {
            return Err(refuse(format!(
                "{}: {field} is more than {MAX_LONG} bytes, the limit is {MAX_LONG}",
                Who::Job(&self.job.id)
            )));
        }
        Ok(())
    }
}

impl<S: ProfileSink + ?Sized> Shape<'_, S> {
    fn root(&mut self, tag: &StartTag<'_>) -> Result<()> {
        if tag.name != "profile" {
            return Err(refuse(format!(
                "the root element is <{}>, expected <profile>",
                Shown::bare(tag.name)
            )));
        }
        match tag.get("schema") {
            None => {
                return Err(refuse(format!(
                    "profile has no schema attribute; this agent speaks schema {SCHEMA}"
                )));
            }
            Some(schema) if schema != SCHEMA => {
                return Err(refuse(format!(
                    "profile schema {} is not supported; this agent speaks schema {SCHEMA}",
                    Shown::quoted(schema)
                )));
            }
            Some(_) => {}
        }
        let device = tag
            .get("device")
            .ok_or_else(|| refuse("profile has no device attribute"))?;
        if device != self.device {
            return Err(refuse(format!(
                "profile is for device {}, this device is {}",
                Shown::quoted(device),
                Shown::quoted(self.device)
            )));
        }
        let who = Who::Profile;
        let header = Header {
            device: fit(device, who, Attr::Own("device"))?,
            generated: match tag.get("generated") {
                Some(generated) => fit(generated, who, Attr::Own("generated"))?,
                None => job::Value::new(),
            },
        };
        self.sink.header(&header)?;
        self.path
            .push(Known::Profile)
            .map_err(|_| refuse("profile elements are nested too deep"))
    }

    fn start_endpoint(&mut self, tag: &StartTag<'_>) -> Result<()> {
        self.endpoint_number += 1;
        let who = Who::Endpoint(self.endpoint_number);
        let host = required_non_empty(tag, who, Attr::Own("host"), MAX_VALUE)?;
        let port = port(tag, who, Attr::Own("port"))?;
        let proto = optional_attr(tag, who, Attr::Own("proto"), MAX_VALUE)?.unwrap_or("tcp");
        let purpose = optional_attr(tag, who, Attr::Own("purpose"), MAX_VALUE)?.unwrap_or("");
        self.endpoint = Endpoint {
            host: fit(host, who, Attr::Own("host"))?,
            port,
            proto: fit(proto, who, Attr::Own("proto"))?,
            purpose: fit(purpose, who, Attr::Own("purpose"))?,
        };
        Ok(())
    }

    fn start_job(&mut self, tag: &StartTag<'_>) -> Result<()> {
        self.job_number += 1;
        if self.job_number > MAX_JOBS {
            return Err(refuse(format!(
                "profile has more than {MAX_JOBS} jobs, the limit"
            )));
        }
        self.job.clear();
        let id = job_id(tag, self.job_number)?;
        let who = Who::Job(id);
        let job = &mut self.job;
        put(&mut job.id, id, who, Attr::Own("id"))?;
        put(&mut job.name, job_name(tag, who)?, who, Attr::Own("name"))?;
        job.job_type = job_type(tag, who)?;
        if let Some(enabled) = tag.get("enabled") {
            job.enabled = yes_or_no(enabled, who)?;
        }
        if let Some(schedule) = optional_attr(tag, who, Attr::Own("schedule"), MAX_VALUE)? {
            let schedule = job_schedule(schedule, who)?;
            put(&mut job.schedule, schedule, who, Attr::Own("schedule"))?;
        }
        if let Some(retries) = tag.get("retries") {
            job.retries = job_retries(retries, who)?;
        }
        Ok(())
    }

    /// `pre` or `post`: their text arrives through `text`.
    fn start_command(&mut self, which: &str) -> Result<Known> {
        let (slot, known) = if which == "pre" {
            (&mut self.job.pre, Known::Pre)
        } else {
            (&mut self.job.post, Known::Post)
        };
        if slot.is_some() {
            return Err(refuse(format!(
                "{}: a second {which} element",
                Who::Job(&self.job.id)
            )));
        }
        *slot = Some(LongValue::new());
        self.text_len = 0;
        Ok(known)
    }

    /// A job child taken from its start tag; `false` if `tag` is not one.
    fn child(&mut self, tag: &StartTag<'_>) -> Result<bool> {
        // Borrowed field by field: `who` names the job while its children
        // are filled, without a copy of the id per child.
        let Job {
            id,
            target: job_target,
            credential: job_credential,
            children,
            ..
        } = &mut self.job;
        let who = Who::Job(id);
        let child = match tag.name {
            "source" => Child::Source(required_non_empty(
                tag,
                who,
                Attr::Child("source", "path"),
                MAX_LONG,
            )?),
            "exclude" => Child::Exclude(required_non_empty(
                tag,
                who,
                Attr::Child("exclude", "pattern"),
                MAX_LONG,
            )?),
            "email" => {
                let to = required_non_empty(tag, who, Attr::Child("email", "to"), MAX_VALUE)?;
                let when = required(tag, who, Attr::Child("email", "when"))?;
                let when = EmailWhen::parse(when).ok_or_else(|| {
                    refuse(format!(
                        "{who}: email/@when {} is not one of always, error, never",
                        Shown::quoted(when)
                    ))
                })?;
                Child::Email { to, when }
            }
            "option" => Child::Option {
                name: required_non_empty(tag, who, Attr::Child("option", "name"), MAX_VALUE)?,
                value: limited(
                    required(tag, who, Attr::Child("option", "value"))?,
                    who,
                    Attr::Child("option", "value"),
                    MAX_LONG,
                )?,
            },
            "target" => {
                if job_target.is_some() {
                    return Err(refuse(format!("{who}: a second target element")));
                }
                target(job_target.insert(Target::default()), tag, who)?;
                return Ok(true);
            }
            "credential" => {
                if job_credential.is_some() {
                    return Err(refuse(format!("{who}: a second credential element")));
                }
                credential(job_credential.insert(Credential::default()), tag, who)?;
                return Ok(true);
            }
            _ => return Ok(false),
        };
        children.push(child).map_err(|e| match e {
            ChildError::TooMany(kind) => refuse(format!(
                "{who}: more than {MAX_CHILDREN} {} elements",
                kind.element()
            )),
            ChildError::TooLong { kind, limit } => refuse(format!(
                "{who}: a {} value is longer than {limit} bytes",
                kind.element()
            )),
        })?;
        Ok(true)
    }
}

/// The job's `id`; a job without a valid one is named by its position.
fn job_id<'t>(tag: &StartTag<'t>, number: usize) -> Result<&'t str> {
    let at = Who::JobAt(number);
    let id = required(tag, at, Attr::Own("id"))?;
    if !valid_id(id) {
        return Err(refuse(format!(
            "{at}: id {} is not 1 to {MAX_ID} characters of A-Z a-z 0-9 . _ -",
            Shown::quoted(id)
        )));
    }
    Ok(id)
}

/// The job's `name`: 1 to `MAX_NAME_CHARS` characters.
fn job_name<'t>(tag: &StartTag<'t>, who: Who<'_>) -> Result<&'t str> {
    let name = required(tag, who, Attr::Own("name"))?;
    if !valid_name(name) {
        let chars = name.chars().count();
        return Err(refuse(format!(
            "{who}: name is {chars} characters, it must be 1 to {MAX_NAME_CHARS}"
        )));
    }
    Ok(name)
}

fn job_type(tag: &StartTag<'_>, who: Who<'_>) -> Result<JobType> {
    let job_type = required(tag, who, Attr::Own("type"))?;
    JobType::parse(job_type).ok_or_else(|| {
        let all: Vec<&str> = JobType::ALL.iter().map(|t| t.as_str()).collect();
        refuse(format!(
            "{who}: type {} is not one of {}",
            Shown::quoted(job_type),
            all.join(" ")
        ))
    })
}

/// `enabled`: `yes` or `no`.
fn yes_or_no(enabled: &str, who: Who<'_>) -> Result<bool> {
    match enabled {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(refuse(format!(
            "{who}: enabled {} is not yes or no",
            Shown::quoted(enabled)
        ))),
    }
}

/// A cron schedule: 5 or 6 fields.
fn job_schedule<'t>(schedule: &'t str, who: Who<'_>) -> Result<&'t str> {
    let fields = schedule_fields(schedule);
    if !(5..=6).contains(&fields) {
        return Err(refuse(format!(
            "{who}: schedule {} has {fields} fields, expected 5 or 6",
            Shown::quoted(schedule)
        )));
    }
    Ok(schedule)
}

fn job_retries(retries: &str, who: Who<'_>) -> Result<u8> {
    Some(retries)
        .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|r| r.parse::<u8>().ok())
        .filter(|&n| n <= MAX_RETRIES)
        .ok_or_else(|| {
            refuse(format!(
                "{who}: retries {} is not a number from 0 to {MAX_RETRIES}",
                Shown::quoted(retries)
            ))
        })
}

/// A job's `<target host port user>`.
/// Filled in place (see `put`); left half-filled only with an error.
fn target(slot: &mut Target, tag: &StartTag<'_>, who: Who<'_>) -> Result<()> {
    let host = required_non_empty(tag, who, Attr::Child("target", "host"), MAX_VALUE)?;
    slot.port = port(tag, who, Attr::Child("target", "port"))?;
    let user = optional_attr(tag, who, Attr::Child("target", "user"), MAX_VALUE)?;
    put(&mut slot.host, host, who, Attr::Child("target", "host"))?;
    if let Some(user) = user {
        let field = Attr::Child("target", "user");
        put(slot.user.insert(job::Value::new()), user, who, field)?;
    }
    Ok(())
}

/// A job's `<credential user password>`.
/// Filled in place (see `put`); left half-filled only with an error.
fn credential(slot: &mut Credential, tag: &StartTag<'_>, who: Who<'_>) -> Result<()> {
    let user = required(tag, who, Attr::Child("credential", "user"))?;
    put(&mut slot.user, user, who, Attr::Child("credential", "user"))?;
    let password = required(tag, who, Attr::Child("credential", "password"))?;
    // The password is a secret: no message may carry it, so none is built
    // from it, whatever is wrong.
    slot.password.clear();
    slot.password.push_str(password).map_err(|_| {
        refuse(format!(
            "{who}: credential/@password is longer than {MAX_VALUE} bytes"
        ))
    })
}

fn refuse(msg: impl Into<String>) -> Error {
    Error::Profile(msg.into().into())
}

/// Whose field a message is about.
#[derive(Clone, Copy, Debug)]
enum Who<'a> {
    Profile,
    Job(&'a str),
    /// A job whose id is missing or invalid, by its position.
    JobAt(usize),
    Endpoint(usize),
}

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Profile => f.write_str("profile"),
            // A valid id has no character that needs escaping.
            Who::Job(id) => write!(f, "job \"{id}\""),
            Who::JobAt(n) => write!(f, "job #{n}"),
            Who::Endpoint(n) => write!(f, "firewall endpoint #{n}"),
        }
    }
}

/// The attribute a message is about, named as the message shows it.
#[derive(Clone, Copy, Debug)]
enum Attr {
    /// An attribute of the element the message is about (`<job retries>`):
    /// shown by its name, `retries`.
    Own(&'static str),
    /// An attribute of one of a job's child elements (`<source path>`):
    /// shown as `source/@path`.
    Child(&'static str, &'static str),
}

impl Attr {
    /// The attribute's name in the start tag.
    fn name(self) -> &'static str {
        match self {
            Attr::Own(name) | Attr::Child(_, name) => name,
        }
    }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Own(name) => f.write_str(name),
            Attr::Child(element, name) => write!(f, "{element}/@{name}"),
        }
    }
}

fn required<'t>(tag: &StartTag<'t>, who: Who<'_>, field: Attr) -> Result<&'t str> {
    tag.get(field.name())
        .ok_or_else(|| refuse(format!("{who}: {field} is missing")))
}

fn limited<'v>(value: &'v str, who: Who<'_>, field: Attr, limit: usize) -> Result<&'v str> {
    if value.len() > limit {
        return Err(refuse(format!(
            "{who}: {field} is {} bytes, the limit is {limit}",
            value.len()
        )));
    }
    Ok(value)
}

/// A required attribute that must not be empty.
fn required_non_empty<'t>(
    tag: &StartTag<'t>,
    who: Who<'_>,
    field: Attr,
    limit: usize,
) -> Result<&'t str> {
    let value = limited(required(tag, who, field)?, who, field, limit)?;
    if value.is_empty() {
        return Err(refuse(format!("{who}: {field} is empty")));
    }
    Ok(value)
}

fn optional_attr<'t>(
    tag: &StartTag<'t>,
    who: Who<'_>,
    field: Attr,
    limit: usize,
) -> Result<Option<&'t str>> {
    tag.get(field.name())
        .map(|v| limited(v, who, field, limit))
        .transpose()
}

fn fit<const N: usize>(value: &str, who: Who<'_>, field: Attr) -> Result<HString<N>> {
    let mut fitted = HString::new();
    put(&mut fitted, value, who, field)?;
    Ok(fitted)
}

/// `value` into `slot`, in place. A job's strings have hundreds of bytes of
/// room each: made apart and moved in, as `fit` makes them, they were
/// copied whole, twice (2 instructions a profile byte).
fn put<const N: usize>(
    slot: &mut HString<N>,
    value: &str,
    who: Who<'_>,
    field: Attr,
) -> Result<()> {
    slot.clear();
    slot.push_str(value).map_err(|_| {
        refuse(format!(
            "{who}: {field} is {} bytes, the limit is {N}",
            value.len()
        ))
    })
}

fn port(tag: &StartTag<'_>, who: Who<'_>, field: Attr) -> Result<u16> {
    let value = required(tag, who, field)?;
    Some(value)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u16>().ok())
        .filter(|&p| p != 0)
        .ok_or_else(|| {
            refuse(format!(
                "{who}: {field} {} is not a port number from 1 to 65535",
                Shown::quoted(value)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use job::ChildKind;
    use std::io;

    const DEVICE: &str = "NAS-00042";
    /// Jobs in the document split at every offset: about 4 KiB.
    const RICH_JOBS: usize = 5;

    /// PROTOCOL section 2.1's example, verbatim.
    const EXAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<profile schema="3" device="NAS-00042" generated="2026-11-27T07:00:00Z">
  <firewall>
    <endpoint host="prime3.cncop.example.net" port="443" proto="tcp" purpose="prime"/>
  </firewall>
  <jobs>
    <job id="1001" name="Accounting share" type="CCS" enabled="yes"
         schedule="0 30 1 * * *" retries="3">
      <source path="/share/Accounting"/>
      <source path="/share/HR &amp; Payroll"/>
      <exclude pattern="*.tmp"/>
      <target host="prime3.cncop.example.net" port="443"/>
      <pre>/opt/cncop/hooks/quiesce.sh</pre>
      <post>/opt/cncop/hooks/resume.sh</post>
      <email to="ops@example.com" when="error"/>
      <option name="chunksize" value="10M"/>
    </job>
    <job id="1002" name="SQL nightly" type="MSSQL" enabled="no" schedule="0 0 2 * * *" retries="1">
      <target host="db1.office.example" port="1433"/>
      <credential user="backup" password="s3cr&lt;t"/>
      <option name="database" value="Ledger"/>
    </job>
  </jobs>
</profile>
"#;

    /// Keeps what the parser hands over.
    #[derive(Default)]
    struct Keep {
        headers: Vec<Header>,
        endpoints: Vec<Endpoint>,
        jobs: Vec<Job>,
    }

    impl ProfileSink for Keep {
        fn header(&mut self, header: &Header) -> Result<()> {
            self.headers.push(header.clone());
            Ok(())
        }
        fn endpoint(&mut self, endpoint: &Endpoint) -> Result<()> {
            self.endpoints.push(endpoint.clone());
            Ok(())
        }
        fn job(&mut self, job: &Job) -> Result<()> {
            self.jobs.push(job.clone());
            Ok(())
        }
    }

    /// Records every sink call as a line (passwords included: `Debug` hides them).
    #[derive(Default)]
    struct Calls(Vec<String>);

    impl ProfileSink for Calls {
        fn header(&mut self, header: &Header) -> Result<()> {
            self.0.push(format!("{header:?}"));
            Ok(())
        }
        fn endpoint(&mut self, endpoint: &Endpoint) -> Result<()> {
            self.0.push(format!("{endpoint:?}"));
            Ok(())
        }
        fn job(&mut self, job: &Job) -> Result<()> {
            let password = job.credential.as_ref().map(|c| c.password.as_str());
            self.0.push(format!("{job:?} password={password:?}"));
            Ok(())
        }
    }

    /// Counts jobs without keeping them.
    #[derive(Default)]
    struct Count(usize);

    impl ProfileSink for Count {
        fn header(&mut self, _: &Header) -> Result<()> {
            Ok(())
        }
        fn endpoint(&mut self, _: &Endpoint) -> Result<()> {
            Ok(())
        }
        fn job(&mut self, _: &Job) -> Result<()> {
            self.0 += 1;
            Ok(())
        }
    }

    /// Serves `data` in reads of the sizes `sizes` gives; a size of 0 is an
    /// `Interrupted` error, which the parser must retry.
    struct Reads<'a, F> {
        data: &'a [u8],
        sizes: F,
    }

    impl<F: FnMut() -> usize> Read for Reads<'_, F> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let size = (self.sizes)();
            if size == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = size.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn split_at(data: &[u8], at: usize) -> Reads<'_, impl FnMut() -> usize> {
        let mut first = true;
        Reads {
            data,
            sizes: move || {
                if std::mem::take(&mut first) {
                    at
                } else {
                    usize::MAX
                }
            },
        }
    }

    fn random_reads(data: &[u8], seed: u64) -> Reads<'_, impl FnMut() -> usize> {
        let mut state = seed | 1;
        Reads {
            data,
            sizes: move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Mostly small reads, some large, a few interruptions.
                match state % 16 {
                    0 => 0,
                    1 => 20_000,
                    n => (state >> 8) as usize % (n as usize * 40) + 1,
                }
            },
        }
    }

    /// A body of `head`, then `body` `count` times, then `tail`, made as it is
    /// read; `served` says how much was read.
    struct Repeat {
        parts: [Vec<u8>; 3],
        count: usize,
        part: usize,
        done: usize,
        off: usize,
        served: u64,
    }

    impl Repeat {
        fn new(head: &str, body: &str, count: usize, tail: &str) -> Repeat {
            Repeat {
                parts: [head.into(), body.into(), tail.into()],
                count,
                part: 0,
                done: 0,
                off: 0,
                served: 0,
            }
        }
    }

    impl Read for Repeat {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            loop {
                if self.part == 1 && self.done == self.count {
                    self.part = 2;
                }
                let Some(current) = self.parts.get(self.part) else {
                    return Ok(0);
                };
                if self.off < current.len() {
                    let n = buf.len().min(current.len() - self.off);
                    buf[..n].copy_from_slice(&current[self.off..self.off + n]);
                    self.off += n;
                    self.served += n as u64;
                    return Ok(n);
                }
                self.off = 0;
                if self.part == 1 {
                    self.done += 1;
                } else {
                    self.part += 1;
                }
            }
        }
    }

    type Outcome = std::result::Result<(Vec<String>, Summary), (Vec<String>, String)>;

    fn outcome<R: Read>(body: R, limits: Limits) -> Outcome {
        let mut calls = Calls::default();
        match parse_with(body, DEVICE, &mut calls, limits) {
            Ok(summary) => Ok((calls.0, summary)),
            Err(e) => Err((calls.0, e.to_string())),
        }
    }

    fn keep(doc: &str) -> (Keep, Summary) {
        let mut sink = Keep::default();
        let summary = parse(doc.as_bytes(), DEVICE, &mut sink).unwrap();
        (sink, summary)
    }

    fn refusal(doc: &str) -> String {
        match parse(doc.as_bytes(), DEVICE, &mut Calls::default()) {
            Ok(_) => panic!("accepted {doc}"),
            Err(Error::Profile(msg)) => msg.to_string(),
            Err(e) => panic!("not a profile refusal: {e}"),
        }
    }

    /// A profile whose jobs element holds `jobs`.
    fn profile(jobs: &str) -> String {
        format!("<profile schema=\"3\" device=\"{DEVICE}\"><jobs>{jobs}</jobs></profile>")
    }

    /// A profile with one job "1001" with extra attributes and children.
    fn one_job(attrs: &str, children: &str) -> String {
        profile(&format!(
            "<job id=\"1001\" name=\"n\" type=\"CCS\" {attrs}>{children}</job>"
        ))
    }

    fn sources(job: &Job) -> Vec<&str> {
        job.children.sources().collect()
    }

    #[test]
    fn the_protocol_example_parses_into_exactly_its_jobs() {
        let (sink, summary) = keep(EXAMPLE);
        assert_eq!(
            summary,
            Summary {
                jobs: 2,
                endpoints: 1,
                bytes: EXAMPLE.len() as u64
            }
        );
        assert_eq!(sink.headers.len(), 1);
        assert_eq!(sink.headers[0].device, "NAS-00042");
        assert_eq!(sink.headers[0].generated, "2026-11-27T07:00:00Z");
        assert_eq!(sink.endpoints.len(), 1);
        let e = &sink.endpoints[0];
        assert_eq!(
            (
                e.host.as_str(),
                e.port,
                e.proto.as_str(),
                e.purpose.as_str()
            ),
            ("prime3.cncop.example.net", 443, "tcp", "prime")
        );

        let [a, b] = &sink.jobs[..] else {
            panic!("{:?}", sink.jobs)
        };
        assert_eq!(a.id, "1001");
        assert_eq!(a.name, "Accounting share");
        assert_eq!(a.job_type, JobType::Ccs);
        assert!(a.enabled);
        assert_eq!(a.schedule, "0 30 1 * * *");
        assert_eq!(a.retries, 3);
        let target = a.target.as_ref().unwrap();
        assert_eq!(
            (target.host.as_str(), target.port, &target.user),
            ("prime3.cncop.example.net", 443, &None)
        );
        assert!(a.credential.is_none());
        assert_eq!(a.pre.as_deref(), Some("/opt/cncop/hooks/quiesce.sh"));
        assert_eq!(a.post.as_deref(), Some("/opt/cncop/hooks/resume.sh"));
        assert_eq!(
            a.children.iter().collect::<Vec<_>>(),
            [
                Child::Source("/share/Accounting"),
                Child::Source("/share/HR & Payroll"),
                Child::Exclude("*.tmp"),
                Child::Email {
                    to: "ops@example.com",
                    when: EmailWhen::Error
                },
                Child::Option {
                    name: "chunksize",
                    value: "10M"
                },
            ]
        );

        assert_eq!(b.id, "1002");
        assert_eq!(b.name, "SQL nightly");
        assert_eq!(b.job_type, JobType::Mssql);
        assert!(!b.enabled);
        assert_eq!(b.schedule, "0 0 2 * * *");
        assert_eq!(b.retries, 1);
        let target = b.target.as_ref().unwrap();
        assert_eq!(
            (target.host.as_str(), target.port),
            ("db1.office.example", 1433)
        );
        let credential = b.credential.as_ref().unwrap();
        assert_eq!(credential.user, "backup");
        assert_eq!(credential.password, "s3cr<t");
        assert_eq!((b.pre.as_deref(), b.post.as_deref()), (None, None));
        assert_eq!(
            b.children.iter().collect::<Vec<_>>(),
            [Child::Option {
                name: "database",
                value: "Ledger"
            }]
        );
    }

    #[test]
    fn defaults_apply_when_optional_attributes_are_absent() {
        let doc = format!(
            "<profile schema=\"3\" device=\"{DEVICE}\"><firewall><endpoint host=\"h\" port=\"1\"/></firewall><jobs><job id=\"a\" name=\"n\" type=\"WIMG\"/></jobs></profile>"
        );
        let (sink, _) = keep(&doc);
        let job = &sink.jobs[0];
        assert!(job.enabled);
        assert_eq!(job.retries, 0);
        assert_eq!(job.schedule, "");
        assert_eq!(job.target, None);
        assert_eq!(job.children.iter().count(), 0);
        assert_eq!(sink.headers[0].generated, "");
        assert_eq!(sink.endpoints[0].proto, "tcp");
        assert_eq!(sink.endpoints[0].purpose, "");
    }

    /// Multi-byte UTF-8, entities, character references, CDATA, comments,
    /// PIs, CRLF and lone CR, a BOM, an XML declaration, unknown elements and
    /// attributes: a few KiB.
    fn rich_doc(jobs: usize) -> String {
        use std::fmt::Write as _;
        let mut d = String::from(
            "\u{FEFF}<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<!-- made for tests -->\r\n<?cncop hint=\"x\"?>\r\n",
        );
        d.push_str("<profile schema='3' device=\"NAS-00042\" generated=\"2026-11-27T07:00:00Z\" future=\"ignored\">\r\n");
        d.push_str("  <firewall>\r\n    <endpoint host=\"prime3.cncop.example.net\" port=\"443\" purpose=\"prime\"/>\r\n    <endpoint host='127.0.0.1' port=\"8443\" proto=\"udp\"/>\r\n  </firewall>\r\n");
        d.push_str("  <extension><deep a=\"1\"><job id=\"not a job\">ignored &amp; text</job></deep></extension>\r\n  <jobs>\r\n");
        for i in 0..jobs {
            let kind = [
                "CCS", "CIFS", "FTP", "FTPS", "MSSQL", "SFTP", "RSYNC", "WIMG",
            ][i % 8];
            let enabled = if i % 2 == 0 { "yes" } else { "no" };
            write!(
                d,
                "    <!-- job {i} -->\r\n    <job id=\"10{i:02}\" name=\"Photos 写真 &amp; Résumés #{i}\" type=\"{kind}\" enabled=\"{enabled}\" schedule=\"0 30 1 * * *\" retries=\"{i}\" color=\"blue\">\r\n"
            )
            .unwrap();
            write!(
                d,
                "      <source path=\"/share/写真/{i}\"/>\r\n      <source path='/share/HR &amp; Payroll &#x263A; &#169;'/>\r\n      <exclude pattern=\"*.tmp\"/>\r\n      <target host=\"db{i}.example\" port=\"14{i:02}\" user=\"backup\"/>\r\n      <credential user=\"svc\" password=\"s3cr&lt;t&#33;{i}\"/>\r\n"
            )
            .unwrap();
            d.push_str("      <pre><![CDATA[if [ -x /opt/a ]; then echo \"<ok>\" && true; fi]]>\r\n  &lt;second&gt;\tline\r\n<?ignored pi?><!-- c --><unknown>dropped</unknown>end</pre>\r\n");
            d.push_str("      <post>line1\r\nline2\rline3 Résumé</post>\r\n      <email to=\"ops@example.com\" when=\"error\"/>\r\n      <option name=\"multi\" value=\"a&#10;b\tc\r\nd\"/>\r\n");
            d.push_str(
                "      <future-child x=\"1\"><grand>t</grand></future-child>\r\n    </job>\r\n",
            );
        }
        d.push_str("  </jobs>\r\n</profile>\r\n<!-- trailing comment -->\r\n<?trailing pi?>\r\n");
        d
    }

    #[test]
    fn the_rich_document_means_what_it_says() {
        let doc = rich_doc(RICH_JOBS);
        assert!(doc.len() > 4096, "{}", doc.len());
        let (sink, summary) = keep(&doc);
        assert_eq!((summary.jobs, summary.endpoints), (RICH_JOBS, 2));
        assert_eq!(sink.endpoints[1].proto, "udp");
        let job = &sink.jobs[3];
        assert_eq!(job.id, "1003");
        assert_eq!(job.name, "Photos 写真 & Résumés #3");
        assert_eq!(job.job_type, JobType::Ftps);
        assert!(!job.enabled);
        assert_eq!(job.retries, 3);
        assert_eq!(
            sources(job),
            ["/share/写真/3", "/share/HR & Payroll \u{263A} \u{A9}"]
        );
        assert_eq!(job.credential.as_ref().unwrap().password, "s3cr<t!3");
        assert_eq!(job.target.as_ref().unwrap().user.as_deref(), Some("backup"));
        assert_eq!(
            job.pre.as_deref(),
            Some("if [ -x /opt/a ]; then echo \"<ok>\" && true; fi\n  <second>\tline\nend")
        );
        assert_eq!(job.post.as_deref(), Some("line1\nline2\nline3 Résumé"));
        // A referenced line feed stays; literal tab and CRLF become spaces.
        assert_eq!(
            job.children.options().collect::<Vec<_>>(),
            [("multi", "a\nb c d")]
        );
    }

    #[test]
    fn every_split_of_the_body_gives_the_same_sink_calls() {
        let doc = rich_doc(RICH_JOBS);
        let data = doc.as_bytes();
        let whole = outcome(data, Limits::DEFAULT);
        let Ok((calls, summary)) = &whole else {
            panic!("{whole:?}")
        };
        assert_eq!(calls.len(), 1 + 2 + RICH_JOBS);
        assert_eq!(summary.bytes, data.len() as u64);
        for at in 1..data.len() {
            assert_eq!(
                outcome(split_at(data, at), Limits::DEFAULT),
                whole,
                "split at {at}"
            );
        }
        let one_byte = Reads { data, sizes: || 1 };
        assert_eq!(outcome(one_byte, Limits::DEFAULT), whole);
        for seed in 0..50 {
            assert_eq!(
                outcome(random_reads(data, seed), Limits::DEFAULT),
                whole,
                "seed {seed}"
            );
        }
        // A small window: every unit needs refills and the window compacts.
        for chunk in [1, 2, 3, 7, 64, 1000] {
            let limits = Limits {
                chunk,
                max_unit: 512,
            };
            assert_eq!(outcome(data, limits), whole, "chunk {chunk}");
            assert_eq!(outcome(random_reads(data, chunk as u64), limits), whole);
        }
    }

    /// `rich_doc(2)` with the `n`th `pattern` replaced by `with`.
    fn broken(pattern: &str, n: usize, with: &str) -> Vec<u8> {
        let good = rich_doc(2);
        let at = nth(&good, pattern, n);
        let mut d = good.into_bytes();
        d.splice(at..at + pattern.len(), with.bytes());
        d
    }

    fn nth(doc: &str, pattern: &str, n: usize) -> usize {
        doc.match_indices(pattern).nth(n).map(|(i, _)| i).unwrap()
    }

    /// The same refusal, containing `expected`, and the same sink calls
    /// before it, however the reads split `doc`.
    fn fails_the_same_at_every_split(doc: &[u8], expected: &str) {
        let whole = outcome(doc, Limits::DEFAULT);
        let Err((_, msg)) = &whole else {
            panic!("accepted: {expected}")
        };
        assert!(
            msg.contains(expected),
            "{msg:?} does not contain {expected:?}"
        );
        for at in 1..doc.len() {
            assert_eq!(
                outcome(split_at(doc, at), Limits::DEFAULT),
                whole,
                "split at {at}: {expected}"
            );
        }
        let one_byte = Reads {
            data: doc,
            sizes: || 1,
        };
        assert_eq!(outcome(one_byte, Limits::DEFAULT), whole);
        for seed in 0..10 {
            assert_eq!(outcome(random_reads(doc, seed), Limits::DEFAULT), whole);
        }
        for chunk in [1, 3, 64] {
            let limits = Limits {
                chunk,
                max_unit: Limits::DEFAULT.max_unit,
            };
            assert_eq!(outcome(doc, limits), whole, "chunk {chunk}: {expected}");
        }
    }

    #[test]
    fn malformed_xml_fails_the_same_way_at_every_split() {
        let good = rich_doc(2);
        assert!(good.len() > 1500);
        let mut bad_utf8 = good.clone().into_bytes();
        bad_utf8[nth(&good, "写", 3) + 1] = b'A';
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                broken("</job>", 1, "</jbo>"),
                "end tag </jbo> does not match <job>",
            ),
            (
                broken("end</pre>", 1, "&foo;</pre>"),
                "undefined entity reference &foo;",
            ),
            (
                broken("line1", 1, "line\0"),
                "character U+0000 is not allowed",
            ),
            (
                broken("&#33;", 1, "&#xD800;"),
                "has a reference to a character that XML does not allow",
            ),
            (bad_utf8, "invalid UTF-8"),
            (
                broken(
                    "<!-- made",
                    0,
                    "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><!-- made",
                ),
                "DOCTYPEs are not allowed",
            ),
            (
                broken("color=", 1, "type="),
                "attribute type appears twice on <job>",
            ),
            (broken("utf-8", 0, "ISO-8859-1"), "encoding \"ISO-8859-1\""),
        ];
        for (doc, expected) in &cases {
            fails_the_same_at_every_split(doc, expected);
        }
    }

    #[test]
    fn bad_shapes_and_truncations_fail_the_same_way_at_every_split() {
        let good = rich_doc(2);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                broken("retries=\"1\"", 0, "retries=\"100\""),
                "job \"1001\": retries \"100\" is not a number from 0 to 99",
            ),
            (
                broken("<target", 1, "<target host=\"x\" port=\"1\"/><target"),
                "job \"1001\": a second target element",
            ),
            (
                broken("<?trailing", 0, "<profile/><?trailing"),
                "a second root element <profile>",
            ),
            (
                broken("<?trailing", 0, "x<?trailing"),
                "text after the root element",
            ),
            (
                good.as_bytes()[..nth(&good, "</post>", 1) + 3].to_vec(),
                "profile is cut short",
            ),
            (
                good.as_bytes()[..nth(&good, "写", 3) + 1].to_vec(),
                "profile is cut short",
            ),
        ];
        for (doc, expected) in &cases {
            fails_the_same_at_every_split(doc, expected);
        }
    }

    #[test]
    fn a_profile_cut_short_anywhere_inside_the_root_is_refused() {
        let root_end = EXAMPLE.find("</profile>").unwrap() + "</profile>".len();
        for end in 0..root_end {
            let msg = refusal(&EXAMPLE[..end]);
            assert!(
                msg.contains("cut short") || msg.contains("no root") || msg == "profile is empty",
                "{end}: {msg}"
            );
        }
        assert!(refusal(&EXAMPLE[..200]).starts_with("profile is cut short at byte 200: "));
        for end in root_end..=EXAMPLE.len() {
            assert!(parse(&EXAMPLE.as_bytes()[..end], DEVICE, &mut Count::default()).is_ok());
        }
    }

    #[test]
    fn shape_refusals_name_the_job_and_the_field() {
        let long = |n: usize| "x".repeat(n);
        let cases: Vec<(String, String)> = vec![
            (
                format!("<profile schema=\"4\" device=\"{DEVICE}\"><jobs/></profile>"),
                "profile schema \"4\" is not supported; this agent speaks schema 3".into(),
            ),
            (
                format!("<profile device=\"{DEVICE}\"><jobs/></profile>"),
                "profile has no schema attribute; this agent speaks schema 3".into(),
            ),
            (
                "<profile schema=\"3\" device=\"NAS-00043\"><jobs/></profile>".into(),
                "profile is for device \"NAS-00043\", this device is \"NAS-00042\"".into(),
            ),
            (
                "<profile schema=\"3\"><jobs/></profile>".into(),
                "profile has no device attribute".into(),
            ),
            (
                format!("<cncop schema=\"3\" device=\"{DEVICE}\"><jobs/></cncop>"),
                "the root element is <cncop>, expected <profile>".into(),
            ),
            (
                format!(
                    "<profile schema=\"3\" device=\"{DEVICE}\" generated=\"{}\"><jobs/></profile>",
                    long(257)
                ),
                "profile: generated is 257 bytes, the limit is 256".into(),
            ),
            (
                format!("<profile schema=\"3\" device=\"{DEVICE}\"></profile>"),
                "profile has no jobs element".into(),
            ),
            (
                format!("<profile schema=\"3\" device=\"{DEVICE}\"><x><jobs/></x></profile>"),
                "profile has no jobs element".into(),
            ),
            (
                format!("<profile schema=\"3\" device=\"{DEVICE}\"><jobs/><jobs/></profile>"),
                "profile has a second jobs element".into(),
            ),
            (
                format!(
                    "<profile schema=\"3\" device=\"{DEVICE}\"><firewall/><firewall/><jobs/></profile>"
                ),
                "profile has a second firewall element".into(),
            ),
            (
                format!(
                    "<profile schema=\"3\" device=\"{DEVICE}\"><firewall><endpoint host=\"h\" port=\"1\"/><endpoint host=\"h\" port=\"65536\"/></firewall><jobs/></profile>"
                ),
                "firewall endpoint #2: port \"65536\" is not a port number from 1 to 65535".into(),
            ),
            (
                format!(
                    "<profile schema=\"3\" device=\"{DEVICE}\"><firewall><endpoint port=\"1\"/></firewall><jobs/></profile>"
                ),
                "firewall endpoint #1: host is missing".into(),
            ),
            (
                profile("<job id=\"a\" name=\"n\" type=\"CCS\"/><job name=\"n\" type=\"CCS\"/>"),
                "job #2: id is missing".into(),
            ),
            (
                profile("<job id=\"a b\" name=\"n\" type=\"CCS\"/>"),
                "job #1: id \"a b\" is not 1 to 64 characters of A-Z a-z 0-9 . _ -".into(),
            ),
            (
                profile("<job id=\"\" name=\"n\" type=\"CCS\"/>"),
                "job #1: id \"\" is not 1 to 64".into(),
            ),
            (
                profile(&format!(
                    "<job id=\"{}\" name=\"n\" type=\"CCS\"/>",
                    long(65)
                )),
                "job #1: id \"xxxx".into(),
            ),
            (
                profile("<job id=\"1001\" type=\"CCS\"/>"),
                "job \"1001\": name is missing".into(),
            ),
            (
                profile("<job id=\"1001\" name=\"\" type=\"CCS\"/>"),
                "job \"1001\": name is 0 characters, it must be 1 to 128".into(),
            ),
            (
                profile(&format!(
                    "<job id=\"1001\" name=\"{}\" type=\"CCS\"/>",
                    "é".repeat(129)
                )),
                "job \"1001\": name is 129 characters, it must be 1 to 128".into(),
            ),
            (
                profile("<job id=\"1001\" name=\"n\"/>"),
                "job \"1001\": type is missing".into(),
            ),
            (
                one_job("", "").replace("CCS", "ccs"),
                "job \"1001\": type \"ccs\" is not one of CCS CIFS FTP FTPS MSSQL SFTP RSYNC WIMG"
                    .into(),
            ),
            (
                one_job("enabled=\"true\"", ""),
                "job \"1001\": enabled \"true\" is not yes or no".into(),
            ),
            (
                one_job("retries=\"100\"", ""),
                "job \"1001\": retries \"100\" is not a number from 0 to 99".into(),
            ),
            (
                one_job("retries=\"abc\"", ""),
                "job \"1001\": retries \"abc\" is not a number from 0 to 99".into(),
            ),
            (
                one_job("retries=\"-1\"", ""),
                "job \"1001\": retries \"-1\" is not".into(),
            ),
            (
                one_job("retries=\"+1\"", ""),
                "job \"1001\": retries \"+1\" is not".into(),
            ),
            (
                one_job("schedule=\"0 1 * *\"", ""),
                "job \"1001\": schedule \"0 1 * *\" has 4 fields, expected 5 or 6".into(),
            ),
            (
                one_job("schedule=\"0 0 1 * * * *\"", ""),
                "job \"1001\": schedule \"0 0 1 * * * *\" has 7 fields, expected 5 or 6".into(),
            ),
            (
                one_job(&format!("schedule=\"0 0 1 * {}\"", long(250)), ""),
                "job \"1001\": schedule is 258 bytes, the limit is 256".into(),
            ),
            (
                one_job("", &format!("<source path=\"{}\"/>", long(4097))),
                "job \"1001\": source/@path is 4097 bytes, the limit is 4096".into(),
            ),
            (
                one_job("", "<source/>"),
                "job \"1001\": source/@path is missing".into(),
            ),
            (
                one_job("", "<source path=\"\"/>"),
                "job \"1001\": source/@path is empty".into(),
            ),
            (
                one_job("", &format!("<exclude pattern=\"{}\"/>", long(4097))),
                "job \"1001\": exclude/@pattern is 4097 bytes, the limit is 4096".into(),
            ),
            (
                one_job("", &"<source path=\"/a\"/>".repeat(257)),
                "job \"1001\": more than 256 source elements".into(),
            ),
            (
                one_job("", &"<exclude pattern=\"a\"/>".repeat(257)),
                "job \"1001\": more than 256 exclude elements".into(),
            ),
            (
                one_job("", &"<email to=\"a\" when=\"never\"/>".repeat(257)),
                "job \"1001\": more than 256 email elements".into(),
            ),
            (
                one_job("", &"<option name=\"a\" value=\"\"/>".repeat(257)),
                "job \"1001\": more than 256 option elements".into(),
            ),
            (
                one_job(
                    "",
                    "<target host=\"a\" port=\"1\"/><target host=\"b\" port=\"2\"/>",
                ),
                "job \"1001\": a second target element".into(),
            ),
            (
                one_job(
                    "",
                    "<credential user=\"a\" password=\"\"/><credential user=\"a\" password=\"\"/>",
                ),
                "job \"1001\": a second credential element".into(),
            ),
            (
                one_job("", "<pre/><pre>x</pre>"),
                "job \"1001\": a second pre element".into(),
            ),
            (
                one_job("", "<post>a</post><post/>"),
                "job \"1001\": a second post element".into(),
            ),
            (
                one_job("", &format!("<pre>{}</pre>", long(4097))),
                "job \"1001\": pre is more than 4096 bytes, the limit is 4096".into(),
            ),
            (
                one_job(
                    "",
                    &format!("<post>{0}<!-- split -->{0}</post>", long(2049)),
                ),
                "job \"1001\": post is more than 4096 bytes, the limit is 4096".into(),
            ),
            (
                one_job("", "<target port=\"1\"/>"),
                "job \"1001\": target/@host is missing".into(),
            ),
            (
                one_job("", &format!("<target host=\"{}\" port=\"1\"/>", long(257))),
                "job \"1001\": target/@host is 257 bytes, the limit is 256".into(),
            ),
            (
                one_job("", "<target host=\"a\" port=\"0\"/>"),
                "job \"1001\": target/@port \"0\" is not a port number from 1 to 65535".into(),
            ),
            (
                one_job("", "<target host=\"a\" port=\" 22\"/>"),
                "job \"1001\": target/@port \" 22\" is not a port number".into(),
            ),
            (
                one_job("", "<target host=\"a\"/>"),
                "job \"1001\": target/@port is missing".into(),
            ),
            (
                one_job(
                    "",
                    &format!("<target host=\"a\" port=\"1\" user=\"{}\"/>", long(257)),
                ),
                "job \"1001\": target/@user is 257 bytes, the limit is 256".into(),
            ),
            (
                one_job("", "<credential password=\"p\"/>"),
                "job \"1001\": credential/@user is missing".into(),
            ),
            (
                one_job(
                    "",
                    &format!("<credential user=\"{}\" password=\"p\"/>", long(257)),
                ),
                "job \"1001\": credential/@user is 257 bytes, the limit is 256".into(),
            ),
            (
                one_job("", "<credential user=\"u\"/>"),
                "job \"1001\": credential/@password is missing".into(),
            ),
            (
                one_job("", "<email when=\"error\"/>"),
                "job \"1001\": email/@to is missing".into(),
            ),
            (
                one_job("", &format!("<email to=\"{}\" when=\"error\"/>", long(257))),
                "job \"1001\": email/@to is 257 bytes, the limit is 256".into(),
            ),
            (
                one_job("", "<email to=\"a\"/>"),
                "job \"1001\": email/@when is missing".into(),
            ),
            (
                one_job("", "<email to=\"a\" when=\"Error\"/>"),
                "job \"1001\": email/@when \"Error\" is not one of always, error, never".into(),
            ),
            (
                one_job("", "<option value=\"v\"/>"),
                "job \"1001\": option/@name is missing".into(),
            ),
            (
                one_job("", &format!("<option name=\"{}\" value=\"v\"/>", long(257))),
                "job \"1001\": option/@name is 257 bytes, the limit is 256".into(),
            ),
            (
                one_job("", "<option name=\"n\"/>"),
                "job \"1001\": option/@value is missing".into(),
            ),
            (
                one_job(
                    "",
                    &format!("<option name=\"n\" value=\"{}\"/>", long(4097)),
                ),
                "job \"1001\": option/@value is 4097 bytes, the limit is 4096".into(),
            ),
        ];
        for (doc, expected) in cases {
            let msg = refusal(&doc);
            assert!(
                msg.starts_with(&expected),
                "{msg:?} does not start with {expected:?}"
            );
        }
    }

    #[test]
    fn values_exactly_at_their_limits_are_accepted() {
        let x = |n: usize| "x".repeat(n);
        let schedule = format!("0 0 1 * * {}", x(246));
        let sources =
            "<source path=\"/a\"/>".repeat(255) + &format!("<source path=\"{}\"/>", x(4096));
        let exclude = format!("<exclude pattern=\"{}\"/>", x(4096));
        let doc = profile(&format!(
            "<job id=\"{}\" name=\"{}\" type=\"SFTP\" schedule=\"{schedule}\" retries=\"99\">{sources}{exclude}<target host=\"{}\" port=\"65535\" user=\"{}\"/><credential user=\"{}\" password=\"{}\"/><pre>{}</pre><email to=\"{}\" when=\"always\"/><option name=\"{}\" value=\"{}\"/></job>",
            x(64),
            "é".repeat(128),
            x(256),
            x(256),
            x(256),
            x(256),
            x(4096),
            x(256),
            x(256),
            x(4096),
        ));
        let (sink, _) = keep(&doc);
        let job = &sink.jobs[0];
        assert_eq!(job.name.chars().count(), 128);
        assert_eq!(job.schedule.len(), 256);
        assert_eq!(job.retries, 99);
        assert_eq!(job.children.count(ChildKind::Source), 256);
        assert_eq!(job.pre.as_ref().map(|p| p.len()), Some(4096));
        assert_eq!(job.credential.as_ref().unwrap().password.len(), 256);
    }

    #[test]
    fn accepted_oddities() {
        let doc = format!(
            "\u{FEFF}<?xml version='1.0'?>\n<!-- before -->\n<?pi before?>\n<profile schema='3' device='{DEVICE}' x:extra=\"1\">\n<!-- c --><?pi?><unknown a=\"1\"><nested b='2'><job id=\"bad id\"/></nested></unknown>\n<jobs>\n<!-- inside jobs --><?pi inside?>\n<job id='a.b_c-1' name='n' type='RSYNC' enabled='no' future='yes'><pre><![CDATA[a<b]]></pre><source path='/p' mode='ro'/><other><source path='/not/this'/></other></job>\n</jobs>\n</profile>\n<!-- after --><?pi after?>\n"
        );
        let (sink, summary) = keep(&doc);
        assert_eq!(summary.jobs, 1);
        let job = &sink.jobs[0];
        assert_eq!(job.id, "a.b_c-1");
        assert_eq!(job.pre.as_deref(), Some("a<b"));
        assert_eq!(sources(job), ["/p"]);
        // Zero jobs is a valid profile.
        let (sink, summary) = keep(&format!(
            "<profile schema=\"3\" device=\"{DEVICE}\"><jobs/></profile>"
        ));
        assert_eq!(
            (summary.jobs, sink.jobs.len(), sink.headers.len()),
            (0, 0, 1)
        );
        // Text of pre is kept exactly, unknown children's text is not.
        let (sink, _) = keep(&one_job(
            "",
            "<pre>  a <x>skip</x>&amp; b  </pre><post></post>",
        ));
        assert_eq!(sink.jobs[0].pre.as_deref(), Some("  a & b  "));
        assert_eq!(sink.jobs[0].post.as_deref(), Some(""));
    }

    #[test]
    fn one_job_value_is_reused_and_cleared_between_jobs() {
        let (sink, _) = keep(&profile(
            "<job id=\"a\" name=\"n\" type=\"CCS\" enabled=\"no\" retries=\"5\" schedule=\"* * * * *\"><source path=\"/a\"/><pre>p</pre><target host=\"h\" port=\"1\"/><credential user=\"u\" password=\"p\"/></job><job id=\"b\" name=\"m\" type=\"FTP\"/>",
        ));
        let b = &sink.jobs[1];
        assert_eq!(b, &{
            let mut j = Job::default();
            j.id.push_str("b").unwrap();
            j.name.push_str("m").unwrap();
            j.job_type = JobType::Ftp;
            j
        });
    }

    #[test]
    fn a_password_over_the_limit_is_not_in_the_message() {
        let secret = format!("{}TOPSECRET", "p".repeat(300));
        let msg = refusal(&one_job(
            "",
            &format!("<credential user=\"u\" password=\"{secret}\"/>"),
        ));
        assert_eq!(
            msg,
            "job \"1001\": credential/@password is longer than 256 bytes"
        );
        assert!(!msg.contains("TOPSECRET") && !msg.contains("ppp"));
        // Nor when the password is malformed XML.
        let msg = refusal(&one_job(
            "",
            "<credential user=\"u\" password=\"TOP&SECRET;\"/>",
        ));
        assert!(!msg.contains("SECRET") && !msg.contains("TOP"), "{msg}");
        // The Debug form a log line would use hides it too.
        let (sink, _) = keep(&one_job(
            "",
            "<credential user=\"u\" password=\"TOPSECRET\"/>",
        ));
        assert!(!format!("{:?}", sink.jobs[0]).contains("TOPSECRET"));
    }

    #[test]
    fn nesting_100000_deep_is_refused_at_depth_33_without_reading_on() {
        let mut body = Repeat::new(
            &format!("<profile schema=\"3\" device=\"{DEVICE}\">"),
            "<a>",
            100_000,
            "",
        );
        let msg = match parse(&mut body, DEVICE, &mut Count::default()) {
            Err(Error::Profile(msg)) => msg,
            other => panic!("{other:?}"),
        };
        assert!(
            msg.contains("<a> is nested 33 elements deep, the limit is 32"),
            "{msg}"
        );
        assert!(body.served <= (xml::CHUNK * 2) as u64, "{}", body.served);
    }

    #[test]
    fn a_10_mb_attribute_is_refused_within_the_window() {
        let mut body = Repeat::new(
            &format!("<profile schema=\"3\" device=\"{DEVICE}\" generated=\""),
            &"a".repeat(1024),
            10 * 1024,
            "\"><jobs/></profile>",
        );
        let msg = match parse(&mut body, DEVICE, &mut Count::default()) {
            Err(Error::Profile(msg)) => msg,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            msg,
            "profile is not well-formed XML at byte 0 (line 1): a tag is larger than 262144 bytes, the largest markup accepted"
        );
        assert!(
            body.served <= (xml::MAX_UNIT + xml::CHUNK) as u64,
            "{}",
            body.served
        );
    }

    #[test]
    fn more_than_100000_jobs_are_refused() {
        let head = format!("<profile schema=\"3\" device=\"{DEVICE}\"><jobs>");
        let job = "<job id=\"j\" name=\"n\" type=\"CCS\"><source path=\"/s\"/></job>";
        let mut sink = Count::default();
        let mut body = Repeat::new(&head, job, job::MAX_JOBS + 1, "</jobs></profile>");
        let msg = match parse(&mut body, DEVICE, &mut sink) {
            Err(Error::Profile(msg)) => msg,
            other => panic!("{other:?}"),
        };
        assert_eq!(msg, "profile has more than 100000 jobs, the limit");
        assert_eq!(sink.0, job::MAX_JOBS);
    }

    #[test]
    fn sink_errors_propagate_unchanged() {
        struct Refuse;
        impl ProfileSink for Refuse {
            fn header(&mut self, _: &Header) -> Result<()> {
                Ok(())
            }
            fn endpoint(&mut self, _: &Endpoint) -> Result<()> {
                Ok(())
            }
            fn job(&mut self, job: &Job) -> Result<()> {
                Err(Error::Store(format!("duplicate {}", job.id).into()))
            }
        }
        match parse(EXAMPLE.as_bytes(), DEVICE, &mut Refuse) {
            Err(Error::Store(msg)) => assert_eq!(msg, "duplicate 1001"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn read_errors_go_through_from_body_read() {
        struct Failing<'a>(&'a [u8], io::Error);
        impl Read for Failing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    let e = std::mem::replace(&mut self.1, io::Error::other("again"));
                    return Err(e);
                }
                let n = buf.len().min(self.0.len()).min(100);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let timeout = Failing(
            &EXAMPLE.as_bytes()[..300],
            io::Error::new(io::ErrorKind::TimedOut, "timed out"),
        );
        let err = parse(timeout, DEVICE, &mut Count::default()).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::NETWORK);
        let oversized = Failing(
            &EXAMPLE.as_bytes()[..300],
            io::Error::other(Error::Profile("larger than 300 bytes".into())),
        );
        match parse(oversized, DEVICE, &mut Count::default()) {
            Err(Error::Profile(msg)) => assert_eq!(msg, "larger than 300 bytes"),
            other => panic!("{other:?}"),
        }
    }
}
