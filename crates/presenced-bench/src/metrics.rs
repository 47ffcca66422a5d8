//! The few counters the tool reads from a node's `GET /metrics`
//! (Prometheus text), to split a step's CPU into unit costs.

use serde::Serialize;

/// Sync responses served (any outcome).
const SYNCS: &str = "presenced_sync_total";
/// Waiting syncs woken by presence.
const WAKES: &str = "presenced_presence_wakes_total";
/// Presence PUTs answered by this node's front door.
const PUTS: &str = "presenced_presence_put_total";

/// Synapse's count of `/sync` requests received (its metrics listener's
/// text, labelled per method and tag): the upstream cost of companion mode.
const SYNAPSE_REQUESTS: &str = "synapse_http_server_requests_received_total{";
const SYNAPSE_SYNC_SERVLET: &str = "servlet=\"SyncRestServlet\"";

/// The `/sync` requests Synapse has received, summed over its labels.
pub(crate) fn synapse_syncs(text: &str) -> u64 {
    text.lines()
        .filter(|line| line.starts_with(SYNAPSE_REQUESTS) && line.contains(SYNAPSE_SYNC_SERVLET))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// One node's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) syncs: u64,
    pub(crate) wakes: u64,
    pub(crate) puts: u64,
}

/// Per-node counter deltas over a step, in node order.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct NodeDeltas {
    pub(crate) node_syncs: Vec<u64>,
    pub(crate) node_wakes: Vec<u64>,
    pub(crate) node_puts: Vec<u64>,
}

/// The value of an unlabelled sample `name`, if the text has one.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(value as u64)
    })
}

impl Counters {
    /// Reads the counters from a node's metrics text (0 when absent).
    pub(crate) fn parse(text: &str) -> Self {
        Self {
            syncs: sample(text, SYNCS).unwrap_or(0),
            wakes: sample(text, WAKES).unwrap_or(0),
            puts: sample(text, PUTS).unwrap_or(0),
        }
    }
}

/// What each node's counters grew by between `before` and `after`.
pub(crate) fn deltas(before: &[Counters], after: &[Counters]) -> NodeDeltas {
    let mut d = NodeDeltas::default();
    for (b, a) in before.iter().zip(after) {
        d.node_syncs.push(a.syncs.saturating_sub(b.syncs));
        d.node_wakes.push(a.wakes.saturating_sub(b.wakes));
        d.node_puts.push(a.puts.saturating_sub(b.puts));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_from_prometheus_text() {
        let text = "# HELP presenced_sync_total Sync requests served.\n\
                    # TYPE presenced_sync_total counter\n\
                    presenced_sync_total 42\n\
                    presenced_sync_total_other 7\n\
                    presenced_presence_wakes_total 5\n\
                    presenced_presence_put_total{x=\"y\"} 9\n\
                    presenced_presence_put_total 3\n";
        assert_eq!(
            Counters::parse(text),
            Counters {
                syncs: 42,
                wakes: 5,
                puts: 3
            }
        );
        assert_eq!(Counters::parse(""), Counters::default());
    }

    #[test]
    fn synapse_sync_requests_are_summed_over_their_labels() {
        let text = "synapse_http_server_requests_received_total{method=\"GET\",servlet=\"SyncRestServlet\",tag=\"\"} 7.0\n\
                    synapse_http_server_requests_received_total{method=\"OPTIONS\",servlet=\"SyncRestServlet\",tag=\"\"} 2.0\n\
                    synapse_http_server_requests_received_total{method=\"GET\",servlet=\"WhoamiRestServlet\",tag=\"\"} 40.0\n\
                    synapse_http_server_requests_received_created{method=\"GET\",servlet=\"SyncRestServlet\",tag=\"\"} 1.7e9\n";
        assert_eq!(synapse_syncs(text), 9);
        assert_eq!(synapse_syncs(""), 0);
    }

    #[test]
    fn deltas_per_node() {
        let a = [Counters {
            syncs: 1,
            wakes: 2,
            puts: 3,
        }; 2];
        let b = [
            Counters {
                syncs: 11,
                wakes: 2,
                puts: 4,
            },
            Counters {
                syncs: 0,
                wakes: 5,
                puts: 3,
            },
        ];
        let d = deltas(&a, &b);
        assert_eq!(d.node_syncs, vec![10, 0]);
        assert_eq!(d.node_wakes, vec![0, 3]);
        assert_eq!(d.node_puts, vec![1, 0]);
    }
}
