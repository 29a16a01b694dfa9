//! The routes longer than /16 inside one /16 of the address space, with the
//! lookup tables expanded from them: one of 256 entries by the third byte
//! (prefixes /17 to /24), and one of 256 entries by the fourth byte for each
//! /24 that holds longer prefixes (/25 to /32).
//!
//! Entries hold [`Leaf`]s, what the forward path acts on, not routes: a
//! lookup never reads a [`Route`]. They are 16 bits wide (a compact leaf)
//! unless the block needs more tables or next-hop sets than that encodes.
//!
//! A block is immutable and shared by every [`super::Fib`] that did not
//! change it; an update builds a new block from the old one's routes.

use super::{key, Leaf, Route};
use std::mem::size_of;

/// An entry of a block's tables: 0 for no route, a leaf, or, in the table
/// by the third byte, `Self::SUB | i` for the table by the fourth byte
/// number `i`.
trait Entry: Copy + Into<u32> + TryFrom<u32> + 'static {
    const SUB: u32;
    const ZERO: Self;
    /// The entry of a leaf, if it fits.
    fn of(leaf: Leaf) -> Option<Self>;
    /// The leaf of an entry that is not `SUB`.
    fn leaf(e: u32) -> Leaf;
}

/// Compact leaf in 15 bits: kind in bits 12–14, next-hop set in 0–11.
impl Entry for u16 {
    const SUB: u32 = 1 << 15;
    const ZERO: u16 = 0;
    #[inline(always)]
    fn of(leaf: Leaf) -> Option<u16> {
        let (kind, set) = (leaf.0 >> Leaf::KIND_SHIFT, leaf.0 & Leaf::SET_MASK);
        (set < 1 << 12).then_some((kind << 12 | set) as u16)
    }
    #[inline(always)]
    fn leaf(e: u32) -> Leaf {
        Leaf((e >> 12) << Leaf::KIND_SHIFT | e & 0xfff)
    }
}

impl Entry for u32 {
    const SUB: u32 = 1 << 31;
    const ZERO: u32 = 0;
    #[inline(always)]
    fn of(leaf: Leaf) -> Option<u32> {
        Some(leaf.0)
    }
    #[inline(always)]
    fn leaf(e: u32) -> Leaf {
        Leaf(e)
    }
}

/// The lookup tables of a block with entries of type `W`.
#[derive(Debug, Clone)]
#[repr(C)]
struct Tables<W> {
    /// By the third address byte (prefixes /17 to /24). First, so that a
    /// lookup's one memory access lands at a fixed offset of the block.
    entries: [W; 256],
    /// By the fourth address byte, for each /24 with longer prefixes.
    /// Entries no prefix longer than /24 covers hold the /17–/24 match,
    /// so that a lookup reads at most two tables.
    subs: Vec<[W; 256]>,
}

impl<W: Entry> Tables<W> {
    /// The tables for `routes`, sorted by [`key`], or `None` if they need
    /// more indices than `W` holds.
    fn new(routes: &[Route], leaf_of: &dyn Fn(&Route) -> Leaf) -> Option<Tables<W>> {
        let mut entries = [W::ZERO; 256];
        let mut subs: Vec<[W; 256]> = Vec::new();
        let mut prev = None;
        // Shorter prefixes first, so longer ones overwrite them and a new
        // table by the fourth byte starts from the final /17–/24 entry.
        for r in routes {
            let (p, len) = (u32::from(r.prefix), r.len);
            if prev == Some((len, p)) {
                continue; // a lower rank or higher metric for the same prefix
            }
            prev = Some((len, p));
            let value = W::of(leaf_of(r))?;
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
                    if sub >= W::SUB {
                        return None;
                    }
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

    /// The leaf (0 for none) that `entry` gives for `a`.
    #[inline(always)]
    fn resolve(&self, a: u32, entry: u32) -> Leaf {
        if entry & W::SUB == 0 {
            W::leaf(entry)
        } else {
            self.sub(entry)
                .map_or(Leaf::NONE, |t| W::leaf(t[a as u8 as usize].into()))
        }
    }

    fn heap_size(&self) -> usize {
        self.subs.capacity() * size_of::<[W; 256]>()
    }
}

/// In the 16-bit table of a block with 32-bit tables: look there. (A
/// table by the fourth byte numbered 0x7fff never exists: there are at
/// most 256.)
const WIDE: u16 = 0xffff;
/// Tags an entry of the 32-bit tables in a staged lookup.
const WIDE_ENTRY: u64 = 1 << 32;

/// The routes of /17 to /32 in one /16, and their lookup tables: 16-bit
/// entries, half the memory and cache footprint, unless the block uses
/// next-hop sets numbered 4096 and above. The 16-bit table by the third
/// byte is always read first, at the start of the block, so that a lookup
/// computes the address of its one likely cache miss from the block's
/// address alone.
#[derive(Debug, Clone)]
#[repr(C)]
pub(super) struct Block {
    /// The 16-bit tables; empty when `wide` holds the block's tables. First
    /// in the block, so that a lookup reads one cache line of it.
    narrow: Tables<u16>,
    wide: Option<Box<Tables<u32>>>,
    /// Every route, sorted by [`key`]: by length, prefix, rank then
    /// metric, so the first route of a prefix is the one lookups take.
    routes: Vec<Route>,
}

impl Block {
    /// The block of `routes` (all in one /16, lengths 17 to 32, sorted by
    /// [`key`], no two with the same key), or `None` when there are none.
    pub(super) fn new(mut routes: Vec<Route>, leaf_of: &dyn Fn(&Route) -> Leaf) -> Option<Block> {
        if routes.is_empty() {
            return None;
        }
        routes.shrink_to_fit();
        let (narrow, wide) = match Tables::new(&routes, leaf_of) {
            Some(t) => (t, None),
            None => (
                Tables {
                    entries: [WIDE; 256],
                    subs: Vec::new(),
                },
                Some(Box::new(Tables::new(&routes, leaf_of)?)),
            ),
        };
        Some(Block {
            narrow,
            wide,
            routes,
        })
    }

    /// The leaf of the most specific route of this block for address `a`
    /// ([`Leaf::NONE`] for none).
    #[inline(always)]
    pub(super) fn leaf(&self, a: u32) -> Leaf {
        self.resolve(a, self.entry(a))
    }

    /// Hints the memory a lookup of `a` reads first to the cache: an
    /// address computed from the block's alone.
    #[inline(always)]
    pub(super) fn prefetch(&self, a: u32) {
        super::prefetch(&self.narrow.entries[(a >> 8) as u8 as usize]);
    }

    /// The entry for `a` in the first table, for a staged lookup.
    #[inline(always)]
    pub(super) fn entry(&self, a: u32) -> u64 {
        // The field `wide` lies on another cache line: read only for a
        // wide block.
        let e = self.narrow.entries[(a >> 8) as u8 as usize];
        if e == WIDE {
            if let Some(t) = &self.wide {
                return WIDE_ENTRY | t.entry(a) as u64;
            }
        }
        e as u64
    }

    /// The last stage of a staged lookup: the leaf of `entry` for `a`.
    #[inline(always)]
    pub(super) fn resolve(&self, a: u32, entry: u64) -> Leaf {
        if entry & WIDE_ENTRY == 0 {
            return self.narrow.resolve(a, entry as u32);
        }
        self.wide
            .as_ref()
            .map_or(Leaf::NONE, |t| t.resolve(a, entry as u32))
    }

    /// All routes, sorted by [`key`].
    pub(super) fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route lookups take for exactly `prefix/len`.
    pub(super) fn get(&self, prefix: u32, len: u8) -> Option<&Route> {
        let i = self
            .routes
            .partition_point(|r| key(r) < (len, prefix, 0, 0));
        self.routes
            .get(i)
            .filter(|r| (r.len, u32::from(r.prefix)) == (len, prefix))
    }

    /// True when its tables have 32-bit entries.
    #[cfg(test)]
    pub(super) fn is_wide(&self) -> bool {
        self.wide.is_some()
    }

    /// Bytes this block owns on the heap, itself included.
    pub(super) fn heap_size(&self) -> usize {
        let wide = self
            .wide
            .as_ref()
            .map_or(0, |t| size_of::<Tables<u32>>() + t.heap_size());
        // The Arc's two counters, then the block.
        2 * size_of::<usize>()
            + size_of::<Block>()
            + self.narrow.heap_size()
            + wide
            + self.routes.capacity() * size_of::<Route>()
            + self.routes.iter().map(super::nexthops_size).sum::<usize>()
    }
}
