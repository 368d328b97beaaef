//! The byte formats of the store's values: one job, one endpoint.
//!
//! Invariant: every integer is little-endian and every string is a `u16`
//! little-endian length followed by UTF-8, so a store written on a big-endian
//! MIPS box reads the same on ARM or x86. Decoding checks every length, code
//! and protocol limit, so a damaged record is an error, never a panic or an
//! out-of-limit `Job`.

use crate::profile::job::{
    Children, Credential, Endpoint, Job, JobType, LongValue, MAX_RETRIES, Target, Value, put_str,
    schedule_fields, take_str, valid_id, valid_name,
};

/// First byte of every job record; bump it when the layout changes (and bump
/// `STORE_SCHEMA` so old stores are rebuilt).
const JOB_FORMAT: u8 = 1;

const HAS_TARGET: u8 = 1;
const HAS_TARGET_USER: u8 = 1 << 1;
const HAS_CREDENTIAL: u8 = 1 << 2;
const HAS_PRE: u8 = 1 << 3;
const HAS_POST: u8 = 1 << 4;
/// Every flag a record may carry; any other bit is damage.
const KNOWN_FLAGS: u8 = HAS_TARGET | HAS_TARGET_USER | HAS_CREDENTIAL | HAS_PRE | HAS_POST;

/// Appends the record of `job` to `out` (cleared first), reusing its capacity.
pub fn encode_job(job: &Job, out: &mut Vec<u8>) {
    out.clear();
    out.push(JOB_FORMAT);
    put_str(out, &job.id);
    put_str(out, &job.name);
    out.push(job.job_type.code());
    out.push(u8::from(job.enabled));
    put_str(out, &job.schedule);
    out.push(job.retries);
    let mut flags = 0;
    if let Some(t) = &job.target {
        flags |= HAS_TARGET;
        if t.user.is_some() {
            flags |= HAS_TARGET_USER;
        }
    }
    if job.credential.is_some() {
        flags |= HAS_CREDENTIAL;
    }
    if job.pre.is_some() {
        flags |= HAS_PRE;
    }
    if job.post.is_some() {
        flags |= HAS_POST;
    }
    out.push(flags);
    if let Some(t) = &job.target {
        put_str(out, &t.host);
        out.extend_from_slice(&t.port.to_le_bytes());
        if let Some(u) = &t.user {
            put_str(out, u);
        }
    }
    if let Some(c) = &job.credential {
        put_str(out, &c.user);
        put_str(out, &c.password);
    }
    if let Some(p) = &job.pre {
        put_str(out, p);
    }
    if let Some(p) = &job.post {
        put_str(out, p);
    }
    out.extend_from_slice(job.children.as_bytes());
}

/// The job id of job record `rec` (its first field), read without decoding
/// the rest; `None` if the record is damaged.
pub fn job_id(rec: &[u8]) -> Option<&[u8]> {
    let (&format, rest) = rec.split_first()?;
    let (len, rest) = rest.split_first_chunk::<2>()?;
    (format == JOB_FORMAT).then_some(())?;
    rest.get(..usize::from(u16::from_le_bytes(*len)))
}

/// True when job records `a` and `b` are of the same job id.
pub fn same_job_id(a: &[u8], b: &[u8]) -> bool {
    job_id(a).is_some_and(|id| job_id(b) == Some(id))
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        let (b, rest) = self.rest.split_first_chunk::<2>()?;
        self.rest = rest;
        Some(u16::from_le_bytes(*b))
    }

    fn bounded<const N: usize>(&mut self) -> Option<heapless::String<N>> {
        heapless::String::try_from(take_str(&mut self.rest)?).ok()
    }
}

/// Decodes a job record; `None` if the bytes are not a valid record.
pub fn decode_job(bytes: &[u8]) -> Option<Job> {
    let mut r = Reader { rest: bytes };
    if r.byte()? != JOB_FORMAT {
        return None;
    }
    let id: crate::profile::job::Id = r.bounded()?;
    let name: crate::profile::job::Name = r.bounded()?;
    if !valid_id(&id) || !valid_name(&name) {
        return None;
    }
    let job_type = JobType::from_code(r.byte()?)?;
    let enabled = match r.byte()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let schedule: Value = r.bounded()?;
    if !schedule.is_empty() && !(5..=6).contains(&schedule_fields(&schedule)) {
        return None;
    }
    let retries = r.byte().filter(|&n| n <= MAX_RETRIES)?;
    let flags = r.byte()?;
    if flags & !KNOWN_FLAGS != 0 || (flags & HAS_TARGET == 0 && flags & HAS_TARGET_USER != 0) {
        return None;
    }
    let target = if flags & HAS_TARGET != 0 {
        let host = r.bounded()?;
        let port = r.u16().filter(|&p| p != 0)?;
        let user = if flags & HAS_TARGET_USER != 0 {
            Some(r.bounded()?)
        } else {
            None
        };
        Some(Target { host, port, user })
    } else {
        None
    };
    let credential = if flags & HAS_CREDENTIAL != 0 {
        Some(Credential {
            user: r.bounded()?,
            password: r.bounded()?,
        })
    } else {
        None
    };
    let long = |r: &mut Reader<'_>, flag: u8| -> Option<Option<LongValue>> {
        if flags & flag != 0 {
            Some(Some(r.bounded()?))
        } else {
            Some(None)
        }
    };
    let pre = long(&mut r, HAS_PRE)?;
    let post = long(&mut r, HAS_POST)?;
    let children = Children::from_bytes(r.rest)?;
    Some(Job {
        id,
        name,
        job_type,
        enabled,
        schedule,
        retries,
        target,
        credential,
        pre,
        post,
        children,
    })
}

pub fn encode_endpoint(e: &Endpoint, out: &mut Vec<u8>) {
    out.clear();
    put_str(out, &e.host);
    out.extend_from_slice(&e.port.to_le_bytes());
    put_str(out, &e.proto);
    put_str(out, &e.purpose);
}

pub fn decode_endpoint(bytes: &[u8]) -> Option<Endpoint> {
    let mut r = Reader { rest: bytes };
    let host: Value = r.bounded()?;
    let port = r.u16().filter(|&p| p != 0)?;
    let proto = r.bounded()?;
    let purpose = r.bounded()?;
    r.rest.is_empty().then_some(Endpoint {
        host,
        port,
        proto,
        purpose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::job::{Child, EmailWhen};

    fn sample() -> Job {
        let mut job = Job::default();
        job.id.push_str("1002").unwrap();
        job.name.push_str("SQL nightly 写真").unwrap();
        job.job_type = JobType::Mssql;
        job.enabled = false;
        job.schedule.push_str("0 0 2 * * *").unwrap();
        job.retries = 1;
        let mut host = Value::new();
        host.push_str("db1.office.example").unwrap();
        job.target = Some(Target {
            host,
            port: 1433,
            user: None,
        });
        let mut cred = Credential::default();
        cred.user.push_str("backup").unwrap();
        cred.password.push_str("s3cr<t").unwrap();
        job.credential = Some(cred);
        let mut post = LongValue::new();
        post.push_str("/opt/cncop/hooks/resume.sh").unwrap();
        job.post = Some(post);
        job.children
            .push(Child::Source("/share/HR & Payroll"))
            .unwrap();
        job.children
            .push(Child::Email {
                to: "ops@example.com",
                when: EmailWhen::Always,
            })
            .unwrap();
        job
    }

    #[test]
    fn job_round_trips() {
        let job = sample();
        let mut buf = Vec::new();
        encode_job(&job, &mut buf);
        assert_eq!(decode_job(&buf), Some(job));
    }

    #[test]
    fn record_bytes_are_fixed_little_endian() {
        // The exact bytes are the cross-target contract: a change here means a
        // new JOB_FORMAT and STORE_SCHEMA.
        let mut job = Job::default();
        job.id.push_str("7").unwrap();
        job.name.push_str("n").unwrap();
        job.target = Some(Target {
            host: Value::try_from("h").unwrap(),
            port: 0x0102,
            user: None,
        });
        let mut buf = Vec::new();
        encode_job(&job, &mut buf);
        assert_eq!(
            buf,
            [
                1, 1, 0, b'7', 1, 0, b'n', 0, 1, 0, 0, 0, 1, 1, 0, b'h', 0x02, 0x01
            ]
        );
    }

    #[test]
    fn damaged_records_are_refused_not_panicked_on() {
        let mut buf = Vec::new();
        encode_job(&sample(), &mut buf);
        for cut in 0..buf.len() {
            // Any prefix is either refused or (if it ends on a child boundary) a
            // job with fewer children, never a panic.
            let _ = decode_job(&buf[..cut]);
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0xff;
            let _ = decode_job(&bad);
        }
        assert_eq!(decode_job(&[2]), None);
    }

    #[test]
    fn decoding_is_as_strict_as_the_protocol() {
        let mut good = Vec::new();
        encode_job(&sample(), &mut good);
        assert!(decode_job(&good).is_some());
        // retries is byte 1 + (2+4) + (2+len(name)) + 1 + 1 + (2+len(schedule)).
        let name_len = sample().name.len();
        let retries_at = 1 + 6 + 2 + name_len + 2 + 2 + "0 0 2 * * *".len();
        assert_eq!(good[retries_at], 1);
        let mut bad = good.clone();
        bad[retries_at] = 100;
        assert_eq!(decode_job(&bad), None, "retries over 99");
        bad[retries_at] = 255;
        assert_eq!(decode_job(&bad), None, "retries of 255");
        let flags_at = retries_at + 1;
        for bit in [1 << 5, 1 << 6, 1 << 7] {
            let mut bad = good.clone();
            bad[flags_at] |= bit;
            assert_eq!(decode_job(&bad), None, "unknown flag bit {bit:#x}");
        }
        let mut bad = good.clone();
        bad[3] = b'/';
        assert_eq!(
            decode_job(&bad),
            None,
            "an id character the protocol forbids"
        );
        let mut job = sample();
        job.target.as_mut().unwrap().port = 0;
        encode_job(&job, &mut bad);
        assert_eq!(decode_job(&bad), None, "port 0");
        let mut job = sample();
        job.schedule = Value::try_from("* * *").unwrap();
        encode_job(&job, &mut bad);
        assert_eq!(decode_job(&bad), None, "a schedule of 3 fields");
        let mut job = sample();
        job.name = crate::profile::job::Name::try_from("é".repeat(129).as_str()).unwrap();
        encode_job(&job, &mut bad);
        assert_eq!(decode_job(&bad), None, "a name of 129 characters");
    }

    #[test]
    fn endpoint_round_trips() {
        let e = Endpoint {
            host: Value::try_from("127.0.1.1").unwrap(),
            port: 443,
            proto: Value::try_from("tcp").unwrap(),
            purpose: Value::try_from("prime").unwrap(),
        };
        let mut buf = Vec::new();
        encode_endpoint(&e, &mut buf);
        assert_eq!(decode_endpoint(&buf), Some(e));
        assert_eq!(decode_endpoint(&buf[..buf.len() - 1]), None);
    }
}
