//! Setup: accounts, rooms from the layout, and who expects whose updates.

use std::sync::Arc;
use std::time::Instant;

use presenced_workload::Layout;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{Account, Error, Homeserver};

/// Password of every account the tool creates.
pub(crate) const PASSWORD: &str = "presenced-bench-password";

/// What the load runs against.
pub(crate) struct World {
    /// One account per layout user.
    pub(crate) users: Vec<Account>,
    /// Syncing observers: room members first, then the routed monitors.
    pub(crate) observers: Vec<Account>,
    /// Layout indices of the users that send presence (room members that
    /// do not observe).
    pub(crate) updaters: Vec<u32>,
    /// For each layout user, the observer indices that must see its
    /// updates, sorted.
    pub(crate) audience: Vec<Vec<u32>>,
}

/// Which users observe, and who must see whom.
pub(crate) struct Plan {
    /// Layout indices of the room members that observe.
    pub(crate) room_observers: Vec<u32>,
    pub(crate) updaters: Vec<u32>,
    pub(crate) audience: Vec<Vec<u32>>,
}

/// `k` room members spread evenly over the users (in the uniform layout,
/// one per room when `k` is the number of rooms); `monitors` routed
/// observers see everyone.
pub(crate) fn plan(layout: &Layout, k: usize, monitors: usize) -> Plan {
    let n = layout.users.len();
    let k = k.min(n);
    let room_observers: Vec<u32> = (0..k).map(|i| (i * n / k.max(1)) as u32).collect();
    let mut observer_of = vec![None; n];
    for (o, &u) in room_observers.iter().enumerate() {
        observer_of[u as usize] = Some(o as u32);
    }
    let mut audience: Vec<Vec<u32>> = vec![Vec::new(); n];
    for room in &layout.rooms {
        let watchers: Vec<(u32, u32)> = room
            .members
            .iter()
            .filter_map(|&m| observer_of[m as usize].map(|o| (m, o)))
            .collect();
        if watchers.is_empty() {
            continue;
        }
        for &m in &room.members {
            audience[m as usize].extend(watchers.iter().filter(|w| w.0 != m).map(|w| w.1));
        }
    }
    for a in &mut audience {
        a.extend((0..monitors).map(|i| (k + i) as u32));
        a.sort_unstable();
        a.dedup();
    }
    let updaters = (0..n as u32)
        .filter(|&u| observer_of[u as usize].is_none())
        .collect();
    Plan {
        room_observers,
        updaters,
        audience,
    }
}

/// How accounts are named and how hard setup may push.
pub(crate) struct Naming<'a> {
    /// Run id: user localparts are `b<run>u<index>`.
    pub(crate) run: &'a str,
    /// Monitors are `<monitor_prefix><i>` (fixed, so routers can list them).
    pub(crate) monitor_prefix: &'a str,
    pub(crate) monitors: usize,
    /// Setup requests in flight at once.
    pub(crate) concurrency: usize,
}

/// Registers (or logs in) every account and builds the rooms.
pub(crate) async fn build(
    hs: &Homeserver,
    secret: &str,
    layout: &Layout,
    plan: Plan,
    naming: Naming<'_>,
) -> Result<World, Error> {
    let Naming {
        run,
        monitor_prefix,
        monitors,
        concurrency,
    } = naming;
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut names: Vec<String> = (0..layout.users.len())
        .map(|i| format!("b{run}u{i}"))
        .collect();
    names.extend((0..monitors).map(|i| format!("{monitor_prefix}{i}")));
    let accounts = register_all(hs, secret, names, &sem).await?;
    let (users, monitor_accounts) = accounts.split_at(layout.users.len());
    eprintln!(
        "setup: {} accounts in {:.1}s",
        accounts.len(),
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let mut rooms = JoinSet::new();
    for room in &layout.rooms {
        let Some((&creator, rest)) = room.members.split_first() else {
            continue;
        };
        let (hs, sem) = (hs.clone(), sem.clone());
        let creator = users[creator as usize].clone();
        let members: Vec<Account> = rest.iter().map(|&m| users[m as usize].clone()).collect();
        rooms.spawn(async move {
            let invite: Vec<&str> = members.iter().map(|a| a.user_id.as_str()).collect();
            let room_id = {
                let _permit = sem.acquire().await.expect("open semaphore");
                hs.create_room(&creator.token, &invite).await?
            };
            let mut joins = JoinSet::new();
            for m in members {
                let (hs, sem, room_id) = (hs.clone(), sem.clone(), room_id.clone());
                joins.spawn(async move {
                    let _permit = sem.acquire().await.expect("open semaphore");
                    hs.join(&m.token, &room_id).await
                });
            }
            while let Some(r) = joins.join_next().await {
                r.map_err(|e| e.to_string())??;
            }
            Ok::<_, Error>(())
        });
    }
    while let Some(r) = rooms.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    eprintln!(
        "setup: {} rooms ({} memberships) in {:.1}s",
        layout.rooms.len(),
        layout.memberships(),
        started.elapsed().as_secs_f64()
    );

    let mut observers: Vec<Account> = plan
        .room_observers
        .iter()
        .map(|&u| users[u as usize].clone())
        .collect();
    observers.extend(monitor_accounts.iter().cloned());
    Ok(World {
        users: users.to_vec(),
        observers,
        updaters: plan.updaters,
        audience: plan.audience,
    })
}

async fn register_all(
    hs: &Homeserver,
    secret: &str,
    names: Vec<String>,
    sem: &Arc<Semaphore>,
) -> Result<Vec<Account>, Error> {
    let mut set = JoinSet::new();
    for (i, name) in names.into_iter().enumerate() {
        let (hs, sem, secret) = (hs.clone(), sem.clone(), secret.to_owned());
        set.spawn(async move {
            let _permit = sem.acquire().await.expect("open semaphore");
            hs.register_or_login(&secret, &name, PASSWORD)
                .await
                .map(|a| (i, a))
        });
    }
    let mut out: Vec<Option<Account>> = vec![None; set.len()];
    while let Some(r) = set.join_next().await {
        let (i, a) = r.map_err(|e| e.to_string())??;
        out[i] = Some(a);
    }
    Ok(out
        .into_iter()
        .map(|a| a.expect("every task answered"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use presenced_workload::LayoutSpec;

    #[test]
    fn uniform_rooms_one_observer_per_room() {
        let layout = Layout::generate(&LayoutSpec {
            observers: 0,
            ..LayoutSpec::uniform_rooms(200, 10, 20)
        });
        let p = plan(&layout, 20, 0);
        assert_eq!(p.room_observers.len(), 20);
        assert_eq!(p.updaters.len(), 180);
        // Every updater has exactly its room's observer.
        for &u in &p.updaters {
            assert_eq!(p.audience[u as usize], vec![u / 10]);
        }
        // An observer does not expect its own updates.
        assert!(p.audience[0].is_empty());
    }

    #[test]
    fn monitors_see_everyone() {
        let layout = Layout::generate(&LayoutSpec::uniform_rooms(200, 10, 10));
        let p = plan(&layout, 20, 10);
        assert_eq!(
            p.audience[1],
            vec![0, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]
        );
    }
}
