//! JSON output (`--list --json`, `--status --json`): written member by
//! member into a string, in a fixed order, with no JSON crate in the
//! appliance binary.

/// A JSON object being written: `{` when opened, a comma between members,
/// `}` when closed.
pub(crate) struct Object<'s> {
    s: &'s mut String,
    first: bool,
}

impl<'s> Object<'s> {
    pub(crate) fn open(s: &'s mut String) -> Object<'s> {
        s.push('{');
        Object { s, first: true }
    }

    /// Starts member `name`; its value is written next, into the string
    /// returned.
    pub(crate) fn key(&mut self, name: &str) -> &mut String {
        if !self.first {
            self.s.push(',');
        }
        self.first = false;
        json_str(self.s, name);
        self.s.push(':');
        self.s
    }

    pub(crate) fn str(&mut self, name: &str, v: &str) {
        json_str(self.key(name), v);
    }

    /// A string, or `null`.
    pub(crate) fn opt_str(&mut self, name: &str, v: Option<&str>) {
        match v {
            Some(v) => self.str(name, v),
            None => self.raw(name, "null"),
        }
    }

    /// A number, `true`, `false` or `null`, as written.
    pub(crate) fn raw(&mut self, name: &str, v: &str) {
        self.key(name).push_str(v);
    }

    pub(crate) fn close(self) {
        self.s.push('}');
    }
}

/// `[` `each` item `]`, comma-separated.
pub(crate) fn array<T>(
    s: &mut String,
    items: impl Iterator<Item = T>,
    mut each: impl FnMut(&mut String, T),
) {
    s.push('[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            s.push(',');
        }
        each(s, item);
    }
    s.push(']');
}

/// Appends `v` as a JSON string literal.
pub(crate) fn json_str(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if u32::from(c) < 0x20 => s.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => s.push(c),
        }
    }
    s.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\n\u{1}写");
        assert_eq!(s, r#""a\"b\\c\n\u0001写""#);
    }

    #[test]
    fn objects_and_arrays_separate_their_members() {
        let mut s = String::new();
        let mut o = Object::open(&mut s);
        o.str("a", "x");
        o.opt_str("b", None);
        array(o.key("c"), [1, 2].into_iter(), |s, n| {
            s.push_str(&n.to_string())
        });
        o.close();
        assert_eq!(s, r#"{"a":"x","b":null,"c":[1,2]}"#);
    }
}
