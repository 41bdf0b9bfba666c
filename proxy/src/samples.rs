//! Sample images the edge can make for itself, so a fresh machine has something to serve.

use std::path::Path;

use flexphoto_media::vips::Image;

/// Packed RGB(A) pixels of a smooth synthetic scene: a sky gradient, a sun and hills.
pub fn scene_pixels(width: u32, height: u32, alpha: bool, seed: u32) -> Vec<u8> {
    let bands = if alpha { 4 } else { 3 };
    let mut px = Vec::with_capacity((width * height * bands) as usize);
    let (sx, sy) = (
        (0.25 + 0.5 * ((seed % 7) as f32 / 7.0)) * width as f32,
        0.3 * height as f32,
    );
    let r_sun = width.min(height) as f32 * 0.12;
    for y in 0..height {
        for x in 0..width {
            let fy = y as f32 / height as f32;
            let fx = x as f32 / width as f32;
            let hill = 0.65 + 0.08 * (fx * 9.0 + seed as f32).sin() + 0.05 * (fx * 23.0).cos();
            let (mut r, mut g, mut b) = if fy > hill {
                (40.0 + 60.0 * fx, 120.0 + 60.0 * (1.0 - fy), 50.0)
            } else {
                (90.0 + 100.0 * fy, 150.0 + 70.0 * fy, 235.0)
            };
            let d = ((x as f32 - sx).powi(2) + (y as f32 - sy).powi(2)).sqrt();
            if d < r_sun {
                (r, g, b) = (255.0, 220.0, 90.0);
            }
            px.extend_from_slice(&[r as u8, g as u8, b as u8]);
            if alpha {
                let edge = (fx.min(1.0 - fx).min(fy).min(1.0 - fy) * 8.0).min(1.0);
                px.push((edge * 255.0) as u8);
            }
        }
    }
    px
}

/// Writes a few sample images into `dir` unless they are there; returns their keys.
pub fn ensure_samples(dir: &Path) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let specs: [(&str, u32, u32, bool, &str); 3] = [
        ("samples/landscape.jpg", 2400, 1600, false, ".jpg[Q=90]"),
        ("samples/portrait.jpg", 1200, 1800, false, ".jpg[Q=90]"),
        ("samples/badge.png", 800, 800, true, ".png"),
    ];
    let mut keys = Vec::new();
    for (i, (key, w, h, alpha, suffix)) in specs.iter().enumerate() {
        let path = dir.join(key);
        if !path.exists() {
            let img = Image::from_pixels(
                &scene_pixels(*w, *h, *alpha, i as u32),
                *w,
                *h,
                if *alpha { 4 } else { 3 },
            )
            .map_err(|e| e.to_string())?;
            let bytes = img.save(suffix).map_err(|e| e.to_string())?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        keys.push((*key).to_owned());
    }
    Ok(keys)
}
