//! A fixed-size log-linear histogram of microsecond values: exact below 64 µs, then 32
//! buckets per power of two (about 3% wide), so percentiles of one-way latency cost a
//! counter increment per packet and no allocation after start.

/// Buckets per power of two above the exact range.
const SUB_BUCKETS: u64 = 32;
/// Values below this are counted exactly.
const EXACT: u64 = 2 * SUB_BUCKETS;
/// Powers of two covered above the exact range: up to 2^40 µs, far beyond any run.
const OCTAVES: u64 = 34;
const BUCKETS: usize = (EXACT + OCTAVES * SUB_BUCKETS) as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn index_of(value: u64) -> usize {
    if value < EXACT {
        return value as usize;
    }
    let octave = 63 - u64::from(value.leading_zeros()); // >= 6
    let shift = octave - SUB_BUCKETS.trailing_zeros() as u64;
    let index = EXACT + (octave - 6) * SUB_BUCKETS + ((value >> shift) - SUB_BUCKETS);
    (index as usize).min(BUCKETS - 1)
}

/// The highest value that falls into bucket `index`.
fn upper_bound(index: usize) -> u64 {
    let index = index as u64;
    if index < EXACT {
        return index;
    }
    let octave = (index - EXACT) / SUB_BUCKETS + 6;
    let shift = octave - SUB_BUCKETS.trailing_zeros() as u64;
    let sub = (index - EXACT) % SUB_BUCKETS + SUB_BUCKETS;
    ((sub + 1) << shift) - 1
}

impl Histogram {
    pub fn record(&mut self, value: u64) {
        self.counts[index_of(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), as the upper bound of its bucket (never above
    /// the largest value seen); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper_bound(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_each_value_lies_within_its_bucket() {
        let mut previous_upper = None;
        for i in 0..BUCKETS - 1 {
            let upper = upper_bound(i);
            if let Some(p) = previous_upper {
                assert_eq!(upper_bound(i - 1), p);
                assert_eq!(index_of(p + 1), i, "value {} after bucket {}", p + 1, i - 1);
            }
            assert_eq!(index_of(upper), i);
            previous_upper = Some(upper);
        }
    }

    #[test]
    fn bucket_width_is_at_most_about_three_percent() {
        for v in [64u64, 100, 1_000, 20_000, 1_000_000, 123_456_789] {
            let upper = upper_bound(index_of(v));
            assert!(upper >= v);
            assert!((upper - v) as f64 <= v as f64 / 31.0, "{v} -> {upper}");
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.max(), 1000);
        assert_eq!(h.quantile(0.0), 1);
        assert_eq!(h.quantile(0.05), 50);
        let p50 = h.quantile(0.5);
        assert!((500..=516).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99);
        assert!((990..=1000).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), 1000);

        let mut other = Histogram::default();
        other.record(5_000);
        h.merge(&other);
        assert_eq!(h.count(), 1001);
        assert_eq!(h.quantile(1.0), 5_000);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }
}
