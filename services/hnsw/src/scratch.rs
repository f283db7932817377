//! Per-thread search state, reused across searches so a search allocates
//! nothing: the visited marks (an epoch per search instead of clearing),
//! and the two heaps.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::Near;

/// Search state of one thread.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// `marks[i] == epoch` when node `i` was visited in this search.
    pub marks: Vec<u32>,
    pub epoch: u32,
    /// Nearest first (a min-heap through `Reverse`).
    pub candidates: BinaryHeap<Reverse<Near>>,
    /// Farthest first: the current best `ef`.
    pub results: BinaryHeap<Near>,
}

impl Scratch {
    /// Starts a search over `nodes` nodes: a new epoch, empty heaps.
    pub fn start(&mut self, nodes: usize) {
        if self.marks.len() < nodes {
            self.marks.resize(nodes, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
        self.candidates.clear();
        self.results.clear();
    }

    /// Marks `node` visited; false when it already was.
    #[inline]
    pub fn visit(&mut self, node: u32) -> bool {
        let mark = &mut self.marks[node as usize];
        if *mark == self.epoch {
            false
        } else {
            *mark = self.epoch;
            true
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch (a fresh one if it is in use, which
/// only a re-entrant call would cause).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}
