//! Pure geometry: from a fit mode, a box and a source size to resize and crop steps.

use flexphoto_url::{Fit, Gravity};

/// Stands in for "no limit" on one side of a resize box (libvips' VIPS_MAX_COORD).
pub const UNBOUNDED: u32 = 10_000_000;

/// How to crop after resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Nothing to cut.
    None,
    /// Cut to `w`×`h` by gravity.
    To {
        /// Width after cutting.
        w: u32,
        /// Height after cutting.
        h: u32,
    },
}

/// The resize and crop steps for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Box to resize into.
    pub box_w: u32,
    /// Box to resize into.
    pub box_h: u32,
    /// Never enlarge.
    pub down_only: bool,
    /// Ignore the aspect ratio.
    pub force: bool,
    /// Let libvips crop to the box with this smart strategy (cover with center/smart/entropy).
    pub vips_crop: Option<Gravity>,
    /// Crop after resizing.
    pub cut: Cut,
    /// Pad to this canvas after resizing.
    pub pad_to: Option<(u32, u32)>,
    /// Expected size after resizing (before cutting), for shrink-on-load.
    pub resized: (u32, u32),
}

impl Plan {
    /// The size of one output frame: after cutting or padding.
    pub fn output_size(&self) -> (u32, u32) {
        if let Some(pad) = self.pad_to {
            return pad;
        }
        if self.vips_crop.is_some() {
            return (self.box_w, self.box_h);
        }
        match self.cut {
            Cut::To { w, h } => (w.min(self.resized.0), h.min(self.resized.1)),
            Cut::None => self.resized,
        }
    }
}

/// The output caps a plan is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Largest output width or height.
    pub max_dimension: u32,
    /// Largest output width × height (of all frames together for animations).
    pub max_pixels: u64,
}

fn ceil_scale(v: u32, s: f64) -> u32 {
    // Saturates: a plan this large is refused by the caps before any pixel work.
    let scaled = (v as f64 * s).round();
    (scaled.min(u32::MAX as f64) as u32).max(1)
}

/// Plans the resize of a `src_w`×`src_h` (oriented) image into the requested box. Without a
/// box, the source is kept at its size when it fits `caps` and fitted into them otherwise.
pub fn plan(
    fit: Fit,
    gravity: Gravity,
    w: Option<u32>,
    h: Option<u32>,
    src_w: u32,
    src_h: u32,
    caps: Caps,
) -> Plan {
    let (src_w, src_h) = (src_w.max(1), src_h.max(1));
    let base = Plan {
        box_w: UNBOUNDED,
        box_h: UNBOUNDED,
        down_only: true,
        force: false,
        vips_crop: None,
        cut: Cut::None,
        pad_to: None,
        resized: (src_w, src_h),
    };
    let fit_inside = |bw: u32, bh: u32, down: bool| {
        let mut s = (bw as f64 / src_w as f64).min(bh as f64 / src_h as f64);
        if down {
            s = s.min(1.0);
        }
        (ceil_scale(src_w, s), ceil_scale(src_h, s))
    };
    let inside = |bw: u32, bh: u32, down: bool| Plan {
        box_w: bw,
        box_h: bh,
        down_only: down,
        resized: fit_inside(bw, bh, down),
        ..base
    };
    match (w, h) {
        (None, None) => {
            let max_dim = caps.max_dimension;
            let area = src_w as f64 * src_h as f64;
            let by_area = (caps.max_pixels as f64 / area).sqrt().min(1.0);
            let (bw, bh) = if by_area < 1.0 {
                (
                    ((src_w as f64 * by_area).floor() as u32).clamp(1, max_dim),
                    ((src_h as f64 * by_area).floor() as u32).clamp(1, max_dim),
                )
            } else {
                (max_dim, max_dim)
            };
            let resized = fit_inside(bw, bh, true);
            Plan {
                box_w: bw,
                box_h: bh,
                resized,
                ..base
            }
        }
        // One side given: every fit reduces to fitting inside an unbounded box.
        (Some(_), None) | (None, Some(_)) => inside(
            w.unwrap_or(UNBOUNDED),
            h.unwrap_or(UNBOUNDED),
            fit == Fit::ScaleDown,
        ),
        (Some(bw), Some(bh)) => match fit {
            Fit::ScaleDown | Fit::Contain => inside(bw, bh, fit == Fit::ScaleDown),
            Fit::Fill => Plan {
                box_w: bw,
                box_h: bh,
                down_only: false,
                force: true,
                resized: (bw, bh),
                ..base
            },
            Fit::Pad => {
                let resized = fit_inside(bw, bh, false);
                Plan {
                    box_w: bw,
                    box_h: bh,
                    down_only: false,
                    pad_to: Some((bw, bh)),
                    resized,
                    ..base
                }
            }
            Fit::Outside => {
                let s = (bw as f64 / src_w as f64).max(bh as f64 / src_h as f64);
                let resized = (ceil_scale(src_w, s), ceil_scale(src_h, s));
                Plan {
                    box_w: resized.0,
                    box_h: resized.1,
                    down_only: false,
                    resized,
                    ..base
                }
            }
            Fit::Cover | Fit::Crop => {
                let mut s = (bw as f64 / src_w as f64).max(bh as f64 / src_h as f64);
                if fit == Fit::Crop {
                    s = s.min(1.0);
                }
                let resized = (ceil_scale(src_w, s), ceil_scale(src_h, s));
                let cut_w = bw.min(resized.0);
                let cut_h = bh.min(resized.1);
                let smart = matches!(gravity, Gravity::Center | Gravity::Smart | Gravity::Entropy);
                if fit == Fit::Cover && smart {
                    // One libvips call resizes and crops.
                    return Plan {
                        box_w: bw,
                        box_h: bh,
                        down_only: false,
                        vips_crop: Some(gravity),
                        resized,
                        ..base
                    };
                }
                Plan {
                    box_w: resized.0,
                    box_h: resized.1,
                    down_only: false,
                    cut: Cut::To { w: cut_w, h: cut_h },
                    resized,
                    ..base
                }
            }
        },
    }
}

/// The top-left corner of a `cut_w`×`cut_h` window in a `w`×`h` image, placed by gravity.
pub fn gravity_offset(gravity: Gravity, w: u32, h: u32, cut_w: u32, cut_h: u32) -> (u32, u32) {
    let free_x = w.saturating_sub(cut_w);
    let free_y = h.saturating_sub(cut_h);
    let (fx, fy) = match gravity {
        Gravity::North => (0.5, 0.0),
        Gravity::South => (0.5, 1.0),
        Gravity::East => (1.0, 0.5),
        Gravity::West => (0.0, 0.5),
        Gravity::NorthEast => (1.0, 0.0),
        Gravity::NorthWest => (0.0, 0.0),
        Gravity::SouthEast => (1.0, 1.0),
        Gravity::SouthWest => (0.0, 1.0),
        Gravity::Center | Gravity::Smart | Gravity::Entropy => (0.5, 0.5),
        Gravity::Focal { x, y } => {
            // Centre the window on the focal point, clamped inside the image.
            let cx = x as f64 / 1000.0 * w as f64 - cut_w as f64 / 2.0;
            let cy = y as f64 / 1000.0 * h as f64 - cut_h as f64 / 2.0;
            let x = cx.clamp(0.0, free_x as f64).round() as u32;
            let y = cy.clamp(0.0, free_y as f64).round() as u32;
            return (x, y);
        }
    };
    (
        (free_x as f64 * fx).round() as u32,
        (free_y as f64 * fy).round() as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const C8K: Caps = Caps {
        max_dimension: 8192,
        max_pixels: 1 << 40,
    };

    #[test]
    fn scale_down_never_enlarges() {
        let p = plan(
            Fit::ScaleDown,
            Gravity::Center,
            Some(4000),
            Some(4000),
            800,
            600,
            C8K,
        );
        assert_eq!(p.resized, (800, 600));
        assert!(p.down_only);
        let p = plan(
            Fit::ScaleDown,
            Gravity::Center,
            Some(400),
            Some(400),
            800,
            600,
            C8K,
        );
        assert_eq!(p.resized, (400, 300));
    }

    #[test]
    fn contain_enlarges_and_fill_stretches() {
        assert_eq!(
            plan(
                Fit::Contain,
                Gravity::Center,
                Some(1600),
                Some(1600),
                800,
                600,
                C8K
            )
            .resized,
            (1600, 1200)
        );
        let p = plan(
            Fit::Fill,
            Gravity::Center,
            Some(100),
            Some(300),
            800,
            600,
            C8K,
        );
        assert!(p.force);
        assert_eq!(p.resized, (100, 300));
    }

    #[test]
    fn cover_and_crop() {
        let p = plan(
            Fit::Cover,
            Gravity::North,
            Some(300),
            Some(300),
            800,
            600,
            C8K,
        );
        assert_eq!(p.resized, (400, 300));
        assert_eq!(p.cut, Cut::To { w: 300, h: 300 });
        let p = plan(
            Fit::Cover,
            Gravity::Smart,
            Some(300),
            Some(300),
            800,
            600,
            C8K,
        );
        assert_eq!(p.vips_crop, Some(Gravity::Smart));
        // crop never enlarges: a small source is cut to what it has.
        let p = plan(
            Fit::Crop,
            Gravity::Center,
            Some(500),
            Some(500),
            1000,
            300,
            C8K,
        );
        assert_eq!(p.resized, (1000, 300));
        assert_eq!(p.cut, Cut::To { w: 500, h: 300 });
    }

    #[test]
    fn outside_and_pad() {
        let p = plan(
            Fit::Outside,
            Gravity::Center,
            Some(300),
            Some(300),
            800,
            600,
            C8K,
        );
        assert_eq!(p.resized, (400, 300));
        let p = plan(
            Fit::Pad,
            Gravity::Center,
            Some(300),
            Some(300),
            800,
            600,
            C8K,
        );
        assert_eq!(p.resized, (300, 225));
        assert_eq!(p.pad_to, Some((300, 300)));
    }

    #[test]
    fn no_box_is_bounded_by_max_dimension() {
        assert_eq!(
            plan(
                Fit::ScaleDown,
                Gravity::Center,
                None,
                None,
                10000,
                5000,
                caps(4096, 1 << 40)
            )
            .resized,
            (4096, 2048)
        );
        assert_eq!(
            plan(
                Fit::ScaleDown,
                Gravity::Center,
                None,
                None,
                100,
                50,
                caps(4096, 1 << 40)
            )
            .resized,
            (100, 50)
        );
        // Without a box, a source over the pixel cap is fitted into it.
        let p = plan(
            Fit::ScaleDown,
            Gravity::Center,
            None,
            None,
            8000,
            6000,
            caps(8192, 12_000_000),
        );
        assert!(
            p.resized.0 as u64 * p.resized.1 as u64 <= 12_000_000,
            "{p:?}"
        );
        assert!(p.resized.0 >= 3990, "{p:?}");
    }

    fn caps(max_dimension: u32, max_pixels: u64) -> Caps {
        Caps {
            max_dimension,
            max_pixels,
        }
    }

    #[test]
    fn output_sizes_after_cut_and_pad() {
        let p = plan(
            Fit::Cover,
            Gravity::North,
            Some(300),
            Some(300),
            800,
            600,
            C8K,
        );
        assert_eq!(p.output_size(), (300, 300));
        let p = plan(
            Fit::Cover,
            Gravity::Smart,
            Some(300),
            Some(200),
            800,
            600,
            C8K,
        );
        assert_eq!(p.output_size(), (300, 200));
        let p = plan(
            Fit::Pad,
            Gravity::Center,
            Some(300),
            Some(300),
            800,
            600,
            C8K,
        );
        assert_eq!(p.output_size(), (300, 300));
        let p = plan(
            Fit::Crop,
            Gravity::Center,
            Some(500),
            Some(500),
            1000,
            300,
            C8K,
        );
        assert_eq!(p.output_size(), (500, 300));
        // A thin source asked to fill a wide box enlarges past any sane size.
        let p = plan(
            Fit::Contain,
            Gravity::Center,
            Some(8192),
            None,
            1,
            1200,
            C8K,
        );
        assert_eq!(p.output_size(), (8192, 9_830_400));
    }

    #[test]
    fn gravity_offsets() {
        assert_eq!(
            gravity_offset(Gravity::NorthWest, 400, 300, 300, 300),
            (0, 0)
        );
        assert_eq!(gravity_offset(Gravity::East, 400, 300, 300, 300), (100, 0));
        assert_eq!(gravity_offset(Gravity::Center, 400, 300, 300, 300), (50, 0));
        assert_eq!(
            gravity_offset(Gravity::Focal { x: 1000, y: 500 }, 400, 300, 300, 300),
            (100, 0)
        );
        assert_eq!(
            gravity_offset(Gravity::Focal { x: 0, y: 0 }, 400, 300, 200, 100),
            (0, 0)
        );
        assert_eq!(
            gravity_offset(Gravity::Focal { x: 500, y: 500 }, 400, 300, 200, 100),
            (100, 100)
        );
    }
}
