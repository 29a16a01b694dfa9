//! Sets of field values as sorted, disjoint, inclusive intervals: the form
//! every match is compiled to before the classifier is built.

/// Sorted, disjoint, non-adjacent inclusive intervals of `u32`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Intervals(pub Vec<(u32, u32)>);

impl Intervals {
    /// No value.
    pub fn empty() -> Self {
        Intervals(Vec::new())
    }

    /// Every value from 0 to `max`.
    pub fn all(max: u32) -> Self {
        Intervals(vec![(0, max)])
    }

    /// One value.
    pub fn one(v: u32) -> Self {
        Intervals(vec![(v, v)])
    }

    /// `lo..=hi` (empty when `lo > hi`).
    pub fn range(lo: u32, hi: u32) -> Self {
        if lo > hi {
            Intervals::empty()
        } else {
            Intervals(vec![(lo, hi)])
        }
    }

    /// The union of any intervals, normalised.
    ///
    /// ```
    /// use xdpip::filter::set::Intervals;
    /// let s = Intervals::from_ranges(vec![(5, 9), (1, 2), (3, 3), (8, 12)]);
    /// assert_eq!(s.0, vec![(1, 3), (5, 12)]);
    /// ```
    pub fn from_ranges(mut v: Vec<(u32, u32)>) -> Self {
        v.retain(|(a, b)| a <= b);
        v.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
        for (a, b) in v {
            match out.last_mut() {
                Some(l) if a <= l.1.saturating_add(1) => l.1 = l.1.max(b),
                _ => out.push((a, b)),
            }
        }
        Intervals(out)
    }

    /// True when no value is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `v` is in the set.
    pub fn contains(&self, v: u32) -> bool {
        let i = self.0.partition_point(|&(a, _)| a <= v);
        i > 0 && self.0[i - 1].1 >= v
    }

    /// The values from 0 to `max` that are not in the set.
    pub fn complement(&self, max: u32) -> Self {
        let mut out = Vec::new();
        let mut next = 0u64;
        for &(a, b) in &self.0 {
            if a as u64 > next && next <= max as u64 {
                out.push((next as u32, (a - 1).min(max)));
            }
            next = b as u64 + 1;
        }
        if next <= max as u64 {
            out.push((next as u32, max));
        }
        Intervals(out)
    }

    /// The values in both.
    pub fn intersect(&self, o: &Intervals) -> Self {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < self.0.len() && j < o.0.len() {
            let (a, b) = self.0[i];
            let (c, d) = o.0[j];
            let lo = a.max(c);
            let hi = b.min(d);
            if lo <= hi {
                out.push((lo, hi));
            }
            if b < d {
                i += 1;
            } else {
                j += 1;
            }
        }
        Intervals(out)
    }

    /// The values `v` of a field of `bits` bits with `v & mask == value`.
    /// Exact for a prefix mask (contiguous high bits) of any width and for
    /// any mask of at most 16 bits; `None` otherwise.
    pub fn masked(mask: u32, value: u32, bits: u32) -> Option<Self> {
        let full = if bits == 32 {
            u32::MAX
        } else {
            (1u32 << bits) - 1
        };
        let mask = mask & full;
        if value & !mask != 0 {
            return Some(Intervals::empty());
        }
        let inv = !mask & full;
        // A prefix mask: the free bits are the low ones.
        if inv & inv.wrapping_add(1) == 0 {
            return Some(Intervals::range(value, value | inv));
        }
        if bits > 16 {
            return None;
        }
        Some(Intervals::from_ranges(
            (0..=full)
                .filter(|v| v & mask == value)
                .map(|v| (v, v))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complement_and_intersect() {
        let s = Intervals::from_ranges(vec![(0, 3), (10, 20)]);
        assert_eq!(s.complement(30).0, vec![(4, 9), (21, 30)]);
        assert_eq!(s.complement(15).0, vec![(4, 9)]);
        assert_eq!(Intervals::all(u32::MAX).complement(u32::MAX).0, vec![]);
        assert_eq!(Intervals::empty().complement(7).0, vec![(0, 7)]);
        let t = Intervals::from_ranges(vec![(2, 12), (19, 25)]);
        assert_eq!(s.intersect(&t).0, vec![(2, 3), (10, 12), (19, 20)]);
        assert!(s.contains(15) && !s.contains(5) && s.contains(0));
    }

    #[test]
    fn masks() {
        // 10.0.0.0/8
        let s = Intervals::masked(0xff00_0000, 0x0a00_0000, 32).unwrap();
        assert_eq!(s.0, vec![(0x0a00_0000, 0x0aff_ffff)]);
        // DSCP cs1 on the TOS byte: 0x20..=0x23
        let s = Intervals::masked(0xfc, 0x20, 8).unwrap();
        assert_eq!(s.0, vec![(0x20, 0x23)]);
        // ECN bits: every fourth value
        let s = Intervals::masked(0x03, 0x01, 8).unwrap();
        assert_eq!(s.0.len(), 64);
        assert!(Intervals::masked(0x00ff_00ff, 1, 32).is_none());
        assert!(Intervals::masked(0xff00, 0x0001, 16).unwrap().is_empty());
    }
}
