//! Each URL option, checked by decoding the output.

use crate::harness::{standard_origin, Edge};

#[test]
fn resize_fit_and_dpr() {
    let origin = standard_origin("fit");
    let e = Edge::start(&origin, &[], &[]);
    let dims = |q: &str| {
        let r = e.get(&format!("/img/land.jpg?{q}"));
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        let d = r.decode();
        (d.width, d.height)
    };
    // 1200x800 source.
    assert_eq!(dims("w=300"), (300, 200));
    assert_eq!(dims("h=100"), (150, 100));
    assert_eq!(dims("w=300&dpr=2"), (600, 400));
    assert_eq!(dims("w=300&h=300"), (300, 200), "scale-down fits inside");
    assert_eq!(
        dims("w=3000&h=3000"),
        (1200, 800),
        "scale-down never enlarges"
    );
    assert_eq!(dims("w=2400&h=2400&fit=contain"), (2400, 1600));
    assert_eq!(dims("w=300&h=300&fit=inside"), (300, 200));
    assert_eq!(dims("w=300&h=300&fit=cover"), (300, 300));
    assert_eq!(dims("w=300&h=300&fit=fill"), (300, 300));
    assert_eq!(dims("w=300&h=300&fit=outside"), (450, 300));
    assert_eq!(dims("w=300&h=300&fit=pad"), (300, 300));
    assert_eq!(
        dims("w=2000&h=300&fit=crop"),
        (1200, 300),
        "crop never enlarges"
    );
    assert_eq!(dims("w=300&h=300&fit=crop&g=se"), (300, 300));
    assert_eq!(dims("crop=100,100,400,200"), (400, 200));
    assert_eq!(dims("crop=100,100,400,200&w=200"), (200, 100));
    assert_eq!(dims("w=100&rot=90"), (67, 100));
    assert_eq!(dims(""), (1200, 800));
    // Keys at any depth, with escaped spaces.
    let r = e.get("/img/deep/er/path/land%20copy.jpg?w=60");
    assert_eq!(r.status, 200);
    assert_eq!(r.decode().width, 60);
}

#[test]
fn formats_and_negotiation() {
    let origin = standard_origin("fmt");
    let e = Edge::start(&origin, &[], &[]);
    for (q, fmt, mime) in [
        ("fmt=jpeg", "jpeg", "image/jpeg"),
        ("fmt=png", "png", "image/png"),
        ("fmt=webp", "webp", "image/webp"),
        ("fmt=avif", "heif", "image/avif"),
        ("fmt=gif", "gif", "image/gif"),
    ] {
        let r = e.get(&format!("/img/land.jpg?w=64&{q}"));
        assert_eq!(r.status, 200, "{q}");
        assert_eq!(r.header("content-type"), Some(mime));
        assert!(r.decode().is(fmt), "{q} gave {}", r.decode().loader);
    }
    let auto = |accept: &str, key: &str| {
        let r = e.req(
            "GET",
            &format!("/img/{key}?w=64&fmt=auto"),
            &[("Accept", accept)],
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("vary"), Some("Accept"));
        r.header("content-type").unwrap().to_owned()
    };
    assert_eq!(auto("image/avif,image/webp,*/*", "land.jpg"), "image/avif");
    assert_eq!(auto("image/webp,*/*", "land.jpg"), "image/webp");
    assert_eq!(auto("*/*", "land.jpg"), "image/jpeg");
    assert_eq!(auto("image/avif;q=0,image/webp", "land.jpg"), "image/webp");
    // Alpha survives: PNG when neither AVIF nor WebP is accepted.
    assert_eq!(auto("*/*", "alpha.png"), "image/png");
    let r = e.req("GET", "/img/alpha.png?w=64&fmt=auto", &[("Accept", "*/*")]);
    assert!(r.decode().alpha);
    // Without fmt the source format is kept.
    assert_eq!(
        e.get("/img/alpha.png?w=32").header("content-type"),
        Some("image/png")
    );
    assert!(e.get("/img/alpha.png?w=32").header("vary").is_none());
}

#[test]
fn alpha_is_flattened_onto_bg_for_jpeg() {
    let origin = standard_origin("alpha");
    let e = Edge::start(&origin, &[], &[]);
    let r = e.get("/img/alpha.png?fmt=jpeg&bg=ff0000&w=100");
    let d = r.decode();
    assert!(d.is("jpeg") && !d.alpha);
    // The corner is transparent in the source, so it must now be the background.
    let px = d.at(0, 0);
    assert!(px[0] > 200 && px[1] < 60 && px[2] < 60, "corner is {px:?}");
    let d = e
        .get("/img/land.jpg?w=100&h=100&fit=pad&bg=00ff00&fmt=png")
        .decode();
    assert_eq!((d.width, d.height), (100, 100));
    let top = d.at(50, 1);
    assert!(top[1] > 200 && top[0] < 60, "pad colour is {top:?}");
    let d = e
        .get("/img/land.jpg?w=100&h=100&fit=pad&bg=transparent&fmt=png")
        .decode();
    assert!(d.alpha);
    assert_eq!(d.at(50, 1)[3], 0);
}

#[test]
fn exif_orientation_rotation_and_flip() {
    let origin = standard_origin("orient");
    let e = Edge::start(&origin, &[], &[]);
    // Stored 300x200 with orientation 6: upright it is 200x300, red quarter at top right.
    let d = e.get("/img/orient6.jpg?fmt=png").decode();
    assert_eq!((d.width, d.height), (200, 300));
    let red = |p: &[u8]| p[0] > 200 && p[2] < 80;
    assert!(
        red(d.at(150, 30)),
        "top right should be red: {:?}",
        d.at(150, 30)
    );
    assert!(!red(d.at(30, 30)));
    let d = e.get("/img/orient6.jpg?fmt=png&rot=90").decode();
    assert_eq!((d.width, d.height), (300, 200));
    assert!(
        red(d.at(250, 150)),
        "after 90 more degrees the red quarter is bottom right"
    );
    let d = e.get("/img/orient6.jpg?fmt=png&flip=h").decode();
    assert!(
        red(d.at(30, 30)),
        "flipped left-right the red quarter is top left"
    );
    let d = e.get("/img/orient6.jpg?fmt=png&flip=v").decode();
    assert!(red(d.at(150, 270)));
    // Editor's crop is in upright coordinates: the top-right 100x150 is all red.
    let d = e
        .get("/img/orient6.jpg?fmt=png&crop=100,0,100,150")
        .decode();
    assert_eq!((d.width, d.height), (100, 150));
    assert!(red(d.at(10, 10)) && red(d.at(90, 140)));
}

#[test]
fn gravity_picks_the_kept_region() {
    let origin = standard_origin("gravity");
    let e = Edge::start(&origin, &[], &[]);
    let red = |p: &[u8]| p[0] > 200 && p[2] < 80;
    // orient6 upright: 200x300 with red at x>=100, y<150. Crop to 200x150 boxes.
    let north = e
        .get("/img/orient6.jpg?fmt=png&w=200&h=150&fit=cover&g=n")
        .decode();
    assert!(red(north.at(150, 75)));
    let south = e
        .get("/img/orient6.jpg?fmt=png&w=200&h=150&fit=cover&g=s")
        .decode();
    assert!(!red(south.at(150, 75)));
    let focal = e
        .get("/img/orient6.jpg?fmt=png&w=200&h=150&fit=cover&g=0.5x0.1")
        .decode();
    assert!(red(focal.at(150, 75)));
    for g in [
        "smart", "entropy", "center", "ne", "nw", "se", "sw", "e", "w",
    ] {
        let r = e.get(&format!("/img/land.jpg?w=120&h=120&fit=cover&g={g}"));
        assert_eq!(r.status, 200, "g={g}");
        assert_eq!((r.decode().width, r.decode().height), (120, 120), "g={g}");
    }
}

#[test]
fn quality_blur_sharpen_meta_presets() {
    let origin = standard_origin("quality");
    let e = Edge::start(&origin, &[], &[]);
    let low = e.get("/img/land.jpg?w=600&q=10").body.len();
    let high = e.get("/img/land.jpg?w=600&q=95").body.len();
    assert!(low * 2 < high, "q=10 gave {low} bytes, q=95 gave {high}");
    for q in ["blur=3", "sharpen=1.5", "blur=1&sharpen=1"] {
        let r = e.get(&format!("/img/land.jpg?w=200&{q}"));
        assert_eq!(r.status, 200, "{q}");
        assert_eq!(r.decode().width, 200);
    }
    let blurred = e.get("/img/land.jpg?w=200&blur=8&fmt=png").decode();
    let sharp = e.get("/img/land.jpg?w=200&fmt=png").decode();
    assert_ne!(blurred.pixels, sharp.pixels);
    // Metadata: stripped to the copyright notices by default (this file has none), and never
    // kept whole unless the edge allows it.
    let orient_src = crate::harness::oriented_jpeg(64, 64, 1);
    std::fs::write(origin.join("exif.jpg"), orient_src).unwrap();
    let stripped = e.get("/img/exif.jpg?w=32").decode();
    assert!(
        !stripped.fields.iter().any(|f| f == "exif-data"),
        "{:?}",
        stripped.fields
    );
    let refused = e.get("/img/exif.jpg?w=32&meta=keep");
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("meta"), "{}", refused.text());
    let open = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__TRANSFORM__ALLOW_META_KEEP", "true")],
        &[],
    );
    let kept = open.get("/img/exif.jpg?w=32&meta=keep").decode();
    assert!(
        kept.fields.iter().any(|f| f == "exif-data"),
        "{:?}",
        kept.fields
    );
    assert_eq!(e.get("/img/exif.jpg?w=32&meta=copyright").status, 200);
    // Presets, refined by explicit options.
    let d = e.get("/img/land.jpg?preset=thumb").decode();
    assert_eq!((d.width, d.height), (200, 200));
    let r = e.get("/img/land.jpg?preset=thumb&fmt=webp");
    assert!(r.decode().is("webp"));
    assert_eq!(e.get("/img/land.jpg?preset=nope").status, 400);
}

#[test]
fn cloudflare_form_matches_query_form() {
    let origin = standard_origin("cf");
    let e = Edge::start(&origin, &[], &[]);
    let a = e.get("/cdn-cgi/image/w=300,h=200,fit=cover,f=webp,q=70/land.jpg");
    let b = e.get("/img/land.jpg?fit=cover&q=70&h=200&w=300&fmt=webp");
    assert_eq!(a.status, 200);
    assert_eq!(a.body, b.body);
    assert_eq!(
        a.header("etag"),
        b.header("etag"),
        "one cache entry for both forms"
    );
    assert_eq!(b.header("x-cache"), Some("memory"));
    let bad = e.get("/cdn-cgi/image/width=abc/land.jpg");
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("width"));
}

#[test]
fn animations_keep_frames_when_the_format_can() {
    let origin = standard_origin("anim");
    let e = Edge::start(&origin, &[], &[]);
    let gif = e.get("/img/anim.gif?w=60").decode();
    assert!(gif.is("gif"));
    assert_eq!((gif.width, gif.height, gif.pages), (60, 40, 4));
    let webp = e.get("/img/anim.gif?w=60&fmt=webp").decode();
    assert_eq!(webp.pages, 4, "animated WebP");
    let jpeg = e.get("/img/anim.gif?w=60&fmt=jpeg").decode();
    assert_eq!(
        (jpeg.width, jpeg.height, jpeg.pages),
        (60, 40, 1),
        "first frame only"
    );
    let cropped = e.get("/img/anim.gif?w=40&h=40&fit=cover").decode();
    assert_eq!((cropped.width, cropped.height), (40, 40));
}

/// The default metadata policy keeps who made and owns a picture and drops where it was
/// taken and what took it; `meta=none` drops the notices too; `meta=keep` (allowed only by
/// config) keeps everything.
#[test]
fn default_metadata_keeps_copyright_and_strips_gps_and_serials() {
    let origin = standard_origin("meta-policy");
    let src = crate::harness::jpeg_with_private_exif(96, 64);
    std::fs::write(origin.join("camera.jpg"), &src).unwrap();
    let has =
        |d: &crate::harness::Decoded, prefix: &str| d.fields.iter().any(|f| f.starts_with(prefix));
    // The source really carries all of it (else the test proves nothing).
    let source = crate::harness::decode(&src);
    for f in [
        "exif-ifd0-Artist",
        "exif-ifd0-Copyright",
        "exif-ifd2-BodySerialNumber",
        "exif-ifd3-GPSLatitude",
    ] {
        assert!(has(&source, f), "the source lacks {f}: {:?}", source.fields);
    }
    let e = Edge::start(&origin, &[], &[]);
    for fmt in ["jpeg", "webp", "png"] {
        let r = e.get(&format!("/img/camera.jpg?w=48&fmt={fmt}"));
        assert_eq!(r.status, 200, "{}", r.text());
        let out = r.decode();
        assert!(
            !has(&out, "exif-ifd3-"),
            "{fmt}: GPS kept: {:?}",
            out.fields
        );
        assert!(
            !has(&out, "exif-ifd2-BodySerialNumber"),
            "{fmt}: serial kept: {:?}",
            out.fields
        );
        if fmt == "jpeg" {
            assert!(has(&out, "exif-ifd0-Copyright"), "{fmt}: {:?}", out.fields);
            assert!(has(&out, "exif-ifd0-Artist"), "{fmt}: {:?}", out.fields);
            assert!(String::from_utf8_lossy(&r.body).contains("(c) 2026 Ann Example"));
        }
    }
    let none = e.get("/img/camera.jpg?w=48&meta=none");
    assert!(!String::from_utf8_lossy(&none.body).contains("Ann Example"));
    assert!(!has(&none.decode(), "exif-"), "{:?}", none.decode().fields);
    let open = Edge::start(
        &origin,
        &[("FLEXPHOTO_EDGE__TRANSFORM__ALLOW_META_KEEP", "true")],
        &[],
    );
    let kept = open.get("/img/camera.jpg?w=48&meta=keep").decode();
    assert!(has(&kept, "exif-ifd3-GPSLatitude"), "{:?}", kept.fields);
}
