//! Physical checks that need nothing but receipts: the mean power a receipt's energy implies
//! over its window, and the most power one household's overlapping receipts imply at any
//! instant. Energy in mJ over a window in ms is a power in W (mJ / ms = J / s).
//!
//! `hearth demo` enforces both against each radiator's rating, and `docs/check_power.py`
//! does the same from a receipts export alone, outside hearth.

/// One receipt's window and the energy it credits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start_ms: u64,
    pub end_ms: u64,
    pub energy_mj: u64,
}

impl Window {
    /// Mean power over the window, W. A window of no length that credits energy implies
    /// infinite power.
    pub fn mean_watts(&self) -> f64 {
        let ms = self.end_ms.saturating_sub(self.start_ms);
        match (ms, self.energy_mj) {
            (_, 0) => 0.0,
            (0, _) => f64::INFINITY,
            (ms, e) => e as f64 / ms as f64,
        }
    }
}

/// The highest sum of mean powers of the windows that cover one instant, W. Windows are
/// half-open (`start_ms <= t < end_ms`): one that ends when another starts does not overlap it.
pub fn peak_overlap_watts(windows: &[Window]) -> f64 {
    // Ends sort before starts at the same instant (false < true).
    let mut edges: Vec<(u64, bool, f64)> = windows
        .iter()
        .filter(|w| w.energy_mj > 0)
        .flat_map(|w| {
            let p = w.mean_watts();
            [(w.start_ms, true, p), (w.end_ms.max(w.start_ms), false, p)]
        })
        .collect();
    edges.sort_by_key(|e| (e.0, e.1));
    let (mut now, mut peak) = (0.0f64, 0.0f64);
    for (_, starts, p) in edges {
        if starts {
            now += p;
            peak = peak.max(now);
        } else {
            now -= p;
        }
    }
    peak
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start_ms: u64, end_ms: u64, energy_mj: u64) -> Window {
        Window {
            start_ms,
            end_ms,
            energy_mj,
        }
    }

    #[test]
    fn mean_and_overlap() {
        assert_eq!(w(0, 1000, 500_000).mean_watts(), 500.0);
        assert_eq!(w(5, 5, 1).mean_watts(), f64::INFINITY);
        assert_eq!(w(5, 5, 0).mean_watts(), 0.0);
        // Back to back: no overlap.
        assert_eq!(
            peak_overlap_watts(&[w(0, 1000, 500_000), w(1000, 2000, 500_000)]),
            500.0
        );
        // Two overlapping, a third alone.
        assert_eq!(
            peak_overlap_watts(&[
                w(0, 1000, 500_000),
                w(500, 1500, 300_000),
                w(3000, 4000, 100_000)
            ]),
            800.0
        );
        assert_eq!(peak_overlap_watts(&[]), 0.0);
    }
}
