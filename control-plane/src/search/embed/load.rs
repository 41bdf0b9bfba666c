//! Choosing and loading an embedder from settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::clip::ClipEmbedder;
use super::conse::{files, ConseEmbedder, Extras};
use super::{EmbedError, Embedder};

/// Which embedder to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelKind {
    /// The default: ConSE over EfficientNet-Lite0 and MiniLM (files from `scripts/fetch-models`).
    #[default]
    Conse,
    /// A Hugging Face-format CLIP directory the user provides (quality not verified here).
    Clip,
}

/// Where the embedder's files are and which embedder to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedSettings {
    /// Which embedder.
    pub kind: ModelKind,
    /// The ConSE model directory (`scripts/fetch-models` fills it; default `models/`). The
    /// class-name embedding cache is written here too.
    pub model_dir: PathBuf,
    /// The CLIP directory (`config.json`, `model.safetensors`, `tokenizer.json`); required
    /// when `kind` is [`ModelKind::Clip`].
    pub clip_dir: Option<PathBuf>,
    /// ConSE: classes mixed into each semantic vector; `None` for the default.
    pub conse_top_k: Option<usize>,
    /// ConSE: face concepts and face counts (needs the `faces/` model files).
    pub conse_faces: bool,
    /// ConSE: concepts measured from colours and textures.
    pub conse_appearance: bool,
    /// ConSE: faces also looked for in the picture's quarters.
    pub conse_face_tiles: bool,
    /// ConSE: objects and people from the COCO detector (needs the `objects/` model files).
    pub conse_objects: bool,
}

impl EmbedSettings {
    /// The default ConSE model with its files in `model_dir`.
    pub fn conse(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            kind: ModelKind::Conse,
            model_dir: model_dir.into(),
            ..Self::default()
        }
    }

    /// A CLIP model in `clip_dir` (a Hugging Face-format directory).
    pub fn clip(clip_dir: impl Into<PathBuf>) -> Self {
        Self {
            kind: ModelKind::Clip,
            clip_dir: Some(clip_dir.into()),
            ..Self::default()
        }
    }
}

impl Default for EmbedSettings {
    fn default() -> Self {
        Self {
            kind: ModelKind::Conse,
            model_dir: PathBuf::from("models"),
            clip_dir: None,
            conse_top_k: None,
            conse_faces: true,
            conse_appearance: true,
            conse_face_tiles: false,
            conse_objects: true,
        }
    }
}

/// Checks that every file is there first, so the error names the missing one.
fn require(dir: &Path, names: &[&str], fix: &str) -> Result<(), EmbedError> {
    for name in names {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(EmbedError::Model(format!(
                "{} is missing ({fix})",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Loads the embedder the settings name. Blocks for the loading (a second or so; the first
/// ConSE load also computes the class-name embeddings): call from a blocking thread.
///
/// Errors name the missing or unreadable file and how to get it.
pub fn load(settings: &EmbedSettings) -> Result<Arc<dyn Embedder>, EmbedError> {
    match settings.kind {
        ModelKind::Conse => {
            let dir = &settings.model_dir;
            let minilm = |f: &str| format!("{}/{f}", files::MINILM);
            require(
                dir,
                &[
                    files::EFFICIENTNET,
                    files::CLASSES,
                    files::DEFINITIONS,
                    &minilm("config.json"),
                    &minilm("tokenizer.json"),
                    &minilm("model.safetensors"),
                ],
                &format!(
                    "run scripts/fetch-models {} to install the model files",
                    dir.display()
                ),
            )?;
            // Optional parts: their files, under their folder, and the switch that skips them.
            let parts = [
                (
                    settings.conse_faces,
                    super::faces::files::DIR,
                    &super::faces::files::ALL[..],
                    "search.conse_faces",
                ),
                (
                    settings.conse_objects,
                    super::objects::files::DIR,
                    &super::objects::files::ALL[..],
                    "search.conse_objects",
                ),
            ];
            for (on, folder, names, switch) in parts {
                if !on {
                    continue;
                }
                let paths: Vec<String> = names.iter().map(|f| format!("{folder}/{f}")).collect();
                require(
                    dir,
                    &paths.iter().map(String::as_str).collect::<Vec<_>>(),
                    &format!(
                        "run scripts/fetch-models {} to install the model files, or set \
                         {switch} = false",
                        dir.display()
                    ),
                )?;
            }
            let mut e = ConseEmbedder::load_with(
                dir,
                Extras {
                    faces: settings.conse_faces,
                    appearance: settings.conse_appearance,
                    face_tiles: settings.conse_face_tiles,
                    objects: settings.conse_objects,
                },
            )?;
            if let Some(k) = settings.conse_top_k {
                e = e.with_top_k(k);
            }
            tracing::info!(model = %e.info().id(), dir = %dir.display(), "embedder loaded");
            Ok(Arc::new(e))
        }
        ModelKind::Clip => {
            let dir = settings.clip_dir.as_ref().ok_or_else(|| {
                EmbedError::Model("the CLIP embedder needs a CLIP directory (clip_dir)".into())
            })?;
            require(
                dir,
                &["config.json", "model.safetensors", "tokenizer.json"],
                "a Hugging Face-format CLIP directory is needed; scripts/fetch-models does not \
                 provide one",
            )?;
            let e = ClipEmbedder::load(dir)?;
            tracing::info!(model = %e.info().id(), dir = %dir.display(), "embedder loaded");
            Ok(Arc::new(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_conse_files_name_the_file_and_the_script() {
        let tmp = tempfile::tempdir().unwrap();
        let settings = EmbedSettings::conse(tmp.path());
        let err = load(&settings).err().unwrap().to_string();
        assert!(err.contains("efficientnet-lite0.safetensors"), "{err}");
        assert!(err.contains("scripts/fetch-models"), "{err}");
    }

    #[test]
    fn a_missing_optional_part_names_its_switch() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("minilm")).unwrap();
        std::fs::create_dir_all(d.join("faces")).unwrap();
        let mut present = vec![
            files::EFFICIENTNET.to_owned(),
            files::CLASSES.to_owned(),
            files::DEFINITIONS.to_owned(),
        ];
        present.extend(
            ["config.json", "tokenizer.json", "model.safetensors"].map(|f| format!("minilm/{f}")),
        );
        present.extend(super::super::faces::files::ALL.map(|f| format!("faces/{f}")));
        for f in present {
            std::fs::write(d.join(f), b"").unwrap();
        }
        let err = load(&EmbedSettings::conse(d)).err().unwrap().to_string();
        assert!(err.contains("objects/centernet.json"), "{err}");
        assert!(err.contains("search.conse_objects = false"), "{err}");
    }

    #[test]
    fn clip_needs_a_directory() {
        let settings = EmbedSettings {
            kind: ModelKind::Clip,
            ..Default::default()
        };
        assert!(load(&settings)
            .err()
            .unwrap()
            .to_string()
            .contains("clip_dir"));
        let tmp = tempfile::tempdir().unwrap();
        let settings = EmbedSettings::clip(tmp.path());
        assert!(load(&settings)
            .err()
            .unwrap()
            .to_string()
            .contains("config.json"));
    }

    #[test]
    fn loads_a_clip_directory() {
        let tmp = tempfile::tempdir().unwrap();
        crate::search::embed::clip::tests::write_tiny_clip(tmp.path());
        let settings = EmbedSettings::clip(tmp.path());
        let e = load(&settings).unwrap();
        assert_eq!(e.info().semantic_dims, 8);
    }
}
