//! A slab of slots that is cheap to copy: the table's services and destinations.
//!
//! The control plane publishes a copy of the table after every change, so copying must not
//! cost the table's size: the slots are kept in chunks of [`CHUNK`] behind `Arc`s, a copy
//! shares every chunk, and a change copies the one chunk it writes (`Arc::make_mut`). A
//! read is one more indirection than a `Vec`'s.

use std::sync::Arc;

/// Slots per chunk: a change to one slot copies this many.
pub const CHUNK: usize = 64;

#[derive(Clone, Debug)]
pub struct CowSlab<T> {
    chunks: Vec<Arc<Vec<Option<T>>>>,
    len: usize,
}

impl<T> Default for CowSlab<T> {
    fn default() -> Self {
        CowSlab {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone> CowSlab<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<&Option<T>> {
        if i >= self.len {
            return None;
        }
        self.chunks[i / CHUNK].get(i % CHUNK)
    }

    /// The slot, to change: its chunk is copied first if a copy of the slab shares it.
    #[inline]
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Option<T>> {
        if i >= self.len {
            return None;
        }
        Arc::make_mut(&mut self.chunks[i / CHUNK]).get_mut(i % CHUNK)
    }

    pub fn push(&mut self, v: Option<T>) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        let last = self.chunks.len() - 1;
        Arc::make_mut(&mut self.chunks[last]).push(v);
        self.len += 1;
    }

    pub fn pop(&mut self) -> Option<Option<T>> {
        if self.len == 0 {
            return None;
        }
        let last = self.chunks.len() - 1;
        let v = Arc::make_mut(&mut self.chunks[last]).pop();
        if self.chunks[last].is_empty() {
            self.chunks.pop();
        }
        self.len -= 1;
        v
    }

    pub fn iter(&self) -> impl Iterator<Item = &Option<T>> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Every slot, to change (copies every shared chunk).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Option<T>> {
        self.chunks
            .iter_mut()
            .flat_map(|c| Arc::make_mut(c).iter_mut())
    }
}

impl<T: Clone> std::ops::Index<usize> for CowSlab<T> {
    type Output = Option<T>;
    fn index(&self, i: usize) -> &Option<T> {
        self.get(i).expect("slot in range")
    }
}

impl<T: Clone> std::ops::IndexMut<usize> for CowSlab<T> {
    fn index_mut(&mut self, i: usize) -> &mut Option<T> {
        self.get_mut(i).expect("slot in range")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_shares_until_a_write_and_a_write_copies_one_chunk() {
        let mut a: CowSlab<u32> = CowSlab::default();
        for i in 0..(3 * CHUNK as u32 + 5) {
            a.push(Some(i));
        }
        let b = a.clone();
        *a.get_mut(CHUNK + 1).unwrap() = Some(7);
        assert_eq!(a[CHUNK + 1], Some(7));
        assert_eq!(b[CHUNK + 1], Some(CHUNK as u32 + 1));
        assert!(Arc::ptr_eq(&a.chunks[0], &b.chunks[0]));
        assert!(!Arc::ptr_eq(&a.chunks[1], &b.chunks[1]));
        assert_eq!(a.iter().count(), 3 * CHUNK + 5);
        assert_eq!(a.pop(), Some(Some(3 * CHUNK as u32 + 4)));
        for _ in 0..4 {
            a.pop();
        }
        assert_eq!(a.len(), 3 * CHUNK);
        assert_eq!(a.chunks.len(), 3);
        assert_eq!(a.get(3 * CHUNK), None);
        assert_eq!(b.len(), 3 * CHUNK + 5);
    }
}
