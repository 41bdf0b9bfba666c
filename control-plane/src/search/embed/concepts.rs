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
/// How far from undecided (|2·man − 1|) the gender classifier's agreed answer must be for a
/// face to count as a man's or a woman's (weight ramps up to `GENDER_SURE`).
const GENDER_MIN: f32 = 0.4;
/// Distance from undecided at which a face counts fully as a man's or a woman's.
const GENDER_SURE: f32 = 0.8;

/// Face concepts: `(label, text)`, in [`FaceConcept`] order.
const FACE_CONCEPTS: [(&str, &str); 6] = [
    ("person", "a photo of a person"),
    ("portrait", "a close-up portrait of a person's face"),
    ("group of people", "a group of people together"),
    ("smiling", "a smiling person with a happy face"),
    ("man", "a photo of a man"),
    ("woman", "a photo of a woman"),
];

#[derive(Debug, Clone, Copy)]
enum FaceConcept {
    Person,
    Portrait,
    Group,
    Smiling,
    Man,
    Woman,
}

/// Texts of the detector's classes whose label alone reads badly or ambiguously ("tv",
/// "mouse", "sports ball") or gains from its kind ("fruit", "food"); every other class other
/// than "person" (people are the face concepts' "person" and "group of people") is embedded
/// as "a photo of a {label}".
const OBJECT_PHRASES: [(&str, &str); 20] = [
    ("skis", "a photo of skis"),
    ("sports ball", "a photo of a ball"),
    ("kite", "a photo of a kite flying in the sky"),
    ("banana", "a photo of a banana, fruit"),
    ("apple", "a photo of an apple, fruit"),
    ("sandwich", "a photo of a sandwich, food"),
    ("orange", "a photo of an orange, fruit"),
    ("broccoli", "a photo of broccoli, a vegetable"),
    ("carrot", "a photo of a carrot, a vegetable"),
    ("hot dog", "a photo of a hot dog, food"),
    ("pizza", "a photo of a pizza, food"),
    ("donut", "a photo of a donut, food"),
    ("cake", "a photo of a cake, food"),
    ("tv", "a photo of a television"),
    ("laptop", "a photo of a laptop computer"),
    ("mouse", "a photo of a computer mouse"),
    ("remote", "a photo of a remote control"),
    ("cell phone", "a photo of a mobile phone"),
    ("microwave", "a photo of a microwave oven"),
    ("scissors", "a photo of scissors"),
];

/// The text embedded for the detector's class `label`.
fn object_text(label: &str) -> String {
    if let Some((_, text)) = OBJECT_PHRASES.iter().find(|(l, _)| *l == label) {
        return (*text).to_owned();
    }
    let article = if label.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("a photo of {article} {label}")
}

/// Every extra concept: the face concepts, the detector's objects, then the looks.
pub fn vocabulary() -> Vec<(&'static str, String)> {
    let mut v: Vec<(&str, String)> = FACE_CONCEPTS
        .iter()
        .map(|(l, t)| (*l, (*t).to_owned()))
        .collect();
    v.extend(objects::CLASSES[1..].iter().map(|l| (*l, object_text(l))));
    v.extend(Look::ALL.iter().map(|l| (l.label(), l.text().to_owned())));
    v
}

/// Index in [`vocabulary`] of the detector's class `class` (not "person").
fn object_index(class: usize) -> usize {
    FACE_CONCEPTS.len() + class - 1
}

fn look_index(l: Look) -> usize {
    FACE_CONCEPTS.len()
        + (objects::CLASSES.len() - 1)
        + Look::ALL.iter().position(|x| *x == l).unwrap_or(0)
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
        // The surest man's and woman's face each, as sure as the detector and the gender
        // classifier both are.
        let gender = |man: bool| {
            faces
                .iter()
                .filter(|f| (f.man > 0.5) == man && f.man != 0.5)
                .map(|f| f.score * ramp((2.0 * f.man - 1.0).abs(), GENDER_MIN, GENDER_SURE))
                .fold(0.0, f32::max)
        };
        face(FaceConcept::Man, gender(true));
        face(FaceConcept::Woman, gender(false));
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
            man: 0.5,
        };
        let names = |w: Vec<(usize, f32)>| -> Vec<&str> {
            w.iter().map(|(i, _)| vocabulary()[*i].0).collect()
        };
        assert_eq!(
            names(weigh(std::slice::from_ref(&f), None, &[])),
            ["person", "portrait", "smiling"]
        );
        // A woman's face, sure enough, and a man's too unsure to count.
        let woman = Face {
            man: 0.05,
            ..f.clone()
        };
        let unsure = Face { man: 0.65, ..f };
        assert_eq!(
            names(weigh(&[woman, unsure], None, &[])),
            ["person", "group of people", "portrait", "smiling", "woman"]
        );
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
        assert_eq!(
            v[object_index(kite)].1,
            "a photo of a kite flying in the sky"
        );
        assert_eq!(object_text("elephant"), "a photo of an elephant");
        // Every special phrase names a detector class.
        for (label, _) in OBJECT_PHRASES {
            assert!(objects::CLASSES.contains(&label), "{label}");
        }
    }
}
