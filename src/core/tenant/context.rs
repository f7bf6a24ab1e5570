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
//! **A message touches the buffer's two ends, each asked for ahead.** The open records are a
//! ring: a message writes its record after the newest, and a full context drops its oldest,
//! reading its lengths to move past it. A record that does not fit before the buffer's end
//! goes to its front; a record is never split. Nothing is moved while the ring has room; when
//! it has none, the records kept move, in order, to a buffer a quarter larger than they are.
//! With thousands of conversations each buffer is out of cache by the time its next message
//! comes, and each part of it a message reads is a wait on memory. So the two lines a message
//! reads and writes are asked for ([`Context::prefetch`]) as soon as the conversation is
//! found, and load while its text is classified. Moving what is live to the front (as this
//! buffer did before it was a ring) read and wrote the whole context every few messages; a
//! ring that counted its oldest records dropped and walked past them only when it ran out of
//! room (as this one did before) read their lengths one after the other, each a wait no
//! prefetch could ask for ahead, since a record's place is in the one before: in `perf` of
//! the routing bench's known customers that walk was 3–5% of the samples.
//!
//! **Sealed for cuts.** A cut (Kafka mode's snapshots, see `slab`) copies the conversations
//! that changed, and under load that is nearly all of them: copied whole, every context would
//! be held twice while the cut is written. So a cut first [`Context::seal`]s a context: its
//! live records move into a shared, never-changed buffer (the records it holds, a 32-bit word,
//! then the records), which the copy and the conversation both point to. New messages go to
//! the open buffer; the oldest are dropped from the sealed part by counting them, and the
//! sealed part goes when none of its records is kept.
use std::sync::Arc;

use super::super::prefetch;
use super::{Channel, Channels, ContextMessage, Direction, Timestamp};

/// The sealed buffer's first word: the records it holds.
const WORD: usize = 4;
/// The time's bytes and the kind's.
const FIXED: usize = 8 + 1;
/// In the kind byte: the label is there (an empty label is not None).
const LABELLED: u8 = 1 << 4;
/// The most the open records take, whatever the limits (their positions are 32-bit): past
/// it the oldest give way to a newer record. Messages are far smaller (a text is at most
/// `limits.max_text_bytes`, a reply at most a gRPC message's 4 MiB).
const MAX_OPEN_BYTES: usize = 1 << 31;

#[derive(Clone, Default)]
pub(super) struct Context {
    /// The older records, shared with the cuts that copied them (see [`Context::seal`]).
    sealed: Option<Arc<Box<[u8]>>>,
    /// The newer records, a ring: from `head` to `end`, then (when they wrap) from the
    /// front to `tail`.
    open: Box<[u8]>,
    /// Where the oldest open record begins.
    head: u32,
    /// Where the next record goes.
    tail: u32,
    /// Where the records from `head` end: `tail` unless they wrap to the front, when they
    /// end before the records from the front (`tail <= head < end`).
    end: u32,
    /// Records in `open`.
    count: u32,
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

    /// Writes the record to `buf`, [`Kept::size`] bytes.
    fn write(&self, buf: &mut [u8]) {
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            buf[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&self.at.as_millis().to_le_bytes());
        put(&[self.kind()]);
        let label = self.label.unwrap_or_default();
        let mut leb = [0; 10];
        for part in [label, self.text, self.provider_message_id] {
            put(write_leb(&mut leb, part.len()));
        }
        for part in [label, self.text, self.provider_message_id] {
            put(part.as_bytes());
        }
        debug_assert_eq!(at, buf.len(), "a record fills its size");
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
        self.sealed_kept() + self.open_kept()
    }

    /// The open records kept.
    fn open_kept(&self) -> usize {
        self.count as usize
    }

    /// The messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Kept<'_>> + '_ {
        let sealed = self.sealed.as_deref().map_or(&[][..], |s| &s[..]);
        let older = records(sealed, self.sealed_start(), self.sealed_kept(), usize::MAX);
        let wrap = self.end as usize;
        let newer = records(&self.open, self.head as usize, self.count as usize, wrap);
        older.chain(newer)
    }

    /// Adds the newest message, keeping the newest `keep` (at least one).
    pub fn push(&mut self, m: Kept<'_>, keep: usize) {
        // Full, or over a limit a reload lowered: the oldest give way, the sealed first
        // (counted, not read).
        let over = (self.len() + 1).saturating_sub(keep.max(1));
        let from_sealed = over.min(self.sealed_kept());
        self.sealed_gone += from_sealed as u32;
        if self.sealed.is_some() && self.sealed_kept() == 0 {
            (self.sealed, self.sealed_gone) = (None, 0);
        }
        self.drop_oldest(over - from_sealed);
        let size = m.size();
        let at = match self.room_for(size) {
            Some(at) => at,
            None => self.grow(size),
        };
        m.write(&mut self.open[at..at + size]);
        let after_newest = at == self.tail as usize;
        if after_newest && !self.wrapped() {
            self.end = (at + size) as u32;
        }
        // Else it wraps to the front now (the records from `head` end where they did), or
        // it goes after the newest at the front.
        self.tail = (at + size) as u32;
        self.count += 1;
    }

    /// Asks for the lines a [`Context::push`] of a record of about `size` bytes, keeping the
    /// newest `keep`, touches first: the oldest open record's when it gives way (its lengths
    /// are read to move past it), and where the new record goes when it fits. A cold context
    /// then loads while the caller does other work.
    pub fn prefetch(&self, size: usize, keep: usize) {
        if self.count > 0 && self.len() >= keep.max(1) && self.sealed_kept() == 0 {
            prefetch::line(&self.open, self.head as usize);
        }
        let size = size.max(1);
        if let Some(at) = self.room_for(size) {
            for line in (at..at + size).step_by(64) {
                prefetch::line(&self.open, line);
            }
            prefetch::line(&self.open, at + size - 1);
        }
    }

    /// Drops the `n` oldest open records, moving past them (reading their lengths).
    fn drop_oldest(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if n >= self.count as usize {
            (self.head, self.tail, self.end, self.count) = (0, 0, 0, 0);
            return;
        }
        for _ in 0..n {
            self.head = skip(&self.open, self.head as usize, 1) as u32;
            if self.head == self.end && self.wrapped() {
                // The records from `head` are gone: those at the front are the oldest now.
                (self.head, self.end) = (0, self.tail);
            }
        }
        self.count -= n as u32;
    }

    /// The open records' bytes: from `head`, then from the front.
    fn open_parts(&self) -> [&[u8]; 2] {
        let (head, end, tail) = (self.head as usize, self.end as usize, self.tail as usize);
        if self.wrapped() {
            [&self.open[head..end], &self.open[..tail]]
        } else {
            [&self.open[head..tail], &[]]
        }
    }

    /// Whether the newer records wrap to the front.
    fn wrapped(&self) -> bool {
        self.tail < self.end
    }

    /// Where a record of `size` bytes fits without moving any: after the newest, else (not
    /// wrapped yet) at the front, before the oldest.
    fn room_for(&self, size: usize) -> Option<usize> {
        let (head, tail) = (self.head as usize, self.tail as usize);
        if self.wrapped() {
            return (tail + size <= head).then_some(tail);
        }
        if tail + size <= self.open.len() {
            Some(tail)
        } else if size <= head {
            Some(0)
        } else {
            None
        }
    }

    /// No room: the records kept move, in order, to a buffer with room for them, the new
    /// record and a quarter of what is live more (or the record's size). Most conversations
    /// hold one or two messages: their first record gets room for itself only. Returns where
    /// the new record goes.
    fn grow(&mut self, size: usize) -> usize {
        assert!(
            size <= MAX_OPEN_BYTES,
            "a message of {size} bytes, over 2 GiB"
        );
        while self.count > 0
            && self.open_parts().map(<[u8]>::len).iter().sum::<usize>() + size > MAX_OPEN_BYTES
        {
            self.drop_oldest(1);
        }
        let [first, second] = self.open_parts();
        let kept = first.len() + second.len();
        // The sealed part's live bytes, in proportion to its records kept: what the open
        // part will grow to hold as the sealed records are dropped.
        let sealed_live = self.sealed.as_deref().map_or(0, |s| {
            (s.len() - WORD) * self.sealed_kept() / read_word(s, 0).max(1)
        });
        let live = kept + sealed_live;
        let room = kept + size.max(live / 4);
        let mut open = vec![0; room].into_boxed_slice();
        open[..first.len()].copy_from_slice(first);
        open[first.len()..kept].copy_from_slice(second);
        self.open = open;
        (self.head, self.tail, self.end) = (0, kept as u32, kept as u32);
        kept
    }

    /// Moves every record kept into one sealed buffer, shared by the clones made after (a
    /// cut's copy): they cost a pointer each, not the records. Records already sealed and
    /// nothing open: nothing to do.
    pub fn seal(&mut self) {
        if self.count == 0 {
            // Nothing open: the buffer goes (a copy would copy its bytes).
            *self = Context {
                sealed: self.sealed.take(),
                sealed_gone: self.sealed_gone,
                ..Context::default()
            };
            return;
        }
        let count = u32::try_from(self.len()).expect("under 2³² messages");
        let sealed = self.sealed.as_deref().map_or(&[][..], |s| &s[..]);
        let older = sealed.get(self.sealed_start()..).unwrap_or_default();
        let newer = self.open_parts();
        let mut buf = Vec::with_capacity(WORD + older.len() + newer[0].len() + newer[1].len());
        buf.extend_from_slice(&count.to_ne_bytes());
        buf.extend_from_slice(older);
        buf.extend_from_slice(newer[0]);
        buf.extend_from_slice(newer[1]);
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

/// The `count` records of `buf` from `pos` on, going on from the front at `wrap` (where the
/// records after `pos` end, when they wrap).
fn records(
    buf: &[u8],
    mut pos: usize,
    count: usize,
    wrap: usize,
) -> impl Iterator<Item = Kept<'_>> {
    (0..count).map(move |_| {
        let (kept, next) = Kept::read(buf, pos);
        pos = if next == wrap { 0 } else { next };
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

/// `n` in LEB128, in the first bytes of `buf`.
fn write_leb(buf: &mut [u8; 10], mut n: usize) -> &[u8] {
    let mut len = 0;
    while n >= 0x80 {
        buf[len] = n as u8 | 0x80;
        n >>= 7;
        len += 1;
    }
    buf[len] = n as u8;
    &buf[..=len]
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
            n.to_string(),
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
        assert!(c.open.len() <= live + live / 4, "{}", c.open.len());
    }

    /// Records of many sizes (empty to multi-byte lengths) wrap around the ring, grow it,
    /// and are sealed at odd moments, under changing limits: the context follows the plain
    /// rule throughout, and its buffer is moved (grown) only now and then, not at every
    /// wrap.
    #[test]
    fn records_of_any_size_wrap_around_the_ring_in_order() {
        let mut c = Context::default();
        let mut model: Vec<String> = Vec::new();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |below: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % below
        };
        let (mut grown, mut wrapped, mut buffer) = (0, 0, c.open.as_ptr());
        for n in 0..20_000 {
            let keep = [1, 2, 3, 7, 20][(n / 2_000) % 5];
            let len = match next(10) {
                0 => 0,
                1 => 130 + next(200) as usize,
                _ => 20 + next(100) as usize,
            };
            let text: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            let text = format!("{n}:{text}");
            model.push(text.clone());
            model.drain(..model.len().saturating_sub(keep));
            let m = ContextMessage::new(
                Direction::Inbound,
                Channel::WhatsApp,
                Timestamp(n as u64),
                text.as_str(),
                "wamid.x",
                None,
            );
            // A prefetch (of the record's size, or of none) works at every state of the ring.
            c.prefetch([0, Kept::of(&m).size()][n % 2], keep);
            c.push(Kept::of(&m), keep);
            if next(500) == 0 {
                c.seal();
            }
            assert_eq!(texts(&c), model, "after {n} (keep {keep})");
            if c.open.as_ptr() != buffer {
                (grown, buffer) = (grown + 1, c.open.as_ptr());
            }
            wrapped += usize::from(c.wrapped());
        }
        assert!(
            wrapped > 1_000,
            "wrapped after {wrapped} of 20,000 messages"
        );
        // Moved for at most one message in ten (1,000 here, seals included).
        assert!(grown < 2_000, "moved {grown} times in 20,000 messages");
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
                long.as_str(),
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
        let mut buf = [0; 10];
        for n in [0, 127, 128, 300, 1 << 20, usize::MAX] {
            let written = write_leb(&mut buf, n);
            assert_eq!(written.len(), leb_len(n));
            let mut pos = 0;
            assert_eq!(read_leb(written, &mut pos), n);
            assert_eq!(pos, written.len());
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
