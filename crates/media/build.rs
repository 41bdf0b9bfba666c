//! Builds the scaled JPEG decoder (csrc/jpeg_decode.c) against the system's libjpeg, the
//! one libvips links.

fn main() {
    println!("cargo:rerun-if-changed=csrc/jpeg_decode.c");
    cc::Build::new()
        .file("csrc/jpeg_decode.c")
        .warnings(true)
        .extra_warnings(true)
        .compile("flexphoto_jpeg_decode");
    println!("cargo:rustc-link-lib=jpeg");
}
