//! The files of a session's snapshot, packed: a session holds its snapshot
//! for its whole life, so a maildrop of 50,000 messages keeps one string of
//! every name and 12 bytes per message, not a struct and an allocation each.

use crate::maildir::{Dir, FileRef};

/// Where each message's file was last seen, in POP3 order.
#[derive(Debug, Default)]
pub struct FileList {
    names: String,
    spans: Vec<Span>,
}

#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    len: u16,
    base_len: u16,
    in_new: bool,
}

impl FileList {
    pub fn with_capacity(files: usize, name_bytes: usize) -> Self {
        FileList {
            names: String::with_capacity(name_bytes),
            spans: Vec::with_capacity(files),
        }
    }

    /// Appends a file; `false` (and nothing kept) when its name is longer
    /// than a file name can be or the list is full (4 GiB of names).
    pub fn push(&mut self, file: &FileRef) -> bool {
        let (Ok(start), Ok(len), Ok(base_len)) = (
            u32::try_from(self.names.len()),
            u16::try_from(file.name.len()),
            u16::try_from(file.base().len()),
        ) else {
            return false;
        };
        if start.checked_add(u32::from(len)).is_none() {
            return false;
        }
        self.names.push_str(&file.name);
        self.spans.push(Span {
            start,
            len,
            base_len,
            in_new: file.dir == Dir::New,
        });
        true
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    fn name(&self, s: Span) -> &str {
        let start = s.start as usize;
        &self.names[start..start + usize::from(s.len)]
    }

    /// The file of message `index` (0-based), to open or unlink.
    pub fn get(&self, index: usize) -> Option<FileRef> {
        let s = *self.spans.get(index)?;
        let dir = if s.in_new { Dir::New } else { Dir::Cur };
        Some(FileRef::new(dir, self.name(s).to_owned()))
    }

    /// The base name of message `index`.
    pub fn base(&self, index: usize) -> Option<&str> {
        let s = *self.spans.get(index)?;
        Some(&self.name(s)[..usize::from(s.base_len)])
    }

    /// The same files in another order: `order[k]` is the index of the
    /// file that goes k-th.
    pub fn reordered(&self, order: &[usize]) -> FileList {
        let mut out = FileList::with_capacity(order.len(), self.names.len());
        for &i in order {
            if let Some(f) = self.get(i) {
                out.push(&f);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_gives_back_each_file() {
        let a = FileRef::new(Dir::Cur, "1.M1P1.h,S=5,W=6:2,S".into());
        let b = FileRef::new(Dir::New, "2.M2P1.h".into());
        let mut list = FileList::default();
        assert!(list.push(&a) && list.push(&b));
        assert_eq!(list.len(), 2);
        assert_eq!(list.get(0), Some(a.clone()));
        assert_eq!(list.get(1), Some(b.clone()));
        assert_eq!(list.get(2), None);
        assert_eq!(list.base(0), Some("1.M1P1.h,S=5,W=6"));
        assert_eq!(list.base(1), Some("2.M2P1.h"));
        let back = list.reordered(&[1, 0]);
        assert_eq!((back.get(0), back.get(1)), (Some(b), Some(a)));
        let long = FileRef::new(Dir::Cur, "x".repeat(70_000));
        assert!(!list.push(&long), "no file name is that long");
        assert_eq!(list.len(), 2);
    }
}
