//! Metadata that travels with a photo: XMP (embedded in the file or in a sidecar `.xmp`) and
//! IPTC IIM (in a JPEG's APP13 segment), read into field values by the names the schema maps
//! (each field's `xmp` and `iptc` lists, and the built-in fields' standard properties).
//!
//! Both readers are small and forgiving: they never fail, they return what they could read.
//! They look only at the first MiB of a file, where every container we accept keeps these.

use std::collections::BTreeMap;

use serde_json::Value;

use super::fields::FieldType;
use super::schema::Schema;

/// Bytes of a file searched for embedded metadata.
const WINDOW: usize = 1 << 20;
/// Longest property value kept (characters).
const MAX_VALUE: usize = 10_000;

/// Properties read from an XMP packet: `prefix:Name` → values (lists have several).
pub type XmpProps = BTreeMap<String, Vec<String>>;
/// Datasets read from IPTC IIM: `record:dataset` (`2:05`) → values (repeatable ones several).
pub type IptcProps = BTreeMap<String, Vec<String>>;

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.find(';').filter(|e| *e <= 10) else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let ent = &tail[1..end];
        let ch = match ent {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out.chars().take(MAX_VALUE).collect()
}

/// One token of the packet.
enum Tok<'a> {
    Open {
        name: &'a str,
        attrs: Vec<(&'a str, String)>,
        empty: bool,
    },
    Close(&'a str),
    Text(String),
}

fn tokens(xml: &str) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    let b = xml.as_bytes();
    while i < b.len() {
        if b[i] != b'<' {
            let end = xml[i..].find('<').map_or(b.len(), |e| i + e);
            let t = xml[i..end].trim();
            if !t.is_empty() {
                out.push(Tok::Text(unescape(t)));
            }
            i = end;
            continue;
        }
        let rest = &xml[i..];
        if rest.starts_with("<!--") {
            i += rest.find("-->").map_or(rest.len(), |e| e + 3);
            continue;
        }
        if rest.starts_with("<![CDATA[") {
            let end = rest.find("]]>").unwrap_or(rest.len());
            out.push(Tok::Text(rest[9..end].to_owned()));
            i += (end + 3).min(rest.len());
            continue;
        }
        if rest.starts_with("<?") || rest.starts_with("<!") {
            i += rest.find('>').map_or(rest.len(), |e| e + 1);
            continue;
        }
        let Some(end) = find_tag_end(rest) else { break };
        let inner = &rest[1..end];
        i += end + 1;
        if let Some(name) = inner.strip_prefix('/') {
            out.push(Tok::Close(name.trim()));
            continue;
        }
        let empty = inner.ends_with('/');
        let inner = inner.trim_end_matches('/');
        let name_end = inner
            .find(|c: char| c.is_whitespace())
            .unwrap_or(inner.len());
        let name = &inner[..name_end];
        let mut attrs = Vec::new();
        let mut a = &inner[name_end..];
        while let Some(eq) = a.find('=') {
            let key = a[..eq].trim();
            let after = a[eq + 1..].trim_start();
            let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                break;
            };
            let Some(close) = after[1..].find(q) else {
                break;
            };
            attrs.push((key, unescape(&after[1..1 + close])));
            a = &after[close + 2..];
        }
        out.push(Tok::Open { name, attrs, empty });
    }
    out
}

/// The end of a tag (`>` outside quotes).
fn find_tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn is_property(name: &str) -> bool {
    name.contains(':')
        && !name.starts_with("rdf:")
        && !name.starts_with("x:")
        && !name.starts_with("xml:")
        && !name.starts_with("xmlns")
}

/// Reads every simple property of an XMP packet (attribute or element form, `rdf:Bag`,
/// `rdf:Seq` and `rdf:Alt` lists). Structured properties give their inner properties.
pub fn read_xmp(bytes: &[u8]) -> XmpProps {
    let window = &bytes[..bytes.len().min(WINDOW)];
    let start = find(window, b"<x:xmpmeta")
        .or_else(|| find(window, b"<rdf:RDF"))
        .unwrap_or(usize::MAX);
    let mut out = XmpProps::new();
    if start == usize::MAX {
        return out;
    }
    let end = find(&window[start..], b"</x:xmpmeta>")
        .or_else(|| find(&window[start..], b"</rdf:RDF>"))
        .map_or(window.len(), |e| start + e);
    let text = String::from_utf8_lossy(&window[start..end]);
    // The property being read and the values collected for it.
    let mut current: Option<(String, Vec<String>, usize)> = None;
    let mut depth = 0usize;
    for tok in tokens(&text) {
        match tok {
            Tok::Open { name, attrs, empty } => {
                for (k, v) in &attrs {
                    if is_property(k) && !v.trim().is_empty() {
                        out.entry((*k).to_owned())
                            .or_default()
                            .push(v.trim().to_owned());
                    }
                }
                if current.is_none() && is_property(name) {
                    if empty {
                        if let Some((_, v)) = attrs.iter().find(|(k, _)| *k == "rdf:resource") {
                            out.entry(name.to_owned()).or_default().push(v.clone());
                        }
                    } else {
                        current = Some((name.to_owned(), Vec::new(), depth));
                    }
                }
                if !empty {
                    depth += 1;
                }
            }
            Tok::Close(name) => {
                depth = depth.saturating_sub(1);
                if let Some((prop, vals, d)) = &current {
                    if *d == depth && name == prop {
                        if !vals.is_empty() {
                            out.entry(prop.clone()).or_default().extend(vals.clone());
                        }
                        current = None;
                    }
                }
            }
            Tok::Text(t) => {
                if let Some((_, vals, _)) = &mut current {
                    if !t.is_empty() {
                        vals.push(t);
                    }
                }
            }
        }
    }
    out
}

/// Reads IPTC IIM datasets from a JPEG's Photoshop APP13 segment (resource 0x0404).
pub fn read_iptc(bytes: &[u8]) -> IptcProps {
    let mut out = IptcProps::new();
    let b = &bytes[..bytes.len().min(WINDOW)];
    if b.len() < 4 || b[0] != 0xFF || b[1] != 0xD8 {
        return out;
    }
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            break;
        }
        let marker = b[i + 1];
        if marker == 0xD9 || marker == 0xDA {
            break;
        }
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if len < 2 || i + 2 + len > b.len() {
            break;
        }
        let seg = &b[i + 4..i + 2 + len];
        if marker == 0xED && seg.starts_with(b"Photoshop 3.0\0") {
            read_8bim(&seg[14..], &mut out);
        }
        i += 2 + len;
    }
    out
}

fn read_8bim(mut r: &[u8], out: &mut IptcProps) {
    while r.len() >= 12 && &r[..4] == b"8BIM" {
        let id = u16::from_be_bytes([r[4], r[5]]);
        let name_len = r[6] as usize;
        // The Pascal name is padded to an even length (length byte included).
        let name_total = (1 + name_len + 1) & !1;
        let at = 6 + name_total;
        if r.len() < at + 4 {
            return;
        }
        let size = u32::from_be_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]]) as usize;
        let data_at = at + 4;
        if r.len() < data_at + size {
            return;
        }
        if id == 0x0404 {
            read_iim(&r[data_at..data_at + size], out);
        }
        r = &r[(data_at + size + (size & 1)).min(r.len())..];
    }
}

fn read_iim(mut d: &[u8], out: &mut IptcProps) {
    // Record 1:90 names the character set; UTF-8 is assumed otherwise too (lossy).
    while d.len() >= 5 && d[0] == 0x1C {
        let (rec, ds) = (d[1], d[2]);
        let len = u16::from_be_bytes([d[3], d[4]]) as usize;
        if len & 0x8000 != 0 || d.len() < 5 + len {
            return;
        }
        let v = String::from_utf8_lossy(&d[5..5 + len])
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .chars()
            .take(MAX_VALUE)
            .collect::<String>();
        if !v.is_empty() {
            out.entry(format!("{rec}:{ds:02}")).or_default().push(v);
        }
        d = &d[5 + len..];
    }
}

/// Values for the schema's fields from XMP and IPTC properties (XMP first, per field in the
/// order its names are listed). Lists take every item; other fields the first value.
pub fn values_for(schema: &Schema, xmp: &XmpProps, iptc: &IptcProps) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for f in schema.fields.values() {
        let found = f
            .xmp_names()
            .iter()
            .find_map(|n| xmp.get(*n).filter(|v| !v.is_empty()))
            .or_else(|| {
                f.iptc_names()
                    .iter()
                    .find_map(|n| iptc.get(&normalise_dataset(n)).filter(|v| !v.is_empty()))
            });
        let Some(vals) = found else { continue };
        let v = if f.kind == FieldType::List {
            Value::Array(vals.iter().cloned().map(Value::String).collect())
        } else if f.def.name == "creator" && vals.len() > 1 {
            Value::String(vals.join(", "))
        } else {
            Value::String(vals[0].clone())
        };
        out.insert(f.def.name.clone(), v);
    }
    out
}

/// `2:5` and `2:05` name the same dataset.
fn normalise_dataset(n: &str) -> String {
    match n.split_once(':') {
        Some((r, d)) => match (r.parse::<u8>(), d.parse::<u8>()) {
            (Ok(r), Ok(d)) => format!("{r}:{d:02}"),
            _ => n.to_owned(),
        },
        None => n.to_owned(),
    }
}

/// Builds an APP13 IPTC segment (for tests and fixtures): datasets `(record, dataset, value)`.
pub fn iptc_segment(datasets: &[(u8, u8, &str)]) -> Vec<u8> {
    let mut iim = Vec::new();
    for (r, d, v) in datasets {
        iim.extend_from_slice(&[0x1C, *r, *d]);
        iim.extend_from_slice(&(v.len() as u16).to_be_bytes());
        iim.extend_from_slice(v.as_bytes());
    }
    let mut res = b"8BIM".to_vec();
    res.extend_from_slice(&0x0404u16.to_be_bytes());
    res.extend_from_slice(&[0, 0]);
    res.extend_from_slice(&(iim.len() as u32).to_be_bytes());
    res.extend_from_slice(&iim);
    if iim.len() % 2 == 1 {
        res.push(0);
    }
    let mut payload = b"Photoshop 3.0\0".to_vec();
    payload.extend_from_slice(&res);
    let mut seg = vec![0xFF, 0xED];
    seg.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    seg.extend_from_slice(&payload);
    seg
}

/// Inserts segments right after a JPEG's SOI marker (for tests and fixtures).
pub fn with_segments(jpeg: &[u8], segments: &[Vec<u8>]) -> Vec<u8> {
    let mut out = jpeg[..2.min(jpeg.len())].to_vec();
    for s in segments {
        out.extend_from_slice(s);
    }
    out.extend_from_slice(&jpeg[2.min(jpeg.len())..]);
    out
}

/// Wraps an XMP packet in a JPEG APP1 segment (for tests and fixtures).
pub fn xmp_segment(packet: &str) -> Vec<u8> {
    let mut payload = b"http://ns.adobe.com/xap/1.0/\0".to_vec();
    payload.extend_from_slice(packet.as_bytes());
    let mut seg = vec![0xFF, 0xE1];
    seg.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    seg.extend_from_slice(&payload);
    seg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::schema::SchemaDoc;

    const PACKET: &str = r#"<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:fp="https://example.com/fp/" fp:PhotographerId="P0042"
  photoshop:Credit="Ann &amp; Co" plus:LicenseEndDate="2027-01-31">
<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Dune at dusk</rdf:li></rdf:Alt></dc:title>
<dc:subject><rdf:Bag><rdf:li>puppy</rdf:li><rdf:li>beach</rdf:li></rdf:Bag></dc:subject>
<dc:creator><rdf:Seq><rdf:li>Ann</rdf:li><rdf:li>Bo</rdf:li></rdf:Seq></dc:creator>
<xmpRights:WebStatement rdf:resource="https://example.com/licence"/>
<fp:Shots>12</fp:Shots>
</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>"#;

    #[test]
    fn xmp_properties_in_every_form() {
        let p = read_xmp(PACKET.as_bytes());
        assert_eq!(p["fp:PhotographerId"], ["P0042"]);
        assert_eq!(p["photoshop:Credit"], ["Ann & Co"]);
        assert_eq!(p["dc:title"], ["Dune at dusk"]);
        assert_eq!(p["dc:subject"], ["puppy", "beach"]);
        assert_eq!(p["xmpRights:WebStatement"], ["https://example.com/licence"]);
        assert_eq!(p["fp:Shots"], ["12"]);
        assert!(read_xmp(b"no packet").is_empty());
        assert!(read_xmp(b"<x:xmpmeta><rdf:Description dc:x=\"unterminated").is_empty());
    }

    #[test]
    fn iptc_from_app13_and_mapping_to_fields() {
        let seg = iptc_segment(&[
            (2, 5, "Harbour"),
            (2, 25, "boats"),
            (2, 25, "sea"),
            (2, 110, "Bo"),
        ]);
        let jpeg = with_segments(&[0xFF, 0xD8, 0xFF, 0xD9], &[seg, xmp_segment(PACKET)]);
        let i = read_iptc(&jpeg);
        assert_eq!(i["2:05"], ["Harbour"]);
        assert_eq!(i["2:25"], ["boats", "sea"]);
        let schema = SchemaDoc::parse(
            "[[fields]]\nname = \"photographer_id\"\ntype = \"text\"\nxmp = [\"fp:PhotographerId\"]\n\
             [[fields]]\nname = \"shots\"\ntype = \"number\"\nxmp = [\"fp:Shots\"]\n\
             [[fields]]\nname = \"harbour\"\ntype = \"text\"\niptc = [\"2:5\"]\n",
            false,
        )
        .unwrap()
        .compile(1, Vec::new())
        .unwrap();
        let v = values_for(&schema, &read_xmp(&jpeg), &i);
        // XMP is preferred where both have a value.
        assert_eq!(v["title"], "Dune at dusk");
        assert_eq!(v["keywords"], serde_json::json!(["puppy", "beach"]));
        assert_eq!(v["credit"], "Ann & Co");
        assert_eq!(v["creator"], "Ann, Bo");
        assert_eq!(v["photographer_id"], "P0042");
        assert_eq!(v["shots"], "12");
        assert_eq!(v["harbour"], "Harbour");
        assert_eq!(v["licence"], "https://example.com/licence");
        assert_eq!(v["rights_valid_until"], "2027-01-31");
    }
}
