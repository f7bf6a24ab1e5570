//! Cuts taken without stopping the shard (`tenant::slab`): a cut copied a little at a time
//! while messages keep arriving saves exactly what a whole save taken when it began saves, and
//! `spread` incremental cuts in a row, put together, are that whole state.
use super::tests::{HOUR, Sim, T};
use super::*;

fn tenant() -> TenantId {
    TenantId::new(T)
}

fn phone(i: u64) -> String {
    format!("+3461{:07}", 2_000_000 + i)
}

/// The whole state now, then a cut begun at the same moment.
fn begin(s: &mut Sim, round: Option<(u64, u64)>) -> TenantState {
    let Ok(Reply::State(whole)) = s.run(Command::SaveState { tenant: tenant() }) else {
        panic!("a state");
    };
    assert_eq!(
        s.run(Command::BeginCut {
            tenant: tenant(),
            round,
            paced: true,
        }),
        Ok(Reply::Done)
    );
    *whole
}

/// Ids seen compared as a set (ids seen in the same millisecond may come in any order).
fn normal(mut s: TenantState) -> TenantState {
    s.seen.sort();
    s
}

/// A small deterministic generator (the test needs variety, not quality).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (self.0 >> 33) % n
    }
}

/// All customers but the first `keep` go quiet past the retention: the sweep forgets them.
fn sweep_all_but(s: &mut Sim, keep: u64) {
    let later = |s: &Sim, ms| s.now.saturating_add(std::time::Duration::from_millis(ms));
    s.now = later(s, 71 * HOUR);
    for i in 0..keep {
        s.msg(&phone(i), "sigo aquí");
    }
    s.now = later(s, 2 * HOUR);
    s.tick();
}

#[test]
fn incremental_cuts_copied_while_messages_arrive_put_together_the_state_each_began_with() {
    let mut s = Sim::new(true);
    let mut rng = Lcg(7);
    let mut customers = 200;
    for i in 0..customers {
        s.msg(&phone(i), "hola");
        s.now = s.now.saturating_add(std::time::Duration::from_millis(3));
    }
    let spread = 4;
    let mut cuts: Vec<TenantState> = Vec::new();
    for round in 0..14u64 {
        if round == 6 {
            sweep_all_but(&mut s, 40);
        }
        let expected = begin(&mut s, Some((round, spread)));
        let mut steps = 0;
        let cut = loop {
            if let Some((t, cut)) = s.shard.step_cuts(5).pop() {
                assert_eq!(t, tenant());
                assert_eq!(cut.is_part(), round > 0);
                let mut streamed = Vec::new();
                cut.clone().write_json(&mut streamed).expect("written");
                let state = cut.into_state();
                // What is written as it goes is the state's own JSON, byte for byte.
                assert_eq!(
                    String::from_utf8(streamed).expect("JSON"),
                    serde_json::to_string(&state).expect("a state serializes"),
                    "round {round}"
                );
                break state;
            }
            steps += 1;
            if round == 10 && steps == 2 {
                // In the middle of a cut: removals move values under the scan.
                sweep_all_but(&mut s, 10);
            }
            // Meanwhile: follow-ups from known customers, new customers, a pause.
            match rng.below(4) {
                0 => {
                    customers += 1;
                    s.msg(&phone(customers), "nuevo");
                }
                _ => {
                    let c = phone(rng.below(customers));
                    s.msg(&c, "¿dónde está mi pedido?");
                }
            }
            s.now = s.now.saturating_add(std::time::Duration::from_millis(1));
        };
        assert!(
            steps > 3,
            "round {round}: copied a little at a time ({steps} steps)"
        );
        // Every conversation in the cut is as it was when the cut began.
        for c in &cut.conversations {
            let then = expected.conversations.iter().find(|e| e.id == c.id);
            assert_eq!(Some(c), then, "round {round}: conversation {}", c.id);
        }
        assert_eq!(cut.removed.is_none(), round == 0, "only the first is whole");
        cuts.push(cut);
        let from = cuts.len().saturating_sub(spread as usize);
        let merged = TenantState::merge(cuts[from..].to_vec()).expect("cuts");
        assert_eq!(
            normal(merged),
            normal(TenantState {
                removed: None,
                ..expected
            }),
            "round {round}: the last {spread} cuts are the whole state"
        );
    }
    assert!(customers > 220, "new customers came during the cuts");
}

/// Copies the cut being taken at once.
fn finish(s: &mut Sim) -> TenantState {
    let (_, cut) = s
        .shard
        .step_cuts(usize::MAX)
        .pop()
        .expect("a cut was begun");
    cut.into_state()
}

/// Restored from merged cuts, a tenant goes on cutting incrementally: the next cut is a part.
#[test]
fn a_restored_tenant_is_cut_incrementally_and_its_first_cut_ever_is_whole() {
    let mut s = Sim::new(true);
    for i in 0..50 {
        s.msg(&phone(i), "hola");
    }
    begin(&mut s, Some((0, 3)));
    let first = finish(&mut s);
    assert!(first.removed.is_none(), "nothing tracked before: whole");
    assert_eq!(first.conversations.len(), 50);
    let (mut fresh, _) = super::tests::handover(&mut s);
    fresh.msg(&phone(7), "otra");
    begin(&mut fresh, Some((1, 3)));
    let next = finish(&mut fresh);
    assert_eq!(next.removed, Some(vec![]), "a part");
    // The changed one, and the slice (ids ≡ 1 mod 3) of the rest.
    let ids: Vec<u64> = next.conversations.iter().map(|c| c.id).collect();
    let changed = first
        .conversations
        .iter()
        .find(|c| c.customer == phone(7))
        .expect("customer 7")
        .id;
    assert!(ids.contains(&changed), "{ids:?}");
    assert!(
        ids.iter().all(|&id| id == changed || id % 3 == 1),
        "{ids:?}"
    );
    assert_eq!(
        ids.len(),
        1 + (1..=50).filter(|id| id % 3 == 1 && *id != changed).count()
    );
    // A second cut cannot begin while one is being copied.
    begin(&mut fresh, Some((2, 3)));
    let again = fresh.run(Command::BeginCut {
        tenant: tenant(),
        round: Some((3, 3)),
        paced: true,
    });
    assert!(
        matches!(again, Err(CoreError::FailedPrecondition(_))),
        "{again:?}"
    );
}

/// New conversations take ids from the saved `next_conversation` on without looking: a state
/// whose ids repeat or reach it is refused, saying which, and the shard keeps no part of it.
#[test]
fn a_state_whose_conversation_ids_would_be_reused_is_refused() {
    let mut s = Sim::new(true);
    for i in 0..3 {
        s.msg(&phone(i), "hola");
    }
    let Ok(Reply::State(saved)) = s.run(Command::SaveState { tenant: tenant() }) else {
        panic!("a state");
    };
    let next = saved.next_conversation;
    let ids: Vec<u64> = saved.conversations.iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|&id| id < next), "{ids:?} below {next}");
    let behind = {
        let mut state = saved.clone();
        state.next_conversation = ids[2];
        state
    };
    let twice = {
        let mut state = saved.clone();
        state.conversations[1].id = ids[0];
        state
    };
    for (bad, id) in [(behind, ids[2]), (twice, ids[0])] {
        let mut fresh = Sim::new(true);
        let got = fresh.run(Command::RestoreState {
            tenant: tenant(),
            state: Some(bad),
        });
        let Err(CoreError::FailedPrecondition(why)) = got else {
            panic!("refused: {got:?}");
        };
        assert!(
            why.contains(&format!("conversation {id} is saved twice")),
            "{why}"
        );
        // Nothing of it was kept: the first customer is new to the fresh shard.
        let d = fresh.msg(&phone(0), "hola");
        assert_eq!(d.conversation, Some(ConversationId(1)), "{d:?}");
    }
    // The state as saved restores.
    let mut fresh = Sim::new(true);
    let ok = fresh.run(Command::RestoreState {
        tenant: tenant(),
        state: Some(saved),
    });
    assert_eq!(ok, Ok(Reply::Done));
}
