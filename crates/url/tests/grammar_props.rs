//! Property tests of the URL grammar: any input is refused or accepted without a panic;
//! what is accepted has one canonical form that parses back to itself; the signature covers
//! exactly that canonical form (aliases and order do not change it, any option does).

use flexphoto_url::options::parse_pairs;
use flexphoto_url::{parse_path, ImageKey, RequestOptions, Signer};
use proptest::prelude::*;

const MAX_DIM: u32 = 8192;

/// One option as a URL may spell it: (name, value), valid or not.
fn any_pair() -> impl Strategy<Value = (String, String)> {
    let names = prop::sample::select(vec![
        "w",
        "width",
        "h",
        "height",
        "dpr",
        "fit",
        "g",
        "gravity",
        "crop",
        "fmt",
        "f",
        "format",
        "q",
        "quality",
        "rot",
        "rotate",
        "flip",
        "blur",
        "sharpen",
        "bg",
        "background",
        "meta",
        "metadata",
        "preset",
        "exp",
        "sig",
        "zoom",
        "",
        "W",
    ]);
    let values = prop_oneof![
        "[0-9]{1,6}",
        "-?[0-9]{1,3}\\.[0-9]{1,3}",
        prop::sample::select(vec![
            "cover",
            "contain",
            "inside",
            "outside",
            "fill",
            "pad",
            "crop",
            "scale-down",
            "squeeze",
            "smart",
            "entropy",
            "ne",
            "sw",
            "0.3x0.6",
            "1x1",
            "2x2",
            "jpeg",
            "webp",
            "avif",
            "auto",
            "png",
            "gif",
            "bmp",
            "h",
            "v",
            "hv",
            "keep",
            "none",
            "copyright",
            "fff",
            "#ff000080",
            "transparent",
            "nan",
            "inf",
            "1,2,3,4",
            "0,0,0,0",
            "thumb",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,12}",
        "%[0-9a-fA-F]{2}[a-z]{0,3}",
    ];
    (names, values).prop_map(|(n, v)| (n.to_owned(), v))
}

/// A valid option set, built from values the grammar accepts.
fn valid_options() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let w = prop::option::of((1u32..=MAX_DIM).prop_map(|v| ("w", v.to_string())));
    let h = prop::option::of((1u32..=MAX_DIM).prop_map(|v| ("h", v.to_string())));
    let dpr =
        prop::option::of((100u32..=400).prop_map(|v| ("dpr", format!("{}", v as f32 / 100.0))));
    let fit = prop::option::of(
        prop::sample::select(vec![
            "cover",
            "contain",
            "fill",
            "pad",
            "outside",
            "crop",
            "scale-down",
        ])
        .prop_map(|v| ("fit", v.to_owned())),
    );
    let g = prop::option::of(
        prop_oneof![
            prop::sample::select(vec!["n", "se", "smart", "entropy", "center"])
                .prop_map(str::to_owned),
            (0u32..=1000, 0u32..=1000).prop_map(|(x, y)| format!(
                "{}x{}",
                x as f64 / 1000.0,
                y as f64 / 1000.0
            )),
        ]
        .prop_map(|v| ("g", v)),
    );
    let fmt = prop::option::of(
        prop::sample::select(vec!["auto", "jpeg", "png", "webp", "avif", "gif"])
            .prop_map(|v| ("fmt", v.to_owned())),
    );
    let q = prop::option::of((1u32..=100).prop_map(|v| ("q", v.to_string())));
    let rot = prop::option::of(
        prop::sample::select(vec!["0", "90", "180", "270"]).prop_map(|v| ("rot", v.to_owned())),
    );
    let blur =
        prop::option::of((1u32..=10000).prop_map(|v| ("blur", format!("{}", v as f32 / 100.0))));
    let bg = prop::option::of("[0-9a-f]{6}".prop_map(|v| ("bg", v)));
    let meta = prop::option::of(
        prop::sample::select(vec!["none", "copyright", "keep"])
            .prop_map(|v| ("meta", v.to_owned())),
    );
    let exp = prop::option::of((0u64..4_000_000_000).prop_map(|v| ("exp", v.to_string())));
    (w, h, dpr, fit, g, fmt, q, rot, blur, bg, meta, exp).prop_map(|t| {
        [t.0, t.1, t.2, t.3, t.4, t.5, t.6, t.7, t.8, t.9, t.10, t.11]
            .into_iter()
            .flatten()
            .collect()
    })
}

fn key() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,8}(/[a-zA-Z0-9 _.-]{1,10}){0,3}\\.(jpg|png)"
        .prop_filter("a key the grammar accepts", |k| ImageKey::parse(k).is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Nothing panics, whatever the path and query.
    #[test]
    fn any_input_is_refused_or_accepted_without_panic(
        path in "(/img/|/cdn-cgi/image/|/)[ -~]{0,40}",
        query in prop::option::of("[ -~]{0,60}"),
        pairs in prop::collection::vec(any_pair(), 0..6),
    ) {
        let _ = parse_path(&path, query.as_deref(), MAX_DIM);
        let q = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("&");
        let _ = parse_path("/img/a.jpg", Some(&q), MAX_DIM);
        let cf = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(",");
        let _ = parse_path(&format!("/cdn-cgi/image/{cf}/a.jpg"), None, MAX_DIM);
    }

    /// parse → canonical → parse is stable, in both URL forms and in any order.
    #[test]
    fn canonical_form_is_stable(opts in valid_options(), shuffle in any::<u64>()) {
        let mut pairs = opts.clone();
        // A deterministic shuffle: order must not matter.
        let n = pairs.len();
        if n > 1 {
            pairs.rotate_left((shuffle as usize) % n);
        }
        let q = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let a = parse_pairs(&q, '&', MAX_DIM).unwrap();
        let canon = a.canonical();
        let b = parse_pairs(&canon, ',', MAX_DIM).unwrap();
        prop_assert_eq!(&b.canonical(), &canon);
        let c = parse_path(&format!("/cdn-cgi/image/{canon}/a.jpg"), None, MAX_DIM).unwrap();
        prop_assert_eq!(c.options.canonical(), canon);
    }

    /// A signature verifies for every spelling of the same options and for nothing else.
    #[test]
    fn the_signature_covers_exactly_the_canonical_form(
        k in key(),
        opts in valid_options(),
        other in valid_options(),
    ) {
        let signer = Signer::new(vec![b"0123456789abcdef-property".to_vec()]);
        let key = ImageKey::parse(&k).unwrap();
        let q = opts.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("&");
        let parsed = parse_pairs(&q, '&', MAX_DIM).unwrap();
        let mut signed: RequestOptions = parsed.clone();
        signed.signature = Some(signer.signature(&key, &parsed).unwrap());
        let now = 0;
        prop_assert!(signer.verify(&key, &signed, now).is_ok());
        // The same options reversed (another spelling) verify with the same signature.
        let rq = opts.iter().rev().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("&");
        let mut reordered = parse_pairs(&rq, '&', MAX_DIM).unwrap();
        reordered.signature = signed.signature.clone();
        prop_assert!(signer.verify(&key, &reordered, now).is_ok());
        // Other options verify only when their canonical form is the same.
        let oq = other.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("&");
        let mut o = parse_pairs(&oq, '&', MAX_DIM).unwrap();
        o.signature = signed.signature.clone();
        prop_assert_eq!(
            signer.verify(&key, &o, now).is_ok(),
            o.canonical() == parsed.canonical()
        );
        // Another key never verifies.
        let other_key = ImageKey::parse(&format!("{k}x")).unwrap();
        prop_assert!(signer.verify(&other_key, &signed, now).is_err());
    }
}
