//! Synthetic homeserver layouts for benchmarks and load tests.
//!
//! A [`Layout`] is a list of users and rooms shaped like a real server:
//! mostly two-person DMs, groups of 5–50, a few rooms of 1,000–10,000, about
//! ten rooms per user, plus observer users in no room. The same seed always
//! gives the same layout, so figures compare over time. Ids are plain
//! strings: this crate knows nothing of the engine or of HTTP.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Parameters of a layout.
#[derive(Clone, Debug)]
pub struct LayoutSpec {
    /// Server name used in every id.
    pub server_name: String,
    /// Number of ordinary users.
    pub users: usize,
    /// Average joined rooms per user.
    pub rooms_per_user: usize,
    /// Share of memberships that are in DMs (the rest, minus the large
    /// rooms, are groups).
    pub dm_share: f64,
    /// Sizes of the large rooms.
    pub large_rooms: Vec<usize>,
    /// Inclusive bounds of group sizes.
    pub group_size: (usize, usize),
    /// Observer users, in no room.
    pub observers: usize,
    /// Seed of the generator.
    pub seed: u64,
}

impl LayoutSpec {
    /// The realistic layout of the engine benchmark, scaled to `users`.
    pub fn realistic(users: usize) -> Self {
        let large_rooms = if users >= 50_000 {
            vec![10_000, 5_000, 2_000, 1_000, 1_000]
        } else {
            vec![users / 10, users / 20]
        };
        Self {
            server_name: "bench.example".to_owned(),
            users,
            rooms_per_user: 10,
            dm_share: 0.6,
            large_rooms,
            group_size: (5, 50),
            observers: 10,
            seed: 0x5eed,
        }
    }

    /// `users` users in rooms of exactly `size` (the load tool's simple layout).
    pub fn uniform_rooms(users: usize, size: usize, observers: usize) -> Self {
        Self {
            server_name: "bench.example".to_owned(),
            users,
            rooms_per_user: 1,
            dm_share: 0.0,
            large_rooms: Vec::new(),
            group_size: (size, size),
            observers,
            seed: 0x5eed,
        }
    }
}

/// One generated room.
#[derive(Clone, Debug)]
pub struct Room {
    /// Room id, `!r<n>:<server>`.
    pub id: String,
    /// Indices into [`Layout::users`].
    pub members: Vec<u32>,
}

/// A generated server.
#[derive(Clone, Debug)]
pub struct Layout {
    /// User ids, `@u<n>:<server>`.
    pub users: Vec<String>,
    /// Observer ids, `@observer<n>:<server>` (in no room).
    pub observers: Vec<String>,
    /// Rooms and their members.
    pub rooms: Vec<Room>,
}

impl Layout {
    /// Generates the layout described by `spec`.
    pub fn generate(spec: &LayoutSpec) -> Self {
        let mut rng = SmallRng::seed_from_u64(spec.seed);
        let server = &spec.server_name;
        let n = spec.users;
        let users: Vec<String> = (0..n).map(|i| format!("@u{i}:{server}")).collect();
        let observers = (0..spec.observers)
            .map(|i| format!("@observer{i}:{server}"))
            .collect();
        let mut rooms = Vec::new();
        let room = |members: Vec<u32>, rooms: &mut Vec<Room>| {
            let id = format!("!r{}:{server}", rooms.len());
            rooms.push(Room { id, members });
        };
        if n == 0 {
            return Self {
                users,
                observers,
                rooms,
            };
        }
        let total = n * spec.rooms_per_user;
        let mut large_total = 0;
        for &size in &spec.large_rooms {
            let size = size.min(n);
            large_total += size;
            room(sample(&mut rng, n, size), &mut rooms);
        }
        let rest = total.saturating_sub(large_total);
        let dm_memberships = (rest as f64 * spec.dm_share) as usize;
        let mut group_memberships = rest - dm_memberships;
        if spec.dm_share == 0.0 && spec.large_rooms.is_empty() && spec.rooms_per_user == 1 {
            // Uniform layout: partition users into rooms of the group size.
            let size = spec.group_size.0.max(1);
            for chunk in (0..n as u32).collect::<Vec<_>>().chunks(size) {
                room(chunk.to_vec(), &mut rooms);
            }
            return Self {
                users,
                observers,
                rooms,
            };
        }
        while group_memberships > 0 {
            let size = rng
                .random_range(spec.group_size.0..=spec.group_size.1)
                .min(n);
            group_memberships = group_memberships.saturating_sub(size);
            room(sample(&mut rng, n, size), &mut rooms);
        }
        for _ in 0..dm_memberships / 2 {
            let a = rng.random_range(0..n as u32);
            let mut b = rng.random_range(0..n as u32);
            if n > 1 {
                while b == a {
                    b = rng.random_range(0..n as u32);
                }
            }
            room(vec![a, b], &mut rooms);
        }
        Self {
            users,
            observers,
            rooms,
        }
    }

    /// Total memberships.
    pub fn memberships(&self) -> usize {
        self.rooms.iter().map(|r| r.members.len()).sum()
    }
}

/// `k` distinct indices out of `0..n`.
fn sample(rng: &mut SmallRng, n: usize, k: usize) -> Vec<u32> {
    rand::seq::index::sample(rng, n, k.min(n))
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realistic_layout_has_the_promised_shape() {
        let layout = Layout::generate(&LayoutSpec::realistic(20_000));
        let per_user = layout.memberships() as f64 / 20_000.0;
        assert!(
            (9.0..=11.0).contains(&per_user),
            "rooms per user {per_user}"
        );
        let dms = layout.rooms.iter().filter(|r| r.members.len() == 2).count();
        assert!(dms * 2 > layout.rooms.len(), "mostly DMs");
        assert!(layout.rooms.iter().any(|r| r.members.len() >= 1_000));
        for room in &layout.rooms {
            let mut m = room.members.clone();
            m.sort_unstable();
            m.dedup();
            assert_eq!(m.len(), room.members.len(), "members are distinct");
        }
        assert_eq!(layout.observers.len(), 10);
    }

    #[test]
    fn same_seed_same_layout() {
        let a = Layout::generate(&LayoutSpec::realistic(5_000));
        let b = Layout::generate(&LayoutSpec::realistic(5_000));
        assert_eq!(a.rooms.len(), b.rooms.len());
        assert_eq!(a.rooms[100].members, b.rooms[100].members);
    }

    #[test]
    fn uniform_rooms_partition_users() {
        let layout = Layout::generate(&LayoutSpec::uniform_rooms(200, 10, 20));
        assert_eq!(layout.rooms.len(), 20);
        assert!(layout.rooms.iter().all(|r| r.members.len() == 10));
        assert_eq!(layout.memberships(), 200);
    }
}
