//! Concepts beyond ImageNet's classes: what the face models, the object detector and the
//! appearance statistics say about a picture, as weighted phrases that join the ConSE
//! mixture.
//!
//! Each concept has a label (shown in explanations) and a text (embedded once by MiniLM,
//! cached with the class-name embeddings). [`weigh`] turns the detections into weights; the
//! constants below are the recipe (tuned on the development set `tune`, checked on
//! `holdout`; see `loadtest/README.md`).

use super::appearance::{Look, Measured};
use super::faces::Face;
use super::objects::{self, Objects};

/// Weight of people concepts (from faces and the detector's people) relative to class
/// probabilities.
const FACE_WEIGHT: f32 = 0.6;
/// Weight of detected objects relative to class probabilities.
const OBJECT_WEIGHT: f32 = 0.5;
/// Detector scores from which an object or a person counts (weight ramps up to `OBJECT_SURE`).
const OBJECT_MIN: f32 = 0.3;
/// Detector score at which an object or a person counts fully.
const OBJECT_SURE: f32 = 0.6;
/// Weight of appearance concepts relative to class probabilities.
const LOOK_WEIGHT: f32 = 0.3;

/// Face concepts: `(label, text)`, in [`FaceConcept`] order.
const FACE_CONCEPTS: [(&str, &str); 4] = [
    ("person", "a photo of a person"),
    ("portrait", "a close-up portrait of a person's face"),
    ("group of people", "a group of people together"),
    ("smiling", "a smiling person with a happy face"),
];

#[derive(Debug, Clone, Copy)]
enum FaceConcept {
    Person,
    Portrait,
    Group,
    Smiling,
}

/// Texts of the detector's classes other than "person" (people are the face concepts'
/// "person" and "group of people"), in [`objects::CLASSES`] order.
const OBJECT_TEXTS: [&str; 79] = [
    "a photo of a bicycle",
    "a photo of a car",
    "a photo of a motorcycle",
    "a photo of an airplane",
    "a photo of a bus",
    "a photo of a train",
    "a photo of a truck",
    "a photo of a boat",
    "a photo of a traffic light",
    "a photo of a fire hydrant",
    "a photo of a stop sign",
    "a photo of a parking meter",
    "a photo of a bench",
    "a photo of a bird",
    "a photo of a cat",
    "a photo of a dog",
    "a photo of a horse",
    "a photo of a sheep",
    "a photo of a cow",
    "a photo of an elephant",
    "a photo of a bear",
    "a photo of a zebra",
    "a photo of a giraffe",
    "a photo of a backpack",
    "a photo of an umbrella",
    "a photo of a handbag",
    "a photo of a tie",
    "a photo of a suitcase",
    "a photo of a frisbee",
    "a photo of skis",
    "a photo of a snowboard",
    "a photo of a ball",
    "a photo of a kite flying in the sky",
    "a photo of a baseball bat",
    "a photo of a baseball glove",
    "a photo of a skateboard",
    "a photo of a surfboard",
    "a photo of a tennis racket",
    "a photo of a bottle",
    "a photo of a wine glass",
    "a photo of a cup",
    "a photo of a fork",
    "a photo of a knife",
    "a photo of a spoon",
    "a photo of a bowl",
    "a photo of a banana, fruit",
    "a photo of an apple, fruit",
    "a photo of a sandwich, food",
    "a photo of an orange, fruit",
    "a photo of broccoli, a vegetable",
    "a photo of a carrot, a vegetable",
    "a photo of a hot dog, food",
    "a photo of a pizza, food",
    "a photo of a donut, food",
    "a photo of a cake, food",
    "a photo of a chair",
    "a photo of a couch",
    "a photo of a potted plant",
    "a photo of a bed",
    "a photo of a dining table",
    "a photo of a toilet",
    "a photo of a television",
    "a photo of a laptop computer",
    "a photo of a computer mouse",
    "a photo of a remote control",
    "a photo of a keyboard",
    "a photo of a mobile phone",
    "a photo of a microwave oven",
    "a photo of an oven",
    "a photo of a toaster",
    "a photo of a sink",
    "a photo of a refrigerator",
    "a photo of a book",
    "a photo of a clock",
    "a photo of a vase",
    "a photo of scissors",
    "a photo of a teddy bear",
    "a photo of a hair drier",
    "a photo of a toothbrush",
];

/// Every extra concept: the face concepts, the detector's objects, then the looks.
pub fn vocabulary() -> Vec<(&'static str, &'static str)> {
    let mut v: Vec<(&str, &str)> = FACE_CONCEPTS.to_vec();
    v.extend(objects::CLASSES[1..].iter().copied().zip(OBJECT_TEXTS));
    v.extend(Look::ALL.iter().map(|l| (l.label(), l.text())));
    v
}

/// Index in [`vocabulary`] of the detector's class `class` (not "person").
fn object_index(class: usize) -> usize {
    FACE_CONCEPTS.len() + class - 1
}

fn look_index(l: Look) -> usize {
    FACE_CONCEPTS.len() + OBJECT_TEXTS.len() + Look::ALL.iter().position(|x| *x == l).unwrap_or(0)
}

/// `(x - lo) / (hi - lo)` clamped to 0..1.
fn ramp(x: f32, lo: f32, hi: f32) -> f32 {
    ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
}

/// Weights of the extra concepts (indices into [`vocabulary`]) for what was detected;
/// concepts with no evidence are left out.
pub fn weigh(faces: &[Face], found: Option<&Objects>, looks: &[Measured]) -> Vec<(usize, f32)> {
    let mut out: Vec<(usize, f32)> = Vec::new();
    // People: seen by the face detector (faces toward the camera) or by the object detector
    // (any pose, any distance); the stronger evidence counts.
    let person = found.map_or(0.0, |o| {
        ramp(
            o.scores.get(objects::PERSON).copied().unwrap_or(0.0),
            OBJECT_MIN,
            OBJECT_SURE,
        )
    });
    let people = found.map_or(0, |o| o.people) as usize;
    let face_person = faces.first().map_or(0.0, |f| f.score);
    let crowd = faces.len().max(if person > 0.0 { people } else { 0 });
    let mut face = |c: FaceConcept, w: f32| {
        if w > 0.02 {
            out.push((c as usize, FACE_WEIGHT * w));
        }
    };
    face(FaceConcept::Person, face_person.max(person));
    if crowd >= 2 {
        face(FaceConcept::Group, ramp(crowd as f32, 1.0, 3.0));
    }
    if let Some(best) = faces.first() {
        let largest = faces
            .iter()
            .max_by(|a, b| (a.rect[2] * a.rect[3]).total_cmp(&(b.rect[2] * b.rect[3])))
            .unwrap_or(best);
        let area = largest.rect[2] * largest.rect[3];
        face(FaceConcept::Portrait, ramp(area, 0.01, 0.08));
        let smile = faces
            .iter()
            .map(|f| f.smiling * f.score)
            .fold(0.0, f32::max);
        face(FaceConcept::Smiling, ramp(smile, 0.3, 0.8));
    }
    if let Some(o) = found {
        for (class, &score) in o.scores.iter().enumerate().skip(1) {
            let w = ramp(score, OBJECT_MIN, OBJECT_SURE);
            if w > 0.02 {
                out.push((object_index(class), OBJECT_WEIGHT * w));
            }
        }
    }
    for m in looks {
        out.push((look_index(m.concept), LOOK_WEIGHT * m.weight));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_smiling_close_up() {
        let f = Face {
            score: 0.95,
            rect: [0.3, 0.2, 0.4, 0.5],
            smiling: 0.9,
        };
        let w = weigh(&[f], None, &[]);
        let names: Vec<&str> = w.iter().map(|(i, _)| vocabulary()[*i].0).collect();
        assert_eq!(names, ["person", "portrait", "smiling"]);
        assert!(weigh(&[], None, &[]).is_empty());
        let look = Measured {
            concept: Look::Texture,
            weight: 1.0,
        };
        let w = weigh(&[], None, &[look]);
        assert_eq!(vocabulary()[w[0].0].0, "texture");
    }

    #[test]
    fn detected_people_and_objects() {
        let mut scores = vec![0.0; objects::CLASSES.len()];
        scores[objects::PERSON] = 0.7;
        let kite = objects::CLASSES.iter().position(|c| *c == "kite").unwrap();
        scores[kite] = 0.5;
        scores[1] = 0.1; // too weak to count
        let o = Objects { scores, people: 4 };
        let w = weigh(&[], Some(&o), &[]);
        let names: Vec<&str> = w.iter().map(|(i, _)| vocabulary()[*i].0).collect();
        assert_eq!(names, ["person", "group of people", "kite"]);
        // Every detector class but "person" has its own concept, in order.
        let v = vocabulary();
        for (class, name) in objects::CLASSES.iter().enumerate().skip(1) {
            assert_eq!(v[object_index(class)].0, *name);
        }
    }
}
