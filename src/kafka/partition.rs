//! Which partition a tenant lives on: the Java client's default partitioner (murmur2 of the
//! key, sign bit cleared, modulo the partition count), which librdkafka offers as
//! `partitioner = murmur2_random`. Every topic switchboard keys by tenant uses it, so a
//! tenant's input, dispatches and snapshots share one partition number, and the replica that
//! owns that partition of the input owns the tenant. Records a producer put elsewhere are
//! moved there (see `input`).

/// The partitioner librdkafka clients must use to agree with [`partition_of`].
pub const LIBRDKAFKA_PARTITIONER: &str = "murmur2_random";

/// Kafka's `Utils.murmur2` (seed 0x9747b28c), as the Java client computes it.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(&b) = rest.first() {
        h ^= u32::from(b);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `tenant` among `partitions` (> 0).
pub fn partition_of(tenant: &str, partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    (murmur2(tenant.as_bytes()) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // The vectors of Kafka's own UtilsTest.testMurmur2.
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key.as_bytes()), expected, "{key}");
        }
    }

    #[test]
    fn a_tenant_lands_where_the_java_client_puts_its_key() {
        // (murmur2 & 0x7fffffff) mod n, from the vectors above.
        assert_eq!(
            [12, 7, 4].map(|n| partition_of("21", n)),
            [0, 3, 0],
            "murmur2 -973932308"
        );
        assert_eq!(
            [12, 7, 4].map(|n| partition_of("foobar", n)),
            [6, 0, 2],
            "murmur2 -790332482"
        );
        for t in ["acme", "globex", "initech", "acme:es"] {
            assert!((0..12).contains(&partition_of(t, 12)));
        }
    }
}
