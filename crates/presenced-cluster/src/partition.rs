//! Which partition a user belongs to, and which node should own it.

use xxhash_rust::xxh3::xxh3_64;

/// Partitions are fixed at 16 (the design's L): changing the number is a
/// new log generation, not a setting.
pub const PARTITIONS: u16 = 16;

/// The partition of a user (local or remote): `xxh3_64(MXID) mod 16`.
pub fn partition_of(user_id: &str) -> u16 {
    (xxh3_64(user_id.as_bytes()) % u64::from(PARTITIONS)) as u16
}

/// Live nodes in the order they should try to own `partition`
/// (rendezvous hashing: each node's preference is stable while the set of
/// live nodes changes, so a node joining or leaving moves few partitions).
pub fn preference_order<'a>(
    partition: u16,
    nodes: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    let mut ranked: Vec<(u64, &str)> = nodes
        .into_iter()
        .map(|node| {
            let mut seed = partition.to_be_bytes().to_vec();
            seed.extend_from_slice(node.as_bytes());
            (xxh3_64(&seed), node)
        })
        .collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked.into_iter().map(|(_, node)| node).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_spread_over_every_partition() {
        let mut seen = [0u32; PARTITIONS as usize];
        for n in 0..1600 {
            seen[usize::from(partition_of(&format!("@user{n}:example.org")))] += 1;
        }
        assert!(
            seen.iter().all(|count| (50..=150).contains(count)),
            "{seen:?}"
        );
    }

    #[test]
    fn preference_is_stable_when_another_node_leaves() {
        let all = ["a", "b", "c"];
        for partition in 0..PARTITIONS {
            let order = preference_order(partition, all);
            let without_last =
                preference_order(partition, all.iter().copied().filter(|n| *n != order[2]));
            assert_eq!(without_last, order[..2]);
        }
    }
}
