//! Kernels shared by the CPU models: TensorFlow's "same" padding and a single-threaded
//! matrix product.

use crate::Error;

/// TensorFlow "same" padding `(before, after)` for one axis.
pub fn same_padding(len: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = len.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(len);
    (total / 2, total - total / 2)
}

/// `dst[m×n] = a[m×k] · b`, with `dst` and `a` row-major and `b`'s element `(i, j)` at
/// `b[i * b_rs + j * b_cs]`. Runs on the calling thread only.
pub fn matmul(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, n, k): (usize, usize, usize),
    (b_rs, b_cs): (usize, usize),
) -> Result<(), Error> {
    if m == 0 || n == 0 || k == 0 {
        return Err(Error::Inference(format!(
            "empty matrix product {m}×{k}·{k}×{n}"
        )));
    }
    let b_needed = (k - 1) * b_rs + (n - 1) * b_cs + 1;
    if dst.len() < m * n || a.len() < m * k || b.len() < b_needed {
        return Err(Error::Inference(format!(
            "matrix product {m}×{k}·{k}×{n}: buffers too small ({}, {}, {})",
            dst.len(),
            a.len(),
            b.len()
        )));
    }
    let s = |x: usize| x as isize;
    // SAFETY: the checks above guarantee every element gemm reads or writes is in bounds:
    // dst (i, j) at i*n + j < m*n, a (i, l) at i*k + l < m*k, b (l, j) at l*b_rs + j*b_cs <
    // b_needed. `dst` is borrowed mutably, so it aliases neither input. With
    // `read_dst == false` the old contents of `dst` are not used.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            s(n),
            false,
            a.as_ptr(),
            1,
            s(k),
            b.as_ptr(),
            s(b_cs),
            s(b_rs),
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(56, 5, 2), (1, 2));
        assert_eq!(same_padding(14, 5, 1), (2, 2));
        assert_eq!(same_padding(7, 3, 1), (1, 1));
    }

    #[test]
    fn matmul_with_strided_b() {
        // [1 2; 3 4] · [5 6; 7 8], b given column-major.
        let mut dst = [0f32; 4];
        matmul(
            &mut dst,
            &[1., 2., 3., 4.],
            &[5., 7., 6., 8.],
            (2, 2, 2),
            (1, 2),
        )
        .unwrap();
        assert_eq!(dst, [19., 22., 43., 50.]);
        assert!(matmul(&mut dst, &[1.], &[1.], (2, 2, 2), (1, 2)).is_err());
    }
}
