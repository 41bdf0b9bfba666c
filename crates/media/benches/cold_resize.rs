//! Cold-source resize, speed and quality (`cargo bench -p flexphoto-media --bench cold_resize`):
//! what one miss on a source seen for the first time costs (bytes in, JPEG Q80 out, through
//! [`transform::run`], the edge's path), and how close its pixels are to a reference resize.
//!
//! For each photo and box it makes:
//! - the **reference**: the whole source decoded at full size (upright, sRGB), then one
//!   Lanczos-3 pass straight to the output size; no shrink-on-load, no block averaging;
//! - **pipeline**: [`transform::run`] as the edge runs it for a cold source;
//! - **vips-thumbnail**: libvips' own `thumbnail` (shrink-on-load with a 2x margin, then its
//!   resize), which is what the edge did for cold sources before.
//!
//! Quality is the mean SSIM (luma, 11×11 Gaussian window) against the reference, before
//! encoding (PNG out, lossless) and after (JPEG Q80 decoded again, what a browser shows).
//! Speed is CPU-ms per output on one thread, JPEG Q80 out.
//!
//! Photos: `../shared/fixtures/photos/*.jpg` or `BENCH_PHOTOS`; boxes: `BENCH_BOXES`
//! (default `500x500,600x600,700x500,512x700`); `BENCH_ROUNDS` timed passes (default 3).
//! `BENCH_PROFILE=1` only runs the pipeline, `BENCH_ROUNDS` times over every photo and box,
//! for `perf record`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use flexphoto_media::transform::{self, resample, Budget, EncodeSettings, Limits};
use flexphoto_media::vips::{self, Image, Interesting, Size};
use flexphoto_url::{Meta, QualityDefaults, TransformSpec};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The process's CPU time, seconds: libvips evaluates on threads of its own.
fn thread_cpu() -> f64 {
    let mut ts = libc_timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { clock_gettime(2, &mut ts) }; // CLOCK_PROCESS_CPUTIME_ID
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

#[repr(C)]
struct libc_timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut libc_timespec) -> i32;
}

fn spec(query: &str) -> TransformSpec {
    let presets = std::collections::HashMap::new();
    let ctx = flexphoto_url::ResolveContext {
        presets: &presets,
        max_dimension: 8192,
        quality: QualityDefaults {
            jpeg: 80,
            webp: 75,
            avif: 50,
        },
        accept: None,
        default_meta: Meta::Copyright,
        allow_meta_keep: false,
    };
    let opts = flexphoto_url::options::parse_pairs(query, '&', 8192).expect("bench query");
    flexphoto_url::resolve(&opts, &ctx).expect("bench spec")
}

/// Packed RGB pixels of an encoded image.
fn rgb(bytes: &Bytes) -> (Vec<u8>, u32, u32) {
    let img = Image::load(bytes, false, false, 1)
        .and_then(|i| i.to_srgb())
        .expect("decode output");
    let (w, h, b) = (img.width(), img.height(), img.bands());
    let px = img.pixels().expect("pixels");
    (to_rgb(&px, b), w, h)
}

fn to_rgb(px: &[u8], bands: u32) -> Vec<u8> {
    match bands {
        3 => px.to_vec(),
        1 => px.iter().flat_map(|&g| [g, g, g]).collect(),
        b => px
            .chunks(b as usize)
            .flat_map(|c| [c[0], c[1 % c.len()], c[2 % c.len()]])
            .collect(),
    }
}

/// The reference: full decode, upright, sRGB, one Lanczos-3 pass to `w`×`h`.
fn reference(source: &Bytes, w: u32, h: u32) -> Vec<u8> {
    let img = Image::load(source, false, false, 1)
        .and_then(|i| i.autorot())
        .and_then(|i| i.to_srgb())
        .expect("reference decode");
    let (sw, sh, b) = (img.width(), img.height(), img.bands());
    let px = to_rgb(&img.pixels().expect("reference pixels"), b);
    if (sw, sh) == (w, h) {
        return px;
    }
    resample::resize(&px, (sw, sh), 3, (w, h), false).expect("reference resize")
}

/// Mean SSIM of the luma of two RGB images of one size (Wang et al. 2004, 11×11 Gaussian,
/// σ = 1.5, K1 = 0.01, K2 = 0.03).
fn ssim(a: &[u8], b: &[u8], w: usize, h: usize) -> f64 {
    let luma = |p: &[u8]| -> Vec<f32> {
        p.chunks(3)
            .map(|c| 0.299 * c[0] as f32 + 0.587 * c[1] as f32 + 0.114 * c[2] as f32)
            .collect()
    };
    let (x, y) = (luma(a), luma(b));
    let kernel: Vec<f32> = {
        let k: Vec<f32> = (-5..=5)
            .map(|i: i32| (-(i * i) as f32 / (2.0 * 1.5 * 1.5)).exp())
            .collect();
        let s: f32 = k.iter().sum();
        k.into_iter().map(|v| v / s).collect()
    };
    let blur = |img: &[f32]| -> Vec<f32> {
        let mut tmp = vec![0f32; w * h];
        for r in 0..h {
            for c in 0..w {
                let mut s = 0.0;
                for (i, k) in kernel.iter().enumerate() {
                    let cc = (c as i64 + i as i64 - 5).clamp(0, w as i64 - 1) as usize;
                    s += k * img[r * w + cc];
                }
                tmp[r * w + c] = s;
            }
        }
        let mut out = vec![0f32; w * h];
        for r in 0..h {
            for c in 0..w {
                let mut s = 0.0;
                for (i, k) in kernel.iter().enumerate() {
                    let rr = (r as i64 + i as i64 - 5).clamp(0, h as i64 - 1) as usize;
                    s += k * tmp[rr * w + c];
                }
                out[r * w + c] = s;
            }
        }
        out
    };
    let prod = |p: &[f32], q: &[f32]| p.iter().zip(q).map(|(a, b)| a * b).collect::<Vec<f32>>();
    let (mx, my) = (blur(&x), blur(&y));
    let (sxx, syy, sxy) = (
        blur(&prod(&x, &x)),
        blur(&prod(&y, &y)),
        blur(&prod(&x, &y)),
    );
    let (c1, c2) = ((0.01f32 * 255.0).powi(2), (0.03f32 * 255.0).powi(2));
    let mut total = 0f64;
    for i in 0..w * h {
        let (ux, uy) = (mx[i], my[i]);
        let vx = sxx[i] - ux * ux;
        let vy = syy[i] - uy * uy;
        let cxy = sxy[i] - ux * uy;
        let s =
            ((2.0 * ux * uy + c1) * (2.0 * cxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
        total += s as f64;
    }
    total / (w * h) as f64
}

/// libvips' `thumbnail` into the box, sRGB, encoded with `suffix`.
fn vips_thumbnail(source: &Bytes, w: u32, h: u32, suffix: &str) -> Bytes {
    Image::thumbnail(source, w, h, Size::Down, Interesting::None, true, false)
        .and_then(|i| i.to_srgb())
        .and_then(|i| i.save(suffix))
        .expect("vips thumbnail")
}

struct Row {
    name: String,
    boxes: usize,
    ms: [f64; 2],
    ssim_px: [f64; 2],
    ssim_jpeg: [f64; 2],
}

fn main() {
    vips::init(1).expect("libvips");
    let dir: PathBuf = std::env::var_os("BENCH_PHOTOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/photos")
        });
    let boxes: Vec<(u32, u32)> = std::env::var("BENCH_BOXES")
        .unwrap_or_else(|_| "500x500,600x600,700x500,512x700".into())
        .split(',')
        .filter_map(|b| {
            let (w, h) = b.split_once('x')?;
            Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
        })
        .collect();
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(d) => d.flatten().map(|e| e.path()).collect(),
        Err(e) => {
            println!("skipped: no photos at {} ({e})", dir.display());
            return;
        }
    };
    files.retain(|f| f.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg")));
    files.sort();
    let limits = Limits::new(100_000_000, 8192);
    let enc = EncodeSettings {
        quality: QualityDefaults {
            jpeg: 80,
            webp: 75,
            avif: 50,
        },
        webp_effort: 4,
        avif_effort: 1,
        png_compression: 1,
    };
    let budget = Budget::unlimited();
    if std::env::var_os("BENCH_PROFILE").is_some() {
        let sources: Vec<Bytes> = files
            .iter()
            .map(|f| Bytes::from(std::fs::read(f).expect("read photo")))
            .collect();
        let t = thread_cpu();
        for _ in 0..rounds {
            for source in &sources {
                for &(bw, bh) in &boxes {
                    let s = spec(&format!("w={bw}&h={bh}&fit=scale-down&fmt=jpeg&q=80"));
                    transform::run(source, &s, &limits, &enc, &budget).expect("run");
                }
            }
        }
        let n = (rounds * sources.len() * boxes.len()).max(1);
        println!(
            "{:.1} CPU-ms per output",
            (thread_cpu() - t) * 1000.0 / n as f64
        );
        return;
    }
    let mut rows = Vec::new();
    for f in &files {
        let source = Bytes::from(std::fs::read(f).expect("read photo"));
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut row = Row {
            name,
            boxes: 0,
            ms: [0.0; 2],
            ssim_px: [0.0; 2],
            ssim_jpeg: [0.0; 2],
        };
        for &(bw, bh) in &boxes {
            let q = format!("w={bw}&h={bh}&fit=scale-down");
            let jpeg = spec(&format!("{q}&fmt=jpeg&q=80"));
            let png = spec(&format!("{q}&fmt=png"));
            // Quality, before and after encoding.
            let ours_png = transform::run(&source, &png, &limits, &enc, &budget).expect("run");
            let ours_jpg = transform::run(&source, &jpeg, &limits, &enc, &budget).expect("run");
            let theirs_png = vips_thumbnail(&source, bw, bh, ".png[compression=1]");
            let theirs_jpg = vips_thumbnail(&source, bw, bh, ".jpg[Q=80,optimize_coding,strip]");
            for (i, (p, j)) in [(ours_png.bytes, ours_jpg.bytes), (theirs_png, theirs_jpg)]
                .iter()
                .enumerate()
            {
                let (px, w, h) = rgb(p);
                let (jx, jw, jh) = rgb(j);
                assert_eq!((w, h), (jw, jh));
                let r = reference(&source, w, h);
                row.ssim_px[i] += ssim(&px, &r, w as usize, h as usize);
                row.ssim_jpeg[i] += ssim(&jx, &r, w as usize, h as usize);
            }
            // Speed: JPEG out, one thread.
            for _ in 0..rounds {
                let t = thread_cpu();
                let _ = transform::run(&source, &jpeg, &limits, &enc, &budget).expect("run");
                row.ms[0] += (thread_cpu() - t) * 1000.0;
                let t = thread_cpu();
                let _ = vips_thumbnail(&source, bw, bh, ".jpg[Q=80,optimize_coding,strip]");
                row.ms[1] += (thread_cpu() - t) * 1000.0;
            }
            row.boxes += 1;
        }
        let n = row.boxes as f64;
        for i in 0..2 {
            row.ms[i] /= n * rounds as f64;
            row.ssim_px[i] /= n;
            row.ssim_jpeg[i] /= n;
        }
        rows.push(row);
    }
    println!(
        "{:<32} {:>9} {:>9} | {:>8} {:>8} | {:>8} {:>8}",
        "photo", "ms ours", "ms vips", "px ours", "px vips", "jpg ours", "jpg vips"
    );
    for r in &rows {
        println!(
            "{:<32} {:>9.1} {:>9.1} | {:>8.4} {:>8.4} | {:>8.4} {:>8.4}",
            r.name, r.ms[0], r.ms[1], r.ssim_px[0], r.ssim_px[1], r.ssim_jpeg[0], r.ssim_jpeg[1]
        );
    }
    let n = rows.len().max(1) as f64;
    let mean = |f: &dyn Fn(&Row) -> f64| rows.iter().map(f).sum::<f64>() / n;
    println!(
        "{:<32} {:>9.1} {:>9.1} | {:>8.4} {:>8.4} | {:>8.4} {:>8.4}",
        "mean",
        mean(&|r| r.ms[0]),
        mean(&|r| r.ms[1]),
        mean(&|r| r.ssim_px[0]),
        mean(&|r| r.ssim_px[1]),
        mean(&|r| r.ssim_jpeg[0]),
        mean(&|r| r.ssim_jpeg[1]),
    );
    let worse = rows
        .iter()
        .filter(|r| r.ssim_jpeg[0] + 0.001 < r.ssim_jpeg[1])
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>();
    println!("photos where ours is below vips by more than 0.001 SSIM after encoding: {worse:?}");
}
