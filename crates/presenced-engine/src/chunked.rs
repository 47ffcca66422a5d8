//! A growable array in fixed-size chunks.
//!
//! The user and room tables hold hundreds of thousands of entries. A `Vec`
//! doubles its capacity as it grows, so up to half of it can sit unused;
//! chunks never move and leave at most one partly filled chunk.

use std::ops::{Index, IndexMut};

const SHIFT: usize = 12;
const CHUNK: usize = 1 << SHIFT;
const MASK: usize = CHUNK - 1;

#[derive(Debug)]
pub(crate) struct ChunkedVec<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> ChunkedVec<T> {
    pub(crate) fn push(&mut self, value: T) {
        if self.len & MASK == 0 {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks[self.len >> SHIFT].push(value);
        self.len += 1;
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    /// Slots allocated (for memory accounting).
    pub(crate) fn capacity(&self) -> usize {
        self.chunks.len() * CHUNK
    }
}

impl<T> Index<usize> for ChunkedVec<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        &self.chunks[i >> SHIFT][i & MASK]
    }
}

impl<T> IndexMut<usize> for ChunkedVec<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i >> SHIFT][i & MASK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_across_chunks() {
        let mut v = ChunkedVec::default();
        for i in 0..(3 * CHUNK + 5) {
            v.push(i);
        }
        assert_eq!(v.len(), 3 * CHUNK + 5);
        assert_eq!(v[CHUNK], CHUNK);
        assert_eq!(v[3 * CHUNK + 4], 3 * CHUNK + 4);
        v[7] = 70;
        assert_eq!(v.iter().nth(7), Some(&70));
        assert_eq!(v.capacity(), 4 * CHUNK);
    }
}
