//! The tests' own XML helpers: escaping a value into a document, reading
//! values back. Not the agent's (a test must not build or read its input
//! with the code it tests), and one of each for every test.

/// `s` with the five XML special characters escaped, for an attribute
/// value or text.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// `s` with its entity and character references replaced; an error names
/// a bare `&` or an unknown entity.
pub fn xml_unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        let semi = rest[p..]
            .find(';')
            .ok_or_else(|| format!("a bare '&' in {s:?}"))?;
        let ent = &rest[p + 1..p + semi];
        let c = match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(h) = ent.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = ent.strip_prefix('#') {
                    d.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown entity &{ent}; in {s:?}"))?
            }
        };
        out.push(c);
        rest = &rest[p + semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Values of every `attr="..."` in `xml`, XML-unescaped.
pub fn attr_values(xml: &[u8], attr: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(xml);
    let needle = format!(" {attr}=\"");
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(p) = rest.find(&needle) {
        rest = &rest[p + needle.len()..];
        let end = rest.find('"').expect("closing quote");
        out.push(xml_unescape(&rest[..end]).unwrap_or_else(|e| panic!("{attr}: {e}")));
        rest = &rest[end..];
    }
    out
}
