//! Independent checks run side by side, one thread each, for suites whose cases each start
//! processes and wait on them (start-ups that must be refused, whole deployment topologies,
//! schemathesis runs). Owns nothing else; trusts `check` to say what is wrong.

/// Runs `check` on every case at once and returns what it found wrong, one entry per case that
/// is wrong, in the order of `cases`. Empty when every case is right. A check that panics fails
/// the test with `what` in the message.
pub(crate) fn problems_of_each<T: Sync>(
    cases: &[T],
    what: &str,
    check: impl Fn(&T) -> Option<String> + Sync,
) -> Vec<String> {
    let check = &check;
    std::thread::scope(|scope| {
        let running: Vec<_> = cases
            .iter()
            .map(|case| scope.spawn(move || check(case)))
            .collect();
        running
            .into_iter()
            .filter_map(|handle| handle.join().unwrap_or_else(|_| panic!("{what} panicked")))
            .collect()
    })
}
