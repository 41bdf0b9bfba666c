//! The default embedder: ConSE ("convex combination of semantic embeddings") over an
//! EfficientNet-Lite0 ImageNet classifier and the MiniLM sentence encoder.
//!
//! An image is classified; its `TOP_K` most likely ImageNet classes are mixed, weighted by
//! probability, from the MiniLM embeddings of their names (scene, surface and clothing
//! classes with a short description instead, [`super::class_text`]). Concepts the face models
//! and the appearance statistics find ("person", "smiling", "texture", …,
//! [`super::concepts`]) join the mixture with their own weights. That vector lives in MiniLM's
//! text space, so a text query is simply its MiniLM embedding. The classifier's pooled
//! features are the visual vector.
//!
//! The 1000 class texts and the extra concepts' texts are embedded once and cached in the
//! model directory as `conse-class-text-<hash>.safetensors`; the hash covers the texts, the
//! recipe and the MiniLM files, so any change computes a new cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

use super::appearance;
use super::class_text;
use super::concepts;
use super::efficientnet::EfficientNetLite;
use super::faces::{self, FaceModels};
use super::minilm::{read_model_file, MiniLm};
use super::objects::{self, ObjectModel};
use super::preprocess::{centre_crop_normalised, Normalise};
use super::{Concept, EmbedError, Embedder, ImageEmbedding, ModelInfo, RgbImage};

/// Model name stored with every vector.
pub const NAME: &str = "conse-efficientnet-lite0-minilm";
/// Recipe version: bump when vectors change meaning (classes, text form, K, preprocessing,
/// extra concepts and their weights).
pub const VERSION: &str = "5";
/// How many of the most likely classes make the semantic vector.
pub const TOP_K: usize = 8;
/// Person score of the object detector below which the face models do not run. A person
/// counts from 0.3 ([`concepts`]); at 0.1 every face of the development sets and fixtures is
/// still found, while the face pass (about a fifth of the detector's time) is skipped on the
/// ~80 % of their photos that show nobody.
const FACE_GATE: f32 = 0.1;
/// Side of the classifier's square input.
const CROP: usize = 224;
/// Share of the shorter side kept by the centre crop (resize 256 → crop 224).
const CROP_FRACTION: f32 = 0.875;
/// Input scaling of these (TensorFlow-trained) weights: `(x - 127) / 128`. Against ImageNet
/// mean/std it gave more confident and more sensible classes on the fixture photos (mean
/// top-1 probability 0.51 vs 0.37; a dog photo → German shepherd 0.45 vs malamute 0.18).
const NORMALISE: Normalise = Normalise::TFLITE;

/// File names inside the model directory.
pub mod files {
    /// The classifier weights.
    pub const EFFICIENTNET: &str = "efficientnet-lite0.safetensors";
    /// ImageNet class names, one line per class in index order.
    pub const CLASSES: &str = "imagenet_classes.txt";
    /// One WordNet definition per class, in class-index order.
    pub const DEFINITIONS: &str = "imagenet_definitions.txt";
    /// The MiniLM folder (`config.json`, `model.safetensors`, `tokenizer.json`).
    pub const MINILM: &str = "minilm";
}

/// Which concepts beyond ImageNet's classes the embedder adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extras {
    /// Face concepts and face counts.
    pub faces: bool,
    /// Concepts measured from colours and textures.
    pub appearance: bool,
    /// Faces also looked for in the picture's quarters (smaller faces, more CPU).
    pub face_tiles: bool,
    /// Objects and people found by the COCO detector.
    pub objects: bool,
}

impl Default for Extras {
    fn default() -> Self {
        Self {
            faces: true,
            appearance: true,
            face_tiles: false,
            objects: true,
        }
    }
}

/// One ImageNet class: its readable label and the text that is embedded for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassName {
    /// The first synonym, e.g. "golden retriever".
    pub label: String,
    /// What MiniLM embeds for this class.
    pub text: String,
}

impl ClassName {
    /// Builds a class from its synonym list ("tench, Tinca tinca") and, when known, its
    /// WordNet definition: the definition names what the class is a kind of ("Granny
    /// Smith: apple with a green skin…", "admiral: any of several brightly colored
    /// butterflies"), which the name alone does not tell the text model.
    pub fn from_lemmas(lemmas: &str, definition: Option<&str>) -> Self {
        let label = lemmas
            .split(',')
            .next()
            .unwrap_or(lemmas)
            .trim()
            .to_string();
        let text = match (class_text::described(&label), definition) {
            (Some(d), _) => d.to_owned(),
            (None, Some(def)) if !def.trim().is_empty() => {
                format!("a photo of a {label}: {}", def.trim())
            }
            (None, _) => format!("a photo of a {label}"),
        };
        Self { text, label }
    }
}

/// Reads `imagenet_classes.txt` and, beside it, the classes' definitions
/// (`imagenet_definitions.txt`, one line per class in the same order).
pub fn read_classes(path: &Path) -> Result<Vec<ClassName>, EmbedError> {
    let lines = |path: &Path| -> Result<Vec<String>, EmbedError> {
        let text = String::from_utf8(read_model_file(path)?)
            .map_err(|_| EmbedError::Model(format!("{} is not UTF-8", path.display())))?;
        Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect())
    };
    let names = lines(path)?;
    let defs_path = path.with_file_name(files::DEFINITIONS);
    let defs = lines(&defs_path)?;
    if defs.len() != names.len() {
        return Err(EmbedError::Model(format!(
            "{} has {} definitions for {} classes",
            defs_path.display(),
            defs.len(),
            names.len()
        )));
    }
    let classes: Vec<ClassName> = names
        .iter()
        .zip(&defs)
        .map(|(n, d)| ClassName::from_lemmas(n, Some(d)))
        .collect();
    if classes.is_empty() {
        return Err(EmbedError::Model(format!(
            "{} lists no classes",
            path.display()
        )));
    }
    Ok(classes)
}

/// The ConSE embedder.
pub struct ConseEmbedder {
    info: ModelInfo,
    net: EfficientNetLite,
    text: MiniLm,
    classes: Vec<ClassName>,
    /// Label → class indices (a few labels, such as "crane", name two classes).
    by_label: HashMap<String, Vec<usize>>,
    /// One L2-normalised MiniLM vector per class.
    class_vectors: Vec<Vec<f32>>,
    /// Face detector and smile classifier (when face concepts are on).
    faces: Option<FaceModels>,
    /// Object detector (when object concepts are on).
    objects: Option<ObjectModel>,
    /// Appearance concepts on.
    appearance: bool,
    /// Extra concepts (`concepts::vocabulary()` order): label and MiniLM vector.
    extras: Vec<(&'static str, Vec<f32>)>,
    /// Classes mixed into a semantic vector.
    top_k: usize,
}

fn inf(e: candle_core::Error) -> EmbedError {
    EmbedError::Inference(e.to_string())
}

impl ConseEmbedder {
    /// Loads the classifier, the class names and MiniLM from `model_dir` (as laid out by
    /// `scripts/fetch-models`), and the class-name embeddings from their cache, computing and
    /// caching them first when absent (seconds; logged).
    pub fn load(model_dir: &Path) -> Result<Self, EmbedError> {
        Self::load_with(model_dir, Extras::default())
    }

    /// Like [`ConseEmbedder::load`] with a choice of extra concepts; turning one off is
    /// another model version (`2-nofaces`, `2-noappearance`), and so is searching faces in
    /// quarters (`2-facetiles`).
    pub fn load_with(model_dir: &Path, extras: Extras) -> Result<Self, EmbedError> {
        let net = EfficientNetLite::load(&model_dir.join(files::EFFICIENTNET))?;
        let classes = read_classes(&model_dir.join(files::CLASSES))?;
        if classes.len() != net.num_classes() {
            return Err(EmbedError::Model(format!(
                "{} lists {} classes but the classifier has {}",
                model_dir.join(files::CLASSES).display(),
                classes.len(),
                net.num_classes()
            )));
        }
        let text = MiniLm::load(&model_dir.join(files::MINILM))?;
        let faces = if extras.faces {
            Some(FaceModels::load(
                &model_dir.join(faces::files::DIR),
                extras.face_tiles,
            )?)
        } else {
            None
        };
        let objects = if extras.objects {
            Some(ObjectModel::load(&model_dir.join(objects::files::DIR))?)
        } else {
            None
        };
        let vocabulary = concepts::vocabulary();
        let mut texts: Vec<String> = classes.iter().map(|c| c.text.clone()).collect();
        texts.extend(vocabulary.iter().map(|(_, t)| t.clone()));
        let mut class_vectors = class_vectors(model_dir, &text, &texts)?;
        let extra_vectors = vocabulary
            .iter()
            .map(|(l, _)| *l)
            .zip(class_vectors.split_off(classes.len()))
            .collect();
        let mut by_label: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in classes.iter().enumerate() {
            by_label.entry(c.label.clone()).or_default().push(i);
        }
        let mut version = VERSION.to_owned();
        if !extras.faces {
            version += "-nofaces";
        } else if extras.face_tiles {
            version += "-facetiles";
        }
        if !extras.appearance {
            version += "-noappearance";
        }
        if !extras.objects {
            version += "-noobjects";
        }
        let info = ModelInfo {
            name: NAME.into(),
            version,
            semantic_dims: text.dims(),
            visual_dims: net.feature_dims(),
        };
        Ok(Self {
            info,
            net,
            text,
            classes,
            by_label,
            class_vectors,
            faces,
            objects,
            appearance: extras.appearance,
            extras: extra_vectors,
            top_k: TOP_K,
        })
    }

    /// Mixes `k` classes (1..=50) into each semantic vector instead of [`TOP_K`]. Another `k`
    /// makes other vectors, so it is part of the model version (`2-k3`).
    pub fn with_top_k(mut self, k: usize) -> Self {
        let k = k.clamp(1, 50);
        if k != TOP_K {
            self.info.version = format!("{}-k{k}", self.info.version);
        }
        self.top_k = k;
        self
    }

    /// The same embedder with every class embedded as "a photo of a {label}", without the
    /// descriptions of [`class_text`] (to measure what they add).
    #[cfg(test)]
    pub(crate) fn with_plain_class_text(mut self) -> Self {
        let texts: Vec<String> = self
            .classes
            .iter()
            .map(|c| format!("a photo of a {}", c.label))
            .collect();
        self.class_vectors = self.text.embed_many(&texts).expect("class texts");
        self
    }

    /// The class names, in class-index order.
    pub fn classes(&self) -> &[ClassName] {
        &self.classes
    }

    /// Class probabilities (softmax over the classifier's logits) and the pooled features.
    pub fn classify(&self, image: &RgbImage) -> Result<(Vec<f32>, Vec<f32>), EmbedError> {
        let chw = centre_crop_normalised(image, CROP, CROP_FRACTION, NORMALISE)?;
        let out = self.net.classify(chw, CROP)?;
        Ok((softmax(&out.logits), out.features))
    }
}

impl Embedder for ConseEmbedder {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn input_size(&self) -> u32 {
        // Shorter side ≥ 256 keeps the 224 crop at full resolution for 3:2 photos fitted
        // into this square.
        384
    }

    fn embed_image(&self, image: &RgbImage) -> Result<ImageEmbedding, EmbedError> {
        let (probs, features) = self.classify(image)?;
        let seen = match &self.objects {
            Some(o) => Some(o.detect(image)?),
            None => None,
        };
        // Faces are looked for where the object detector sees some sign of a person; without
        // the detector, everywhere.
        let may_show_people = seen.as_ref().is_none_or(|o| {
            o.scores
                .get(objects::PERSON)
                .is_some_and(|&s| s >= FACE_GATE)
        });
        let found = match &self.faces {
            Some(f) if may_show_people => f.detect(image)?,
            _ => Vec::new(),
        };
        let looks = if self.appearance {
            appearance::measure(image)
        } else {
            Vec::new()
        };
        let top = top_k(&probs, self.top_k);
        let mut semantic = vec![0f32; self.info.semantic_dims];
        let mut concepts: Vec<Concept> = Vec::with_capacity(top.len() + 8);
        for &i in &top {
            for (s, v) in semantic.iter_mut().zip(&self.class_vectors[i]) {
                *s += probs[i] * v;
            }
            concepts.push(Concept {
                label: self.classes[i].label.clone(),
                weight: probs[i],
            });
        }
        for (i, w) in concepts::weigh(&found, seen.as_ref(), &looks) {
            let (label, v) = &self.extras[i];
            for (s, v) in semantic.iter_mut().zip(v) {
                *s += w * v;
            }
            concepts.push(Concept {
                label: (*label).to_owned(),
                weight: w,
            });
        }
        concepts.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        Ok(ImageEmbedding {
            semantic: l2_normalised(semantic),
            visual: l2_normalised(features),
            concepts,
            faces: self.faces.as_ref().map(|_| found.len() as u32),
            people: seen.as_ref().map(|o| o.people),
        })
    }

    fn embed_text(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.text.embed(text)
    }

    /// Scores each concept by its weight × the cosine between the query and the concept's
    /// class-name embedding, best first. Unknown labels score 0.
    fn explain(&self, query: &[f32], concepts: &[Concept]) -> Vec<Concept> {
        let mut scored: Vec<Concept> = concepts
            .iter()
            .map(|c| {
                let extra = self
                    .extras
                    .iter()
                    .filter(|(l, _)| *l == c.label)
                    .map(|(_, v)| v.as_slice());
                let cos = self
                    .by_label
                    .get(&c.label)
                    .into_iter()
                    .flatten()
                    .map(|&i| self.class_vectors[i].as_slice())
                    .chain(extra)
                    .map(|v| dot(query, v))
                    .fold(None, |best: Option<f32>, x| {
                        Some(best.map_or(x, |b| b.max(x)))
                    })
                    .unwrap_or(0.0);
                Concept {
                    label: c.label.clone(),
                    weight: c.weight * cos,
                }
            })
            .collect();
        scored.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        scored
    }
}

/// Loads the embeddings of `texts` (class texts, then extra concepts) from the cache, or
/// computes and caches them.
fn class_vectors(
    model_dir: &Path,
    text: &MiniLm,
    texts: &[String],
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let key = cache_key(text, texts);
    let path = model_dir.join(format!("{CACHE_PREFIX}{}.safetensors", &key[..16]));
    if let Some(v) = read_cache(&path, texts.len(), text.dims()) {
        return Ok(v);
    }
    let started = Instant::now();
    let vectors = text.embed_many(texts)?;
    tracing::info!(
        texts = texts.len(),
        ms = started.elapsed().as_millis() as u64,
        "computed ConSE class-name embeddings"
    );
    match write_cache(&path, &vectors, text.dims()) {
        Ok(()) => remove_stale_caches(model_dir, &path),
        // Still usable: the next start computes them again.
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache class-name embeddings")
        }
    }
    Ok(vectors)
}

/// SHA-256 (hex) over the recipe, the class texts and the MiniLM files.
fn cache_key(text: &MiniLm, texts: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(format!("{NAME}@{VERSION}\n{}\n", text.fingerprint()).as_bytes());
    for t in texts {
        h.update(t.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

const CACHE_TENSOR: &str = "class_text";
const CACHE_PREFIX: &str = "conse-class-text-";

/// Deletes class-name caches of earlier recipes or MiniLM files, keeping `current`.
fn remove_stale_caches(model_dir: &Path, current: &Path) {
    let Ok(entries) = std::fs::read_dir(model_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(CACHE_PREFIX) && name.ends_with(".safetensors") && path != current {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed stale class-name cache"),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove"),
            }
        }
    }
}

fn read_cache(path: &Path, rows: usize, dims: usize) -> Option<Vec<Vec<f32>>> {
    if !path.is_file() {
        return None;
    }
    let loaded = candle_core::safetensors::load(path, &Device::Cpu)
        .ok()
        .and_then(|mut m| m.remove(CACHE_TENSOR))
        .filter(|t| t.dims() == [rows, dims])
        .and_then(|t| t.to_vec2::<f32>().ok());
    if loaded.is_none() {
        tracing::warn!(path = %path.display(), "ignoring unreadable class-name cache");
    }
    loaded
}

fn write_cache(path: &Path, vectors: &[Vec<f32>], dims: usize) -> Result<(), EmbedError> {
    let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
    let t = Tensor::from_vec(flat, (vectors.len(), dims), &Device::Cpu).map_err(inf)?;
    let tmp: PathBuf = path.with_extension("safetensors.tmp");
    let map = HashMap::from([(CACHE_TENSOR.to_string(), t)]);
    candle_core::safetensors::save(&map, &tmp).map_err(inf)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| EmbedError::Model(format!("cannot write {}: {e}", path.display())))
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - m).exp()).collect();
    let z: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / z).collect()
}

/// Indices of the `k` largest values, largest first.
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    idx.truncate(k);
    idx
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `v / |v|`; a zero vector stays zero.
pub(crate) fn l2_normalised(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_use_the_first_lemma() {
        let c = ClassName::from_lemmas("tench, Tinca tinca", None);
        assert_eq!(c.label, "tench");
        assert_eq!(c.text, "a photo of a tench");
        assert_eq!(ClassName::from_lemmas("crane", None).label, "crane");
    }

    #[test]
    fn softmax_and_top_k() {
        let p = softmax(&[1.0, 3.0, 2.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(top_k(&p, 2), vec![1, 2]);
        assert_eq!(top_k(&p, 10).len(), 3);
    }

    #[test]
    fn normalising_keeps_zero_vectors() {
        assert_eq!(l2_normalised(vec![0.0, 0.0]), vec![0.0, 0.0]);
        let v = l2_normalised(vec![3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-6);
    }
}

#[cfg(test)]
mod real_weights {
    use super::*;
    use crate::search::embed::testutil;

    /// The labelled fixtures embedded, and the queries of `queries.json`.
    struct Fixtures {
        names: Vec<String>,
        images: Vec<ImageEmbedding>,
        queries: Vec<(String, Vec<String>)>,
    }

    fn embed_fixtures(e: &ConseEmbedder) -> Option<Fixtures> {
        let fx = testutil::fixtures_dir()?;
        let q: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fx.join("labelled/queries.json")).unwrap())
                .unwrap();
        let names: Vec<String> = q["labelled_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let images = names
            .iter()
            .map(|n| {
                e.embed_image(&testutil::load_rgb(&fx.join(n), e.input_size()))
                    .unwrap()
            })
            .collect();
        let queries = q["queries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let rel = v["relevant"].as_array().unwrap();
                (
                    v["query"].as_str().unwrap().to_string(),
                    rel.iter()
                        .map(|r| r.as_str().unwrap().to_string())
                        .collect(),
                )
            })
            .collect();
        Some(Fixtures {
            names,
            images,
            queries,
        })
    }

    /// Rank (0-based) of the best relevant image for each query.
    fn ranks(e: &ConseEmbedder, f: &Fixtures) -> Vec<(String, usize, Vec<String>)> {
        f.queries
            .iter()
            .map(|(query, relevant)| {
                let qv = e.embed_text(query).unwrap();
                let mut order: Vec<usize> = (0..f.images.len()).collect();
                let score = |i: usize| dot(&qv, &f.images[i].semantic);
                order.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
                let rank = order
                    .iter()
                    .position(|&i| relevant.contains(&f.names[i]))
                    .unwrap();
                let top: Vec<String> = order[..3]
                    .iter()
                    .map(|&i| format!("{} {:.2}", &f.names[i]["labelled/".len()..], score(i)))
                    .collect();
                (query.clone(), rank, top)
            })
            .collect()
    }

    /// Compares recipe choices (normalisation, class text, K) by mean reciprocal rank.
    #[test]
    #[ignore = "recipe exploration"]
    fn probe_recipes() {
        let Some(dir) = testutil::model_dir() else {
            return;
        };
        let Some(fx) = testutil::fixtures_dir() else {
            return;
        };
        let e = ConseEmbedder::load(&dir).unwrap();
        let f = embed_fixtures(&e).unwrap();
        let lemmas: Vec<String> = std::fs::read_to_string(dir.join(files::CLASSES))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let forms: Vec<(&str, Vec<String>)> = vec![
            (
                "photo-of-label",
                e.classes.iter().map(|c| c.text.clone()).collect(),
            ),
            ("label", e.classes.iter().map(|c| c.label.clone()).collect()),
            ("lemmas", lemmas.clone()),
            (
                "photo-of-lemmas",
                lemmas.iter().map(|l| format!("a photo of a {l}")).collect(),
            ),
        ];
        let class_vecs: Vec<(&str, Vec<Vec<f32>>)> = forms
            .iter()
            .map(|(n, t)| (*n, e.text.embed_many(t).unwrap()))
            .collect();
        let queries: Vec<(Vec<f32>, Vec<usize>)> = f
            .queries
            .iter()
            .map(|(q, rel)| {
                let idx = rel
                    .iter()
                    .map(|r| f.names.iter().position(|n| n == r).unwrap());
                (e.embed_text(q).unwrap(), idx.collect())
            })
            .collect();
        for (norm_name, norm) in [
            ("imagenet", Normalise::IMAGENET),
            ("tflite", Normalise::TFLITE),
        ] {
            let probs: Vec<Vec<f32>> = f
                .names
                .iter()
                .map(|n| {
                    let img = testutil::load_rgb(&fx.join(n), e.input_size());
                    let chw = centre_crop_normalised(&img, CROP, CROP_FRACTION, norm).unwrap();
                    softmax(&e.net.classify(chw, CROP).unwrap().logits)
                })
                .collect();
            let top1: f32 = probs.iter().map(|p| p[top_k(p, 1)[0]]).sum::<f32>() / 13.0;
            println!("{norm_name}: mean top-1 probability {top1:.3}");
            for (form, cv) in &class_vecs {
                for k in [1, 3, 5, 8, 10, 20] {
                    let sem: Vec<Vec<f32>> = probs
                        .iter()
                        .map(|p| {
                            let mut s = vec![0f32; 384];
                            for i in top_k(p, k) {
                                s.iter_mut().zip(&cv[i]).for_each(|(a, v)| *a += p[i] * v);
                            }
                            l2_normalised(s)
                        })
                        .collect();
                    let (mut mrr, mut r1, mut r3) = (0.0, 0, 0);
                    for (qv, rel) in &queries {
                        let mut order: Vec<usize> = (0..sem.len()).collect();
                        order.sort_by(|&a, &b| dot(qv, &sem[b]).total_cmp(&dot(qv, &sem[a])));
                        let rank = order.iter().position(|i| rel.contains(i)).unwrap();
                        mrr += 1.0 / (rank as f64 + 1.0);
                        r1 += usize::from(rank == 0);
                        r3 += usize::from(rank < 3);
                    }
                    let n = queries.len();
                    println!(
                        "  {form:16} K={k:2}: MRR {:.3}  R@1 {r1}/{n}  R@3 {r3}/{n}",
                        mrr / n as f64
                    );
                }
            }
        }
    }

    #[test]
    fn fixture_photos_rank_for_text_queries() {
        let Some(dir) = testutil::model_dir() else {
            return;
        };
        let e = ConseEmbedder::load(&dir).unwrap();
        assert_eq!(e.info().semantic_dims, 384);
        assert_eq!(e.info().visual_dims, 1280);
        let caches = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|d| {
                d.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(CACHE_PREFIX)
            })
            .count();
        assert!(
            caches >= 1,
            "the class-name cache is in the model directory"
        );
        let Some(f) = embed_fixtures(&e) else { return };
        for (name, img) in f.names.iter().zip(&f.images) {
            let c: Vec<String> = img
                .concepts
                .iter()
                .take(5)
                .map(|c| format!("{} {:.2}", c.label, c.weight))
                .collect();
            println!("{name}: {}", c.join(" | "));
            assert_eq!(img.semantic.len(), 384);
            assert_eq!(img.visual.len(), 1280);
            // The top classes, then the face and look concepts the picture shows.
            assert!(
                (TOP_K..=TOP_K + e.extras.len()).contains(&img.concepts.len()),
                "{name}: {c:?}"
            );
        }
        // The classifier itself: top classes of a few unambiguous photos.
        let top1 = |file: &str| {
            let i = f.names.iter().position(|n| n.ends_with(file)).unwrap();
            // The best class (a face or look concept may weigh more).
            let label = f.images[i]
                .concepts
                .iter()
                .find(|c| e.by_label.contains_key(&c.label))
                .map(|c| c.label.clone())
                .unwrap_or_default();
            let class = e.by_label[&label][0];
            (label, class)
        };
        // ImageNet classes 281..=285 are domestic cats, 151..=268 dog breeds.
        assert!(
            (281..=285).contains(&top1("img-01.png").1),
            "cat photo: {:?}",
            top1("img-01.png")
        );
        assert!(
            (151..=268).contains(&top1("img-02.jpg").1),
            "dog photo: {:?}",
            top1("img-02.jpg")
        );
        assert_eq!(top1("img-09.png").0, "espresso");
        assert_eq!(top1("img-11.jpg").0, "fox squirrel");
        assert!(["lemon", "orange"].contains(&top1("img-04.jpg").0.as_str()));
        let ranks = ranks(&e, &f);
        let mut mrr = 0.0;
        for (q, rank, top) in &ranks {
            println!("{q:28} rank {} top: {}", rank + 1, top.join(", "));
            mrr += 1.0 / (*rank as f64 + 1.0);
        }
        println!(
            "MRR {:.3} over {} queries",
            mrr / ranks.len() as f64,
            ranks.len()
        );
        let rank_of = |q: &str| ranks.iter().find(|r| r.0 == q).unwrap().1;
        for q in [
            "a dog",
            "a cat",
            "a bird",
            "a flower",
            "a cup of coffee",
            "a squirrel",
        ] {
            assert_eq!(rank_of(q), 0, "{q} should rank a relevant photo first");
        }
        for q in [
            "fruit",
            "a bus on a street",
            "horses in a field",
            "a rocket launch at night",
        ] {
            assert!(
                rank_of(q) < 3,
                "{q} should rank a relevant photo in the top 3"
            );
        }

        // Explanations: for "a dog" the dog photo's dog classes come first.
        let qv = e.embed_text("a dog").unwrap();
        let dog = &f.images[f
            .names
            .iter()
            .position(|n| n.ends_with("img-02.jpg"))
            .unwrap()];
        let ex = e.explain(&qv, &dog.concepts);
        assert_eq!(ex.len(), dog.concepts.len());
        assert!(ex.windows(2).all(|w| w[0].weight >= w[1].weight));
        println!("explain 'a dog' on img-02: {ex:?}");
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use crate::search::embed::testutil;

    // CPU seconds of this process (all threads): wall time is unreliable on a machine shared
    // with other builds.
    use crate::search::eval::process_cpu_seconds as cpu_seconds;

    /// Timings; meaningful in a release build:
    /// `cargo test --release -p flexphoto-control-plane --lib embed::conse::bench -- --ignored --nocapture`
    #[test]
    #[ignore = "timing run; use a release build"]
    fn timings() {
        let Some(dir) = testutil::model_dir() else {
            return;
        };
        let Some(fx) = testutil::fixtures_dir() else {
            return;
        };
        // The one-time cache build, into a scratch copy of the model directory's layout.
        let tmp = tempfile::tempdir().unwrap();
        for f in [files::EFFICIENTNET, files::CLASSES] {
            std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
        }
        std::os::unix::fs::symlink(dir.join(files::MINILM), tmp.path().join(files::MINILM))
            .unwrap();
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let e = ConseEmbedder::load(tmp.path()).unwrap();
        println!(
            "first load incl. class-embedding cache build: {:?} wall, {:.1} s CPU",
            t.elapsed(),
            cpu_seconds() - cpu
        );
        let t = Instant::now();
        let e2 = ConseEmbedder::load(tmp.path()).unwrap();
        println!("load with cache: {:?}", t.elapsed());
        drop(e2);

        // What the classifier makes of the camera photos (for the record).
        let mut photos: Vec<PathBuf> = std::fs::read_dir(fx.join("photos"))
            .unwrap()
            .map(|d| d.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
            .collect();
        photos.sort();
        for p in &photos {
            let emb = e
                .embed_image(&testutil::load_rgb(p, e.input_size()))
                .unwrap();
            let top: Vec<String> = emb.concepts[..3]
                .iter()
                .map(|c| format!("{} {:.2}", c.label, c.weight))
                .collect();
            println!(
                "{}: {}",
                p.file_name().unwrap().to_string_lossy(),
                top.join(" | ")
            );
        }

        let img = testutil::load_rgb(&fx.join("labelled/img-02.jpg"), 256);
        println!("input {}x{}", img.width, img.height);
        e.embed_image(&img).unwrap();
        let n = 20;
        let (t, cpu) = (Instant::now(), cpu_seconds());
        for _ in 0..n {
            e.embed_image(&img).unwrap();
        }
        println!(
            "embed_image (incl. preprocessing): {:.1} ms wall, {:.1} ms CPU",
            t.elapsed().as_secs_f64() * 1e3 / n as f64,
            (cpu_seconds() - cpu) * 1e3 / n as f64
        );
        let t = Instant::now();
        for _ in 0..n {
            centre_crop_normalised(&img, CROP, CROP_FRACTION, NORMALISE).unwrap();
        }
        println!(
            "  of which preprocessing: {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3 / n as f64
        );
        // The parts beside the classifier, on a photo with a face and one without.
        for file in ["labelled/img-10.jpg", "labelled/img-02.jpg"] {
            let img = testutil::load_rgb(&fx.join(file), e.input_size());
            let (t, cpu) = (Instant::now(), cpu_seconds());
            for _ in 0..n {
                e.classify(&img).unwrap();
            }
            let classify = (cpu_seconds() - cpu) * 1e3 / n as f64;
            let wall_classify = t.elapsed().as_secs_f64() * 1e3 / n as f64;
            let (t, cpu) = (Instant::now(), cpu_seconds());
            let mut found = 0;
            let face_models = e.faces.as_ref().unwrap();
            for _ in 0..n {
                found = face_models.detect(&img).unwrap().len();
            }
            let faces = (cpu_seconds() - cpu) * 1e3 / n as f64;
            let wall_faces = t.elapsed().as_secs_f64() * 1e3 / n as f64;
            let (t, cpu) = (Instant::now(), cpu_seconds());
            for _ in 0..n {
                appearance::measure(&img);
            }
            let looks = (cpu_seconds() - cpu) * 1e3 / n as f64;
            let wall_looks = t.elapsed().as_secs_f64() * 1e3 / n as f64;
            println!(
                "  {file} ({}x{}, {found} faces) CPU ms: classify {classify:.1}, faces {faces:.1}, \
                 appearance {looks:.1}; wall ms {wall_classify:.1} / {wall_faces:.1} / {wall_looks:.1}",
                img.width, img.height
            );
        }
        let queries = [
            "a dog",
            "people walking in a city",
            "a rocket launch at night",
        ];
        e.embed_text(queries[0]).unwrap();
        let (t, cpu) = (Instant::now(), cpu_seconds());
        for i in 0..n {
            e.embed_text(queries[i % queries.len()]).unwrap();
        }
        println!(
            "embed_text: {:.1} ms wall, {:.1} ms CPU",
            t.elapsed().as_secs_f64() * 1e3 / n as f64,
            (cpu_seconds() - cpu) * 1e3 / n as f64
        );
    }
}
