//! Conversations by phone number. Most customers have one phone, their conversation's first
//! (`Conversation::customer`): those are filed by conversation id alone, and the number is
//! read from the conversation found, so a slot is the id and 32 bits of the number's hash
//! (16 bytes). A map from number to id held the number's 16-byte `Arc` again in every slot
//! (24 bytes, ~52 an entry at a table's usual load). The other phones of linked customers
//! (rare) stay in a map.
//!
//! The first-phone table's invariant: an id is filed exactly while its conversation is in the
//! slab with that `customer`, under that number's hash. Callers
//! file a number once the conversation holds it, and take it out (by number and id, without
//! the slab) when they drop the conversation or move the number.
use std::hash::BuildHasher;

use super::{Conversation, Map, Slab};
use crate::core::positions::Positions;
use crate::model::{ConversationId, CustomerNumber};

#[derive(Debug, Default)]
pub(super) struct Numbers {
    /// Conversations by their first phone.
    first: Positions<ConversationId>,
    /// Every other phone a conversation's customer is known by.
    others: Map<CustomerNumber, ConversationId>,
    /// Hashes numbers for `first` (randomly seeded per process).
    hasher: foldhash::fast::RandomState,
}

impl Numbers {
    fn hash(&self, number: &str) -> u64 {
        self.hasher.hash_one(number)
    }

    /// The conversation `number` (E.164) finds, and the number as the tenant keeps it (to
    /// share, not copy).
    pub fn get<'a>(
        &'a self,
        convs: &'a Slab<Conversation>,
        number: &str,
    ) -> Option<(&'a CustomerNumber, ConversationId)> {
        let hash = self.hash(number);
        // The number the conversation holds, kept as it is compared (not looked up again).
        let mut held = None;
        let found = self.first.find(hash, |id| {
            held = first_phone(convs, &id).filter(|p| p.is(number));
            held.is_some()
        });
        match found {
            Some(id) => Some((held?, id)),
            None if self.others.is_empty() => None,
            None => self.others.get_key_value(number).map(|(p, id)| (p, *id)),
        }
    }

    /// Starts loading the line a lookup of `number` reads first (a hint).
    pub fn prefetch(&self, number: &str) {
        self.first.prefetch(self.hash(number));
    }

    /// The conversation `number` finds.
    pub fn id(&self, convs: &Slab<Conversation>, number: &str) -> Option<ConversationId> {
        self.get(convs, number).map(|(_, id)| id)
    }

    /// Files `number` for conversation `id`, which already holds it: as its first phone, or
    /// among its others. Whatever conversation the number found before, it finds `id` now.
    pub fn insert(
        &mut self,
        convs: &Slab<Conversation>,
        number: CustomerNumber,
        id: ConversationId,
    ) {
        if let Some((_, before)) = self.get(convs, number.as_e164()) {
            if first_phone(convs, &before) == Some(&number) {
                self.remove_first(&number, before);
            } else {
                self.others.remove(number.as_e164());
            }
        }
        if first_phone(convs, &id) == Some(&number) {
            let hash = self.hash(number.as_e164());
            self.first.insert(hash, id);
        } else {
            self.others.insert(number, id);
        }
    }

    /// Unfiles conversation `id`'s first phone, `number` (the conversation may be gone from
    /// the slab already). A conversation has one first phone, so its id alone picks the slot.
    pub fn remove_first(&mut self, number: &CustomerNumber, id: ConversationId) {
        let hash = self.hash(number.as_e164());
        self.first.remove(hash, id);
    }

    /// Unfiles `number`, another phone of conversation `id`, if it finds that conversation.
    pub fn remove_other(&mut self, number: &CustomerNumber, id: ConversationId) {
        if self.others.get(number) == Some(&id) {
            self.others.remove(number);
        }
    }

    pub fn shrink_to_fit(&mut self) {
        self.first.shrink_to_fit();
        self.others.shrink_to_fit();
    }
}

fn first_phone<'a>(
    convs: &'a Slab<Conversation>,
    id: &ConversationId,
) -> Option<&'a CustomerNumber> {
    convs.get(id)?.customer.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::core::customer::Identity;
    use crate::core::tenant::customers;

    fn phone(n: u64) -> CustomerNumber {
        CustomerNumber::from_valid_e164(&format!("+3461{n:07}"))
    }

    fn conversation(first: Option<CustomerNumber>) -> Conversation {
        Conversation::new(first, 0, Timestamp(0))
    }

    /// Enough first phones to grow the table several times (its hashes recomputed from the
    /// conversations), then another phone, a number moved, and conversations dropped.
    #[test]
    fn finds_each_conversation_by_its_first_and_other_phones() {
        let mut convs: Slab<Conversation> = Slab::default();
        let mut numbers = Numbers::default();
        for n in 0..5_000 {
            let id = ConversationId(n);
            convs.insert(id, conversation(Some(phone(n))));
            numbers.insert(&convs, phone(n), id);
        }
        for n in (0..5_000).step_by(7) {
            let (p, id) = numbers.get(&convs, phone(n).as_e164()).expect("filed");
            assert_eq!((p, id), (&phone(n), ConversationId(n)));
            assert!(
                std::ptr::eq(p, convs[&id].customer.as_ref().unwrap()),
                "the conversation's own number, shared"
            );
        }
        assert_eq!(numbers.id(&convs, phone(5_000).as_e164()), None);

        // Conversation 1 also answers to a second phone, held among its others.
        let extra = phone(9_000);
        convs.get_mut(&ConversationId(1)).unwrap().known = Some(Box::new(customers::Known {
            others: vec![customers::Other {
                identity: Identity::Phone(extra.clone()),
                window_expires: None,
            }],
            profile: Default::default(),
        }));
        numbers.insert(&convs, extra.clone(), ConversationId(1));
        assert_eq!(numbers.id(&convs, extra.as_e164()), Some(ConversationId(1)));

        // Conversation 2 is dropped from the slab first, then unfiled: its number finds
        // nothing, and nobody else's number went with it.
        convs.remove(&ConversationId(2));
        numbers.remove_first(&phone(2), ConversationId(2));
        assert_eq!(numbers.id(&convs, phone(2).as_e164()), None);
        // Unfiling a number for a conversation it does not find changes nothing.
        numbers.remove_first(&phone(3), ConversationId(4));
        numbers.remove_other(&extra, ConversationId(3));
        assert_eq!(
            numbers.id(&convs, phone(3).as_e164()),
            Some(ConversationId(3))
        );
        assert_eq!(numbers.id(&convs, extra.as_e164()), Some(ConversationId(1)));
        numbers.remove_other(&extra, ConversationId(1));
        assert_eq!(numbers.id(&convs, extra.as_e164()), None);

        // A number filed for another conversation now finds that one.
        convs.get_mut(&ConversationId(4)).unwrap().known = Some(Box::new(customers::Known {
            others: vec![customers::Other {
                identity: Identity::Phone(phone(5)),
                window_expires: None,
            }],
            profile: Default::default(),
        }));
        numbers.remove_first(&phone(5), ConversationId(5));
        convs.get_mut(&ConversationId(5)).unwrap().customer = None;
        numbers.insert(&convs, phone(5), ConversationId(4));
        assert_eq!(
            numbers.id(&convs, phone(5).as_e164()),
            Some(ConversationId(4))
        );
        // Filed again for another conversation, it finds that one (the last filing wins).
        convs.get_mut(&ConversationId(6)).unwrap().known = convs[&ConversationId(4)].known.clone();
        numbers.insert(&convs, phone(5), ConversationId(6));
        assert_eq!(
            numbers.id(&convs, phone(5).as_e164()),
            Some(ConversationId(6))
        );

        // Shrinking after a sweep keeps every number found.
        for n in 100..5_000 {
            convs.remove(&ConversationId(n));
            numbers.remove_first(&phone(n), ConversationId(n));
        }
        numbers.shrink_to_fit();
        for n in (0..100).filter(|n| ![2, 5].contains(n)) {
            assert_eq!(
                numbers.id(&convs, phone(n).as_e164()),
                Some(ConversationId(n))
            );
        }
        assert_eq!(numbers.id(&convs, phone(200).as_e164()), None);
    }
}
