//! Starting the edge, speaking HTTP to it, making test images and decoding outputs.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flexphoto_edge::samples::scene_pixels;
use flexphoto_media::vips::{self, Image};

/// A running edge process.
pub struct Edge {
    pub child: Child,
    pub port: u16,
    pub origin: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
}

pub use crate::ports::free_port;

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "flexphoto-it-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Edge {
    /// Starts the edge serving `origin` with extra env and args, and waits for /healthz.
    pub fn start(origin: &Path, env: &[(&str, &str)], args: &[&str]) -> Edge {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Self::spawn(Some(origin.to_owned()), env, args, free_port())
    }

    /// Starts the edge without `--origin-dir`, so config and env choose the origin.
    pub fn start_configured(env: &[(&str, &str)]) -> Edge {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Self::spawn(
            None,
            env,
            vec!["--config".into(), "/dev/null".into()],
            free_port(),
        )
    }

    fn spawn(
        origin: Option<PathBuf>,
        env: Vec<(String, String)>,
        args: Vec<String>,
        port: u16,
    ) -> Edge {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flexphoto-edge"));
        cmd.arg("--listen").arg(format!("127.0.0.1:{port}"));
        if let Some(o) = &origin {
            cmd.arg("--origin-dir").arg(o);
        }
        cmd.args(&args);
        cmd.env("RUST_LOG", "warn");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
        let child = cmd.spawn().expect("start flexphoto-edge");
        let edge = Edge {
            child,
            port,
            origin,
            env,
            args,
        };
        edge.wait_healthy();
        edge
    }

    fn wait_healthy(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(r) = try_request(self.port, "GET", "/healthz", &[]) {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("edge did not become healthy on port {}", self.port);
    }

    /// Kills with SIGKILL and starts again with the same settings and port.
    pub fn restart_after_kill(mut self) -> Edge {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (origin, env, args, port) = (
            self.origin.clone(),
            self.env.clone(),
            self.args.clone(),
            self.port,
        );
        std::mem::forget(self);
        Self::spawn(origin, env, args, port)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.req("GET", path, &[])
    }

    /// GETs every path at once, a thread each; the statuses in the order of `paths`.
    pub fn statuses_at_once(&self, paths: &[String]) -> Vec<u16> {
        std::thread::scope(|s| {
            let threads: Vec<_> = paths
                .iter()
                .map(|p| s.spawn(move || self.get(p).status))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        })
    }

    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        request(self.port, method, path, headers)
    }

    /// The value of a counter or gauge from /metrics (summed over labels matching `labels`).
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let body = self.get("/metrics").text();
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.starts_with(name)
                    && (l[name.len()..].starts_with(' ') || l[name.len()..].starts_with('{'))
            })
            .filter(|l| l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn decode(&self) -> Decoded {
        decode(&self.body)
    }
}

pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    try_request(port, method, path, headers).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A minimal HTTP/1.1 client: sends the path byte for byte (no normalisation), reads to close.
pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(180)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {} bytes", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let mut hdrs = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            hdrs.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if hdrs
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(Resp {
        status,
        headers: hdrs,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
    out
}

/// What a decoded output is.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub loader: String,
    pub width: u32,
    pub height: u32,
    pub pages: u32,
    pub alpha: bool,
    pub fields: Vec<String>,
    pub pixels: Vec<u8>,
    pub bands: u32,
}

impl Decoded {
    pub fn is(&self, fmt: &str) -> bool {
        self.loader.starts_with(&format!("{fmt}load"))
    }
    /// RGB(A) at (x, y).
    pub fn at(&self, x: u32, y: u32) -> &[u8] {
        let i = ((y * self.width + x) * self.bands) as usize;
        &self.pixels[i..i + self.bands as usize]
    }
}

pub fn decode(bytes: &[u8]) -> Decoded {
    vips::init(1).unwrap();
    let buf = Bytes::copy_from_slice(bytes);
    let loader = vips::find_loader(&buf).unwrap_or_else(|| {
        panic!(
            "output is not an image: {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )
    });
    let img = Image::load(&buf, true, false, 1).expect("output loads");
    let h = img.header(&loader);
    let pixels = img.pixels().expect("output decodes completely").to_vec();
    Decoded {
        loader,
        width: h.width,
        height: h.page_height,
        pages: h.pages,
        alpha: h.has_alpha,
        fields: img.field_names(),
        bands: img.bands(),
        pixels,
    }
}

/// Encodes a synthetic scene.
pub fn make_image(w: u32, h: u32, alpha: bool, suffix: &str) -> Vec<u8> {
    vips::init(1).unwrap();
    let bands = if alpha { 4 } else { 3 };
    let img = Image::from_pixels(&scene_pixels(w, h, alpha, 3), w, h, bands).unwrap();
    img.save(suffix).unwrap().to_vec()
}

/// A JPEG of `w`×`h` stored pixels whose EXIF says `orientation`; the top-left quarter is red.
pub fn oriented_jpeg(w: u32, h: u32, orientation: i32) -> Vec<u8> {
    vips::init(1).unwrap();
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            if x < w / 2 && y < h / 2 {
                px.extend_from_slice(&[255, 0, 0]);
            } else {
                px.extend_from_slice(&[0, 0, 255]);
            }
        }
    }
    let img = Image::from_pixels(&px, w, h, 3).unwrap();
    img.set_int("orientation", orientation);
    img.save(".jpg[Q=95]").unwrap().to_vec()
}

/// An animated GIF of `frames` frames of `w`×`h`.
pub fn animated_gif(w: u32, h: u32, frames: u32) -> Vec<u8> {
    vips::init(1).unwrap();
    let mut px = Vec::new();
    for f in 0..frames {
        for _y in 0..h {
            for x in 0..w {
                let v = ((x + f * 20) % 255) as u8;
                px.extend_from_slice(&[v, 255 - v, 128]);
            }
        }
    }
    let img = Image::from_pixels(&px, w, h * frames, 3).unwrap();
    img.set_int("page-height", h as i32);
    img.save(".gif").unwrap().to_vec()
}

/// A PNG whose header claims `w`×`h` RGBA pixels, with almost no data: a decompression bomb.
pub fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut c = kind.to_vec();
        c.extend_from_slice(data);
        out.extend_from_slice(&c);
        out.extend_from_slice(&crc32fast::hash(&c).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x63, 0, 0, 0, 1, 0, 1]);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A standard origin directory with generated test images.
pub fn standard_origin(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    let w = |p: &str, b: &[u8]| {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b).unwrap();
    };
    w("land.jpg", &make_image(1200, 800, false, ".jpg[Q=90]"));
    w(
        "deep/er/path/land copy.jpg",
        &make_image(600, 400, false, ".jpg[Q=90]"),
    );
    w("alpha.png", &make_image(400, 400, true, ".png"));
    w("orient6.jpg", &oriented_jpeg(300, 200, 6));
    w("anim.gif", &animated_gif(120, 80, 4));
    let jpeg = make_image(1200, 800, false, ".jpg[Q=90]");
    w("truncated.jpg", &jpeg[..jpeg.len() * 6 / 10]);
    w("text.jpg", b"this is not an image, only text pretending\n");
    w("empty.jpg", b"");
    w("bomb.png", &png_bomb(65_535, 65_535));
    dir
}

/// `../shared/fixtures`, when present.
pub fn fixtures() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    if p.join("manifest.json").exists() {
        Some(p)
    } else {
        crate::skip::skip(
            "fixtures",
            "../shared/fixtures is absent; fixture-based checks did not run",
        );
        None
    }
}

/// A JPEG whose EXIF holds what a camera writes about people and places: Artist and
/// Copyright (IFD0), a body serial number (EXIF IFD) and a GPS position (GPS IFD).
pub fn jpeg_with_private_exif(w: u32, h: u32) -> Vec<u8> {
    // Little-endian TIFF: IFD0 at 8, then its strings, the EXIF IFD and the GPS IFD.
    fn entry(out: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: u32) {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    const ASCII: u16 = 2;
    const LONG: u16 = 4;
    const RATIONAL: u16 = 5;
    let artist = b"Ann Example\0";
    let copyright = b"(c) 2026 Ann Example\0";
    let serial = b"SN-0042-7731\0";
    let ifd0 = 8u32;
    let ifd0_len = 2 + 4 * 12 + 4;
    let artist_at = ifd0 + ifd0_len;
    let copyright_at = artist_at + artist.len() as u32;
    let exif_ifd = copyright_at + copyright.len() as u32;
    let exif_len = 2 + 12 + 4;
    let serial_at = exif_ifd + exif_len;
    let gps_ifd = serial_at + serial.len() as u32;
    let gps_len = 2 + 4 * 12 + 4;
    let lat_at = gps_ifd + gps_len;
    let lon_at = lat_at + 24;
    let mut t = Vec::new();
    t.extend_from_slice(b"II*\0");
    t.extend_from_slice(&ifd0.to_le_bytes());
    t.extend_from_slice(&4u16.to_le_bytes());
    entry(&mut t, 0x013B, ASCII, artist.len() as u32, artist_at);
    entry(&mut t, 0x8298, ASCII, copyright.len() as u32, copyright_at);
    entry(&mut t, 0x8769, LONG, 1, exif_ifd);
    entry(&mut t, 0x8825, LONG, 1, gps_ifd);
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(artist);
    t.extend_from_slice(copyright);
    t.extend_from_slice(&1u16.to_le_bytes());
    entry(&mut t, 0xA431, ASCII, serial.len() as u32, serial_at);
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(serial);
    t.extend_from_slice(&4u16.to_le_bytes());
    entry(&mut t, 0x0001, ASCII, 2, u32::from_le_bytes(*b"N\0\0\0"));
    entry(&mut t, 0x0002, RATIONAL, 3, lat_at);
    entry(&mut t, 0x0003, ASCII, 2, u32::from_le_bytes(*b"E\0\0\0"));
    entry(&mut t, 0x0004, RATIONAL, 3, lon_at);
    t.extend_from_slice(&0u32.to_le_bytes());
    for (num, den) in [
        (48u32, 1u32),
        (51, 1),
        (2400, 100),
        (2, 1),
        (17, 1),
        (4000, 100),
    ] {
        t.extend_from_slice(&num.to_le_bytes());
        t.extend_from_slice(&den.to_le_bytes());
    }
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&t);
    let plain = make_image(w, h, false, ".jpg");
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&plain[2..]);
    out
}
