//! A conversation's context: its newest messages, oldest first, packed into one buffer.
//!
//! The context is most of what a busy tenant holds (20 messages a conversation by default).
//! Kept as a ring of [`ContextMessage`]s, a short message cost ~80 bytes: a 48-byte slot and
//! its text and id in an allocation of their own. Here it costs its bytes and ~12 more.
//!
//! Each record is the message's time (8 bytes, little-endian), a byte of kind (its direction,
//! its channel, whether it has a label), the lengths of its label, text and provider id
//! (LEB128: one byte each below 128), then those bytes. Where the records begin and how many
//! are kept is in the `Context` itself, beside the buffer's pointer, not in the buffer.
//!
//! **A message touches the buffer's end only.** A full context drops its oldest record by
//! counting it dropped, without reading it: the record's bytes are walked past only when room
//! runs out, and then what is live moves to the front once, and room grows by a quarter of
//! what is live. So a message writes its own bytes and moves a few records' worth on average,
//! not the whole context; with thousands of conversations each buffer is out of cache by the
//! time its next message comes, and each part of it a message reads is a wait on memory.
//!
//! **Sealed for cuts.** A cut (Kafka mode's snapshots, see `slab`) copies the conversations
//! that changed, and under load that is nearly all of them: copied whole, every context would
//! be held twice while the cut is written. So a cut first [`Context::seal`]s a context: its
//! live records move into a shared, never-changed buffer (the records it holds, a 32-bit word,
//! then the records), which the copy and the conversation both point to. New messages go to
//! the open buffer; the oldest are dropped from the sealed part by counting them, and the
//! sealed part goes when none of its records is kept.
use std::sync::Arc;

use super::{Channel, Channels, ContextMessage, Direction, Timestamp};

/// The sealed buffer's first word: the records it holds.
const WORD: usize = 4;
/// The time's bytes and the kind's.
const FIXED: usize = 8 + 1;
/// In the kind byte: the label is there (an empty label is not None).
const LABELLED: u8 = 1 << 4;

#[derive(Clone, Default)]
pub(super) struct Context {
    /// The older records, shared with the cuts that copied them (see [`Context::seal`]).
    sealed: Option<Arc<Box<[u8]>>>,
    /// The newer records.
    open: Vec<u8>,
    /// Records in `open`, the `dropped` oldest of them included.
    count: u32,
    /// The oldest records in `open` no longer kept, not yet walked past (their room is
    /// reclaimed when room runs out).
    dropped: u32,
    /// Records dropped from the front of the sealed part.
    sealed_gone: u32,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// One kept message, borrowed from its context (or from a [`ContextMessage`] to keep).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Kept<'a> {
    pub direction: Direction,
    pub channel: Channel,
    pub at: Timestamp,
    pub text: &'a str,
    /// The provider's id of the message ("" for notes and replies).
    pub provider_message_id: &'a str,
    /// An inbound message's intent, or who wrote a note or a reply.
    pub label: Option<&'a str>,
}

impl<'a> Kept<'a> {
    pub fn of(m: &'a ContextMessage) -> Self {
        Self {
            direction: m.direction,
            channel: m.channel,
            at: m.at,
            text: m.text(),
            provider_message_id: m.provider_message_id(),
            label: m.label.as_deref(),
        }
    }

    /// The intent an inbound message was classified as.
    pub fn intent(&self) -> Option<&'a str> {
        self.label.filter(|_| self.direction == Direction::Inbound)
    }

    /// Who wrote a note or a reply (None for the customer's messages).
    pub fn author(&self) -> Option<&'a str> {
        self.label.filter(|_| self.direction != Direction::Inbound)
    }

    /// The message as the API and the streams take it (its own allocations).
    pub fn to_message(self) -> ContextMessage {
        ContextMessage::new(
            self.direction,
            self.channel,
            self.at,
            self.text,
            self.provider_message_id,
            self.label.map(Arc::from),
        )
    }

    fn size(&self) -> usize {
        let label = self.label.map_or(0, str::len);
        FIXED
            + leb_len(label)
            + leb_len(self.text.len())
            + leb_len(self.provider_message_id.len())
            + label
            + self.text.len()
            + self.provider_message_id.len()
    }

    fn kind(&self) -> u8 {
        let direction = match self.direction {
            Direction::Inbound => 0,
            Direction::Note => 1,
            Direction::Outbound => 2,
        };
        // The channel as a conversation's channels code it (1–3, two bits).
        let channel = Channels::code(self.channel);
        direction | channel << 2 | if self.label.is_some() { LABELLED } else { 0 }
    }

    fn write(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.at.as_millis().to_le_bytes());
        buf.push(self.kind());
        let label = self.label.unwrap_or_default();
        for part in [label, self.text, self.provider_message_id] {
            write_leb(buf, part.len());
        }
        for part in [label, self.text, self.provider_message_id] {
            buf.extend_from_slice(part.as_bytes());
        }
    }

    /// The record at `buf[at..]` and where the next begins.
    fn read(buf: &'a [u8], at: usize) -> (Self, usize) {
        let millis = u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
        let kind = buf[at + 8];
        let mut pos = at + FIXED;
        let lens = [(); 3].map(|()| read_leb(buf, &mut pos));
        let [label, text, provider_message_id] = lens.map(|len| {
            let part = std::str::from_utf8(&buf[pos..pos + len]).expect("written from a str");
            pos += len;
            part
        });
        let kept = Self {
            direction: match kind & 3 {
                0 => Direction::Inbound,
                1 => Direction::Note,
                _ => Direction::Outbound,
            },
            channel: Channels::ALL[usize::from(kind >> 2 & 3) - 1],
            at: Timestamp(millis),
            text,
            provider_message_id,
            label: (kind & LABELLED != 0).then_some(label),
        };
        (kept, pos)
    }
}

impl Context {
    /// The messages kept.
    pub fn len(&self) -> usize {
        self.sealed_kept() + (self.count - self.dropped) as usize
    }

    /// The messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Kept<'_>> + '_ {
        let sealed = self.sealed.as_deref().map_or(&[][..], |s| &s[..]);
        let older = records(sealed, self.sealed_start(), self.sealed_kept());
        let newer = records(&self.open, self.open_start(), self.open_kept());
        older.chain(newer)
    }

    /// Adds the newest message, keeping the newest `keep` (at least one).
    pub fn push(&mut self, m: Kept<'_>, keep: usize) {
        // Full, or over a limit a reload lowered: the oldest give way, the sealed first,
        // counted, not read.
        let over = (self.len() + 1).saturating_sub(keep.max(1));
        let from_sealed = over.min(self.sealed_kept());
        self.sealed_gone += from_sealed as u32;
        self.dropped += (over - from_sealed) as u32;
        if self.sealed.is_some() && self.sealed_kept() == 0 {
            (self.sealed, self.sealed_gone) = (None, 0);
        }
        let size = m.size();
        if self.open.len() + size > self.open.capacity() {
            self.reclaim(size);
        }
        m.write(&mut self.open);
        self.count += 1;
    }

    /// Room for a record of `size` bytes: past the records dropped, what is live moves to the
    /// front; if that is not room enough, room grows by a quarter of what is live (or the
    /// record's size). Most conversations hold one or two messages: their first record gets
    /// room for itself only.
    fn reclaim(&mut self, size: usize) {
        let start = self.open_start();
        self.open.copy_within(start.., 0);
        self.open.truncate(self.open.len() - start);
        (self.count, self.dropped) = (self.open_kept() as u32, 0);
        if self.open.len() + size > self.open.capacity() {
            // The sealed part's live bytes, in proportion to its records kept: what the open
            // part will grow to hold as the sealed records are dropped.
            let sealed_live = self.sealed.as_deref().map_or(0, |s| {
                (s.len() - WORD) * self.sealed_kept() / read_word(s, 0).max(1)
            });
            let live = self.open.len() + sealed_live;
            self.open.reserve_exact(size.max(live / 4));
        }
    }

    /// Moves every record kept into one sealed buffer, shared by the clones made after (a
    /// cut's copy): they cost a pointer each, not the records. Records already sealed and
    /// nothing open: nothing to do.
    pub fn seal(&mut self) {
        if self.open_kept() == 0 {
            // Only records dropped: a copy would copy their bytes.
            (self.open, self.count, self.dropped) = (Vec::new(), 0, 0);
            return;
        }
        let count = u32::try_from(self.len()).expect("under 2³² messages");
        let sealed = self.sealed.as_deref().map_or(&[][..], |s| &s[..]);
        let older = sealed.get(self.sealed_start()..).unwrap_or_default();
        let newer = &self.open[self.open_start()..];
        let mut buf = Vec::with_capacity(WORD + older.len() + newer.len());
        buf.extend_from_slice(&count.to_ne_bytes());
        buf.extend_from_slice(older);
        buf.extend_from_slice(newer);
        *self = Context {
            sealed: Some(Arc::new(buf.into_boxed_slice())),
            ..Context::default()
        };
    }

    /// The newest `keep` of two contexts' messages, oldest first (two customers found to be
    /// one). Messages at the same time keep their order, `a`'s first.
    pub fn merged(a: &Context, b: &Context, keep: usize) -> Context {
        let mut all: Vec<Kept<'_>> = a.iter().chain(b.iter()).collect();
        all.sort_by_key(|m| m.at);
        let mut merged = Context::default();
        for m in &all[all.len().saturating_sub(keep.max(1))..] {
            merged.push(*m, keep);
        }
        merged
    }

    /// The sealed part's records still kept.
    fn sealed_kept(&self) -> usize {
        self.sealed
            .as_deref()
            .map_or(0, |s| read_word(s, 0) - self.sealed_gone as usize)
    }

    /// Where the sealed part's first record kept begins.
    fn sealed_start(&self) -> usize {
        self.sealed
            .as_deref()
            .map_or(0, |s| skip(s, WORD, self.sealed_gone as usize))
    }

    /// The open part's records still kept.
    fn open_kept(&self) -> usize {
        (self.count - self.dropped) as usize
    }

    /// Where the open part's first record kept begins.
    fn open_start(&self) -> usize {
        skip(&self.open, 0, self.dropped as usize)
    }
}

fn read_word(buf: &[u8], i: usize) -> usize {
    let w = u32::from_ne_bytes(buf[i * WORD..(i + 1) * WORD].try_into().expect("a word"));
    w as usize
}

/// Where the record `n` records past the one at `buf[at..]` begins: their lengths read, not
/// their bytes.
fn skip(buf: &[u8], mut at: usize, n: usize) -> usize {
    for _ in 0..n {
        at += FIXED;
        let lens = [(); 3].map(|()| read_leb(buf, &mut at));
        at += lens.iter().sum::<usize>();
    }
    at
}

/// The `count` records of `buf` from `pos` on.
fn records(buf: &[u8], mut pos: usize, count: usize) -> impl Iterator<Item = Kept<'_>> {
    (0..count).map(move |_| {
        let (kept, next) = Kept::read(buf, pos);
        pos = next;
        kept
    })
}

impl FromIterator<ContextMessage> for Context {
    /// Every message given, in order (a restored conversation's).
    fn from_iter<I: IntoIterator<Item = ContextMessage>>(iter: I) -> Self {
        let mut context = Context::default();
        for m in iter {
            context.push(Kept::of(&m), usize::MAX);
        }
        context
    }
}

fn leb_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn write_leb(buf: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        buf.push(n as u8 | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

fn read_leb(buf: &[u8], pos: &mut usize) -> usize {
    let (mut n, mut shift) = (0, 0);
    loop {
        let byte = buf[*pos];
        *pos += 1;
        n |= usize::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return n;
        }
        shift += 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(n: u64) -> ContextMessage {
        ContextMessage::new(
            Direction::Inbound,
            Channel::WhatsApp,
            Timestamp(n),
            &n.to_string(),
            "",
            None,
        )
    }

    fn texts(c: &Context) -> Vec<String> {
        c.iter().map(|m| m.text.to_owned()).collect()
    }

    /// Pushes message `n` to the context and to the plain rule (push the newest, drop the
    /// oldest past `keep`), and checks they agree.
    fn push_both(c: &mut Context, model: &mut Vec<String>, n: u64, keep: usize) {
        model.push(n.to_string());
        model.drain(..model.len().saturating_sub(keep));
        c.push(Kept::of(&inbound(n)), keep);
        assert_eq!(texts(c), *model, "keep {keep} after {n}");
        assert_eq!(c.len(), model.len());
        assert_eq!(c.iter().count(), model.len());
    }

    /// The context against the plain rule (the newest `keep`, oldest first), through many
    /// reclaims of dead bytes, a lower and a higher limit.
    #[test]
    fn a_context_keeps_the_newest_messages_in_order() {
        let mut c = Context::default();
        let mut model: Vec<String> = Vec::new();
        let mut n = 0;
        for (keep, pushes) in [
            (4, 11),
            (2, 3),
            (5, 9),
            (1, 2),
            (3, 4),
            (6, 2),
            (3, 1),
            (20, 200),
        ] {
            for _ in 0..pushes {
                n += 1;
                push_both(&mut c, &mut model, n, keep);
            }
        }
        // Room is a quarter over what is live at most, besides the allocator's rounding.
        let live: usize = c.iter().map(|m| m.size()).sum();
        assert!(
            c.open.capacity() <= live + live / 4 + 16,
            "{}",
            c.open.capacity()
        );
    }

    /// Sealed between pushes (a cut copying the conversation each time), the context still
    /// follows the plain rule, through lowered and raised limits; each copy keeps what the
    /// context held when it was taken, shares its records instead of copying them, and a
    /// sealed part goes once none of its records is kept.
    #[test]
    fn a_sealed_context_is_shared_with_its_copies_and_goes_on_as_before() {
        let mut c = Context::default();
        let mut model: Vec<String> = Vec::new();
        let mut copies: Vec<(Context, Vec<String>)> = Vec::new();
        let mut n = 0;
        for (keep, pushes, seal_every) in [
            (4, 11, 3),
            (2, 5, 1),
            (5, 9, 4),
            (1, 3, 2),
            (20, 60, 7),
            (3, 4, 5),
        ] {
            for i in 0..pushes {
                n += 1;
                push_both(&mut c, &mut model, n, keep);
                if i % seal_every == 0 {
                    c.seal();
                    assert!(c.open.is_empty(), "all moved to the sealed part");
                    let copy = c.clone();
                    let (a, b) = (c.sealed.as_ref(), copy.sealed.as_ref());
                    assert!(Arc::ptr_eq(a.expect("sealed"), b.expect("sealed")));
                    copies.push((copy, model.clone()));
                }
            }
        }
        for (copy, then) in &copies {
            assert_eq!(&texts(copy), then, "a copy is what the context was");
        }
        // Sealing twice with nothing new changes nothing.
        c.seal();
        let before = c.sealed.clone();
        c.seal();
        assert!(Arc::ptr_eq(
            before.as_ref().expect("sealed"),
            c.sealed.as_ref().expect("sealed")
        ));
        // Three newer messages push every sealed one out: the sealed part goes.
        for _ in 0..3 {
            n += 1;
            c.push(Kept::of(&inbound(n)), 3);
        }
        assert!(c.sealed.is_none());
        assert_eq!(texts(&c), [n - 2, n - 1, n].map(|k| k.to_string()));
    }

    /// Every field reads back as it was written, multi-byte lengths and UTF-8 included.
    #[test]
    fn a_kept_message_reads_back_whole() {
        let long = "ñ".repeat(300);
        let cases = [
            ContextMessage::new(
                Direction::Inbound,
                Channel::WhatsApp,
                Timestamp(1_700_000_000_000),
                "¿dónde está mi pedido?",
                "wamid.HBgLMzQ2MDAwMDAwMDAVAgASGBQzQUI0RDY0QjQ1RDhGRjQzNUIwRQA=",
                Some(Arc::from("order_status")),
            ),
            ContextMessage::new(
                Direction::Note,
                Channel::Voice,
                Timestamp(7),
                &long,
                "",
                Some(Arc::from("agent:ana")),
            ),
            ContextMessage::new(
                Direction::Outbound,
                Channel::WebChat,
                Timestamp(u64::MAX),
                "",
                "x",
                Some(Arc::from("")),
            ),
            ContextMessage::new(
                Direction::Inbound,
                Channel::WebChat,
                Timestamp(0),
                "",
                "",
                None,
            ),
        ];
        let mut c = Context::default();
        for m in &cases {
            c.push(Kept::of(m), 20);
        }
        let back: Vec<ContextMessage> = c.iter().map(Kept::to_message).collect();
        assert_eq!(back, cases);
        let first = c.iter().next().expect("kept");
        assert_eq!(first.intent(), Some("order_status"));
        assert_eq!(first.author(), None);
        let note = c.iter().nth(1).expect("kept");
        assert_eq!((note.intent(), note.author()), (None, Some("agent:ana")));
        assert_eq!(leb_len(127), 1);
        assert_eq!(leb_len(128), 2);
        let mut buf = Vec::new();
        for n in [0, 127, 128, 300, 1 << 20, usize::MAX] {
            buf.clear();
            write_leb(&mut buf, n);
            assert_eq!(buf.len(), leb_len(n));
            let mut pos = 0;
            assert_eq!(read_leb(&buf, &mut pos), n);
            assert_eq!(pos, buf.len());
        }
    }

    /// Two customers found to be one: the newest `keep` of both, by time.
    #[test]
    fn merged_contexts_keep_the_newest_by_time() {
        let (mut a, mut b) = (Context::default(), Context::default());
        for n in [1, 4, 6] {
            a.push(Kept::of(&inbound(n)), 20);
        }
        for n in [2, 3, 5, 7] {
            b.push(Kept::of(&inbound(n)), 20);
        }
        assert_eq!(
            texts(&Context::merged(&a, &b, 20)),
            ["1", "2", "3", "4", "5", "6", "7"]
        );
        assert_eq!(texts(&Context::merged(&a, &b, 3)), ["5", "6", "7"]);
        assert_eq!(
            texts(&Context::merged(&Context::default(), &b, 3)),
            ["3", "5", "7"]
        );
        assert_eq!(
            Context::merged(&Context::default(), &Context::default(), 3).len(),
            0
        );
    }

    /// A short message costs its bytes and a dozen more, not a 48-byte slot and an allocation.
    #[test]
    fn a_context_costs_its_bytes() {
        assert_eq!(std::mem::size_of::<Context>(), 48);
        let m = ContextMessage::new(
            Direction::Inbound,
            Channel::WhatsApp,
            Timestamp(1),
            "hola",
            "wamid.1",
            Some(Arc::from("greeting")),
        );
        assert_eq!(Kept::of(&m).size(), 8 + 1 + 3 + 8 + 4 + 7);
        let mut c = Context::default();
        c.push(Kept::of(&m), 20);
        assert_eq!(c.open.len(), Kept::of(&m).size());
    }
}
