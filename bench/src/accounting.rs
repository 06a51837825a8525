//! Which events each connection received: lost and duplicated, by sequence number.

/// The sequence numbers one connection has seen, as a bitset (a publish run is at most a few
/// hundred thousand events: a few KiB per connection at worst).
#[derive(Default, Debug, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
    distinct: u64,
    duplicates: u64,
}

/// Sequence numbers past this are taken as garbage rather than grown into.
pub const MAX_SEQ: u64 = 1 << 24;

impl SeqSet {
    /// Records `seq`; false if it was seen before (a duplicate) or out of range.
    pub fn insert(&mut self, seq: u64) -> bool {
        if seq >= MAX_SEQ {
            return false;
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        if self.words[word] & mask != 0 {
            self.duplicates += 1;
            return false;
        }
        self.words[word] |= mask;
        self.distinct += 1;
        true
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// How many of `0..published` never arrived.
    pub fn lost(&self, published: u64) -> u64 {
        let full = (published / 64) as usize;
        let mut seen: u64 = self
            .words
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let rest = published % 64;
        if rest > 0 {
            if let Some(w) = self.words.get(full) {
                seen += u64::from((w & ((1u64 << rest) - 1)).count_ones());
            }
        }
        published - seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lost_and_duplicates() {
        let mut s = SeqSet::default();
        for seq in [0, 1, 2, 2, 5, 64, 64, 64, 130] {
            s.insert(seq);
        }
        assert_eq!(s.duplicates(), 3);
        assert_eq!(s.distinct, 6);
        assert_eq!(s.lost(6), 2, "3 and 4");
        assert_eq!(s.lost(64), 60);
        assert_eq!(s.lost(65), 60, "64 arrived");
        assert_eq!(s.lost(131), 131 - 6);
        assert_eq!(s.lost(0), 0);
    }

    #[test]
    fn seqs_past_what_was_published_do_not_hide_losses() {
        let mut s = SeqSet::default();
        s.insert(10);
        assert_eq!(s.lost(5), 5);
        assert_eq!(SeqSet::default().lost(200), 200);
    }

    #[test]
    fn garbage_seqs_are_refused() {
        let mut s = SeqSet::default();
        assert!(!s.insert(MAX_SEQ));
        assert_eq!(s.distinct, 0);
    }
}
