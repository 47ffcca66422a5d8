//! Wall-clock values at the SQL edge. Columns such as `created_ts` and
//! `origin_server_ts` hold signed milliseconds (both SQLite and
//! PostgreSQL integers are `i64`); everywhere else a time is a
//! [`Timestamp`]. Both backends convert through here, so they agree on
//! the out-of-range cases.

use presenced_engine::Timestamp;

/// `t` as a column value. A time past `i64::MAX` ms (hundreds of millions
/// of years away) is stored as `i64::MAX` rather than wrapping negative.
pub(crate) fn to_column(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

/// A column value read back. Presenced never writes a negative time, so
/// one (a row edited by hand) reads as the epoch.
pub(crate) fn from_column(ms: i64) -> Timestamp {
    Timestamp(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_out_of_range_values_clamp() {
        let t = Timestamp(1_700_000_000_000);
        assert_eq!(from_column(to_column(t)), t);
        assert_eq!(to_column(Timestamp(u64::MAX)), i64::MAX);
        assert_eq!(from_column(-5), Timestamp::ZERO);
    }
}
