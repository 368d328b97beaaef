//! The root document (PROTOCOL 8.2): the keys and thresholds of every role.
//!
//! Invariants of a parsed `Root`: every key's id is the SHA-256 of its key;
//! all four roles are present, once each; every key a role names is declared;
//! a role's threshold is at least 1 and at most its number of keys (a role
//! that could never be satisfied is refused here, not at first use).

use super::document::{self, refuse};
use super::signature::{KeyId, PublicKey, RoleKeys, Signatures};
use crate::clock::UnixTime;
use crate::error::Result as XmlResult;
use crate::profile::xml::{Handler, StartTag};

/// Keys a root may declare, and keys a role may list.
pub const MAX_KEYS: usize = 64;

/// The roles of PROTOCOL 8.2, in the order messages list them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Root,
    Timestamp,
    Release,
    Profile,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Root, Role::Timestamp, Role::Release, Role::Profile];

    pub fn name(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Timestamp => "timestamp",
            Role::Release => "release",
            Role::Profile => "profile",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    pub version: u64,
    pub expires: UnixTime,
    roles: [RoleKeys; 4],
}

impl Root {
    /// Parses a root document whose signatures were already checked (or are
    /// about to be checked against its own root keys, which needs the keys).
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Root, String> {
        let mut p = Parser::default();
        document::read(name, bytes, &mut p)?;
        p.finish(name)
    }

    pub fn role(&self, role: Role) -> &RoleKeys {
        &self.roles[role.index()]
    }

    /// Checks `bytes` for `role` against this root's keys.
    pub fn verify(
        &self,
        role: Role,
        bytes: &[u8],
        sigs: &Signatures,
    ) -> Result<Vec<KeyId>, String> {
        self.role(role).verify(role.name(), bytes, sigs)
    }
}

#[derive(Default)]
struct Parser {
    version: Option<u64>,
    expires: Option<UnixTime>,
    keys: Vec<PublicKey>,
    /// Roles as declared: name, threshold, key ids.
    roles: Vec<(Role, usize, Vec<KeyId>)>,
    /// Inside `<role>` at depth 2 (the one being filled is the last).
    in_role: bool,
}

impl Handler for Parser {
    fn start(&mut self, tag: &StartTag<'_>) -> XmlResult<()> {
        self.start_tag(tag).map_err(refuse)
    }

    fn end(&mut self, name: &str, depth: usize) -> XmlResult<()> {
        if depth == 2 && name == "role" {
            self.in_role = false;
        }
        Ok(())
    }

    fn text(&mut self, _: &str, _: usize) -> XmlResult<()> {
        Ok(())
    }
}

impl Parser {
    fn start_tag(&mut self, tag: &StartTag<'_>) -> Result<(), String> {
        match (tag.depth, tag.name) {
            (1, _) => {
                document::root_element(tag, "root", "the root document")?;
                self.version = Some(document::version(tag, "version")?);
                self.expires = Some(document::time(tag, "expires")?);
            }
            (2, "key") => {
                let id = document::required(tag, "id")?;
                let declared = KeyId::parse(id).ok_or_else(|| {
                    format!(
                        "<key> id '{}' is not 64 lowercase hex digits",
                        crate::error::Shown::bare(id)
                    )
                })?;
                let key = PublicKey::from_base64(document::required(tag, "ed25519")?).ok_or_else(
                    || {
                        format!(
                            "<key> {} ed25519 is not the base64 of 32 bytes",
                            declared.short()
                        )
                    },
                )?;
                if key.id != declared {
                    return Err(format!(
                        "<key> id {} is not the SHA-256 of its key (that is {})",
                        declared.short(),
                        key.id.short()
                    ));
                }
                if self.keys.iter().any(|k| k.id == key.id) {
                    return Err(format!("key {} is declared twice", key.id.short()));
                }
                if self.keys.len() >= MAX_KEYS {
                    return Err(format!("more than {MAX_KEYS} keys"));
                }
                self.keys.push(key);
            }
            (2, "role") => {
                let name = document::required(tag, "name")?;
                // Unknown roles are ignored, as unknown elements are.
                let Some(role) = Role::ALL.into_iter().find(|r| r.name() == name) else {
                    return Ok(());
                };
                if self.roles.iter().any(|(r, _, _)| *r == role) {
                    return Err(format!("role {name} is declared twice"));
                }
                let t = document::required(tag, "threshold")?;
                let threshold = t
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1 && t.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        format!(
                            "role {name} threshold '{}' is not a whole number from 1",
                            crate::error::Shown::bare(t)
                        )
                    })?;
                self.roles.push((role, threshold, Vec::new()));
                self.in_role = true;
            }
            (3, "key") if self.in_role => {
                let Some((role, _, ids)) = self.roles.last_mut() else {
                    return Ok(());
                };
                let id = document::required(tag, "id")?;
                let id = KeyId::parse(id).ok_or_else(|| {
                    format!(
                        "role {} names key '{}', not 64 lowercase hex digits",
                        role.name(),
                        crate::error::Shown::bare(id)
                    )
                })?;
                if ids.contains(&id) {
                    return Err(format!(
                        "role {} names key {} twice",
                        role.name(),
                        id.short()
                    ));
                }
                if ids.len() >= MAX_KEYS {
                    return Err(format!(
                        "role {} names more than {MAX_KEYS} keys",
                        role.name()
                    ));
                }
                ids.push(id);
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(self, name: &str) -> Result<Root, String> {
        let (Some(version), Some(expires)) = (self.version, self.expires) else {
            return Err(format!("{name} has no <root> element"));
        };
        let mut roles: [Option<RoleKeys>; 4] = Default::default();
        for (role, threshold, ids) in self.roles {
            let mut keys = Vec::with_capacity(ids.len());
            for id in ids {
                let key = self.keys.iter().find(|k| k.id == id).ok_or_else(|| {
                    format!(
                        "{name}: role {} names key {}, which is not declared",
                        role.name(),
                        id.short()
                    )
                })?;
                keys.push(key.clone());
            }
            if threshold > keys.len() {
                return Err(format!(
                    "{name}: role {} has threshold {threshold} but only {} keys",
                    role.name(),
                    keys.len()
                ));
            }
            roles[role.index()] = Some(RoleKeys { threshold, keys });
        }
        let [Some(root), Some(timestamp), Some(release), Some(profile)] = roles else {
            let missing: Vec<&str> = Role::ALL
                .iter()
                .zip(&roles)
                .filter(|(_, r)| r.is_none())
                .map(|(role, _)| role.name())
                .collect();
            return Err(format!(
                "{name} (version {version}) declares no role {}",
                missing.join(", ")
            ));
        };
        Ok(Root {
            version,
            expires,
            roles: [root, timestamp, release, profile],
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::trust::signature::tests::TestKey;

    /// A root document: `keys[i]` for role i (root, timestamp, release, profile).
    pub(crate) fn root_xml(version: u64, expires: &str, roles: [&[&TestKey]; 4]) -> String {
        let mut xml = format!("<root version=\"{version}\" expires=\"{expires}\">\n");
        let mut declared = Vec::new();
        for keys in roles {
            for k in keys {
                if !declared.contains(&k.public.id) {
                    declared.push(k.public.id);
                    xml += &format!(
                        "  <key id=\"{}\" ed25519=\"{}\"/>\n",
                        k.public.id,
                        k.base64()
                    );
                }
            }
        }
        for (role, keys) in Role::ALL.iter().zip(roles) {
            xml += &format!("  <role name=\"{}\" threshold=\"1\">", role.name());
            for k in keys {
                xml += &format!("<key id=\"{}\"/>", k.public.id);
            }
            xml += "</role>\n";
        }
        xml + "</root>\n"
    }

    #[test]
    fn parses_roles_and_keys() {
        let (r, t) = (TestKey::new(), TestKey::new());
        let xml = root_xml(3, "2031-01-01T00:00:00Z", [&[&r], &[&t], &[&r, &t], &[&t]]);
        let root = Root::parse("root.xml", xml.as_bytes()).expect("parse");
        assert_eq!(root.version, 3);
        assert_eq!(root.role(Role::Release).keys.len(), 2);
        assert_eq!(root.role(Role::Timestamp).keys[0].id, t.public.id);
    }

    #[test]
    fn refuses_bad_roots() {
        let (r, t) = (TestKey::new(), TestKey::new());
        let good = root_xml(1, "2031-01-01T00:00:00Z", [&[&r], &[&t], &[&t], &[&t]]);
        let cases: Vec<(String, &str)> = vec![
            (
                good.replace(
                    "<role name=\"profile\" threshold=\"1\">",
                    "<role name=\"x\" threshold=\"1\">",
                ),
                "declares no role profile",
            ),
            (
                good.replace("threshold=\"1\"", "threshold=\"2\""),
                "threshold 2 but only 1",
            ),
            (
                good.replace("threshold=\"1\"", "threshold=\"0\""),
                "not a whole number from 1",
            ),
            (
                good.replace(
                    &format!("id=\"{}\" ed25519", t.public.id),
                    &format!("id=\"{}\" ed25519", r.public.id),
                ),
                "not the SHA-256",
            ),
            (
                good.replace("version=\"1\"", "version=\"-1\""),
                "not a whole number",
            ),
            (
                good.replace("2031-01-01T00:00:00Z", "2031-01-01"),
                "not a UTC time",
            ),
            (format!("<!DOCTYPE root>{good}"), "DOCTYPE"),
            (
                good.replace("<root ", "<timestamp ")
                    .replace("</root>", "</timestamp>"),
                "expected <root>",
            ),
            (
                "<root version=\"1\" expires=\"2031-01-01T00:00:00Z\">".to_string(),
                "cut short",
            ),
        ];
        for (xml, want) in cases {
            let err = Root::parse("root.xml", xml.as_bytes()).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
            assert!(err.starts_with("root.xml") || err.contains("root"), "{err}");
        }
        let big = format!(
            "{}<!--{}-->",
            good,
            "x".repeat(document::MAX_METADATA_BYTES)
        );
        assert!(
            Root::parse("root.xml", big.as_bytes())
                .unwrap_err()
                .contains("larger than")
        );
    }
}
