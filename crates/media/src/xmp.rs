//! XMP: the properties the catalogue reads from an embedded XMP packet.

/// XMP properties kept (by qualified name).
const XMP_PROPS: &[&str] = &[
    "xmp:Rating",
    "xmp:CreatorTool",
    "xmp:CreateDate",
    "aux:Lens",
    "exifEX:LensModel",
    "photoshop:DateCreated",
    "photoshop:City",
    "photoshop:Country",
    "dc:title",
    "dc:description",
    "dc:subject",
    "dc:creator",
    "dc:rights",
];

/// Reads the XMP packet (found within the first MiB, where every container we accept keeps
/// it) and returns the properties in [`XMP_PROPS`] that it sets. Lists (`rdf:li`) are joined
/// with `, `. Malformed XMP yields what could be read.
pub fn read_xmp(source: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    let window = &source[..source.len().min(1 << 20)];
    let Some(start) = find(window, b"<x:xmpmeta") else {
        return out;
    };
    let end = find(&window[start..], b"</x:xmpmeta>")
        .map(|e| start + e)
        .unwrap_or(window.len());
    let xmp = String::from_utf8_lossy(&window[start..end]);
    for prop in XMP_PROPS {
        // Attribute form: prop="value".
        if let Some(i) = xmp.find(&format!("{prop}=\"")) {
            let rest = &xmp[i + prop.len() + 2..];
            if let Some(j) = rest.find('"') {
                out.insert(
                    (*prop).to_owned(),
                    serde_json::Value::String(unescape(&rest[..j])),
                );
                continue;
            }
        }
        // Element form: <prop>value</prop>, or a list of <rdf:li>.
        let open = format!("<{prop}>");
        let close = format!("</{prop}>");
        if let Some(i) = xmp.find(&open) {
            let body = &xmp[i + open.len()..];
            let body = &body[..body.find(&close).unwrap_or(body.len())];
            let items: Vec<String> = body
                .split("<rdf:li")
                .skip(1)
                .filter_map(|li| {
                    let v = &li[li.find('>')? + 1..];
                    Some(unescape(v[..v.find("</rdf:li>")?].trim()))
                })
                .filter(|v| !v.is_empty())
                .collect();
            let v = if items.is_empty() {
                unescape(body.trim())
            } else {
                items.join(", ")
            };
            if !v.is_empty() && !v.contains('<') {
                out.insert((*prop).to_owned(), serde_json::Value::String(v));
            }
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn unescape(s: &str) -> String {
    let mut v = s
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    if v.len() > 512 {
        let mut cut = 512;
        while !v.is_char_boundary(cut) {
            cut -= 1;
        }
        v.truncate(cut);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xmp_attributes_and_lists() {
        let doc = br#"junk<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description
            aux:Lens="EF-S18-55mm f/3.5-5.6 III" xmp:Rating="4">
            <dc:subject><rdf:Bag><rdf:li>beach</rdf:li><rdf:li>sun &amp; sea</rdf:li></rdf:Bag></dc:subject>
            <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Dune</rdf:li></rdf:Alt></dc:title>
            </rdf:Description></rdf:RDF></x:xmpmeta>"#;
        let x = read_xmp(doc);
        assert_eq!(x["aux:Lens"], "EF-S18-55mm f/3.5-5.6 III");
        assert_eq!(x["xmp:Rating"], "4");
        assert_eq!(x["dc:subject"], "beach, sun & sea");
        assert_eq!(x["dc:title"], "Dune");
        assert!(read_xmp(b"no xmp here").is_empty());
    }
}
