//! The routes longer than /16 inside one /16 of the address space, with the
//! lookup tables expanded from them: one of 256 entries by the third byte
//! (prefixes /17 to /24), and one of 256 entries by the fourth byte for each
//! /24 that holds longer prefixes (/25 to /32). Entries are 16 bits wide
//! unless the block is too large for that.
//!
//! A block is immutable and shared by every [`super::Fib`] that did not
//! change it; an update builds a new block from the old one's routes.

use super::{key, Route};
use std::mem::size_of;

/// An entry of a block's tables: 0 for no route, the index of a route in
/// [`Block::routes`] plus one, or, in the table by the third byte,
/// `Self::SUB | i` for the table by the fourth byte number `i`.
trait Entry: Copy + Into<u32> + TryFrom<u32> + 'static {
    const SUB: u32;
    const ZERO: Self;
}

impl Entry for u16 {
    const SUB: u32 = 1 << 15;
    const ZERO: u16 = 0;
}

impl Entry for u32 {
    const SUB: u32 = 1 << 31;
    const ZERO: u32 = 0;
}

/// The lookup tables of a block with entries of type `W`.
#[derive(Debug, Clone)]
struct Tables<W> {
    /// By the third address byte (prefixes /17 to /24).
    entries: [W; 256],
    /// By the fourth address byte, for each /24 with longer prefixes.
    /// Entries no prefix longer than /24 covers hold the /17–/24 match,
    /// so that a lookup reads at most two tables.
    subs: Vec<[W; 256]>,
}

impl<W: Entry> Tables<W> {
    /// The tables for `routes`, sorted by [`key`], or `None` if they need
    /// more indices than `W` holds.
    fn new(routes: &[Route]) -> Option<Tables<W>> {
        let fit = |v: u32| {
            if v < W::SUB {
                W::try_from(v).ok()
            } else {
                None
            }
        };
        let mut entries = [W::ZERO; 256];
        let mut subs: Vec<[W; 256]> = Vec::new();
        let mut prev = None;
        // Shorter prefixes first, so longer ones overwrite them and a new
        // table by the fourth byte starts from the final /17–/24 entry.
        for (i, r) in routes.iter().enumerate() {
            let (p, len) = (u32::from(r.prefix), r.len);
            if prev == Some((len, p)) {
                continue; // a higher metric for the same prefix
            }
            prev = Some((len, p));
            let value = fit(i as u32 + 1)?;
            if len <= 24 {
                let first = (p >> 8) as u8 as usize;
                let n = 1usize << (24 - len.max(16));
                entries.get_mut(first..first + n)?.fill(value);
            } else {
                let third = (p >> 8) as u8 as usize;
                let e: u32 = entries[third].into();
                let sub = if e & W::SUB != 0 {
                    (e & !W::SUB) as usize
                } else {
                    let sub = subs.len() as u32;
                    fit(sub)?;
                    subs.push([entries[third]; 256]);
                    entries[third] = W::try_from(W::SUB | sub).ok()?;
                    sub as usize
                };
                let first = p as u8 as usize;
                let n = 1usize << (32 - len);
                subs.get_mut(sub)?.get_mut(first..first + n)?.fill(value);
            }
        }
        subs.shrink_to_fit();
        Some(Tables { entries, subs })
    }

    /// The entry for `a` in the table by the third byte.
    #[inline(always)]
    fn entry(&self, a: u32) -> u32 {
        self.entries[(a >> 8) as u8 as usize].into()
    }

    /// The table by the fourth byte an entry names, if it names one.
    #[inline(always)]
    fn sub(&self, entry: u32) -> Option<&[W; 256]> {
        if entry & W::SUB == 0 {
            None
        } else {
            self.subs.get((entry & !W::SUB) as usize)
        }
    }

    /// The route index plus one (0 for none) that `entry` gives for `a`.
    #[inline(always)]
    fn resolve(&self, a: u32, entry: u32) -> u32 {
        if entry & W::SUB == 0 {
            entry
        } else {
            self.sub(entry).map_or(0, |t| t[a as u8 as usize].into())
        }
    }

    fn heap_size(&self) -> usize {
        self.subs.capacity() * size_of::<[W; 256]>()
    }
}

/// The tables of a block: 16-bit entries, half the memory and cache
/// footprint, unless the block has more than 32 767 routes or tables.
// The narrow tables are inline on purpose: a lookup reads them without
// following one more pointer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Width {
    Narrow(Tables<u16>),
    Wide(Box<Tables<u32>>),
}

/// The routes of /17 to /32 in one /16, and their lookup tables.
#[derive(Debug, Clone)]
pub(super) struct Block {
    tables: Width,
    /// Every route, sorted by [`key`]: by length, prefix, then metric, so
    /// the first route of a prefix is its lowest metric.
    routes: Vec<Route>,
}

/// Calls `$f` on the tables of `$block`, whatever their width.
macro_rules! tables {
    ($block:expr, $t:ident => $e:expr) => {
        match &$block.tables {
            Width::Narrow($t) => $e,
            Width::Wide($t) => $e,
        }
    };
}

impl Block {
    /// The block of `routes` (all in one /16, lengths 17 to 32, sorted by
    /// [`key`], no two with the same key), or `None` when there are none.
    pub(super) fn new(mut routes: Vec<Route>) -> Option<Block> {
        if routes.is_empty() {
            return None;
        }
        routes.shrink_to_fit();
        let tables = match Tables::new(&routes) {
            Some(t) => Width::Narrow(t),
            None => Width::Wide(Box::new(Tables::new(&routes)?)),
        };
        Some(Block { tables, routes })
    }

    /// The most specific route of this block for address `a`.
    #[inline]
    pub(super) fn lookup(&self, a: u32) -> Option<&Route> {
        let i = tables!(self, t => t.resolve(a, t.entry(a)));
        self.route(i)
    }

    /// The route an index plus one names.
    #[inline(always)]
    fn route(&self, i: u32) -> Option<&Route> {
        self.routes.get((i as usize).wrapping_sub(1))
    }

    /// Hints the memory a lookup of `a` reads first to the cache.
    #[inline]
    pub(super) fn prefetch(&self, a: u32) {
        tables!(self, t => super::prefetch(&t.entries[(a >> 8) as u8 as usize]));
        super::prefetch(&self.routes);
    }

    /// The entry for `a` in the first table, for a staged lookup.
    #[inline]
    pub(super) fn entry(&self, a: u32) -> u32 {
        tables!(self, t => t.entry(a))
    }

    /// The second stage of a staged lookup: hints the memory that resolving
    /// `entry` for `a` reads.
    #[inline]
    pub(super) fn prefetch_entry(&self, a: u32, entry: u32) {
        tables!(self, t => match t.sub(entry) {
            Some(sub) => super::prefetch(&sub[a as u8 as usize]),
            None => {
                if let Some(r) = self.route(entry) {
                    super::prefetch(r);
                }
            }
        })
    }

    /// The last stage of a staged lookup: the route of `entry` for `a`.
    #[inline]
    pub(super) fn resolve(&self, a: u32, entry: u32) -> Option<&Route> {
        self.route(tables!(self, t => t.resolve(a, entry)))
    }

    /// All routes, sorted by [`key`].
    pub(super) fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The lowest-metric route for exactly `prefix/len`.
    pub(super) fn get(&self, prefix: u32, len: u8) -> Option<&Route> {
        let i = self.routes.partition_point(|r| key(r) < (len, prefix, 0));
        self.routes
            .get(i)
            .filter(|r| (r.len, u32::from(r.prefix)) == (len, prefix))
    }

    /// True when its tables have 32-bit entries.
    #[cfg(test)]
    pub(super) fn is_wide(&self) -> bool {
        matches!(self.tables, Width::Wide(_))
    }

    /// Bytes this block owns on the heap, itself included.
    pub(super) fn heap_size(&self) -> usize {
        let tables = match &self.tables {
            Width::Narrow(t) => t.heap_size(),
            Width::Wide(t) => size_of::<Tables<u32>>() + t.heap_size(),
        };
        // The Arc's two counters, then the block.
        2 * size_of::<usize>()
            + size_of::<Block>()
            + tables
            + self.routes.capacity() * size_of::<Route>()
            + self.routes.iter().map(super::nexthops_size).sum::<usize>()
    }
}
