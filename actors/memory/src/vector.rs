//! Vector arithmetic on `f32` slices, written so the compiler vectorises it: eight
//! independent accumulators over `chunks_exact(8)`, no bounds checks in the loop.

/// Lanes summed independently (one AVX register of `f32`).
const LANES: usize = 8;

/// The dot product of `a` and `b` (the shorter length wins). For unit vectors this is the
/// cosine similarity.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// Scales `v` to unit length; returns false (leaving it alone) for a zero or non-finite
/// vector.
pub fn normalize(v: &mut [f32]) -> bool {
    let norm = dot(v, v).sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return false;
    }
    for x in v.iter_mut() {
        *x /= norm;
    }
    true
}

/// True when every component is finite.
pub fn is_finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn dot_matches_the_naive_sum(v in proptest::collection::vec(-10.0f32..10.0, 0..100)) {
            let w: Vec<f32> = v.iter().map(|x| x * 0.5 + 1.0).collect();
            let naive: f32 = v.iter().zip(&w).map(|(a, b)| a * b).sum();
            prop_assert!((dot(&v, &w) - naive).abs() <= 1e-3 * (1.0 + naive.abs()));
        }
    }

    #[test]
    fn normalising_gives_unit_length_and_refuses_zero() {
        let mut v = vec![3.0, 4.0];
        assert!(normalize(&mut v));
        assert!((dot(&v, &v) - 1.0).abs() < 1e-6);
        let mut z = vec![0.0; 4];
        assert!(!normalize(&mut z));
        assert!(!is_finite(&[1.0, f32::NAN]));
    }
}
