//! Concepts beyond ImageNet's classes: what the face models and the appearance statistics
//! say about a picture, as weighted phrases that join the ConSE mixture.
//!
//! Each concept has a label (shown in explanations) and a text (embedded once by MiniLM,
//! cached with the class-name embeddings). [`weigh`] turns the detections into weights; the
//! constants below are the recipe (tuned on the development set `tune`, checked on
//! `holdout`; see `loadtest/README.md`).

use super::appearance::{Look, Measured};
use super::faces::Face;

/// Weight of face concepts relative to class probabilities.
const FACE_WEIGHT: f32 = 0.6;
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

/// Every extra concept: the face concepts, then the looks.
pub fn vocabulary() -> Vec<(&'static str, &'static str)> {
    let mut v: Vec<(&str, &str)> = FACE_CONCEPTS.to_vec();
    v.extend(Look::ALL.iter().map(|l| (l.label(), l.text())));
    v
}

fn look_index(l: Look) -> usize {
    FACE_CONCEPTS.len() + Look::ALL.iter().position(|x| *x == l).unwrap_or(0)
}

/// `(x - lo) / (hi - lo)` clamped to 0..1.
fn ramp(x: f32, lo: f32, hi: f32) -> f32 {
    ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
}

/// Weights of the extra concepts (indices into [`vocabulary`]) for what was detected;
/// concepts with no evidence are left out.
pub fn weigh(faces: &[Face], looks: &[Measured]) -> Vec<(usize, f32)> {
    let mut out: Vec<(usize, f32)> = Vec::new();
    let mut face = |c: FaceConcept, w: f32| {
        if w > 0.02 {
            out.push((c as usize, FACE_WEIGHT * w));
        }
    };
    if let Some(best) = faces.first() {
        face(FaceConcept::Person, best.score);
        let largest = faces
            .iter()
            .max_by(|a, b| (a.rect[2] * a.rect[3]).total_cmp(&(b.rect[2] * b.rect[3])))
            .unwrap_or(best);
        let area = largest.rect[2] * largest.rect[3];
        face(FaceConcept::Portrait, ramp(area, 0.01, 0.08));
        if faces.len() >= 2 {
            face(FaceConcept::Group, ramp(faces.len() as f32, 1.0, 3.0));
        }
        let smile = faces
            .iter()
            .map(|f| f.smiling * f.score)
            .fold(0.0, f32::max);
        face(FaceConcept::Smiling, ramp(smile, 0.3, 0.8));
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
        let w = weigh(&[f], &[]);
        let names: Vec<&str> = w.iter().map(|(i, _)| vocabulary()[*i].0).collect();
        assert_eq!(names, ["person", "portrait", "smiling"]);
        assert!(weigh(&[], &[]).is_empty());
        let look = Measured {
            concept: Look::Texture,
            weight: 1.0,
        };
        let w = weigh(&[], &[look]);
        assert_eq!(vocabulary()[w[0].0].0, "texture");
    }
}
