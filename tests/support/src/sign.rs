//! `localnet sign`: the signing tool of a cncop network's operators
//! (PROTOCOL 8): make Ed25519 keys, make and sign a root document, sign any
//! document for a role. Keys are files of one line, the base64 of the
//! PKCS#8 key ring makes; keep the root and release keys offline.
//!
//! ```text
//! localnet sign keygen FILE
//! localnet sign root --out FILE --version N --expires TIME
//!                    --root KEY[,KEY..] --timestamp KEY[,..] --release KEY[,..] --profile KEY[,..]
//!                    [--threshold ROLE=N]... [--also-sign KEY[,..]]
//! localnet sign doc ROLE FILE KEY...
//! ```

use crate::net::trust::{Key, RoleKeys, Roles, Signed, root_xml};
use std::path::Path;
use std::sync::Arc;

pub const USAGE: &str = "\
localnet sign keygen FILE
    write a new Ed25519 key to FILE (mode 0600) and print its key id
localnet sign root --out FILE --version N --expires YYYY-MM-DDThh:mm:ssZ
                   --root KEY[,KEY..] --timestamp KEY[,..] --release KEY[,..] --profile KEY[,..]
                   [--threshold ROLE=N]... [--also-sign KEY[,..]]
    write the root document FILE, signed by its root keys (and, for a
    rotation, by the previous root's keys: --also-sign), and FILE.sig
localnet sign doc ROLE FILE KEY...
    sign FILE for ROLE (root, timestamp, release, profile): write FILE.sig,
    one `Cncop-Signature: ...` line per key";

pub fn main(args: &[String]) -> Result<(), String> {
    match args.split_first() {
        Some((cmd, rest)) if cmd == "keygen" => keygen(rest),
        Some((cmd, rest)) if cmd == "root" => root(rest),
        Some((cmd, rest)) if cmd == "doc" => doc(rest),
        _ => Err(format!("usage:\n{USAGE}")),
    }
}

fn keygen(args: &[String]) -> Result<(), String> {
    let [file] = args else {
        return Err(format!("usage:\n{USAGE}"));
    };
    let path = Path::new(file);
    if path.exists() {
        return Err(format!("{file} exists; a key is never overwritten"));
    }
    let key = Key::generate();
    write_private(path, &format!("{}\n", key.to_base64()))?;
    println!("key id:  {}", key.id);
    println!("ed25519: {}", key.public_base64());
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn read_key(file: &str) -> Result<Arc<Key>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
    Key::from_base64(&text)
        .map(Arc::new)
        .map_err(|e| format!("{file}: {e}"))
}

fn read_keys(list: &str) -> Result<Vec<Arc<Key>>, String> {
    list.split(',').map(read_key).collect()
}

fn root(args: &[String]) -> Result<(), String> {
    let mut out = None;
    let mut version = None;
    let mut expires = None;
    let mut keys: [Option<Vec<Arc<Key>>>; 4] = Default::default();
    let mut thresholds = [1usize; 4];
    let mut also = Vec::new();
    const ROLES: [&str; 4] = ["root", "timestamp", "release", "profile"];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--out" => out = Some(value()?),
            "--version" => {
                let v = value()?;
                version = Some(
                    v.parse::<u64>()
                        .map_err(|_| format!("--version {v}: not a number"))?,
                );
            }
            "--expires" => {
                let v = value()?;
                expires = Some(
                    cncopgetprofile::internals::clock::parse_rfc3339(&v)
                        .ok_or_else(|| format!("--expires {v}: not YYYY-MM-DDThh:mm:ssZ"))?,
                );
            }
            "--threshold" => {
                let v = value()?;
                let (role, n) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--threshold {v}: not ROLE=N"))?;
                let i = ROLES
                    .iter()
                    .position(|r| *r == role)
                    .ok_or_else(|| format!("--threshold: unknown role {role}"))?;
                thresholds[i] = n
                    .parse()
                    .map_err(|_| format!("--threshold {v}: not a number"))?;
            }
            "--also-sign" => also = read_keys(&value()?)?,
            flag => {
                let i = ROLES
                    .iter()
                    .position(|r| flag.strip_prefix("--") == Some(*r))
                    .ok_or_else(|| format!("unknown argument {flag}\n{USAGE}"))?;
                keys[i] = Some(read_keys(&value()?)?);
            }
        }
    }
    let need = |what: &str| format!("sign root needs {what}\n{USAGE}");
    let out = out.ok_or_else(|| need("--out"))?;
    let version = version.ok_or_else(|| need("--version"))?;
    let expires = expires.ok_or_else(|| need("--expires"))?;
    let mut roles = Vec::new();
    for (i, k) in keys.into_iter().enumerate() {
        let keys = k.ok_or_else(|| need(&format!("--{}", ROLES[i])))?;
        roles.push(RoleKeys {
            keys,
            threshold: thresholds[i],
        });
    }
    let [root, timestamp, release, profile]: [RoleKeys; 4] =
        roles.try_into().map_err(|_| "four roles".to_string())?;
    let roles = Roles {
        root,
        timestamp,
        release,
        profile,
    };
    let xml = root_xml(version, expires, &roles);
    let mut signers: Vec<&Key> = roles.root.keys.iter().map(|k| &**k).collect();
    for k in &also {
        if !signers.iter().any(|s| s.id == k.id) {
            signers.push(k);
        }
    }
    let signed = Signed::new("root", xml, &signers);
    write_signed(&out, &signed)?;
    println!(
        "wrote {out} (root version {version}) and {out}.sig ({} signatures)",
        signed.signatures.len()
    );
    Ok(())
}

fn write_signed(out: &str, signed: &Signed) -> Result<(), String> {
    std::fs::write(out, &signed.body).map_err(|e| format!("cannot write {out}: {e}"))?;
    std::fs::write(format!("{out}.sig"), signed.sig_file())
        .map_err(|e| format!("cannot write {out}.sig: {e}"))
}

fn doc(args: &[String]) -> Result<(), String> {
    let [role, file, keys @ ..] = args else {
        return Err(format!("usage:\n{USAGE}"));
    };
    if !["root", "timestamp", "release", "profile"].contains(&role.as_str()) || keys.is_empty() {
        return Err(format!("usage:\n{USAGE}"));
    }
    let body = std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
    let keys = keys
        .iter()
        .map(|k| read_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&Key> = keys.iter().map(|k| &**k).collect();
    let signed = Signed::new(role, body, &refs);
    std::fs::write(format!("{file}.sig"), signed.sig_file())
        .map_err(|e| format!("cannot write {file}.sig: {e}"))?;
    println!(
        "wrote {file}.sig ({} signatures for role {role})",
        refs.len()
    );
    Ok(())
}
